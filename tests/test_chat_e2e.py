"""`chatllm chat` as a real process with the real SmolLM2 model: in a pty (pexpect) and with piped stdin."""

from __future__ import annotations

import json
import os
import signal
import sys

import pexpect
import pytest

from tests.conftest import run_chatllm

pytestmark = pytest.mark.model
PROMPT = "Send a message"  # the input placeholder: shown whenever the REPL waits for input
STORY = "Write a very long story about a dragon who learns to play the violin."


def spawn(env: dict, *args: str, color: bool = False) -> pexpect.spawn:
    env = dict(env, TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1")
    if color:
        env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-m", "chatllm", "chat", "-t", "0", *args], env=env, encoding="utf-8",
                          timeout=120, dimensions=(30, 100))
    child.expect(PROMPT)
    return child


def wait_for_some_reply(child: pexpect.spawn) -> None:
    child.expect_exact("\x1b[?2004l")  # prompt_toolkit turns bracketed paste off: the message was sent
    child.expect(r"[A-Za-z]{2,}[ ,.]+[A-Za-z]{2,}[ ,.]+[A-Za-z]{2,}")


def history_json(env: dict, conv_id: int = 1) -> dict:
    r = run_chatllm(["history", "show", str(conv_id), "--json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ctrl_c_stops_a_live_markdown_reply_then_the_chat_goes_on_and_ctrl_d_leaves(cli_env):
    child = spawn(cli_env, "-n", "400", color=True)
    child.sendline(STORY)
    wait_for_some_reply(child)
    child.sendintr()
    child.expect("interrupted")
    child.expect(PROMPT)
    child.sendline("/set max_tokens 24")
    child.expect(PROMPT)
    child.sendline("What is 2+2?")
    child.expect("first token")
    child.expect(PROMPT)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in child.before
    first, second = history_json(cli_env)["exchanges"]
    assert first["interrupted"] and first["assistant"].strip() and first["user"] == STORY
    assert not second["interrupted"] and second["user"] == "What is 2+2?" and second["assistant"].strip()


def test_kill_9_mid_reply_then_continue_shows_every_completed_exchange(cli_env):
    child = spawn(cli_env, "-n", "24")
    child.sendline("What is the capital of France?")
    child.expect("first token")
    child.expect(PROMPT)
    child.sendline("/set max_tokens 400")
    child.expect(PROMPT)
    child.sendline(STORY)
    wait_for_some_reply(child)
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()
    saved = history_json(cli_env)["exchanges"]
    assert [e["user"] for e in saved] == ["What is the capital of France?"]  # the reply in flight is lost, only it

    child = spawn(cli_env, "--continue")
    text = child.before
    assert "resumed conversation 1 (1 exchange)" in text
    assert "What is the capital of France?" in text
    assert saved[0]["assistant"].strip().splitlines()[0].strip() in text
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_piped_stdin_one_message_per_line_plain_replies_and_history(chatllm, cli_env):
    r = chatllm("chat", "-t", "0", "-n", "24", "-s", "Answer briefly.",
                input="What colour is the sky on a clear day?\n/stats\n/exit\nnot sent\n")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # nothing decorative when nobody is watching
    reply, _, stats = r.stdout.partition("model:")
    assert "blue" in reply.lower()
    assert "context:" in stats and "reused from the cache" in stats
    r = chatllm("history", "--json")
    [row] = json.loads(r.stdout)
    assert row["turns"] == 1 and row["title"] == "What colour is the sky on a clear day?"
    r = chatllm("history", "show", str(row["id"]))
    assert "## System" in r.stdout and "Answer briefly." in r.stdout and "## Assistant" in r.stdout
    r = chatllm("history")
    assert r.stdout.splitlines()[0].split("\t") == ["id", "model", "first line", "turns", "date"]


def test_long_conversation_at_a_small_context_runs_to_the_end(chatllm):
    topics = ["rivers", "mountains", "apples", "copper", "tigers", "violins", "glaciers", "comets", "ravens",
              "marble", "tulips", "engines"]
    lines = "".join(f"Tell me one fact about {t}.\n" for t in topics)
    r = chatllm("chat", "--ctx", "192", "-t", "0", "-n", "16", input=lines, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "note: dropped the" in r.stderr and "error" not in r.stderr
    assert json.loads(chatllm("history", "--json").stdout)[0]["turns"] == len(topics)


def test_too_long_message_model_switch_and_errors_keep_the_chat_alive(chatllm, smollm_path, gemma_path):
    long = "word " * 300
    r = chatllm("chat", "--ctx", "128", "-t", "0", "-n", "8",
                input=f"{long}\n/model {gemma_path}\n/model {smollm_path}\n/frobnicate\nSay hi.\n")
    assert r.returncode == 1  # some lines failed: a script can tell
    assert "error: message too long" in r.stderr and "context window" in r.stderr
    assert "no chat template" in r.stderr and "unknown command /frobnicate" in r.stderr
    assert "now chatting with" in r.stderr
    assert r.stdout.strip()  # "Say hi." still got its reply
    assert "Traceback" not in r.stderr


def test_resume_errors_fail_fast_with_hints(chatllm, gemma_path):
    r = chatllm("chat", "--continue", input="")
    assert r.returncode == 2 and "no saved conversation" in r.stderr and "hint:" in r.stderr
    r = chatllm("chat", "--resume", "42", input="")
    assert r.returncode == 2 and "no conversation with id 42" in r.stderr and "chatllm history" in r.stderr
    r = chatllm("chat", "--continue", "--resume", "1", input="")
    assert r.returncode == 2
    r = chatllm("chat", "-m", str(gemma_path), input="hi\n")
    assert r.returncode == 1 and "no chat template" in r.stderr and "generate" in r.stderr
