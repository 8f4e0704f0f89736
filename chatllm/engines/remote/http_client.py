"""HTTP to an OpenAI-compatible server (llama.cpp's llama-server first): timeouts, bounded retries, SSE, one-line errors.

httpx, not the openai package: chatllm's tasks work on tokens (they tokenize pieces themselves, send token-list prompts
and score continuations), which takes llama-server's own endpoints (/tokenize, /detokenize, /props, /completion with
n_probs and logit_bias) next to the OpenAI ones. The openai client speaks only the latter, so it would be a large
dependency for half the job; a handful of JSON POSTs and one server-sent-events stream is all this needs.

The API key is read from its environment variable on every request, never kept on an object, and scrubbed from
every message this module builds (so from errors and --debug tracebacks too).

What a server sends is bounded, whatever it does: a reply (headers and JSON body) must be complete within the read
timeout, and while streaming each event must arrive within the read timeout of the previous one (keep-alive comments
do not count), so a server that trickles bytes cannot hold a command past its timeout. httpx's own read timeout is
per socket read; the deadline is enforced below it, in the network stream (_DeadlineBackend). A JSON reply is at most
MAX_REPLY_BYTES and a stream event at most MAX_EVENT_BYTES. A Retry-After beyond MAX_WAIT is refused, not slept.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any, Iterable, Iterator

import httpcore
import httpx

from chatllm.errors import ChatllmError, ContextOverflowError, EngineUnavailable, redact

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
RETRIES = 3  # on 429 and 503 (a busy server, or one still loading its model)
MAX_WAIT = 20.0  # the longest pause between two tries; a server asking for more is refused at once
MAX_REPLY_BYTES = 64 << 20  # one JSON reply: a long document's /tokenize, many embeddings
MAX_EVENT_BYTES = 1 << 20  # one stream event: a token, or the last event's usage and timings, is a few hundred bytes
MAX_ERROR_BYTES = 64 << 10  # what is read of an error reply's body
SPARE_EVENTS = 16  # events a stream may send beyond one a token (role, finish, usage) before it is refused as endless


class Server:
    """One server: its OpenAI api base (…/v1) and its root (where llama-server keeps /tokenize, /props…)."""

    def __init__(self, url: str, *, name: str, key_env: str | None = None, tls_verify: bool = True,
                 read_timeout: float | None = None, retries: int = RETRIES):
        url = url.rstrip("/")
        self.api = url if url.endswith("/v1") else url + "/v1"
        self.root = self.api[: -len("/v1")]
        self.shown = re.sub(r"//[^/@]*@", "//", url)  # no user:password@ in anything shown
        self.name = name
        self.key_env = key_env
        self.read_timeout = read_timeout or READ_TIMEOUT
        self.retries = retries
        timeout = httpx.Timeout(connect=CONNECT_TIMEOUT, read=self.read_timeout, write=self.read_timeout, pool=CONNECT_TIMEOUT)
        self._clock = _Clock()
        self._client = httpx.Client(timeout=timeout, transport=_transport(tls_verify, self._clock), follow_redirects=False,
                                    trust_env=False)

    # -- requests ---------------------------------------------------------------------------------

    def get(self, path: str, *, api: bool = False, missing_ok: bool = False) -> Any:
        """GET root+path (api+path with api=True) as JSON; None for a 404 when missing_ok."""
        with self._send("GET", path, None, api=api, missing_ok=missing_ok) as response:
            return None if response is None else self._json(response)

    def post(self, path: str, body: dict, *, api: bool = False, missing_ok: bool = False) -> Any:
        """POST JSON to root+path (api+path with api=True); the JSON answer, or None for a 404 when missing_ok."""
        with self._send("POST", path, body, api=api, missing_ok=missing_ok) as response:
            return None if response is None else self._json(response)

    @contextmanager
    def events(self, path: str, body: dict, *, api: bool = True) -> Iterator[Iterator[dict]]:
        """POST and read the answer as server-sent events: an iterator of JSON objects, ended by [DONE] or EOF.

        A stream past body["max_tokens"] + SPARE_EVENTS events is refused: a server ignoring max_tokens cannot run forever."""
        with self._send("POST", path, body, api=api) as response:
            assert response is not None  # only missing_ok gives None
            kind = _content_type(response)
            if kind == "text/html":
                raise self._html_error(response)
            if kind == "application/json":  # a server that ignored stream=true, or a proxy's answer
                raise self.error(f"{self.where} answered {response.request.url.path} with one JSON document, not an event stream",
                                 "is the url that of an OpenAI-compatible server such as llama-server?")
            most = body.get("max_tokens")
            yield self._sse(response, most + SPARE_EVENTS if isinstance(most, int) else None)

    def model_ids(self) -> list[str]:
        """The model ids (and aliases) /v1/models lists; [] when the server has no such list."""
        data = self.get("/models", api=True, missing_ok=True)
        rows = data.get("data") if isinstance(data, dict) else None
        ids: list[str] = []
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict):
                ids.extend(str(x) for x in [row.get("id"), *(row.get("aliases") or [])] if x and str(x) not in ids)
        return ids

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _send(self, method: str, path: str, body: dict | None, *, api: bool,
              missing_ok: bool = False) -> Iterator[httpx.Response | None]:
        """The response, its headers read and its body not (always streamed: get/post read it under MAX_REPLY_BYTES)."""
        url = (self.api if api else self.root) + path
        for attempt in range(self.retries + 1):
            request = self._client.build_request(method, url, json=body, headers=self._headers())
            self._clock.start(self.read_timeout)
            try:
                response = self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                self._clock.deadline = None
                raise self.transport_error(exc) from None
            try:
                status = response.status_code
                if status in (429, 503) and attempt < self.retries:
                    wait = _retry_wait(response, attempt)
                    if wait > MAX_WAIT:
                        text = self._read(response, MAX_ERROR_BYTES, refuse=False)
                        raise self.error(f"{self.where} is busy (HTTP {status}) and asks to wait {wait:.0f} s before trying again"
                                         f"{_message(text)}", "try again later, or give the server more slots (llama-server -np N)")
                    time.sleep(wait)
                    continue
                if missing_ok and status in (404, 405, 501):
                    yield None
                    return
                if status >= 400:
                    text = self._read(response, MAX_ERROR_BYTES, refuse=False)
                    if _content_type(response) == "text/html":
                        title = _html_title(text)
                        raise self.status_error(status, None, title or f"an HTML page ({len(text)} bytes)")
                    raise self.status_error(status, _loads(text), text.decode("utf-8", "replace"))
                yield response
                return
            except httpx.HTTPError as exc:
                raise self.transport_error(exc) from None
            finally:
                self._clock.deadline = None
                response.close()

    def _read(self, response: httpx.Response, limit: int, *, refuse: bool = True) -> bytes:
        """The body, at most `limit` bytes: past it, an error (refuse) or the first `limit` bytes."""
        parts, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                if refuse:
                    raise self.error(f"{self.where} sent a reply over {limit >> 20} MiB to {response.request.url.path}",
                                     "check the server: is it an OpenAI-compatible server such as llama-server?")
                parts.append(chunk[: len(chunk) - (size - limit)])
                break
            parts.append(chunk)
        return b"".join(parts)

    @property
    def where(self) -> str:
        """How messages name the server: the entry and its url, or the url of a one-off reference."""
        return self.shown if self.name.startswith("openai:") else f"{self.name} ({self.shown})"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.key_env) if self.key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def scrub(self, text: str) -> str:
        """text without the API key (nor anything that looks like an HF token)."""
        key = os.environ.get(self.key_env) if self.key_env else None
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return redact(text)

    def error(self, message: str, hint: str) -> ChatllmError:
        """A ChatllmError with the key scrubbed from both lines."""
        return ChatllmError(self.scrub(message), self.scrub(hint))

    def _json(self, response: httpx.Response) -> Any:
        if _content_type(response) == "text/html":
            raise self._html_error(response)
        data = self._read(response, MAX_REPLY_BYTES)
        try:
            return json.loads(data)
        except ValueError:
            raise self.error(f"{self.where} sent a malformed reply (not JSON) to {response.request.url.path}",
                             "is the url that of an OpenAI-compatible server such as llama-server?") from None

    def _html_error(self, response: httpx.Response) -> ChatllmError:
        title = _html_title(self._read(response, MAX_ERROR_BYTES, refuse=False))
        return self.error(f"{self.where} answered {response.request.url.path} with an HTML page"
                          f"{f' ({title!r})' if title else ''}, not an API reply",
                          "is the url that of an OpenAI-compatible server, ending in /v1? a proxy or sign-in page may be in the way")

    def _sse(self, response: httpx.Response, most: int | None = None) -> Iterator[dict]:
        count = 0
        try:
            for line in self._lines(response.iter_bytes()):
                if not line or line.startswith(":"):
                    continue  # a keep-alive comment or an event boundary: neither moves the deadline
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field in ("event", "id", "retry"):
                    continue
                if field not in ("data", "error"):
                    raise self.error(f"{self.where} sent a malformed event stream: {line[:80]!r} is not a server-sent event",
                                     "is the url that of an OpenAI-compatible server such as llama-server?")
                if value.strip() == "[DONE]":
                    return
                try:
                    event = json.loads(value)
                except ValueError:
                    raise self.error(f"{self.where} sent malformed JSON in its stream: {value[:80]!r}",
                                     "check the server's log; is it an OpenAI-compatible server?") from None
                if not isinstance(event, dict):
                    raise self.error(f"{self.where} sent an unexpected stream event: {value[:80]!r}", "check the server's log")
                if field == "error" or "error" in event:
                    err = event.get("error", event)
                    code = err.get("code") if isinstance(err, dict) else None
                    raise self.status_error(code if isinstance(code, int) else 500, event, value)
                count += 1
                if most is not None and count > most:
                    raise self.error(f"{self.where} streamed over {most} events for a reply of at most {most - SPARE_EVENTS} tokens",
                                     "the server ignores max_tokens: check it, or its version")
                yield event
                # the reader is back for more: the next event gets a whole timeout, however long the reader took
                self._clock.start(self.read_timeout)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, streaming=True) from None

    def _lines(self, chunks: Iterable[bytes]) -> Iterator[str]:
        """The stream's lines (LF, CRLF or CR ended), none longer than MAX_EVENT_BYTES."""
        buf = bytearray()
        for chunk in chunks:
            buf += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # a CRLF cut between chunks adds a blank line
            start = 0
            while (end := buf.find(b"\n", start)) >= 0:
                if end - start > MAX_EVENT_BYTES:
                    break
                yield buf[start:end].decode("utf-8", "replace")
                start = end + 1
            del buf[:start]
            if len(buf) > MAX_EVENT_BYTES:
                raise self.error(f"{self.where} sent a stream event over {MAX_EVENT_BYTES >> 20} MiB",
                                 "a token is a few bytes: check the server; is it an OpenAI-compatible server?")
        if buf:
            yield buf.decode("utf-8", "replace")

    def transport_error(self, exc: httpx.HTTPError, streaming: bool = False) -> ChatllmError:
        """The one-line error for a failure below HTTP: refused, DNS, TLS, timeouts, a cut connection."""
        err = self._transport_error(exc, streaming)
        return EngineUnavailable(err.message, err.hint)  # a batch stops on it: the next rows would fail alike

    def _transport_error(self, exc: httpx.HTTPError, streaming: bool) -> ChatllmError:
        text = " ".join(str(e) for e in _chain(exc)).lower()
        host = httpx.URL(self.api).host
        where = self.where
        if isinstance(exc, httpx.ConnectTimeout) or isinstance(exc, httpx.PoolTimeout):
            return self.error(f"no connection to {where} within {CONNECT_TIMEOUT:.0f} s", "check the host and port, and any firewall")
        if isinstance(exc, httpx.TimeoutException) and self._clock.got:  # bytes came, but too slowly to make a reply
            what = "sent no complete stream event for" if streaming else "did not complete its reply within"
            return self.error(f"{where} {what} {self.read_timeout:g} s",
                              "the server may be stuck or overloaded; check it, or raise `timeout` (seconds) in its models.toml entry")
        if isinstance(exc, httpx.TimeoutException):
            return self.error(f"{where} sent nothing for {self.read_timeout:g} s",
                              "the server may be stuck or overloaded; check it, or raise `timeout` (seconds) in its models.toml entry")
        if isinstance(exc, httpx.ConnectError):
            if "ssl" in text or "certificate" in text or "tls" in text:
                detail = "certificate verify failed" if "certificate" in text else "handshake failed"
                return self.error(f"TLS error talking to {where}: {detail}",
                                  "fix the server's certificate (or trust its CA), or set tls_verify = false in the entry "
                                  "for a server you trust")
            if any(s in text for s in ("name or service not known", "nodename nor servname", "name resolution",
                                       "getaddrinfo", "no address associated", "name does not resolve")):
                return self.error(f"cannot resolve the host {host!r} of {where}", "check the host name in the url")
            if "refused" in text or "errno 111" in text or "errno 61" in text:
                return self.error(f"cannot connect to {where}: connection refused",
                                  "is the server running? start it (llama-server -m MODEL.gguf --port PORT) or fix the url")
            return self.error(f"cannot connect to {where}: {_first_line(exc)}", "check the url and that the server is up")
        if streaming or isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return self.error(f"{where} closed the connection before the reply was complete",
                              "check the server's log: it may have crashed or restarted; run the command again")
        return self.error(f"HTTP error talking to {where}: {type(exc).__name__}: {_first_line(exc)}", "check the url and the server")

    def status_error(self, status: int, body: Any, text: str = "") -> ChatllmError:
        """The one-line error for an HTTP error status, with the server's own message where it gave one."""
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {"message": err if isinstance(err, str) else text}
        message = " ".join(str(err.get("message") or "").split())[:300]
        where = self.where
        if err.get("type") == "exceed_context_size_error" or "context size" in message or "context length" in message:
            n_prompt, n_ctx = err.get("n_prompt_tokens"), err.get("n_ctx")
            if isinstance(n_prompt, int) and isinstance(n_ctx, int):
                return ContextOverflowError(n_prompt, n_ctx)
        if status in (401, 403):
            var = self.key_env
            if var and not os.environ.get(var):
                return self.error(f"{where} wants an API key (HTTP {status}) and ${var} is not set", f"set {var} to the server's API key")
            if var:
                return self.error(f"{where} refused the API key in ${var} (HTTP {status})",
                                  f"set {var} to the key the server was started with (llama-server --api-key)")
            return self.error(f"{where} wants an API key (HTTP {status})",
                              'add api_key_env = "VAR" to its entry in models.toml and set VAR to the key')
        if status == 404:
            try:
                ids = self.model_ids()
            except ChatllmError:
                ids = []
            if "model" in message.lower() and ids:
                return self.error(f"{where}: {message or 'model not found'} (HTTP 404)", f"it serves: {', '.join(ids)}")
            return self.error(f"{where} has no such endpoint (HTTP 404: {message or 'not found'})",
                              "is the url that of an OpenAI-compatible server, ending in /v1?")
        if status == 400:
            return self.error(f"{where} refused the request: {message or 'HTTP 400'}", "check the request settings against the server")
        if status in (429, 503):
            return self.error(f"{where} is busy (HTTP {status}) after {self.retries + 1} tries{': ' + message if message else ''}",
                              "try again in a moment, or give the server more slots (llama-server -np N)")
        return self.error(f"{where} answered HTTP {status}{': ' + message if message else ''}", "check the server's log")


def _retry_wait(response: httpx.Response, attempt: int) -> float:
    """Retry-After (seconds or an HTTP date) when given, else exponential backoff (the caller refuses past MAX_WAIT)."""
    after, backoff = response.headers.get("retry-after"), 0.5 * 2**attempt
    if not after:
        return backoff
    try:
        wait = float(after)
    except ValueError:
        try:
            wait = parsedate_to_datetime(after).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return backoff
    return max(wait, 0.0) if math.isfinite(wait) else backoff


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _message(data: bytes) -> str:
    """': the server's message' of an error body, or ''."""
    body = _loads(data)
    err = body.get("error") if isinstance(body, dict) else None
    text = err.get("message") if isinstance(err, dict) else err
    return f": {' '.join(text.split())[:300]}" if isinstance(text, str) and text.strip() else ""


def _content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _html_title(data: bytes) -> str:
    found = re.search(rb"<title[^>]*>([^<]{1,200})</title>", data, re.IGNORECASE)
    return " ".join(found.group(1).decode("utf-8", "replace").split()) if found else ""


class _Clock(threading.local):
    """The deadline of the request this thread is reading (None between requests), and the bytes read since it was set."""

    deadline: float | None = None
    got = 0

    def start(self, seconds: float) -> None:
        """A new deadline, `seconds` from now."""
        self.deadline, self.got = time.monotonic() + seconds, 0


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read waits at most until the clock's deadline (on top of the read timeout)."""

    def __init__(self, inner: httpcore.NetworkStream, clock: _Clock):
        self._inner, self._clock = inner, clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read as the inner stream does, timing out (ReadTimeout) at the deadline too, however steadily bytes trickle."""
        deadline = self._clock.deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ReadTimeout("the deadline passed")
            timeout = left if timeout is None else min(timeout, left)
        data = self._inner.read(max_bytes, timeout)
        self._clock.got += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write as the inner stream does (its timeout bounds the whole write)."""
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        """Close the connection."""
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        """TLS over this connection, still under the deadline."""
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._clock)

    def get_extra_info(self, info: str) -> Any:
        """What the inner stream says (its socket, TLS details)."""
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, wrapped in _DeadlineStream."""

    def __init__(self, clock: _Clock):
        self._inner, self._clock = httpcore.SyncBackend(), clock

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable | None = None) -> httpcore.NetworkStream:
        """A TCP connection under the deadline."""
        return _DeadlineStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options), self._clock)

    def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retries use it)."""
        self._inner.sleep(seconds)


def _transport(verify: bool, clock: _Clock) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(verify=verify, trust_env=False)
    # httpx takes no network backend, httpcore's pool does: the same pool httpx would build, on the deadline backend.
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
                                              max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0,
                                              network_backend=_DeadlineBackend(clock))
    return transport


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
