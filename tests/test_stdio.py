"""Unbuffered standard output keeps every byte when a signal cuts a write to a lagging terminal short."""

from __future__ import annotations

import os
import pty
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r'''
import signal, sys
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "whole":
    from chatllm.stdio import keep_whole_writes
    keep_whole_writes()
signal.signal(signal.SIGINT, lambda *a: None)  # a press that stops nothing, as while a reply is drawn
sys.stdout.write("x" * 200_000 + "\n")
sys.stdout.write("中文" * 1000 + "\n")
sys.stderr.write("y" * 100_000 + "\n")
'''


def shown(mode: str) -> bytes:
    """What a pty shows of the child's output when three SIGINTs arrive while nothing reads it."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        os.execve(sys.executable, [sys.executable, "-c", CHILD, str(ROOT), mode], env)
    time.sleep(1.0)  # the child fills the pty and blocks in write()
    for _ in range(3):
        os.kill(pid, signal.SIGINT)
        time.sleep(0.05)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return data


def test_a_signal_during_a_blocked_unbuffered_write_loses_nothing():
    data = shown("whole")
    assert data.count(b"x") == 200_000 and data.count(b"y") == 100_000
    assert data.decode("utf-8").count("中文") == 1000


def test_without_it_the_rest_of_the_cut_write_is_gone():
    # The defect the fix is for, on this Python (TextIOWrapper over a raw FileIO drops what a partial write left):
    # it shows the test above exercises the cut writes. Should a Python release fix it, this test says so.
    assert shown("plain").count(b"x") < 200_000


def test_buffered_streams_are_left_alone(monkeypatch):
    import io

    from chatllm.stdio import keep_whole_writes

    buffered = io.TextIOWrapper(io.BufferedWriter(io.FileIO(os.open(os.devnull, os.O_WRONLY), "w")), write_through=True)
    monkeypatch.setattr(sys, "stdout", buffered)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    keep_whole_writes()
    assert sys.stdout is buffered and isinstance(sys.stderr, io.StringIO)
    buffered.close()
