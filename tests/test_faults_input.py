"""Whatever the user feeds `ask`: empty, binary, mis-encoded, huge, a directory, a missing path, too long for the
context. Each is one clear error (or a warning) from the real CLI, with bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatllm.errors import UsageError
from chatllm.inputs import prompt_char_limit, read_prompt

FAST = ["--max-tokens", "3", "--temperature", "0", "--threads", "1"]


def _text(r):
    """A CompletedProcess with str output, whether it ran with bytes input or not."""
    if isinstance(r.stderr, bytes):
        r.stdout, r.stderr = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    return r


def assert_usage_error(r, *phrases: str) -> None:
    r = _text(r)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    for phrase in phrases:
        assert phrase in lines[0], r.stderr


@pytest.fixture
def files(tmp_path) -> Path:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"  \n\r\n\t\n")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me, na\xefve.\n".encode("latin-1"))
    (tmp_path / "a-directory").mkdir()
    return tmp_path


def test_empty_stdin_and_no_prompt(chatllm):
    assert_usage_error(chatllm("ask", input=""), "nothing to ask")


def test_empty_and_blank_files(chatllm, files):
    assert_usage_error(chatllm("ask", "-f", str(files / "empty.txt")), "empty.txt is empty")
    assert_usage_error(chatllm("ask", "-f", str(files / "blank.txt")), "blank.txt is empty")


def test_binary_file_and_binary_stdin(chatllm, files):
    assert_usage_error(chatllm("ask", "-f", str(files / "binary.bin")), "binary.bin looks like binary data")
    assert_usage_error(chatllm("ask", "what is this?", input=bytes(range(256))), "stdin looks like binary data")


def test_directory_and_missing_path(chatllm, files):
    assert_usage_error(chatllm("ask", "-f", str(files / "a-directory")), "a-directory is a directory")
    assert_usage_error(chatllm("ask", "-f", str(files / "nope.txt")), "no such file", "nope.txt")
    assert_usage_error(chatllm("summarize", str(files / "a-directory")), "is a directory")


@pytest.mark.model
def test_invalid_utf8_is_replaced_with_one_warning_and_still_answered(chatllm, files):
    r = chatllm("ask", *FAST, "-f", str(files / "latin1.txt"), "Translate:")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "latin1.txt is not valid UTF-8" in warnings[0] and "U+FFFD" in warnings[0]

    r = _text(chatllm("ask", *FAST, "Translate:", input="Caf\xe9 au lait\n".encode("latin-1")))
    assert r.returncode == 0 and "stdin is not valid UTF-8" in r.stderr


def _big_text(path: Path, size: int) -> Path:
    line = ("the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat " * 3).strip() + "\n"
    with open(path, "w") as fh:
        for _ in range(size // len(line) + 1):
            fh.write(line)
    return path


# A small launcher whose only child is the CLI: its RUSAGE_CHILDREN peak is the CLI's own. (Measuring from pytest
# would count pytest's memory too: Linux carries the parent's peak into a child across fork and exec.)
_MEASURE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def _run_measured(args: list[str], env: dict, stdin=subprocess.DEVNULL) -> tuple[int, str, int]:
    """Run the CLI; return its exit code, stderr and its peak RSS in KiB."""
    peak = Path(env["CHATLLM_HOME"]).parent / "peak.txt"
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(peak), sys.executable, "-m", "chatllm", *args], env=env,
                       stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    return r.returncode, r.stderr, int(peak.read_text())


def test_a_50_mb_file_is_refused_with_bounded_memory(cli_env, tmp_path):
    big = _big_text(tmp_path / "big.txt", 50_000_000)
    code, err, peak_kib = _run_measured(["ask", "-f", str(big), "summarize this"], cli_env)
    assert code == 2, err  # -f files past the window are searched, up to a size: this one is over it
    assert "big.txt is too big to search" in err and "32 MiB" in err and "Traceback" not in err
    assert peak_kib < 150_000, f"peak RSS {peak_kib / 1024:.0f} MiB while refusing a 50 MB file"

    with open(big, "rb") as stdin:  # the same through a pipe
        code, err, peak_kib = _run_measured(["ask", "summarize this"], cli_env, stdin=stdin)
    assert code == 2 and "stdin is too long for a prompt" in err
    assert peak_kib < 150_000


def test_the_limit_follows_ctx(tmp_path):
    text = _big_text(tmp_path / "t.txt", prompt_char_limit(512) + 1000)
    with pytest.raises(UsageError, match="512-token"):
        read_prompt(text, None, 512)
    assert len(read_prompt(text, None, 4096)) > prompt_char_limit(512)


@pytest.mark.model
def test_prompt_longer_than_the_context_window_names_both_sizes(chatllm, tmp_path):
    text = _big_text(tmp_path / "long.txt", 6_000)  # about 1,300 tokens: fits the char bound, not the context
    # Piped: a -f file past the window would be searched instead (tests/test_retrieval_e2e.py).
    r = chatllm("ask", *FAST, "--ctx", "256", "Summarize:", input=text.read_text(encoding="utf-8"))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-2].startswith("error: prompt too long: ") and "exceed the 256-token context window" in lines[-2]
    assert int(lines[-2].split("prompt too long: ")[1].split(" ")[0]) > 256
    assert lines[-1].startswith("hint: ") and "--ctx" in lines[-1] and "Traceback" not in r.stderr
