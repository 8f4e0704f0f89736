"""Compaction, in-place trims, branches and search in the real `chatllm chat` (SmolLM2): in a pty (pexpect) and piped."""

from __future__ import annotations

import json
import re
import sys

import pexpect
import pytest

from tests.conftest import run_chatllm

pytestmark = pytest.mark.model
PROMPT = "Send a message"
FILLERS = [f"Tell me one fact about {t}." for t in ("rivers", "copper", "tigers", "violins", "glaciers", "comets",
                                                     "ravens", "marble", "tulips")]
QUESTION = "What is my dog called?"


def spawn(env: dict, *args: str) -> pexpect.spawn:
    env = dict(env, TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(sys.executable, ["-m", "chatllm", "chat", "-t", "0", *args], env=env, encoding="utf-8",
                          timeout=240, dimensions=(30, 120))
    child.expect(PROMPT)
    return child


def send(child: pexpect.spawn, text: str) -> str:
    """Type a line and wait for the next prompt; what was printed meanwhile."""
    child.sendline(text)
    child.expect(PROMPT)
    return child.before


def exported(env: dict, conv_id: int = 1) -> dict:
    r = run_chatllm(["history", "export", str(conv_id), "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("mode", ["compact", "trim"])
def test_a_fact_planted_early_survives_compaction_and_is_lost_with_trim(cli_env, mode):
    child = spawn(cli_env, "--ctx", "448", "-n", "32", "--overflow", mode)
    printed = send(child, "My dog is called Biscuit.")
    for line in FILLERS:
        printed += send(child, line)
    printed += send(child, QUESTION)
    stats = send(child, "/stats")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    assert "Traceback" not in printed
    doc = exported(cli_env)
    answer = doc["exchanges"][-1]["assistant"]
    assert doc["exchanges"][-1]["user"] == QUESTION and len(doc["exchanges"]) == len(FILLERS) + 2
    if mode == "compact":
        assert "note: compacted exchange" in printed and "note: dropped" not in printed
        assert doc["summary"]["covers"] >= 1 and "Biscuit" in doc["summary"]["text"] + " ".join(doc["summary"]["facts"])
        assert re.search(r"compacted:\s+\d+ exchanges? in a \d+-token summary", stats)
        # (SmolLM2 often answers with the topic of the last turns whatever its view holds; the Qwen test below asks)
    else:
        assert "note: dropped" in printed and "compacted exchange" not in printed
        assert "summary" not in doc or not doc["summary"]["text"]
        assert "nothing yet (--overflow trim" in stats
        assert "Biscuit" not in answer


@pytest.mark.slow
def test_qwen_answers_from_the_summary_a_fact_that_left_the_window(chatllm, qwen_path):
    lines = "My dog is called Biscuit.\n" + "".join(f"{m}\n" for m in FILLERS) + QUESTION + "\n"
    r = chatllm("chat", "-m", str(qwen_path), "--ctx", "512", "-t", "0", "-n", "40", input=lines, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "note: compacted exchange" in r.stderr
    assert "Biscuit" in r.stdout.strip().splitlines()[-1]


def test_ctrl_c_while_compacting_keeps_the_conversation_as_it_was(cli_env):
    child = spawn(cli_env, "--ctx", "448", "-n", "32")
    for line in ["My dog is called Biscuit.", *FILLERS]:
        child.sendline(line)
        index = child.expect([PROMPT, "compacting exchange"])
        if index == 1:
            break
    else:
        pytest.fail("no compaction started")
    child.sendintr()
    child.expect("interrupted")
    child.expect(PROMPT)
    before = exported(cli_env)
    assert "summary" not in before and before["exchanges"][-1]["user"] != line  # the turn was abandoned whole
    stats = send(child, "/stats")
    assert "nothing yet" in stats
    send(child, "Say hi.")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    after = exported(cli_env)
    assert after["exchanges"][: len(before["exchanges"])] == before["exchanges"]
    assert after["exchanges"][-1]["user"] == "Say hi."


def test_a_trim_shifts_the_kv_cache_in_place_unless_exact_window(chatllm):
    lines = "".join(f"{m}\n" for m in FILLERS)
    for flags, shifted in (([], True), (["--exact-window"], False)):
        r = chatllm("chat", "--ctx", "256", "-t", "0", "-n", "16", "--overflow", "trim", *flags, input=lines, timeout=300)
        assert r.returncode == 0, r.stderr
        notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note: dropped")]
        assert notes and all(("shifted in place in" in n) == shifted for n in notes)


def test_branch_edit_resume_at_a_turn_and_search_in_chat(chatllm, cli_env):
    r = chatllm("chat", "-t", "0", "-n", "12", input="My dog is called Biscuit.\nName a colour.\n/branch\n"
                "Name a fruit.\n/edit 2 Name a planet.\n/history search biscuit\n/edit 9 nothing\n", timeout=300)
    assert r.returncode == 1  # /edit 9 failed, the rest worked
    assert "branched conversation 1 into conversation 2; 1 stays as it was" in r.stderr
    assert "editing message 2 in a new branch: conversation 3" in r.stderr
    assert "error: no message 9: the conversation has 2 exchanges" in r.stderr
    assert re.search(r"^\*?1@1 user: My dog is called «Biscuit»\.", r.stdout, re.M)
    turns = lambda n: [e["user"] for e in exported(cli_env, n)["exchanges"]]  # noqa: E731
    assert turns(1) == ["My dog is called Biscuit.", "Name a colour."]
    assert turns(2) == ["My dog is called Biscuit.", "Name a colour.", "Name a fruit."]
    assert turns(3) == ["My dog is called Biscuit.", "Name a planet."]
    tree = chatllm("history", "show", "3", "--tree").stdout.splitlines()
    assert tree[0].startswith("1  2 turns")
    assert tree[1].startswith("└─ 2  3 turns (from #1 after turn 2)")
    assert tree[2].startswith("   └─ 3 *  2 turns (from #2 after turn 1)")
    # a new process branching conversation 2 after its first turn restores the shared prefix from the disk
    r = chatllm("chat", "-t", "0", "-n", "12", "--resume", "2@1", input="Name a river.\n/stats\n")
    assert r.returncode == 0, r.stderr
    assert "branched conversation 2 after turn 1: going on as conversation 4" in r.stderr
    prompt, reused = map(int, re.search(r"prompt (\d+) tokens, (\d+) reused from the cache", r.stdout).groups())
    assert reused >= prompt // 2  # the system prompt and the first exchange came from the saved state
    assert turns(4) == ["My dog is called Biscuit.", "Name a river."]
    assert turns(2)[-1] == "Name a fruit."  # the parent is untouched
    r = chatllm("chat", "--resume", "2@7", input="")
    assert r.returncode == 2 and "conversation 2 has 3 exchanges, no turn 7" in r.stderr
    r = chatllm("chat", "--resume", "two", input="")
    assert r.returncode == 2 and "--resume takes ID or ID@TURN" in r.stderr


def test_overflow_flag_and_config_key_are_checked(chatllm, cli_env, tmp_path):
    r = chatllm("chat", "--overflow", "forget", input="")
    assert r.returncode == 2 and "--overflow must be compact or trim" in r.stderr
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text('overflow = "trim"\n')
    r = chatllm("chat", "--ctx", "192", "-t", "0", "-n", "16", input="".join(f"{m}\n" for m in FILLERS + FILLERS[:4]) + "/stats\n",
                timeout=300)
    assert r.returncode == 0, r.stderr
    assert "note: dropped" in r.stderr and "nothing yet (--overflow trim" in r.stdout
    (home / "config.toml").write_text('overflow = "sometimes"\n')
    r = chatllm("chat", input="")
    assert r.returncode == 2 and "config.toml: overflow must be compact or trim" in r.stderr


def test_edit_without_text_offers_the_old_message_in_the_prompt(cli_env):
    child = spawn(cli_env, "-n", "8")
    send(child, "Name a colour.")
    child.sendline("/edit 1")
    child.expect("Name a colour.")  # the old message, ready to edit
    child.sendcontrol("u")  # clear the line, type the new one
    child.sendline("Name a fruit.")
    child.expect("editing message 1 in a new branch: conversation 2")
    child.expect(PROMPT)
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    assert [e["user"] for e in exported(cli_env, 2)["exchanges"]] == ["Name a fruit."]
    assert [e["user"] for e in exported(cli_env, 1)["exchanges"]] == ["Name a colour."]
