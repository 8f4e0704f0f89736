"""MCP servers as tool sources, through the official `mcp` SDK (imported only here, and only once a server starts).

The SDK is asynchronous; chatllm is not. All servers share one event loop in a background thread: each server is a
task that holds its `mcp.Client` open (stdio: the SDK starts the command with only an allowlisted environment plus
the server's own `env`; HTTP: Streamable HTTP with the configured headers) until chatllm closes it, and a call is a
coroutine handed to that loop, waited for with the call's timeout. A stdio server's stderr goes to
`logs/mcp-NAME.log` in the state dir, with every env and header value scrubbed; so does the SDK's own logging.

Whatever a server does wrong ends as a one-line warning (it does not start: the command is missing, it exits at
once, it never answers the handshake, an HTTP server refuses or answers 401) or as an error result of the call (it
crashes mid-call, hangs past the timeout, answers with a JSON-RPC error); it never raises into the chat."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from chatllm.engines.chat_formats.tool_calls import ToolSpec
from chatllm.tasks.tools.mcp_config import ServerConfig, scrub, secrets_of
from chatllm.tasks.tools.sources import CallFailed, ToolResult, offered_spec

START_TIMEOUT = 30.0  # seconds a server has to start and list its tools
STOP_TIMEOUT = 5.0
MODE = "auto"  # the SDK's: the 2026 discovery, falling back to the initialize handshake of older servers
_LOG_TAIL = 5  # lines of a server's stderr kept for the reason it failed


class McpRuntime:
    """The one event loop every MCP server of a run lives on, in a daemon thread."""

    def __init__(self, log_dir: Path, secrets: list[str] | None = None):
        self.log_dir = Path(log_dir)
        self.secrets: list[str] = list(secrets or [])  # shared by reference with the scrubbers: add_secrets extends it
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chatllm-mcp", daemon=True)
        self._thread.start()
        self._quiet_sdk_logging()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def add_secrets(self, configs: list[ServerConfig]) -> None:
        """Scrub these servers' env and header values from everything a server sends back or logs."""
        fresh = [v for v in secrets_of(configs) if v not in self.secrets]
        self.secrets.extend(fresh)
        self.secrets.sort(key=len, reverse=True)  # a secret that holds another is replaced whole

    def submit(self, coro: Any) -> concurrent.futures.Future:
        """Run a coroutine on the loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _quiet_sdk_logging(self) -> None:
        """The SDK logs faults with tracebacks; they go to logs/mcp.log (scrubbed), never to the terminal."""
        logger = logging.getLogger("mcp")
        if any(isinstance(h, _ScrubbedFileHandler) for h in logger.handlers):
            return
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = _ScrubbedFileHandler(self.log_dir / "mcp.log", self.secrets)
        except OSError:
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def close(self) -> None:
        """Stop the loop (the servers are closed first by their owners)."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=STOP_TIMEOUT)


class _ScrubbedFileHandler(logging.FileHandler):
    def __init__(self, path: Path, secrets: list[str]):
        super().__init__(path, encoding="utf-8", delay=True)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self.secrets)


class McpServer:
    """One configured MCP server: started on demand, its tools listed once, calls run on the shared loop."""

    kind = "mcp"

    def __init__(self, config: ServerConfig, runtime: McpRuntime, *, start_timeout: float = START_TIMEOUT):
        self.config = config
        self.name = config.name
        self.runtime = runtime
        self.start_timeout = start_timeout
        self.state = "not started"  # not started | starting | running | failed | stopped
        self.reason = ""  # why it failed
        self.notes: list[str] = []  # faults seen while it runs (garbage on stdout...), each told once
        self._specs: list[ToolSpec] = []
        self._schemas: dict[str, dict] = {}  # each tool's full input schema (the offered one may be cut)
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._done: concurrent.futures.Future | None = None
        self._ready = threading.Event()
        self._stderr: _StderrLog | None = None
        self._http_status: tuple[int, str] | None = None  # the last 4xx an HTTP server answered, with its challenge

    # -- the ToolSource interface ---------------------------------------------------------------------------------------

    def tools(self) -> list[ToolSpec]:
        """The server's tools (none until it runs)."""
        return list(self._specs) if self.state == "running" else []

    def full_schema(self, tool: str) -> dict | None:
        """The tool's input schema as the server gave it (arguments are checked against all of it)."""
        return self._schemas.get(tool)

    def trusted(self, tool: str) -> bool:
        """`"trusted": true` in the config, or the tool in its "trusted" list."""
        return self.config.trusted or tool in self.config.trusted_tools

    def status(self) -> str:
        """running (N tools), failed: why, not started."""
        if self.state == "running":
            return f"running, {len(self._specs)} tools ({self.config.transport})"
        if self.state == "failed":
            return f"failed: {self.reason}"
        return self.state

    def call(self, name: str, arguments: dict, timeout: float) -> ToolResult:
        """Call one tool; CallFailed when the server is gone, errs at the protocol level, or does not answer in time."""
        if self.state != "running" or self._client is None:
            raise CallFailed(f"the MCP server {self.name} is not running ({self.status()})", "unavailable")
        if self.config.timeout is not None:
            timeout = self.config.timeout
        future = self.runtime.submit(self._call(name, arguments, timeout))
        try:
            result = future.result(timeout + 2.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise CallFailed(f"{self.name}: {name} gave no result within {timeout:g} s", "timeout")
        except KeyboardInterrupt:
            future.cancel()  # the SDK sends the server a cancellation; the server itself keeps running
            raise
        except CallFailed:
            raise
        except BaseException as exc:
            raise self._call_failure(name, exc, timeout)
        return result

    def close(self) -> None:
        """Ask the server to stop (stdio: its stdin closed, then TERM and KILL if it lingers) and wait for it."""
        if self._stop is not None and self._done is not None and not self._done.done():
            self.runtime.loop.call_soon_threadsafe(self._stop.set)
            try:
                self._done.result(STOP_TIMEOUT + 6.0)
            except BaseException:  # closing never raises: the process is the SDK's to reap
                pass
        if self.state == "running":
            self.state = "stopped"
        if self._stderr is not None:
            self._stderr.close()

    # -- starting ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server in the background (see wait)."""
        if self.state != "not started":
            return
        self.state = "starting"
        self._done = self.runtime.submit(self._serve())

    def wait(self) -> bool:
        """Wait until the server runs or failed; True when it runs."""
        if self.state == "not started":
            self.start()
        if not self._ready.wait(self.start_timeout + 1.0) and self.state == "starting":
            self._fail(f"{self.config.url} did not answer within {self.start_timeout:g} s" if self.config.url
                       else f"no answer to the MCP handshake within {self.start_timeout:g} s")
            if self._done is not None:
                self._done.cancel()
        return self.state == "running"

    async def _serve(self) -> None:
        from mcp import Client, StdioServerParameters, stdio_client

        self._stop = asyncio.Event()
        try:
            if self.config.url:
                transport, http_client = self._http_transport()
                async with http_client:
                    async with Client(transport, message_handler=self._on_message, mode=MODE) as client:
                        await self._run(client)
            else:
                self._stderr = _StderrLog(self.runtime.log_dir / f"mcp-{self.name}.log", self.runtime.secrets, self.config)
                params = StdioServerParameters(command=self.config.command or "", args=list(self.config.args),
                                               env=dict(self.config.env) or None, cwd=self.config.cwd)
                transport = stdio_client(params, errlog=self._stderr.writer)
                async with Client(transport, message_handler=self._on_message, mode=MODE) as client:
                    self._stderr.started()
                    await self._run(client)
        except BaseException as exc:  # every way a start or a session can end badly becomes a reason
            if self.state in ("starting", "running"):
                self._fail(self._start_failure(exc))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self._client = None
            if self._stderr is not None:
                self._stderr.started()  # our end of the pipe closes: the reader sees the end once the child's does
            self._ready.set()

    async def _run(self, client: Any) -> None:
        await asyncio.wait_for(self._list(client), self.start_timeout)
        self._client = client
        self.state = "running"
        self._ready.set()
        assert self._stop is not None
        await self._stop.wait()

    async def _list(self, client: Any) -> None:
        cursor = None
        for _ in range(100):  # pages; a server that pages forever is cut off
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                schema = tool.input_schema if isinstance(tool.input_schema, dict) else {"type": "object"}
                self._schemas[tool.name] = schema
                self._specs.append(offered_spec(tool.name, tool.description or tool.title or "", schema))
            cursor = page.next_cursor
            if not cursor:
                break

    def _http_transport(self) -> tuple[Any, Any]:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        async def seen(response: Any) -> None:
            if response.status_code in (401, 403, 407):
                self._http_status = (response.status_code, response.headers.get("www-authenticate", ""))

        import httpx2

        client = create_mcp_http_client(headers=dict(self.config.headers) or None,
                                        timeout=httpx2.Timeout(min(30.0, self.start_timeout), read=300.0))
        client.event_hooks["response"].append(seen)
        return streamable_http_client(self.config.url or "", http_client=client), client

    async def _on_message(self, message: Any) -> None:
        """Faults the transport reports (a line on stdout that is not JSON-RPC): told once, then ignored."""
        if isinstance(message, Exception):
            note = f"the MCP server {self.name} wrote something that is not JSON-RPC on stdout (ignored; it should log to stderr)"
            if note not in self.notes:
                self.notes.append(note)

    async def _call(self, name: str, arguments: dict, timeout: float) -> ToolResult:
        from datetime import timedelta

        client = self._client
        if client is None:
            raise CallFailed(f"the MCP server {self.name} is not running ({self.status()})", "unavailable")
        try:
            result = await client.call_tool(name, arguments, read_timeout_seconds=timeout)
        except TypeError:  # an SDK that takes the timeout as a timedelta
            result = await client.call_tool(name, arguments, read_timeout_seconds=timedelta(seconds=timeout))
        return ToolResult(scrub(_content_text(result), self.runtime.secrets), error=bool(getattr(result, "is_error", False)))

    # -- what went wrong --------------------------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.reason = scrub(reason, self.runtime.secrets)
        self._ready.set()

    def _start_failure(self, exc: BaseException) -> str:
        """One line: why the server did not start (or stopped)."""
        root = _root(exc)
        if isinstance(root, FileNotFoundError) and not self.config.url:
            return f"the command {self.config.command!r} was not found (install it, or give its full path in {_file(self.config)})"
        if isinstance(root, PermissionError) and not self.config.url:
            return f"the command {self.config.command!r} cannot be run (permission denied)"
        if self.config.url:
            return self._http_failure(root)
        tail = self._stderr.tail(wait=1.0) if self._stderr is not None else ""
        log = f" (its log: {self._stderr.path})" if self._stderr is not None else ""
        if isinstance(root, (asyncio.TimeoutError, TimeoutError)):
            return f"no answer to the MCP handshake within {self.start_timeout:g} s{log}"
        said = f": {tail}" if tail else ""
        return f"it exited before answering{said}{log}" if _closed(root) else f"{_describe(root)}{log}"

    def _http_failure(self, root: BaseException) -> str:
        url = self.config.url
        if self._http_status is not None:
            code, challenge = self._http_status
            scheme = challenge.split()[0] if challenge.split() else "Bearer"
            header = "Proxy-Authorization" if code == 407 else "Authorization"
            what = "401 Unauthorized" if code == 401 else "403 Forbidden" if code == 403 else "407 Proxy Authentication Required"
            return (f"{url} answered {what}: set the {header} header in {_file(self.config)}, e.g. "
                    f'"headers": {{"{header}": "{scheme} ${{YOUR_TOKEN}}"}}')
        name = type(root).__name__
        if "ConnectError" in name or isinstance(root, ConnectionRefusedError):
            return f"{url} refused the connection (is the server running?)"
        if "Timeout" in name or isinstance(root, (asyncio.TimeoutError, TimeoutError)):
            return f"{url} did not answer within {self.start_timeout:g} s"
        return f"{url}: {_describe(root)}"

    def _call_failure(self, name: str, exc: BaseException, timeout: float) -> CallFailed:
        root = _root(exc)
        code = getattr(getattr(root, "error", None), "code", None)
        if code is None:
            code = getattr(root, "code", None)
        if isinstance(root, (asyncio.TimeoutError, TimeoutError)) or code == -32001:
            return CallFailed(f"{self.name}: {name} gave no result within {timeout:g} s", "timeout")
        if _closed(root) or code == -32000:
            self._fail(f"it stopped during a call to {name}")
            log = f" (its log: {self._stderr.path})" if self._stderr is not None else ""
            return CallFailed(f"the MCP server {self.name} stopped during the call to {name}{log}", "error")
        message = scrub(str(getattr(root, "message", None) or root) or type(root).__name__, self.runtime.secrets)
        if code is not None:
            return CallFailed(f"{self.name} answered {name} with an error ({code}): {message[:500]}", "error")
        return CallFailed(f"{self.name}: {name} failed: {_describe(root)}", "error")


def _file(config: ServerConfig) -> str:
    return Path(config.origin).name if config.origin else "mcp.json"


def _root(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio wraps a task's failure in one), else the exception itself."""
    while getattr(exc, "exceptions", None):  # BaseExceptionGroup (builtin from 3.11, the backport before)
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def _closed(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "connection closed" in text or "closedresource" in text or "endofstream" in text or "brokenresource" in text


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _content_text(result: Any) -> str:
    """A CallToolResult as text: its text blocks joined; other blocks named; structured content as JSON."""
    import json

    parts = []
    for block in getattr(result, "content", None) or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            inner = getattr(block, "resource", None)
            parts.append(getattr(inner, "text", None) or f"[resource {getattr(inner, 'uri', '')}]")
        elif kind == "resource_link":
            parts.append(f"[resource {getattr(block, 'uri', '')}]")
        else:
            parts.append(f"[{kind or 'non-text'} content left out]")
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


class _StderrLog:
    """A stdio server's stderr: through a pipe, each line scrubbed of secrets, appended to its log file; the last few
    lines kept to say why it failed."""

    def __init__(self, path: Path, secrets: list[str], config: ServerConfig):
        self.path = path
        self.secrets = secrets
        self._lines: list[str] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(path, "a", encoding="utf-8", errors="replace")
        self._log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} started: {scrub(config.where(), secrets)}\n")
        self._log.flush()
        read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w")  # given to the SDK as the child's stderr
        self._reader = threading.Thread(target=self._pump, args=(os.fdopen(read_fd, "rb"),), daemon=True,
                                        name="chatllm-mcp-stderr")
        self._reader.start()

    def fileno(self) -> int:
        """The pipe's write end (what the child's stderr becomes)."""
        return self.writer.fileno()

    def _pump(self, stream: Any) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = scrub(raw.decode("utf-8", "replace").rstrip("\n"), self.secrets)
                self._lines = (self._lines + [line])[-_LOG_TAIL:]
                try:
                    self._log.write(line + "\n")
                    self._log.flush()
                except (OSError, ValueError):
                    pass

    def started(self) -> None:
        """The child holds its own copy of the pipe now: ours is closed, so the reader ends when the child does."""
        if not self.writer.closed:
            self.writer.close()

    def tail(self, wait: float = 0.0) -> str:
        """The last line the server wrote on stderr (after waiting up to `wait` s for the rest)."""
        self.started()
        self._reader.join(wait)
        lines = [line.strip() for line in self._lines if line.strip()]
        return lines[-1][:300] if lines else ""

    def close(self) -> None:
        """Stop writing the log."""
        self.started()
        self._reader.join(1.0)
        try:
            self._log.close()
        except OSError:
            pass


def start_all(servers: list[McpServer], warn: Callable[[str], None]) -> None:
    """Start the servers side by side, wait for each, and warn (one line each) about those that failed."""
    for server in servers:
        server.start()
    for server in servers:
        if not server.wait():
            warn(f"MCP server {server.name} is not available: {server.reason}")
