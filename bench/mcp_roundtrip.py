"""An MCP tool call's round trip through chatllm's MCP client (stdio and Streamable HTTP, real server processes
written with the `mcp` SDK: tests/mcp_servers.py) against calling the same Python function directly.

    python bench/mcp_roundtrip.py [--calls 200]

The three are measured in turns (stdio, HTTP, direct, again), so a busy machine weighs on each alike; prints
medians and p95 in milliseconds and the load average."""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatllm.tasks.tools.mcp_config import ServerConfig  # noqa: E402
from chatllm.tasks.tools.mcp_servers import McpRuntime, McpServer  # noqa: E402
from tests.mcp_servers import ORDERS  # noqa: E402

SERVERS = ROOT / "tests" / "mcp_servers.py"


def order_status(order_id: str) -> str:
    """The same function the servers run."""
    return ORDERS.get(order_id.strip().upper(), f"no order {order_id}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    port = free_port()
    http = subprocess.Popen([sys.executable, str(SERVERS), "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    runtime = McpRuntime(Path(tempfile.mkdtemp(prefix="mcp-bench-")))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    stdio = McpServer(ServerConfig(name="stdio", origin="bench", command=sys.executable, args=(str(SERVERS), "stdio")),
                      runtime)
    web = McpServer(ServerConfig(name="http", origin="bench", url=f"http://127.0.0.1:{port}/mcp"), runtime)
    try:
        assert stdio.wait(), stdio.reason
        assert web.wait(), web.reason
        times: dict[str, list[float]] = {"stdio": [], "http": [], "direct": []}
        for i in range(args.calls + 10):
            for name, call in (("stdio", lambda: stdio.call("order_status", {"order_id": "A-1042"}, 10).text),
                               ("http", lambda: web.call("order_status", {"order_id": "A-1042"}, 10).text),
                               ("direct", lambda: order_status("A-1042"))):
                began = time.perf_counter()
                text = call()
                took = time.perf_counter() - began
                assert "ZX-88123" in text, text
                if i >= 10:  # the first calls warm up
                    times[name].append(took * 1000)
        load = os.getloadavg()[0]
        print(f"calls each: {args.calls}   load average (1 min): {load:.2f}")
        for name, ms in times.items():
            ms.sort()
            p95 = ms[int(len(ms) * 0.95) - 1]
            print(f"{name:7s} median {statistics.median(ms):8.3f} ms   p95 {p95:8.3f} ms")
    finally:
        stdio.close()
        web.close()
        runtime.close()
        http.terminate()
        http.wait(10)


if __name__ == "__main__":
    main()
