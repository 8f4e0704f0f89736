"""A misbehaving OpenAI-compatible server on 127.0.0.1, in front of a real llama-server, for the remote-engine fault tests.

Every request must carry `Authorization: Bearer KEY` (else 401, as llama-server --api-key answers). Requests to
the generation endpoints (/v1/completions, /completion, /v1/chat/completions) are answered by the current `mode`;
every other request (/props, /v1/models, /tokenize, /detokenize...) is proxied to the real llama-server, so
RemoteEngine.connect learns a real vocabulary, template and context. In mode "proxy" nothing is faulted, and with
`everywhere = True` the discovery endpoints are faulted too.

The modes: "malformed_sse" (lines that are not server-sent events), "malformed_sse_late" (one good event, then a
broken one), "truncated_json", "html" (a 200 with a sign-in page), "endless" (events forever, never a finish),
"huge_token" (one 10 MB token), "drip" (the whole answer, status line included, one byte a second), "drip_body"
(headers at once, then the body one byte a second), "storm" (429 on every request, with `retry_after`),
"no_logprobs" (the real answer with `logprobs: null`, as a server that does not support them sends).

Faulted answers echo the API key back (as a careless proxy's error page would), so a test that checks the key
never reaches the output checks chatllm's scrubbing, not the server's discretion. `counts` has the requests seen
per path; `disconnects` the moments an endless stream found its client gone.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTED = ("/v1/completions", "/completion", "/v1/chat/completions")
MODES = ("proxy", "malformed_sse", "malformed_sse_late", "truncated_json", "html", "endless", "huge_token", "drip",
         "drip_body", "storm", "no_logprobs", "reasoning_stream", "think_content", "tool_call_stream")
# What the scripted reasoning and tool-call modes stream, as vLLM and llama-server (--jinja --reasoning-format) do:
TRACE = "The user greets me. I should greet back, briefly."
ANSWER = "Hello there!"
HUGE = 10 * 1024 * 1024  # the single token of "huge_token"
ENDLESS_LIMIT = 60.0  # seconds an endless stream runs at most when nobody hangs up (a bug in the client under test)


class FaultServer:
    """FaultServer(upstream_root, key).start(); set .mode (and .retry_after, .everywhere); read .url, .counts."""

    def __init__(self, upstream: str, key: str):
        self.upstream, self.key = upstream.rstrip("/"), key
        self.mode = "proxy"
        self.everywhere = False
        self.retry_after: str | None = "1"
        self.drip_interval = 1.0
        self.endless_text = " la"  # what each event of an endless stream carries ("" for events without text)
        self.events_sent = 0  # events an endless stream wrote before its client hung up
        self.counts: Counter[str] = Counter()
        self.last_request: dict = {}  # the body of the last scripted reasoning or tool-call request
        self.unauthorized = 0
        self.disconnects: list[float] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The OpenAI api base, as a models.toml entry gives it."""
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def reset(self, mode: str = "proxy", **attrs) -> "FaultServer":
        """Switch to a mode with fresh counters."""
        assert mode in MODES, mode
        with self._lock:
            self.mode, self.everywhere, self.retry_after, self.endless_text = mode, False, "1", " la"
            for name, value in attrs.items():
                setattr(self, name, value)
            self.counts.clear()
            self.disconnects.clear()
            self.unauthorized = self.events_sent = 0
        return self

    def generation_requests(self) -> int:
        """How many requests reached the faulted endpoints."""
        return sum(self.counts[p] for p in FAULTED)

    def start(self) -> "FaultServer":
        """Listen on a free port of 127.0.0.1, serving from a daemon thread."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer._handle(self, None)

            def do_POST(self):
                outer._handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # -- answers ------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, body: bytes | None) -> None:
        path = h.path.split("?")[0]
        if h.headers.get("Authorization") != f"Bearer {self.key}":
            with self._lock:
                self.unauthorized += 1
            return _send(h, 401, "application/json", b'{"error": {"code": 401, "message": "Invalid API Key", '
                                                     b'"type": "authentication_error"}}')
        with self._lock:
            self.counts[path] += 1
            mode = self.mode if path in FAULTED or self.everywhere else "proxy"
        try:
            getattr(self, "_" + mode)(h, path, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what several faults expect it to do
        h.close_connection = True

    def _proxy(self, h, path: str, body: bytes | None) -> None:
        req = self._request(path, body)
        try:
            r = urllib.request.urlopen(req, timeout=60)
        except urllib.error.HTTPError as err:
            return _send(h, err.code, err.headers.get("Content-Type", "application/json"), err.read())
        with r:
            ctype = r.headers.get("Content-Type", "application/json")
            if not ctype.startswith("text/event-stream"):
                return _send(h, r.status, ctype, r.read())
            _start(h, r.status, ctype)  # a stream goes through as it comes
            while data := r.read1(65536):
                _chunk(h, data)
            _chunk(h, b"")

    def _request(self, path: str, body: bytes | None) -> urllib.request.Request:
        return urllib.request.Request(self.upstream + path, data=body, method="POST" if body is not None else "GET",
                                      headers={"Content-Type": "application/json"})

    def _upstream(self, path: str, body: bytes | None) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(self._request(path, body), timeout=60) as r:
                return r.status, r.headers.get("Content-Type", "application/json"), r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", "application/json"), err.read()

    def _event(self, path: str, text: str, finish: str | None = None) -> bytes:
        if path == "/v1/chat/completions":
            choice: dict = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish}
        return b"data: " + json.dumps({"object": "text_completion", "choices": [choice]}).encode() + b"\n\n"

    def _deltas(self, h, deltas: list[dict], finish: str) -> None:
        """A streamed chat completion of these deltas, then its finish reason and usage (as an OpenAI server sends)."""
        _start(h, 200, "text/event-stream")
        for delta in deltas:
            _chunk(h, b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).encode()
                   + b"\n\n")
        _chunk(h, b"data: " + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}).encode() + b"\n\n")
        _chunk(h, b"data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 20}}).encode()
               + b"\n\ndata: [DONE]\n\n")
        _chunk(h, b"")

    def _reasoning_stream(self, h, path: str, body) -> None:
        """The trace in reasoning_content deltas (a word at a time), then the answer in content."""
        words = TRACE.split(" ")
        deltas = [{"role": "assistant", "content": None}] + [{"reasoning_content": w + (" " if i < len(words) - 1 else "")}
                                                             for i, w in enumerate(words)]
        self.last_request = json.loads(body or b"{}")
        self._deltas(h, deltas + [{"content": ANSWER}], "stop")

    def _think_content(self, h, path: str, body) -> None:
        """A server that does not separate the trace: <think>...</think> inside the content, cut mid-tag."""
        text = f"<think>\n{TRACE}\n</think>\n\n{ANSWER}"
        self.last_request = json.loads(body or b"{}")
        self._deltas(h, [{"content": text[i:i + 5]} for i in range(0, len(text), 5)], "stop")

    def _tool_call_stream(self, h, path: str, body) -> None:
        """Two calls in pieces: ids and names first, the arguments' JSON cut anywhere, as OpenAI streams them."""
        self.last_request = json.loads(body or b"{}")
        args = [json.dumps({"city": "Oslo"}), json.dumps({"city": "Lima"})]
        deltas: list[dict] = []
        for i, (name, arg) in enumerate(zip(("get_weather", "get_time"), args)):
            deltas.append({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                           "function": {"name": name, "arguments": ""}}]})
            deltas += [{"tool_calls": [{"index": i, "function": {"arguments": arg[j:j + 4]}}]} for j in range(0, len(arg), 4)]
        self._deltas(h, deltas, "tool_calls")

    def _malformed_sse(self, h, path: str, body) -> None:
        lines = [json.dumps({"choices": [{"text": "Hello", "finish_reason": None}]}).encode(),  # NDJSON, not SSE
                 b"event: message", b"\x00\xff\xfe garbage " + self.key.encode(), b"{{{{", b""]
        _send(h, 200, "text/event-stream", b"\n".join(lines) + b"\n")

    def _malformed_sse_late(self, h, path: str, body) -> None:
        broken = b'data: {"choices": [{"text": " world", "key": "' + self.key.encode() + b'", "finish_reason": nul\n\n'
        _send(h, 200, "text/event-stream", self._event(path, "Hello") + broken + b"data: [DONE]\n\n")

    def _truncated_json(self, h, path: str, body) -> None:
        if path == "/completion":
            data = b'{"content": "x", "auth": "' + self.key.encode() + b'", "completion_probabilities": [{"id": 3, "logp'
            return _send(h, 200, "application/json", data)
        event = self._event(path, "Hello")
        _send(h, 200, "text/event-stream", event[: len(event) // 2])

    def _html(self, h, path: str, body) -> None:
        page = ("<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body><h1>Please sign in</h1>\n"
                f"<p>Your request (Authorization: Bearer {self.key}) needs a session.</p>\n</body></html>\n")
        _send(h, 200, "text/html; charset=utf-8", page.encode())

    def _endless(self, h, path: str, body) -> None:
        if path == "/completion":  # a JSON reply that never ends
            _start(h, 200, "application/json")
            _chunk(h, b'{"content": "')
            end = time.monotonic() + ENDLESS_LIMIT
            while time.monotonic() < end:
                _chunk(h, b"la " * 20000)
                time.sleep(0.01)
            return
        _start(h, 200, "text/event-stream")
        end = time.monotonic() + ENDLESS_LIMIT
        try:
            while time.monotonic() < end:
                _chunk(h, self._event(path, self.endless_text))
                with self._lock:
                    self.events_sent += 1
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self.disconnects.append(time.monotonic())

    def _huge_token(self, h, path: str, body) -> None:
        if path == "/completion":  # a well-formed score of the token asked for, beside a 10 MB token
            bias = (json.loads(body or b"{}").get("logit_bias") or [[0]])[0][0]
            step = {"id": bias, "token": "x" * HUGE, "logprob": -0.5, "top_logprobs": [{"id": bias, "logprob": -0.5}]}
            return _send(h, 200, "application/json", json.dumps({"content": "x" * HUGE, "completion_probabilities": [step]}).encode())
        stream = self._event(path, "y" * HUGE) + self._event(path, "", "stop") + b"data: [DONE]\n\n"
        _send(h, 200, "text/event-stream", stream)

    def _drip(self, h, path: str, body, headers_too: bool = True) -> None:
        stream = self._event(path, "Hello") + self._event(path, " world", "stop") + b"data: [DONE]\n\n"
        if path == "/completion":
            stream = b'{"content": "x", "completion_probabilities": []}'
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {'application/json' if path == '/completion' else 'text/event-stream'}\r\n"
                f"Content-Length: {len(stream)}\r\nConnection: close\r\n\r\n").encode()
        if not headers_too:
            h.wfile.write(head)
            h.wfile.flush()
        data = head + stream if headers_too else stream
        end = time.monotonic() + ENDLESS_LIMIT
        for i in range(len(data)):
            if time.monotonic() > end:
                return
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
            time.sleep(self.drip_interval)

    def _drip_body(self, h, path: str, body) -> None:
        self._drip(h, path, body, headers_too=False)

    def _no_logprobs(self, h, path: str, body) -> None:
        """The real answer without its token log-probabilities, as servers that do not support them reply."""
        status, ctype, data = self._upstream(path, body)
        reply = json.loads(data)
        for choice in reply.get("choices", []):
            choice["logprobs"] = None
        _send(h, status, ctype, json.dumps(reply).encode())

    def _storm(self, h, path: str, body) -> None:
        msg = json.dumps({"error": {"code": 429, "message": f"rate limit exceeded for key {self.key}",
                                    "type": "rate_limit_error"}}).encode()
        _send(h, 429, "application/json", msg, {"Retry-After": self.retry_after} if self.retry_after else {})


def _send(h: BaseHTTPRequestHandler, status: int, ctype: str, data: bytes, headers: dict | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    h.send_header("Connection", "close")
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)
    h.wfile.flush()


def _start(h: BaseHTTPRequestHandler, status: int, ctype: str) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Transfer-Encoding", "chunked")
    h.send_header("Connection", "close")
    h.end_headers()


def _chunk(h: BaseHTTPRequestHandler, data: bytes) -> None:
    h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    h.wfile.flush()
