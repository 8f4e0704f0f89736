"""`ask`, `generate`, `info` and the error contract, as real processes and real shell pipes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model
FAST = ["--temperature", "0", "--max-tokens", "16"]


def test_help_and_version_do_not_import_heavy_modules(cli_env):
    code = ("import sys; from chatllm.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('llama_cpp', 'huggingface_hub', 'prompt_toolkit', 'mcp') if m in sys.modules]\n"
            "sys.stderr.write(repr(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, timeout=60)
    assert r.stderr.strip() == "[]"
    assert "ask" in r.stdout and "chat" in r.stdout and "summarize" in r.stdout


def test_version_does_not_even_import_typer(cli_env):
    code = "import sys; from chatllm.cli import main; main(['--version']); sys.stderr.write(repr('typer' in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, timeout=60)
    assert r.stdout.startswith("chatllm ") and r.stderr == "False"


def test_python_dash_m_and_version(chatllm):
    r = chatllm("--version")
    assert r.returncode == 0 and r.stdout.startswith("chatllm ")


def test_ask_with_piped_stdin_streams_plain_text(chatllm):
    r = chatllm("ask", *FAST, "What colour is mentioned in this text? Answer with one word.",
                input="The car was painted bright red.\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stderr == ""  # nothing decorative in a pipe
    assert "red" in r.stdout.lower()


def test_ask_json_is_the_record_of_the_plain_answer(chatllm):
    # --json says what the command did; it never changes what the model is asked (a cut answer is still an answer)
    r = chatllm("ask", "-t", "0", "-n", "8", "--json", "Say hi")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    plain = chatllm("ask", "-t", "0", "-n", "8", "Say hi")
    assert data["text"] == plain.stdout.rstrip("\n") and "data" not in data and data["finish_reason"] == "length"


def test_ask_json_has_counts_and_speed_and_a_json_answer(chatllm):
    r = chatllm("ask", "-t", "0", "-n", "64", "--json", "--schema", "object", "-s", "Answer briefly.", "Say hello")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["text"] and data["completion_tokens"] >= 1 and data["prompt_tokens"] > 5
    assert isinstance(data["data"], dict) and json.loads(data["text"]) == data["data"]  # --schema object: any JSON object
    assert data["model"].endswith(".gguf") and data["seconds"] > 0
    assert set(data) >= {"tokens_per_second", "first_token_seconds", "finish_reason"}


def test_ask_reads_a_file_with_bom_and_crlf(chatllm, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"\xef\xbb\xbfAction: buy milk.\r\nAction: call Bob.\r\n")
    r = chatllm("ask", *FAST, "-f", str(notes), "List the actions.")
    assert r.returncode == 0, r.stderr


def test_generate_continues_raw_text(chatllm, gemma_path):
    r = chatllm("generate", "-m", str(gemma_path), *FAST, "The capital of France is")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_chat_template_missing_is_refused_for_ask(chatllm, gemma_path):
    r = chatllm("ask", "-m", str(gemma_path), *FAST, "hi")
    assert r.returncode == 1
    assert "no chat template" in r.stderr and "chatllm generate" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, stdin, code, message", [
    (["ask"], "", 2, "nothing to ask"),
    (["ask", "-f", "/nonexistent/notes.txt"], "", 2, "no such file: /nonexistent/notes.txt"),
    (["ask", "-f", "/tmp"], "", 2, "is a directory"),
    (["ask", "hi", "-m", "no-such-alias"], "", 2, "unknown model 'no-such-alias'"),
    (["ask", "--ctx", "128", "summarize:"], "word " * 400, 1, "-token context window"),
    (["ask", "--device", "cuda", "hi"], "", 1, "CPU only"),
    (["ask", "--max-tokens", "0", "hi"], "", 2, "--max-tokens"),
    (["ask", "-m", "hf:bad", "hi"], "", 2, "bad model reference"),
])
def test_errors_are_one_line_with_a_hint(chatllm, args, stdin, code, message):
    r = chatllm(*args, input=stdin)
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0]
    assert lines[1].startswith("hint: ") and len(lines) == 2
    assert r.stdout == ""


def test_binary_stdin_is_refused(chatllm):
    r = chatllm("ask", "what is this?", input=b"\x00\x01\x02binary\x00")
    assert r.returncode == 2 and b"binary" in r.stderr


def test_debug_shows_the_traceback(chatllm):
    r = chatllm("--debug", "ask", "-m", "no-such-alias", "hi")
    assert r.returncode == 2 and "Traceback" in r.stderr and "error: unknown model" in r.stderr


def test_closed_pipe_ends_quietly(cli_env):
    cmd = f"{sys.executable} -m chatllm ask --temperature 0 --max-tokens 200 'Write ten lines about the sea.' | head -c 5"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) <= 5 and "Traceback" not in r.stderr and "Broken pipe" not in r.stderr


def test_ctrl_c_during_generation_exits_130(cli_env):
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "ask", "--max-tokens", "4000", "--ctx", "4096",
                             "--temperature", "1", "Write a very long story about dragons."],
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = proc.stdout.read(20)  # generation has started
    assert first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in err


def test_info_reports_backend_and_paths(chatllm, cli_env):
    r = chatllm("info", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["backend"] == "CPU" and data["gpu_offload"] is False
    assert data["home"] == cli_env["CHATLLM_HOME"] and data["threads"] >= 1
