"""--parallel against a real llama-server with 4 slots (SmolLM2): order kept, the same answers as --parallel 1 at
temperature 0, a server killed mid-batch gives one clean error and keeps the finished rows, Ctrl-C stops promptly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_chatllm
from tests.llama_server import ALIAS, LlamaServer, server_binary
from tests.review_lines import review_lines
from tests.test_remote_engine import entry

pytestmark = [pytest.mark.model, pytest.mark.slow]
N_LINES = 24
SERVER_THREADS = "1"  # llama-server's threads spin: on a shared, loaded 2-core machine one thread is far steadier than two


@pytest.fixture(scope="module")
def server4(smollm_path):
    """llama-server -np 4 -c 8192 (2048 tokens a slot)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAMA_ARG_THREADS", SERVER_THREADS)
        srv = LlamaServer(server_binary(), smollm_path, slots=4, ctx=8192).start()
    yield srv
    srv.stop()


@pytest.fixture
def env4(cli_env, server4) -> dict:
    """cli_env whose default model is an entry for server4 with parallel = 4, and no repeat penalty (see test_remote_engine)."""
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(entry("smol4", server4.url, model=ALIAS, parallel=4))
    (home / "config.toml").write_text("[sampling]\nrepeat_penalty = 1.0\n")
    return dict(cli_env, CHATLLM_MODEL="smol4")


def test_sentiment_lines_keep_order_and_labels_across_parallel(env4):
    lines = review_lines(N_LINES)
    text = "".join(line + "\n" for line in lines)
    runs = {}
    for n in ("1", "4"):
        r = run_chatllm(["sentiment", "--lines", "--json", "--parallel", n], env4, input=text, timeout=300)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [row["text"] for row in rows] == lines  # input order
        runs[n] = [row["label"] for row in rows]
    default = run_chatllm(["sentiment", "--lines"], env4, input=text, timeout=300)  # the entry's parallel = 4
    assert default.returncode == 0, default.stderr
    agree = sum(a == b for a, b in zip(runs["1"], runs["4"])) / N_LINES
    print(f"--parallel 1 / 4 sentiment label agreement: {agree:.0%}")
    assert agree >= 0.95
    assert [line.split("\t")[2] for line in default.stdout.splitlines()] == lines


def test_batch_rows_in_order_and_the_same_greedy_answers(env4, tmp_path):
    prompts = [f"Name a fruit whose name starts with the letter {c}." for c in "ABCDEFGHIJKLMNOP"]
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(prompts) + "\n")
    texts = {}
    for n in ("1", "4"):
        out = tmp_path / f"out{n}.jsonl"
        r = run_chatllm(["ask", "--lines", "-f", str(src), "-o", str(out), "-t", "0", "-n", "16", "--parallel", n], env4, timeout=300)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [row["id"] for row in rows] == list(range(1, len(prompts) + 1)) and all(row["error"] is None for row in rows)
        texts[n] = [row["text"] for row in rows]
    same = sum(a == b for a, b in zip(texts["1"], texts["4"])) / len(prompts)
    print(f"--parallel 1 / 4 identical greedy answers: {same:.0%}")
    assert same >= 0.75  # batched evaluation may round a near tie differently; most replies are identical


def test_summarize_map_calls_in_parallel(env4):
    paragraph = ("The committee reviewed the harbour project in {n}, weighing its cost against the jobs it would bring. "
                 "Engineers reported on the sea wall, the dredging and the new cranes, and residents spoke about noise. ")
    text = "\n\n".join(paragraph.format(n=1900 + i) * 3 for i in range(12))
    runs = {}
    for n in ("1", "4"):
        r = run_chatllm(["summarize", "--json", "-t", "0", "--length", "short", "--ctx", "1024", "--chunk-tokens", "384",
                         "--parallel", n],
                        env4, input=text, timeout=600)
        assert r.returncode == 0, r.stderr
        runs[n] = json.loads(r.stdout)
    assert runs["4"]["chunks"] == runs["1"]["chunks"] > 2 and runs["4"]["summary"].strip()
    print(f"summarize: {runs['1']['seconds']:.1f} s at --parallel 1, {runs['4']['seconds']:.1f} s at 4")


def test_translate_lines_in_parallel_keep_their_places(env4):
    lines = [f"The ferry number {i} left the harbour at {i} o'clock." for i in range(1, 9)]
    text = "\n".join(lines[:4]) + "\n\n" + "\n".join(lines[4:]) + "\n"
    runs = {}
    for n in ("1", "4"):
        r = run_chatllm(["translate", "--lines", "--json", "--to", "zh", "-n", "32", "--parallel", n], env4, input=text,
                        timeout=300)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [row["line"] for row in rows] == list(range(1, 10))
        assert [row["source"] for row in rows] == text.rstrip("\n").split("\n") and rows[4]["status"] == "verbatim"
        runs[n] = [row["translation"] for row in rows]
    same = sum(a == b for a, b in zip(runs["1"], runs["4"])) / len(runs["1"])
    print(f"translate --lines, --parallel 1 / 4 identical greedy lines: {same:.0%}")
    assert same >= 0.5  # batched evaluation may round a near tie differently (78 % the same when written)


def test_a_local_model_takes_parallel_as_sequences_per_decode(cli_env):
    r = run_chatllm(["sentiment", "--lines", "--parallel", "3"], cli_env, input="Great fun.\nAwful.\n", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ignored" not in r.stderr and len(r.stdout.splitlines()) == 2
    r = run_chatllm(["sentiment", "--lines", "--parallel", "64"], cli_env, input="Great fun.\n", timeout=120)
    assert r.returncode == 2 and "use at most 63 with a local model" in r.stderr


def test_a_server_killed_mid_batch_is_one_error_and_keeps_the_finished_rows(cli_env, smollm_path, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_ARG_THREADS", SERVER_THREADS)
    srv = LlamaServer(server_binary(), smollm_path, slots=2, ctx=2048).start()
    try:
        src, out = tmp_path / "prompts.txt", tmp_path / "out.jsonl"
        src.write_text("".join(f"Write a short poem about the number {i}.\n" for i in range(40)))
        args = ["ask", "--lines", "-f", str(src), "-o", str(out), "-t", "0", "-n", "48", "--parallel", "2",
                "-m", f"openai:{srv.url}#{ALIAS}"]
        proc = subprocess.Popen([sys.executable, "-m", "chatllm", *args], env=cli_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while (not out.exists() or len(out.read_text().splitlines()) < 4) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert srv.proc is not None
        srv.proc.kill()  # no goodbye: connections cut mid-stream, then refused
        _, err = proc.communicate(timeout=60)
    finally:
        srv.stop()
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), err
    assert "closed the connection" in err or "connection refused" in err, err
    assert "Traceback" not in err and "rerun with --resume" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 4 <= len(rows) < 40
    assert [row["id"] for row in rows] == list(range(1, len(rows) + 1))  # in order, no gap
    assert all(row["error"] is None and row["text"] for row in rows)  # a cut row is not written as failed


def test_ctrl_c_stops_a_parallel_run_promptly(env4, tmp_path):
    src = tmp_path / "lines.txt"
    src.write_text("".join(line + "\n" for line in review_lines(200)))
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "sentiment", "--lines", "--parallel", "4", "-f", str(src)], env=env4,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # it is running
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - start < 10 and "Traceback" not in err, err
