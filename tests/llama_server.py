"""A real llama.cpp `llama-server` for the remote-engine tests: built from the llama.cpp that llama-cpp-python vendors.

The binary is CHATLLM_LLAMA_SERVER when that names a file; else bench/llamacpp_ref.py builds the `llama-server`
target from the installed llama-cpp-python's sdist into its cache (CHATLLM_BENCH_CACHE, else ~/.cache/chatllm-bench),
once: later runs reuse it. `python tests/llama_server.py` builds it ahead of the tests and prints its path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALIAS = "smollm2-test"  # the model id the test server announces


def _llamacpp_ref():
    spec = importlib.util.spec_from_file_location("llamacpp_ref", REPO / "bench" / "llamacpp_ref.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_binary() -> Path:
    """The llama-server executable: $CHATLLM_LLAMA_SERVER, or the cached build (built first if missing)."""
    env = os.environ.get("CHATLLM_LLAMA_SERVER")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"CHATLLM_LLAMA_SERVER={env} is not a file")
        return path
    ref = _llamacpp_ref()
    return ref.ensure_built(jobs=os.cpu_count() or 2, targets=ref.SERVER_TARGETS)["llama-server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def repack_safe() -> bool:
    """Whether llama.cpp may repack weights on this CPU (its AMX kernels segfault: chatllm's engine avoids them too)."""
    from chatllm.engines.llamacpp.devices import extra_buffers_safe
    from chatllm.engines.llamacpp.llamacpp_engine import build_info

    return extra_buffers_safe(build_info()["system_info"])


class LlamaServer:
    """One llama-server process on 127.0.0.1: start() waits for /health, stop() ends it (and only it)."""

    def __init__(self, binary: Path, model: Path, *, api_key: str | None = None, ctx: int = 4096, slots: int = 2,
                 extra: list[str] | None = None):
        self.binary, self.model, self.api_key = binary, model, api_key
        self.extra = list(extra or [])  # more flags (--jinja, --reasoning-format ...)
        self.ctx, self.slots = ctx, slots
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The OpenAI api base, as a models.toml entry gives it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        """Where llama-server's own endpoints are."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> "LlamaServer":
        """Start the process and wait until /health answers 200."""
        args = [str(self.binary), "-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
                "-np", str(self.slots), "-c", str(self.ctx), "--alias", ALIAS, "-fa", "off"]
        if not repack_safe():
            args.append("--no-repack")
        if self.api_key:
            args += ["--api-key", self.api_key]
        args += self.extra
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.root + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server did not become healthy within {timeout:.0f} s: {self.log_tail()}")

    def get(self, path: str) -> dict:
        """GET a JSON endpoint of the server (with its key)."""
        req = urllib.request.Request(self.root + path)
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def log_tail(self, n: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """End the process: SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(server_binary())
