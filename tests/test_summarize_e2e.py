"""`chatllm summarize` as a user runs it: real SmolLM2 inference in real subprocesses, files, pipes and signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.model
FAST = ["--temperature", "0", "--max-tokens", "24"]
SHORT = ("The city council met on Tuesday to discuss the new budget. The mayor proposed raising taxes by two "
         "percent to pay for road repairs and a new library.\n\nAfter three hours of debate the council approved "
         "a smaller rise of one percent, for road repairs only.\n")


def long_text(paragraphs: int = 30) -> str:
    """A varied, made-up chronicle of about 75 tokens a paragraph."""
    people = ["Mara", "Tomas", "Ines", "Oskar", "Lena", "Farid"]
    things = ["the lighthouse", "the old mill", "the harbour wall", "the school roof", "the market", "the ferry"]
    acts = ["repaired", "painted", "inspected", "rebuilt", "cleaned", "measured"]
    out = []
    for i in range(paragraphs):
        p, t, a = people[i % 6], things[(i * 5) % 6], acts[(i * 7) % 6]
        out.append(f"In week {i + 1}, {p} {a} {t} with help from the neighbours. The work took {i % 4 + 2} days "
                   f"and cost {100 + 37 * i} crowns, paid from the village fund. Afterwards {p} wrote in the logbook "
                   f"that {t} was in better shape than anyone remembered, and that the weather had been "
                   f"{'kind' if i % 2 else 'cold and wet'} all week.")
    return "\n\n".join(out) + "\n"


def test_short_file_in_one_pass_writes_only_the_summary(chatllm, tmp_path):
    doc = tmp_path / "council.txt"
    doc.write_text(SHORT, encoding="utf-8")
    r = chatllm("summarize", *FAST, str(doc))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stderr == ""  # in a pipe: the summary and nothing else
    assert r.stdout.endswith("\n") and not r.stdout.startswith((" ", "\n"))


def test_no_cover_names_makes_one_call_and_adds_no_sentence(chatllm, tmp_path):
    doc = tmp_path / "council.txt"
    doc.write_text(SHORT, encoding="utf-8")
    data = json.loads(chatllm("summarize", *FAST, "--json", "--no-cover-names", str(doc)).stdout)
    assert data["calls"] == 1 and data["added_names"] == [] and data["summary"].strip()


def test_long_text_with_a_small_window_is_map_reduced(chatllm, tmp_path):
    doc = tmp_path / "chronicle.txt"
    doc.write_text(long_text(30), encoding="utf-8")  # ~2,300 tokens against a 1,024-token window
    r = chatllm("summarize", "--ctx", "1024", "--json", *FAST, str(doc), timeout=240)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["levels"] >= 1 and data["chunks"] >= 3, data
    assert data["input_tokens"] > 1500 and data["summary"].strip()
    assert data["calls"] >= data["chunks"] + 1 and data["file"] == str(doc)


def test_piped_stdin_without_a_file(chatllm):
    r = chatllm("summarize", *FAST, input=SHORT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stderr == ""


def test_dash_reads_stdin_in_a_real_shell_pipe(cli_env):
    cmd = f"printf '%s' {json.dumps(SHORT)} | {sys.executable} -m chatllm summarize -t 0 -n 24 --style tldr -"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_crlf_and_bom_are_read_quietly(chatllm, tmp_path):
    doc = tmp_path / "windows.txt"
    doc.write_bytes(b"\xef\xbb\xbf" + SHORT.replace("\n", "\r\n").encode("utf-8"))
    r = chatllm("summarize", *FAST, "--json", str(doc))
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and json.loads(r.stdout)["summary"]


def test_invalid_utf8_is_replaced_with_a_warning(chatllm, tmp_path):
    doc = tmp_path / "latin1.txt"
    doc.write_bytes("Caf\u00e9 owners in S\u00e3o Paulo raised prices.\n".encode("latin-1") + SHORT.encode())
    r = chatllm("summarize", *FAST, str(doc))
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "not valid UTF-8" in r.stderr and str(doc) in r.stderr
    assert r.stdout.strip()


@pytest.mark.parametrize("make, code, message", [
    (lambda d: d / "nothing.txt", 2, "no such file: {path}"),
    (lambda d: d, 2, "{path} is a directory"),
    (lambda d: _write(d / "empty.txt", b""), 2, "{path} is empty"),
    (lambda d: _write(d / "blank.txt", b" \n\r\n\t\n"), 2, "{path} is empty"),
    (lambda d: _write(d / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), 2, "{path} looks like binary data"),
])
def test_bad_inputs_are_refused_before_the_model_loads(chatllm, tmp_path, make, code, message):
    path = make(tmp_path)
    start = time.monotonic()
    # A model that cannot load: the input must be refused first, so this error never shows.
    r = chatllm("summarize", "-m", str(tmp_path / "no-such-model.gguf"), str(path))
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: " + message.format(path=path)) and lines[1].startswith("hint: ") and len(lines) == 2
    assert r.stdout == "" and time.monotonic() - start < 30


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_empty_stdin_is_refused(chatllm):
    r = chatllm("summarize", "-m", "/nonexistent.gguf", input="  \n")
    assert r.returncode == 2 and r.stderr.startswith("error: stdin is empty")


def test_no_file_in_a_terminal_asks_for_one(cli_env):
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "chatllm", "summarize"], env=cli_env, timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert b"error: nothing to summarize" in child.before and b"hint:" in child.before


def test_flag_values_are_checked(chatllm, tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_text(SHORT)
    r = chatllm("summarize", "--length", "huge", str(doc))
    assert r.returncode == 2 and "unknown --length 'huge'" in r.stderr and "hint:" in r.stderr
    r = chatllm("summarize", "--style", "poem", str(doc))
    assert r.returncode == 2 and "unknown --style" in r.stderr


def test_several_files_get_a_header_each_and_combine_gives_one(chatllm, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(SHORT)
    b.write_text("The river flooded the lower town in spring. Volunteers filled sandbags for a week.\n")
    r = chatllm("summarize", *FAST, str(a), str(b))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"## {a}\n\n") and f"\n\n## {b}\n\n" in r.stdout
    r = chatllm("summarize", *FAST, "--json", str(a), str(b))
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["file"] for row in rows] == [str(a), str(b)]
    r = chatllm("summarize", *FAST, "--json", "--combine", str(a), str(b))
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["files"] == [str(a), str(b)] and row["summary"]


def test_ctrl_c_exits_130_at_once(cli_env, tmp_path):
    doc = tmp_path / "long.txt"
    doc.write_text(long_text(120))
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "summarize", "-t", "0", "--ctx", "2048", str(doc)],
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    time.sleep(6)  # loaded and evaluating the first part
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 10
    assert out == b"" and b"Traceback" not in err


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (Linux VmHWM)."""
    with open(f"/proc/{pid}/status") as fh:
        kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return kib / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak memory from /proc")
def test_a_50_mb_file_is_read_as_it_is_summarized_not_all_at_once(cli_env, tmp_path):
    doc = tmp_path / "huge.txt"
    text = long_text(60)
    with open(doc, "w", encoding="utf-8") as fh:
        for _ in range(50_000_000 // len(text) + 1):
            fh.write(text)
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "summarize", "-t", "0", "--ctx", "2048", str(doc)],
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        time.sleep(8)  # loaded, the first parts read and being summarized
        assert proc.poll() is None, proc.communicate()[1]
        peak = _peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # The model (94 MiB), a 2k-token KV cache and Python came to 265 MiB here; the file alone would add 100+ MiB
    # as bytes and text, so holding it whole shows.
    assert peak < 300, f"peak RSS {peak:.0f} MiB while summarizing a 50 MB file"
