"""`chatllm ask --lines` on the real SmolLM2 model, as real processes: rows in order, JSON Lines, a bad row,
the cached shared prefix, a schema, SIGINT then --resume, a closed pipe, and input refused before the load."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

INSTRUCTION = ("You are given the name of a city. Answer with the name of the country where that city is, "
               "in one word and nothing else. The city is:")
CITIES = ["Paris", "Tokyo", "Rome", "Madrid", "Berlin", "Lisbon", "Cairo", "Lima", "Oslo", "Vienna", "Dublin", "Athens"]
FAST = ["-n", "8", "-t", "0", "--threads", "1"]


def test_rows_in_order_one_line_each_with_the_instruction_cached(chatllm):
    r = chatllm("ask", "--lines", "--json", *FAST, INSTRUCTION, input="Paris\n\nTokyo\nRome\n")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["id"] for row in rows] == [1, 3, 4]  # line numbers; the blank line is not a row
    assert all(row["error"] is None and row["text"] for row in rows)
    assert rows[0]["cached_tokens"] == 0
    for row in rows[1:]:  # the system prompt and the instruction come from the cache: only the city is evaluated
        assert row["cached_tokens"] >= 40 and row["prompt_tokens"] - row["cached_tokens"] <= 8, row
    plain = chatllm("ask", "--lines", *FAST, INSTRUCTION, input="Paris\nTokyo\n")
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == 2 and plain.stderr == ""


def test_jsonl_with_a_bad_row_in_the_middle(chatllm, tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"id": "a", "prompt": "Paris"}\n{"id": "b", "prompt": \n{"prompt": "Rome", "system": "Answer in French."}\n',
                   encoding="utf-8")
    r = chatllm("ask", "--lines", *FAST, INSTRUCTION, "-f", str(src))
    assert r.returncode == 1
    lines = r.stdout.split("\n")
    assert len(lines) == 4 and lines[0] and lines[1] == "" and lines[2] and lines[3] == ""
    assert "warning: row 2: line 2 is not a JSON row" in r.stderr and "error: 1 of 3 rows failed" in r.stderr
    assert "Traceback" not in r.stderr
    r = chatllm("ask", "--lines", "--json", *FAST, INSTRUCTION, "-f", str(src))
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["id"] for row in rows] == ["a", 2, 3] and [row["error"] is None for row in rows] == [True, False, True]


def test_schema_rows_are_one_json_object_per_line(chatllm):
    r = chatllm("ask", "--lines", "--schema", "country", "-n", "24", "-t", "0", "--threads", "1", INSTRUCTION,
                input="Paris\n北京\n")
    assert r.returncode == 0, r.stderr
    values = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(values) == 2 and all(set(v) == {"country"} and isinstance(v["country"], str) for v in values)


def test_sigint_then_resume_loses_and_repeats_no_row(cli_env, tmp_path):
    src, out = tmp_path / "cities.txt", tmp_path / "out.jsonl"
    rows = CITIES * 4  # rows finish several at a time (a batch per decode): enough that the interrupt lands mid-file
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = [sys.executable, "-m", "chatllm", "ask", "--lines", *FAST, INSTRUCTION, "-f", str(src), "-o", str(out)]
    proc = subprocess.Popen(args, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stdout == "" and "rerun with --resume" in stderr
    done = out.read_text().splitlines()
    assert 3 <= len(done) < len(rows)
    with open(out, "ab") as fh:  # and as if a kill had cut the next row short while it was being written
        fh.write(b'{"id": 99, "text": "half a ro')
    r = subprocess.run([*args, "--resume"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"skipped {len(done)} rows" in r.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == list(range(1, len(rows) + 1))


def test_a_closed_pipe_ends_quietly(cli_env):
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "ask", "--lines", *FAST, INSTRUCTION], env=cli_env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write("\n".join(CITIES).encode() + b"\n")
    proc.stdin.close()
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    assert proc.wait(timeout=60) == 0
    assert first.strip() and proc.stderr.read() == b""


def test_input_refused_before_the_model_loads(chatllm, tmp_path):
    r = chatllm("ask", "--lines", "say hi", input="\n  \n")
    assert r.returncode == 2 and r.stderr.startswith("error: stdin has no prompts") and "hint:" in r.stderr
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"abc\x00def\n")
    r = chatllm("ask", "--lines", "-f", str(binary))
    assert r.returncode == 2 and "binary" in r.stderr
    r = chatllm("ask", "--lines", "--resume", input="a\n")
    assert r.returncode == 2 and "--resume needs -o" in r.stderr
    assert len(r.stderr.splitlines()) == 2  # error + hint, no traceback
