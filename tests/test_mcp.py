"""MCP servers for real: servers written with the `mcp` SDK (tests/mcp_servers.py) run as processes over stdio and
over Streamable HTTP on 127.0.0.1, and misbehaving ones for every fault. Each fault ends as a one-line warning or an
error result, never a traceback and never a hang; env values never show."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chatllm.tasks.tools.mcp_config import ServerConfig
from chatllm.tasks.tools.mcp_servers import McpRuntime, McpServer
from chatllm.tasks.tools.sources import CallFailed
from tests.conftest import run_chatllm

SERVERS = Path(__file__).parent / "mcp_servers.py"
SECRET = "sk-shop-0123456789abcdef"
pytestmark = pytest.mark.slow  # real server processes: a second or two each


def stdio(name: str, *args: str, **kw) -> ServerConfig:
    return ServerConfig(name=name, origin="test.json", command=kw.pop("command", sys.executable),
                        args=tuple(kw.pop("argv", [str(SERVERS), *args])), **kw)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    rt = McpRuntime(tmp_path_factory.mktemp("logs"))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def shop(runtime):
    config = stdio("shop", "stdio", env={"SHOP_API_KEY": SECRET})
    runtime.add_secrets([config])
    server = McpServer(config, runtime)
    assert server.wait(), server.reason
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "the server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the HTTP server did not start")


@pytest.fixture(scope="module")
def http_server():
    """The good server over Streamable HTTP; requests without the bearer token get 401."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVERS), "http", str(port), "tok-123456789"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_port(port, proc)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


# -- a good server ----------------------------------------------------------------------------------------------------


def test_a_stdio_server_lists_its_tools_and_answers_calls(shop):
    names = [t.name for t in shop.tools()]
    assert {"order_status", "find_order", "add"} <= set(names)
    assert shop.call("order_status", {"order_id": "A-1042"}, 10).text == "shipped on 3 March, tracking ZX-88123"
    assert shop.call("add", {"a": 2, "b": 40}, 10).text == "42"
    assert shop.status().startswith("running")


def test_a_stdio_server_gets_only_an_allowlisted_environment_and_its_own_env(shop, monkeypatch):
    got = set(shop.call("environment", {}, 10).text.split())
    assert "SHOP_API_KEY" in got and got <= {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "SHOP_API_KEY", "LC_CTYPE"}
    assert "CHATLLM_HOME" not in got and "PYTEST_CURRENT_TEST" not in got


def test_env_values_never_come_back_from_a_server_nor_reach_its_log(shop, runtime):
    assert shop.call("secret", {}, 10).text == "my key is ***"
    log = (runtime.log_dir / "mcp-shop.log").read_text(encoding="utf-8")
    assert "SHOP_API_KEY=***" in log and SECRET not in log


def test_a_streamable_http_server_with_its_header(http_server, runtime):
    config = ServerConfig(name="web", origin="test.json", url=http_server, headers={"Authorization": "Bearer tok-123456789"})
    runtime.add_secrets([config])
    server = McpServer(config, runtime)
    try:
        assert server.wait(), server.reason
        assert server.call("order_status", {"order_id": "B-2201"}, 10).text == "waiting for payment"
    finally:
        server.close()


# -- faults: each a one-line reason or an error result ----------------------------------------------------------------


@pytest.mark.parametrize("config,reason", [
    (stdio("gone", command="/nonexistent/mcp-server"), "the command '/nonexistent/mcp-server' was not found"),
    (stdio("quits", "exit"), "it exited before answering: fatal: cannot open the database /nonexistent/shop.db"),
])
def test_a_server_that_cannot_start_is_a_one_line_reason(runtime, config, reason):
    server = McpServer(config, runtime)
    began = time.time()
    assert not server.wait()
    assert reason in server.reason and "\n" not in server.reason and time.time() - began < 20
    with pytest.raises(CallFailed) as caught:
        server.call("order_status", {}, 5)
    assert caught.value.status == "unavailable"


def test_a_server_that_never_answers_the_handshake_times_out(runtime):
    server = McpServer(stdio("mute", "silent"), runtime, start_timeout=2)
    began = time.time()
    assert not server.wait()
    assert "no answer to the MCP handshake within 2 s" in server.reason and time.time() - began < 10
    server.close()


def test_garbage_on_a_servers_stdout_is_told_once_and_the_calls_still_work(runtime):
    server = McpServer(stdio("noisy", "garbage"), runtime)
    try:
        assert server.wait(), server.reason
        assert server.call("order_status", {"order_id": "C-3300"}, 10).text == "delivered"
        assert server.notes and "not JSON-RPC" in server.notes[0]
    finally:
        server.close()


@pytest.mark.parametrize("tool,status,message", [
    ("rpc_error", "error", "shop answered rpc_error with an error (-32050): the backend is down"),
    ("hang", "timeout", "hang gave no result within 1.5 s"),
])
def test_a_json_rpc_error_and_a_hang_are_error_results(shop, tool, status, message):
    with pytest.raises(CallFailed) as caught:
        shop.call(tool, {}, 1.5)
    assert caught.value.status == status and message in caught.value.message
    assert shop.call("add", {"a": 1, "b": 1}, 10).text == "2"  # the server goes on


def test_a_tools_own_error_is_an_error_result(shop):
    result = shop.call("fail", {}, 10)
    assert result.error and "fail" in result.text


def test_a_ten_megabyte_result_arrives_whole_for_the_loop_to_cut(shop):
    result = shop.call("huge", {}, 120)
    assert len(result.text) == 10 * 1024 * 1024 and not result.error


def test_a_server_that_crashes_mid_call_is_an_error_result_then_not_running(runtime):
    server = McpServer(stdio("fragile", "stdio"), runtime)
    assert server.wait(), server.reason
    with pytest.raises(CallFailed) as caught:
        server.call("crash", {}, 10)
    assert "stopped during the call to crash" in caught.value.message and "mcp-fragile.log" in caught.value.message
    assert server.state == "failed"
    with pytest.raises(CallFailed) as caught:
        server.call("add", {"a": 1, "b": 2}, 5)
    assert caught.value.status == "unavailable"
    server.close()


def test_an_http_server_that_refuses_answers_401_or_never_answers(runtime, http_server):
    refused = McpServer(ServerConfig(name="closed", origin="mcp.json", url=f"http://127.0.0.1:{free_port()}/mcp"), runtime)
    assert not refused.wait() and "refused the connection" in refused.reason
    locked = McpServer(ServerConfig(name="locked", origin="mcp.json", url=http_server), runtime)
    assert not locked.wait()
    assert "answered 401 Unauthorized: set the Authorization header in mcp.json" in locked.reason
    assert '"headers": {"Authorization": "Bearer ${YOUR_TOKEN}"}' in locked.reason
    with socket.socket() as listener:  # accepts, reads, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        held: list = []
        threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
        silent = McpServer(ServerConfig(name="slow", origin="mcp.json", url=f"http://127.0.0.1:{port}/mcp"), runtime,
                           start_timeout=2)
        began = time.time()
        assert not silent.wait() and "did not answer within 2 s" in silent.reason and time.time() - began < 10
        silent.close()


# -- through the command line -----------------------------------------------------------------------------------------


def write_config(path: Path, servers: dict) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path


@pytest.mark.model
def test_a_failed_server_is_one_warning_and_the_answer_still_comes(chatllm, tmp_path):
    config = write_config(tmp_path / "servers.json", {"broken": {"command": sys.executable, "args": [str(SERVERS), "exit"]}})
    r = chatllm("ask", "-n", "8", "--mcp", str(config), "Say hi")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert any("MCP server broken is not available: it exited before answering" in w for w in warnings)
    assert "Traceback" not in r.stderr


@pytest.mark.model
def test_a_broken_mcp_json_names_the_file_and_line_and_is_never_rewritten(chatllm, cli_env):
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    text = '{"mcpServers": {\n  "shop": {"command": "python",,}\n}}\n'
    (home / "mcp.json").write_text(text, encoding="utf-8")
    plain = chatllm("ask", "-n", "4", "hi")  # tools are never offered unless asked for: the file is not even read
    assert plain.returncode == 0, plain.stderr
    r = chatllm("ask", "--all-tools", "hi")
    assert r.returncode == 1 and f"{home / 'mcp.json'}:2:" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr and (home / "mcp.json").read_text(encoding="utf-8") == text


@pytest.mark.model
def test_the_config_dirs_servers_start_only_when_named(chatllm, cli_env, tmp_path):
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    write_config(home / "mcp.json", {"shop": {"command": sys.executable, "args": [str(SERVERS), "stdio"], "trusted": True}})
    log = home / "logs" / "mcp-shop.log"
    chatllm("ask", "-n", "4", "hi")
    assert not log.exists()  # not asked for: never started
    r = run_chatllm(["ask", "-n", "60", "-T", "add", "--tool-choice", "add", "--json", "What is 2 plus 40?"], cli_env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert log.exists() and [c["name"] for c in data["tool_calls"]][:1] == ["add"]  # trusted: no --yes needed
    assert data["tool_calls"][0]["status"] in ("ok", "error")
