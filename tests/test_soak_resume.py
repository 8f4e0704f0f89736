"""A real `chatllm ask --lines -o OUT` batch of a few hundred rows, killed with SIGKILL, resumed, stopped with SIGINT,
resumed to the end: every row in OUT exactly once, in input order, with its line number as id (the short form of
bench/soak.py's batch soak; test_batch_e2e covers one SIGINT on a dozen rows and a hand-torn last row)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

ROWS = 200
BLANK = {37, 150}  # blank lines are no rows, but they keep their line number: the ids skip them


def _ids(out) -> tuple[list, bool]:
    """The ids of OUT's whole rows, and whether a torn last line follows them."""
    data = out.read_bytes()
    lines = data.split(b"\n")
    rows = [json.loads(raw) for raw in lines[:-1]]
    assert all(row["error"] is None and row["text"] is not None for row in rows)
    return [row["id"] for row in rows], lines[-1] != b""


def _default_sigint() -> None:
    # A shell's background job (CI scripts) starts with SIGINT ignored, and a child would inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_until(args, env, out, rows: int, sig: signal.Signals) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= rows:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the batch ended before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_sigkill_then_sigint_then_resume_keeps_every_row_once_in_order(cli_env, tmp_path):
    src, out = tmp_path / "prompts.txt", tmp_path / "out.jsonl"
    lines = ["" if n in BLANK else f"w{n}" for n in range(1, ROWS + len(BLANK) + 1)]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = [n for n in range(1, len(lines) + 1) if n not in BLANK]
    args = [sys.executable, "-m", "chatllm", "ask", "--lines", "-n", "1", "-t", "0", "--threads", "1", "-f", str(src),
            "-o", str(out)]

    killed = _run_until(args, cli_env, out, 30, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    first, _ = _ids(out)
    assert len(first) >= 30 and first == expected[:len(first)]

    stopped = _run_until([*args, "--resume"], cli_env, out, len(first) + 60, signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr
    assert "rerun with --resume" in stopped.stderr and "Traceback" not in stopped.stderr
    second, torn = _ids(out)
    assert not torn  # a Ctrl-C ends between rows
    assert len(second) >= len(first) + 60 and second == expected[:len(second)]  # resumed after the kill, no repeat

    done = subprocess.run([*args, "--resume"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"skipped {len(second)} rows already in {out}" in done.stderr
    final, torn = _ids(out)
    assert not torn and final == expected  # each row once, in input order, ids the line numbers
