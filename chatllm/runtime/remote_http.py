"""HTTP to an OpenAI-compatible server (llama.cpp's llama-server first): timeouts, bounded retries, SSE, one-line errors.

httpx, not the openai package: chatllm's tasks work on tokens (they tokenize pieces themselves, send token-list prompts
and score continuations), which takes llama-server's own endpoints (/tokenize, /detokenize, /props, /completion with
n_probs and logit_bias) next to the OpenAI ones. The openai client speaks only the latter, so it would be a large
dependency for half the job; a handful of JSON POSTs and one server-sent-events stream is all this needs.

The API key is read from its environment variable on every request, never kept on an object, and scrubbed from
every message this module builds (so from errors and --debug tracebacks too).
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any, Iterator

import httpx

from chatllm.errors import ChatllmError, ContextOverflowError, EngineUnavailable, redact

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
RETRIES = 3  # on 429 and 503 (a busy server, or one still loading its model)
MAX_WAIT = 20.0  # the longest pause between two tries, whatever Retry-After says


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
        self._client = httpx.Client(timeout=timeout, verify=tls_verify, follow_redirects=False, trust_env=False)

    # -- requests ---------------------------------------------------------------------------------

    def get(self, path: str, *, api: bool = False, missing_ok: bool = False) -> Any:
        """GET root+path (api+path with api=True) as JSON; None for a 404 when missing_ok."""
        with self._send("GET", path, None, api=api, stream=False, missing_ok=missing_ok) as response:
            return None if response is None else self._json(response)

    def post(self, path: str, body: dict, *, api: bool = False, missing_ok: bool = False) -> Any:
        """POST JSON to root+path (api+path with api=True); the JSON answer, or None for a 404 when missing_ok."""
        with self._send("POST", path, body, api=api, stream=False, missing_ok=missing_ok) as response:
            return None if response is None else self._json(response)

    @contextmanager
    def events(self, path: str, body: dict, *, api: bool = True) -> Iterator[Iterator[dict]]:
        """POST and read the answer as server-sent events: an iterator of JSON objects, ended by [DONE] or EOF."""
        with self._send("POST", path, body, api=api, stream=True) as response:
            assert response is not None  # only missing_ok gives None
            yield self._sse(response)

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
    def _send(self, method: str, path: str, body: dict | None, *, api: bool, stream: bool,
              missing_ok: bool = False) -> Iterator[httpx.Response | None]:
        url = (self.api if api else self.root) + path
        for attempt in range(self.retries + 1):
            request = self._client.build_request(method, url, json=body, headers=self._headers())
            try:
                response = self._client.send(request, stream=stream)
            except httpx.HTTPError as exc:
                raise self.transport_error(exc) from None
            try:
                if response.status_code in (429, 503) and attempt < self.retries:
                    time.sleep(_retry_wait(response, attempt))
                    continue
                if missing_ok and response.status_code in (404, 405, 501):
                    yield None
                    return
                if response.status_code >= 400:
                    if stream:
                        response.read()
                    raise self.status_error(response.status_code, _body_json(response), response.text)
                yield response
                return
            finally:
                response.close()

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
        try:
            return response.json()
        except ValueError:
            raise self.error(f"{self.shown} sent a malformed reply (not JSON) to {response.request.url.path}",
                             "is the url that of an OpenAI-compatible server such as llama-server?") from None

    def _sse(self, response: httpx.Response) -> Iterator[dict]:
        try:
            for line in response.iter_lines():
                if not line or line.startswith(":"):
                    continue  # a keep-alive comment or an event boundary
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field not in ("data", "error"):
                    continue
                if value.strip() == "[DONE]":
                    return
                try:
                    event = json.loads(value)
                except ValueError:
                    raise self.error(f"{self.shown} sent malformed JSON in its stream: {value[:80]!r}",
                                     "check the server's log; is it an OpenAI-compatible server?") from None
                if not isinstance(event, dict):
                    raise self.error(f"{self.shown} sent an unexpected stream event: {value[:80]!r}", "check the server's log")
                if field == "error" or "error" in event:
                    err = event.get("error", event)
                    code = err.get("code") if isinstance(err, dict) else None
                    raise self.status_error(code if isinstance(code, int) else 500, event, value)
                yield event
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, streaming=True) from None

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
    """Retry-After (seconds or an HTTP date) when given, else exponential backoff; at most MAX_WAIT."""
    after = response.headers.get("retry-after")
    wait = 0.5 * 2**attempt
    if after:
        try:
            wait = float(after)
        except ValueError:
            try:
                wait = parsedate_to_datetime(after).timestamp() - time.time()
            except (TypeError, ValueError):
                pass
    return min(max(wait, 0.0), MAX_WAIT)


def _body_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
