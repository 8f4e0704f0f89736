"""`chatllm translate` on line-oriented input as a user runs it: real models in real subprocesses, pipes and files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model
CJK = re.compile(r"[\u4e00-\u9fff]")
TIMING = re.compile(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$")


def test_lines_json_gives_one_record_per_input_line_from_a_pipe(cli_env):
    cmd = (f"printf 'Good morning.\\n\\nSee you at 7.\\n' | {sys.executable} -m chatllm translate -n 16 --lines "
           "--to zh --json")
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["line"] for rec in records] == [1, 2, 3]  # one per input line, nothing else
    assert [rec["source"] for rec in records] == ["Good morning.", "", "See you at 7."]
    assert records[1]["status"] == "verbatim" and records[1]["translation"] == ""
    assert records[0]["status"] in ("ok", "repaired", "failed") and records[0]["file"] == "stdin"
    assert all("\n" not in rec["translation"] for rec in records)


def test_a_crlf_srt_file_keeps_its_cue_numbers_and_timing_byte_for_byte(cli_env, tmp_path):
    cues = [("1", "00:00:01,000 --> 00:00:03,500", "Good morning."), ("2", "00:00:04,000 --> 00:00:06,000", "See you soon.")]
    doc = "\r\n\r\n".join(f"{n}\r\n{t}\r\n{text}" for n, t, text in cues) + "\r\n"
    (tmp_path / "talk.srt").write_bytes(doc.encode())
    r = subprocess.run([sys.executable, "-m", "chatllm", "translate", "-n", "16", "--to", "zh", "-o", str(tmp_path / "out"),
                        str(tmp_path / "talk.srt")], capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = (tmp_path / "out" / "talk.zh.srt").read_bytes()
    for n, t, _ in cues:
        assert f"{n}\r\n{t}\r\n".encode() in out
    assert out.count(b"\r\n\r\n") == 1 and b"\n" not in out.replace(b"\r\n", b"")


def test_qwen_keeps_lines_words_and_subtitle_timing(chatllm, qwen_path, tmp_path):
    """One Qwen call, three files: a sentence a line, a markdown paragraph with a soft break, an .srt file."""
    numbers = ["1987", "42", "350", "2016"]
    sentences = [f"Pedro sold the old house in {numbers[0]}.", f"Anna bought {numbers[1]} apples at the market.",
                 "", f"The harbour welcomed {numbers[2]} ships last year.", f"Maria won the race in {numbers[3]}."]
    (tmp_path / "lines.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    markdown = ("# Harbour\n\nThe harbour of Lisbon opened in 1998, and it welcomed a great\n"
                "many ships from every country in its first year.\n")
    (tmp_path / "notes.md").write_text(markdown, encoding="utf-8")
    srt = ("1\n00:00:01,000 --> 00:00:04,000\nThe ferry leaves at 9 o'clock.\n\n"
           "2\n00:00:04,500 --> 00:00:07,250\nAnna bought 42 apples\nand went home.\n")
    (tmp_path / "talk.srt").write_text(srt, encoding="utf-8")
    files = [str(tmp_path / name) for name in ("lines.txt", "notes.md", "talk.srt")]
    r = chatllm("translate", "-m", str(qwen_path), "--to", "zh", "-o", str(tmp_path / "out"), *files, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "lines.txt: one sentence or item a line" in r.stderr  # said once, for the line-oriented file only
    assert "notes.md: one sentence" not in r.stderr and "talk.srt: one sentence" not in r.stderr

    out = (tmp_path / "out" / "lines.zh.txt").read_text(encoding="utf-8").split("\n")
    assert len(out) == len(sentences) + 1 and out[2] == "" and out[-1] == ""
    for i, line in enumerate(out[:-1]):
        if not sentences[i]:
            continue
        assert CJK.search(line), line
        mine = numbers[[n for n in range(len(sentences)) if sentences[n]].index(i)]
        assert mine in line and not [n for n in numbers if n != mine and n in line], (i, line)  # aligned

    md = (tmp_path / "out" / "notes.zh.md").read_text(encoding="utf-8")
    head, body = md.split("\n\n", 1)
    assert head.startswith("# ") and body.endswith("\n") and body.count("\n\n") == 0
    lines = body.rstrip("\n").split("\n")
    assert 1 <= len(lines) <= 2 and "1998" in body.replace("\n", "")
    for a, b in zip(lines, lines[1:]):  # a break only after punctuation or between Latin words, never inside one
        assert a[-1] in "，。、；：！？）」』》”’" or a[-1].isascii() and b[0].isascii(), (a, b)
        assert not (a[-1].isdigit() and b[0].isdigit())

    subs = (tmp_path / "out" / "talk.zh.srt").read_text(encoding="utf-8")
    assert [ln for ln in subs.split("\n") if TIMING.match(ln) or ln.isdigit()] == \
        ["1", "00:00:01,000 --> 00:00:04,000", "2", "00:00:04,500 --> 00:00:07,250"]
    blocks = subs.rstrip("\n").split("\n\n")
    assert len(blocks) == 2 and all(CJK.search(b.split("\n", 2)[2]) for b in blocks)
    assert "42" in blocks[1] and "Anna bought" not in subs
