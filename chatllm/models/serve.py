"""`chatllm serve`: an existing OpenAI-compatible server run on a verified local model, never a home-made one.

llama.cpp's `llama-server` ($CHATLLM_LLAMA_SERVER, else on PATH) is preferred: parallel slots, continuous batching,
and the token endpoints (/tokenize, /completion with n_probs) that chatllm's remote engine needs. Without it,
llama-cpp-python's own server (`pip install 'chatllm[server]'`) serves the same file, one request at a time.

The server runs in a session of its own, so a terminal's Ctrl-C reaches chatllm only, which then stops the server
with SIGTERM (SIGKILL after STOP_GRACE seconds) and waits for it: the port is free when chatllm exits.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from chatllm.errors import ChatllmError, UsageError

SERVER_ENV = "CHATLLM_LLAMA_SERVER"
LLAMA_SERVER = "llama-server"
PYTHON_SERVER = "llama-cpp-python"
PYTHON_SERVER_NEEDS = ("llama_cpp.server", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
READY_TIMEOUT = 300.0  # seconds for the server to load the model and answer
STOP_GRACE = 10.0
# llama-cpp-python's server has no switch for llama.cpp's AMX kernels, which crash on AMX CPUs (engines/llamacpp/devices.py): its
# process takes them out of the CPU buffer types before it loads the model, as chatllm's own engine does.
PYTHON_SERVER_NO_AMX = ("import runpy, sys, llama_cpp\nfrom chatllm.engines.llamacpp.cpu_buffers import drop_amx_buffer\n"
                        "drop_amx_buffer()\nrunpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n")
INSTALL_HINT = (f"put llama.cpp's llama-server on PATH (or set {SERVER_ENV}=/path/to/llama-server), "
                "or install llama-cpp-python's server: pip install 'chatllm[server]'")


@dataclass(frozen=True)
class ServerPlan:
    """How to run one server: its argv, the extra environment (an API key goes there, never into argv), where it answers."""

    kind: str  # LLAMA_SERVER or PYTHON_SERVER
    argv: list[str]
    host: str
    port: int
    alias: str  # the model id it announces
    health: str  # the path that answers 200 once the model is loaded
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The OpenAI api base a client on this machine uses."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    @property
    def ref(self) -> str:
        """The -m reference that points chatllm at this server."""
        return f"openai:{self.url}#{self.alias}"


def find_server(environ: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """The server to run and its command: $CHATLLM_LLAMA_SERVER, llama-server on PATH, else python -m llama_cpp.server."""
    env = os.environ if environ is None else environ
    explicit = env.get(SERVER_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ChatllmError(f"{SERVER_ENV}={explicit} is not an executable file", "point it at llama.cpp's llama-server binary")
        return LLAMA_SERVER, [str(path)]
    found = shutil.which(LLAMA_SERVER, path=env.get("PATH"))
    if found:
        return LLAMA_SERVER, [found]
    if all(_importable(name) for name in PYTHON_SERVER_NEEDS):
        return PYTHON_SERVER, [sys.executable, "-m", "llama_cpp.server"]
    raise ChatllmError("no OpenAI-compatible server to run: llama-server is not on PATH and llama-cpp-python's server "
                       "is not installed", INSTALL_HINT)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def plan_server(kind: str, command: list[str], model: Path, alias: str, *, host: str, port: int, parallel: int, ctx: int,
                threads: int, api_key: str | None = None, repack: bool = True, gpu: bool = False,
                warn: Callable[[str], None] = lambda message: None) -> ServerPlan:
    """The argv (and environment) that serves `model` as `alias` on host:port with `parallel` slots of `ctx` tokens."""
    if kind == LLAMA_SERVER:
        # -c is the whole KV cache, split evenly over the slots: each request gets ctx tokens.
        argv = [*command, "-m", str(model), "--host", host, "--port", str(port), "--alias", alias,
                "-np", str(parallel), "-c", str(ctx * parallel), "-t", str(threads)]
        if not gpu:
            argv += ["-fa", "off"]  # as the local engine: CPU flash attention slows down deep into a context
        if not repack:
            argv.append("--no-repack")  # the AMX repack kernels crash on this CPU (see engines/llamacpp/devices.py)
        return ServerPlan(kind, argv, host, port, alias, "/health", {"LLAMA_API_KEY": api_key} if api_key else {})
    if parallel > 1:
        warn(f"llama-cpp-python's server answers one request at a time: --parallel {parallel} has no effect "
             "(llama.cpp's llama-server has parallel slots)")
    if not repack and command[1:] == ["-m", "llama_cpp.server"]:
        command = [command[0], "-c", PYTHON_SERVER_NO_AMX]
    argv = [*command, "--model", str(model), "--model_alias", alias, "--host", host, "--port", str(port),
            "--n_ctx", str(ctx), "--n_threads", str(threads), "--verbose", "false"]
    return ServerPlan(kind, argv, host, port, alias, "/v1/models", {"API_KEY": api_key} if api_key else {})


def is_loopback(host: str) -> bool:
    """Whether host is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """A one-line error when host:port cannot be listened on (in use, or not an address of this machine)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be 1 to 65535, not {port}", "for example --port 8080")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UsageError(f"cannot resolve --host {host!r}", "give an address such as 127.0.0.1 or 0.0.0.0") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: a closing socket is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ChatllmError(f"port {port} on {host} is in use", "stop what listens there, or pick another with --port") from None
            raise ChatllmError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "check --host and --port") from None


class RunningServer:
    """One server process: start() it, wait_ready() for its health check, wait() until it ends, stop() it."""

    def __init__(self, plan: ServerPlan, log: Path | None):
        self.plan = plan
        self.log = log  # None: its output goes to our stderr (--verbose)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RunningServer":
        """Start the process in its own session, its output in the log file."""
        sink: IO | int | None = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            sink = open(self.log, "wb")
        try:
            self.proc = subprocess.Popen(self.plan.argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.plan.env}, start_new_session=True)
        except OSError as exc:
            raise ChatllmError(f"cannot start {self.plan.argv[0]}: {exc.strerror or exc}", INSTALL_HINT) from None
        finally:
            if sink is not None and not isinstance(sink, int):
                sink.close()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until the health path answers 200; a server that exits first is a one-line error."""
        import httpx

        assert self.proc is not None
        url = self.plan.url[: -len("/v1")] + self.plan.health
        headers = {"Authorization": f"Bearer {self.plan.env[k]}" for k in ("LLAMA_API_KEY", "API_KEY") if k in self.plan.env}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                code = self.proc.poll()
                if code is not None:
                    raise self.exit_error(code)
                try:
                    if client.get(url, headers=headers).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise ChatllmError(f"{self.plan.kind} did not answer within {timeout:.0f} s", self._see_log())

    def wait(self) -> int:
        """Block until the server exits on its own; its exit code."""
        assert self.proc is not None
        return self.proc.wait()

    def exit_error(self, code: int) -> ChatllmError:
        """The one-line error for a server that ended by itself, from its log's last words."""
        tail = self.log_tail()
        text = tail.lower()
        if "bind" in text or "address already in use" in text:
            return ChatllmError(f"port {self.plan.port} on {self.plan.host} is in use", "pick another with --port")
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        return ChatllmError(f"{self.plan.kind} exited with code {code}" + (f": {last.strip()[:200]}" if last else ""),
                            self._see_log())

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log ('' when it writes to our stderr)."""
        if self.log is None:
            return ""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _see_log(self) -> str:
        return f"see its log: {self.log}" if self.log is not None else "see its output above"

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is gone."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        while True:
            try:
                proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                proc.kill()
            except KeyboardInterrupt:  # a second Ctrl-C while it shuts down: stop waiting politely
                proc.kill()
