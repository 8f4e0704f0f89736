"""`chatllm serve` as a real process on a free port (llama-server built from the vendored llama.cpp, SmolLM2), used by a
second chatllm process through -m openai:URL#ALIAS, stopped with SIGTERM; and what it refuses, in one line each."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatllm.models import serve
from tests.conftest import run_chatllm
from tests.llama_server import free_port, server_binary

ALIAS = "SmolLM2-135M-Instruct.Q4_1"  # a .gguf path is served under its file name's stem


@pytest.fixture(scope="module")
def binary() -> Path:
    return server_binary()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not hold a port for a server
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.model
@pytest.mark.slow
def test_serve_answers_a_second_chatllm_and_stops_on_sigterm(cli_env, binary, smollm_path):
    port = free_port()
    env = dict(cli_env, CHATLLM_LLAMA_SERVER=str(binary))
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "serve", "-m", str(smollm_path), "--port", str(port),
                             "--parallel", "2", "--ctx", "1024"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # printed only once the server answers /health
        ref = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/v1", (url, proc.poll())
        assert ref == f"-m openai:{url}#{ALIAS}"
        r = run_chatllm(["ask", *ref.split(" ", 1), "-t", "0", "-n", "12", "What colour is the sky on a clear day?"], cli_env,
                        timeout=60)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
        r = run_chatllm(["sentiment", "--lines", "--parallel", "2", "-m", ref.split(" ", 1)[1]], cli_env,
                        input="I loved it, a wonderful film.\nDreadful, boring and far too long.\n", timeout=60)
        assert r.returncode == 0, r.stderr
        assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["positive", "negative"]
        assert not port_is_free(port)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "serving" in err, err
    assert port_is_free(port)  # the server went with it
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_port_in_use_is_one_line(cli_env, binary, smollm_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        start = time.monotonic()
        r = run_chatllm(["serve", "-m", str(smollm_path), "--port", str(port)], dict(cli_env, CHATLLM_LLAMA_SERVER=str(binary)),
                        timeout=30)
    assert r.returncode == 1 and time.monotonic() - start < 15
    assert r.stderr.splitlines() == [f"error: port {port} on 127.0.0.1 is in use",
                                     "hint: stop what listens there, or pick another with --port"], r.stderr


# Installed at startup from PYTHONPATH: a Python where llama-cpp-python's server and its extras cannot be found, as on a
# machine without `pip install 'chatllm[server]'` (the test extra installs them here).
HIDE_PYTHON_SERVER = f"""import sys
class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name in {serve.PYTHON_SERVER_NEEDS!r}:
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, _Hidden())
"""


def test_no_server_to_run_names_both_ways_to_get_one(cli_env, smollm_path, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_PYTHON_SERVER)
    env = dict(cli_env, PATH=str(tmp_path), PYTHONPATH=str(hide))  # no llama-server on PATH, no python server either
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; u.find_spec('uvicorn')"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # the hiding works
    r = run_chatllm(["serve", "-m", str(smollm_path), "--port", str(free_port())], env, timeout=30)
    assert r.returncode == 1, r.stderr
    assert "no OpenAI-compatible server to run" in r.stderr and "pip install 'chatllm[server]'" in r.stderr
    r = run_chatllm(["serve", "-m", str(smollm_path)], dict(env, CHATLLM_LLAMA_SERVER=str(tmp_path / "nope")), timeout=30)
    assert r.returncode == 1 and "is not an executable file" in r.stderr, r.stderr


@pytest.mark.model
@pytest.mark.slow
def test_serve_runs_llama_cpp_pythons_server_without_llama_server_on_path(cli_env, smollm_path, tmp_path):
    port = free_port()
    env = dict(cli_env, PATH=str(tmp_path) + os.pathsep + os.path.dirname(sys.executable))  # python, and no llama-server
    env.pop("CHATLLM_LLAMA_SERVER", None)
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "serve", "-m", str(smollm_path), "--port", str(port),
                             "--ctx", "1024"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        ref = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/v1", (url, proc.poll())
        assert ref == f"-m openai:{url}#{ALIAS}"
        # That server has no llama-server endpoints: the client takes the chat path, and the model really answers.
        r = run_chatllm(["generate", *ref.split(" ", 1), "-t", "0", "-n", "4", "--json", "The capital of France is"], cli_env,
                        timeout=60)
        assert r.returncode == 0 and "Paris" in json.loads(r.stdout)["text"], r.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and "llama-cpp-python" in err, err
    assert "Traceback" not in err, err
    assert port_is_free(port)


def test_plans_for_both_servers_keep_the_key_out_of_argv(tmp_path):
    model = tmp_path / "m.gguf"
    plan = serve.plan_server(serve.LLAMA_SERVER, ["/bin/llama-server"], model, "m", host="127.0.0.1", port=9000, parallel=4,
                             ctx=2048, threads=2, api_key="k3y-abcdef", repack=False)
    assert plan.argv[plan.argv.index("-np") + 1] == "4" and plan.argv[plan.argv.index("-c") + 1] == "8192"
    assert "--no-repack" in plan.argv and plan.argv[plan.argv.index("-fa") + 1] == "off"
    assert "k3y-abcdef" not in " ".join(plan.argv) and plan.env == {"LLAMA_API_KEY": "k3y-abcdef"}
    assert plan.ref == "openai:http://127.0.0.1:9000/v1#m" and plan.health == "/health"
    notes: list[str] = []
    py = serve.plan_server(serve.PYTHON_SERVER, [sys.executable, "-m", "llama_cpp.server"], model, "m", host="0.0.0.0",
                           port=9001, parallel=2, ctx=2048, threads=2, warn=notes.append)
    assert py.argv[py.argv.index("--n_ctx") + 1] == "2048" and py.argv[py.argv.index("--model_alias") + 1] == "m"
    assert py.url == "http://127.0.0.1:9001/v1" and notes and "one request at a time" in notes[0]
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1") and serve.is_loopback("localhost")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.168.1.5")


def test_find_server_prefers_the_explicit_binary_then_path(tmp_path):
    exe = tmp_path / "llama-server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert serve.find_server({"CHATLLM_LLAMA_SERVER": str(exe), "PATH": ""}) == (serve.LLAMA_SERVER, [str(exe)])
    assert serve.find_server({"PATH": str(tmp_path)}) == (serve.LLAMA_SERVER, [str(exe)])
    assert os.access(exe, os.X_OK)
