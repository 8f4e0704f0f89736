"""Saved templates through the real CLI: `ask --save`, `ask --template -p`, `templates [show|rm]`, as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.model
FAST = ["-t", "0", "-n", "8"]
# A tiny schema: the answer is short and the --json record tells how many tokens the rendered prompt had.
COUNT = ["--json", "--schema", "ok bool", "-n", "32"]


def templates_of(cli_env) -> Path:
    return Path(cli_env["CHATLLM_HOME"]) / "templates"


def saved(chatllm, name: str, *args: str) -> None:
    r = chatllm("ask", "--save", name, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and f"saved template {name!r}" in r.stderr


def test_save_then_run_with_piped_input(chatllm, cli_env):
    saved(chatllm, "sum", "-s", "You are terse.", *FAST, "Summarize: $input")
    text = (templates_of(cli_env) / "sum.toml").read_text(encoding="utf-8")
    assert 'prompt = "Summarize: $input"' in text and "max_tokens = 8" in text and "temperature = 0.0" in text
    r = chatllm("ask", "--template", "sum", input="The cat sat on the mat all day long.\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    cut = chatllm("ask", "--template", "sum", "--json", "--schema", "summary", input="The cat sat on the mat.")
    assert cut.returncode == 1 and "cut off at --max-tokens" in cut.stderr  # the template's -n 8 applied
    # the prompt words are the $input too: the same prompt, token for token
    piped = chatllm("ask", "--template", "sum", *COUNT, input="The cat sat on the mat all day long.")
    words = chatllm("ask", "--template", "sum", *COUNT, "The cat sat on the mat all day long.")
    assert piped.returncode == 0 and words.returncode == 0, piped.stderr + words.stderr
    assert json.loads(words.stdout)["prompt_tokens"] == json.loads(piped.stdout)["prompt_tokens"]


def test_variables_reach_the_prompt_and_the_system(chatllm):
    saved(chatllm, "tr", "-s", "You answer in $lang.", *FAST, "Describe ${topic} briefly: $input")
    short = chatllm("ask", "--template", "tr", "-p", "lang", "French", "-p", "topic", "cats", *COUNT, input="x\n")
    assert short.returncode == 0, short.stderr
    longer = chatllm("ask", "--template", "tr", "-p", "lang", "French", "-p", "topic=the history of domestic cats in Egypt",
                     *COUNT, input="x\n")
    assert longer.returncode == 0, longer.stderr
    system = chatllm("ask", "--template", "tr", "-p", "lang", "formal Canadian French", "-p", "topic", "cats", *COUNT, input="x\n")
    assert system.returncode == 0, system.stderr
    base = json.loads(short.stdout)["prompt_tokens"]
    assert json.loads(longer.stdout)["prompt_tokens"] > base + 4
    assert json.loads(system.stdout)["prompt_tokens"] > base


def test_a_missing_variable_fails_before_the_model_loads(chatllm):
    saved(chatllm, "v", "Write about $topic: $input")
    r = chatllm("ask", "--template", "v", input="hello\n", env_extra={"CHATLLM_MODEL": "/nonexistent/model.gguf"})
    assert r.returncode == 2 and r.stdout == ""
    assert "needs $topic" in r.stderr and "v.toml" in r.stderr and "-p topic VALUE" in r.stderr
    assert "nonexistent" not in r.stderr and "Traceback" not in r.stderr


def test_a_hand_edited_syntax_error_names_the_file_and_line(chatllm, cli_env):
    saved(chatllm, "broken", *FAST, "Summarize: $input")
    path = templates_of(cli_env) / "broken.toml"
    path.write_text(path.read_text(encoding="utf-8") + 'system = "unclosed\n', encoding="utf-8")
    line = len(path.read_text(encoding="utf-8").splitlines())
    r = chatllm("ask", "--template", "broken", input="hello\n")
    assert r.returncode == 1 and r.stdout == ""
    assert str(path) in r.stderr and f"line {line}" in r.stderr and "Traceback" not in r.stderr


def test_an_unknown_template_lists_the_known_ones(chatllm):
    saved(chatllm, "alpha", "Say hi")
    r = chatllm("ask", "--template", "nope", input="hello\n")
    assert r.returncode == 2 and "no template named 'nope'" in r.stderr and "known templates: alpha" in r.stderr


def test_list_show_and_rm(chatllm, cli_env):
    empty = chatllm("templates")
    assert empty.returncode == 0 and empty.stdout == "" and "ask --save" in empty.stderr
    saved(chatllm, "tldr", "-m", "smol", *FAST, "Summarize for $audience:\n$input")
    saved(chatllm, "plain", "-s", "Be terse.")
    r = chatllm("templates")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["name\tmodel\tvariables\tprompt", "plain\t\t\t($input)",
                                     "tldr\tsmol\t$audience\tSummarize for $audience:"]
    listed = json.loads(chatllm("templates", "--json").stdout)
    assert [t["name"] for t in listed] == ["plain", "tldr"] and listed[1]["variables"] == ["audience"]
    show = chatllm("templates", "show", "tldr")
    path = templates_of(cli_env) / "tldr.toml"
    assert show.returncode == 0 and show.stdout == f"# {path}\n" + path.read_text(encoding="utf-8")
    record = json.loads(chatllm("templates", "show", "tldr", "--json").stdout)
    assert record["prompt"] == "Summarize for $audience:\n$input" and record["sampling"] == {"max_tokens": 8, "temperature": 0.0}
    gone = chatllm("templates", "rm", "tldr")
    assert gone.returncode == 0 and "deleted template 'tldr'" in gone.stderr and not path.exists()
    again = chatllm("templates", "rm", "tldr")
    assert again.returncode == 2 and "no template named 'tldr'" in again.stderr


def test_a_template_schema_makes_stdout_json(chatllm):
    saved(chatllm, "person", "--schema", "name, age int", "-t", "0", "-n", "40", "Invent a person from $input. Answer in JSON.")
    r = chatllm("ask", "--template", "person", "Paris")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_a_bad_schema_in_a_template_names_the_file(chatllm, cli_env):
    saved(chatllm, "bad", "Say hi")
    path = templates_of(cli_env) / "bad.toml"
    path.write_text(path.read_text(encoding="utf-8") + "schema = '{\"type\": \"object\"'\n", encoding="utf-8")
    r = chatllm("ask", "--template", "bad", input="x\n")
    assert r.returncode == 2 and str(path) in r.stderr and "invalid JSON" in r.stderr
