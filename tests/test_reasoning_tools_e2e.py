"""Reasoning and tool calls end to end: real models, real templates, real processes, a pty and real servers.

No small reasoning model exists here, so the reasoning model is SmolLM2's weights under llama.cpp's DeepSeek-R1
template (its generation prompt opens `<think>`): whatever SmolLM2 writes first is its trace, which only the
reasoning budget or the end of the reply closes. Tool calls use Qwen2.5-Coder-0.5B (Hermes tags in its template),
SmolLM2 (no tool syntax: the generic JSON form) and the base Gemma 3 (no template at all).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import run_chatllm
from tests.fault_server import ANSWER, TRACE, FaultServer
from tests.gguf_writer import copy_with_metadata
from tests.llama_server import ALIAS, LlamaServer, server_binary
from tests.test_remote_engine import entry

pytestmark = pytest.mark.model
TEMPLATES = Path(__file__).parent / "templates"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city.",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "The current local time in a city.",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
]
SCHEMA = '{"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]}'


@pytest.fixture(scope="module")
def thinker(smollm_path, tmp_path_factory) -> Path:
    """SmolLM2 under DeepSeek-R1's template: a reasoning model whose prompt opens the trace."""
    path = tmp_path_factory.mktemp("thinker") / "r1-smollm2.gguf"
    return copy_with_metadata(smollm_path, path, {"tokenizer.chat_template":
                                                  (TEMPLATES / "llama-cpp-deepseek-r1.jinja").read_text(encoding="utf-8")})


@pytest.fixture
def tools_file(tmp_path) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(TOOLS), encoding="utf-8")
    return path


def record(r) -> dict:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- reasoning ---------------------------------------------------------------------------------------------------


def test_in_a_pipe_the_trace_never_reaches_stdout_and_json_keeps_it_apart(chatllm, thinker):
    args = ["ask", "-m", str(thinker), "-t", "0", "-n", "48", "--reasoning-budget", "12", "Say hi"]
    plain = chatllm(*args)
    data = record(chatllm(*args, "--json"))
    assert plain.returncode == 0 and plain.stdout.strip(), plain.stderr
    assert data["reasoning"] and data["reasoning_tokens"] == 12 and data["text"]
    assert plain.stdout.strip() == data["text"].strip()  # the answer, and nothing of the trace
    assert data["reasoning"].strip()[:20] not in plain.stdout
    shown = chatllm(*args, "--show-thinking")
    assert shown.stdout.startswith("<think>\n") and "</think>" in shown.stdout
    assert shown.stdout.split("</think>", 1)[1].strip() == data["text"].strip()


def test_no_think_prefills_an_empty_block(chatllm, thinker):
    data = record(chatllm("ask", "-m", str(thinker), "-t", "0", "-n", "16", "--no-think", "--json", "Say hi"))
    assert "reasoning" not in data and data["text"]


def test_a_trace_cut_by_max_tokens_ends_cleanly_with_a_warning(chatllm, thinker):
    r = chatllm("ask", "-m", str(thinker), "-t", "0", "-n", "6", "Say hi")
    assert r.returncode == 0 and r.stdout.strip() == "" and "Traceback" not in r.stderr
    assert "ended inside its reasoning" in r.stderr
    data = record(chatllm("ask", "-m", str(thinker), "-t", "0", "-n", "6", "--json", "Say hi"))
    assert data["finish_reason"] == "length" and data["reasoning"] and data["text"] == ""


def test_a_schema_holds_the_answer_after_the_trace(chatllm, thinker):
    data = record(chatllm("ask", "-m", str(thinker), "-t", "0", "-n", "80", "--reasoning-budget", "8", "--schema", SCHEMA,
                          "--json", "Say hi"))
    assert data["reasoning"] and isinstance(data["data"]["greeting"], str)


def test_chat_stores_the_trace_apart(chatllm, thinker):
    r = chatllm("chat", "-m", str(thinker), "-t", "0", "-n", "40", "--reasoning-budget", "10", input="Hello!\nAnd again?\n")
    assert r.returncode == 0, r.stderr
    shown = json.loads(chatllm("history", "show", "1", "--json").stdout)
    first = shown["exchanges"][0]
    assert first["reasoning"] and first["assistant"] and first["reasoning"].strip()[:15] not in r.stdout


def test_a_terminal_folds_the_trace_to_one_line(cli_env, thinker):
    pexpect = pytest.importorskip("pexpect")
    env = dict(cli_env, COLUMNS="100", TERM="xterm")
    child = pexpect.spawn(sys.executable, ["-m", "chatllm", "ask", "-m", str(thinker), "-t", "0", "-n", "40",
                                           "--reasoning-budget", "10", "Say hi"], env=env, encoding="utf-8", timeout=120)
    child.expect(r"thought for 10 tokens, [0-9.]+ s")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- tool calls --------------------------------------------------------------------------------------------------


def test_qwen_calls_the_right_tool_and_stdout_is_the_call(chatllm, qwen_path, tools_file):
    r = chatllm("ask", "-m", str(qwen_path), "-t", "0", "--tools", str(tools_file), "What time is it in Berlin?", timeout=300)
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert calls == [{"name": "get_time", "arguments": {"city": "Berlin"}}]
    forced = record(chatllm("ask", "-m", str(qwen_path), "-t", "0", "--tools", str(tools_file), "--tool-choice",
                            "get_weather", "--json", "What time is it in Berlin?", timeout=300))
    assert [c["name"] for c in forced["tool_calls"]] == ["get_weather"] and forced["finish_reason"] == "tool_calls"


def test_without_a_fitting_tool_qwen_may_answer_in_prose(chatllm, qwen_path, tools_file):
    data = record(chatllm("ask", "-m", str(qwen_path), "-t", "0", "-n", "24", "--tools", str(tools_file), "--tool-choice",
                          "none", "--json", "Say hello in French.", timeout=300))
    assert data["tool_calls"] == [] and data["text"]


def test_smollm2_without_tool_syntax_is_held_to_the_generic_form(chatllm, tools_file):
    data = record(chatllm("ask", "-t", "0", "-n", "60", "--tools", str(tools_file), "--tool-choice", "required", "--json",
                          "What is the weather in Paris?"))
    assert data["tool_calls"] and all(c["name"] in ("get_weather", "get_time") and "error" not in c
                                      and isinstance(c["arguments"].get("city"), str) for c in data["tool_calls"])


def test_a_base_model_without_a_template_cannot_take_tools(chatllm, gemma_path, tools_file):
    r = chatllm("ask", "-m", str(gemma_path), "--tools", str(tools_file), "hi")
    assert r.returncode == 1 and "chat template" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("content,message", [
    ("not json", "not JSON"),
    ('[{"name": "a b"}]', "no usable name"),
    ('[{"name": "t"}, {"name": "t"}]', "given twice"),
    ('[{"name": "t", "parameters": {"type": "object", "properties": {"x": {"type": "string", "minLength": "2"}}}}]',
     "not a valid JSON Schema"),
    ('[{"name": "t", "parameters": {"type": "object", "properties": {"x": {"type": "number", "minimum": 2}}}}]',
     "cannot be enforced"),
])
def test_a_bad_tools_file_fails_before_the_model_loads(chatllm, tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    r = chatllm("ask", "-m", "/nonexistent.gguf", "--tools", str(bad), "hi")  # the model is never looked for
    assert r.returncode == 2 and message in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr


# -- servers -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted(smollm_path):
    upstream = LlamaServer(server_binary(), smollm_path, slots=1, ctx=2048).start()
    srv = FaultServer(upstream.root, "k").start()
    yield srv
    srv.stop()
    upstream.stop()


@pytest.fixture
def remote_env(cli_env, scripted) -> dict:
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(entry("scripted", scripted.url, model=ALIAS, api_key_env="SCRIPTED_KEY", api="chat"))
    return dict(cli_env, CHATLLM_MODEL="scripted", SCRIPTED_KEY="k")


@pytest.mark.parametrize("mode", ["reasoning_stream", "think_content"])
def test_a_servers_trace_is_reasoning_whichever_way_it_comes(remote_env, scripted, mode):
    scripted.reset(mode)
    data = json.loads(run_chatllm(["ask", "--json", "--no-think", "Hi"], remote_env).stdout)
    assert data["reasoning"].strip() == TRACE and data["text"].strip() == ANSWER
    assert scripted.last_request["chat_template_kwargs"] == {"enable_thinking": False}
    plain = run_chatllm(["ask", "Hi"], remote_env)
    assert plain.stdout.strip() == ANSWER


def test_a_servers_streamed_tool_calls_are_calls(remote_env, scripted, tools_file):
    scripted.reset("tool_call_stream")
    data = json.loads(run_chatllm(["ask", "--json", "--tools", str(tools_file), "Weather in Oslo, time in Lima?"],
                                  remote_env).stdout)
    assert data["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}},
                                  {"name": "get_time", "arguments": {"city": "Lima"}}]
    sent = scripted.last_request
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"] and sent["tool_choice"] == "auto"


def test_llama_server_with_jinja_reads_the_reasoning_apart(cli_env, thinker):
    server = LlamaServer(server_binary(), thinker, slots=1, ctx=2048,
                         extra=["--jinja", "--reasoning-format", "deepseek"]).start()
    try:
        home = Path(cli_env["CHATLLM_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "models.toml").write_text(entry("r1", server.url, model=ALIAS, api="chat"))
        data = json.loads(run_chatllm(["ask", "-m", "r1", "-t", "0", "-n", "24", "--json", "Say hi"], cli_env).stdout)
        assert data["reasoning"] and data["text"] == ""  # SmolLM2 never closes the block: all of it is the trace
    finally:
        server.stop()


@pytest.mark.parametrize("family", ["hermes", "qwen3", "llama3", "mistral", "generic"])
@pytest.mark.parametrize("choice", ["auto", "required", "get_time"])
def test_every_tool_grammar_compiles_in_llama_cpp(smollm_engine, family, choice):
    from chatllm.engines.chat_formats.formats import NAMED
    from chatllm.engines.chat_formats.tool_calls import ToolSpec
    from chatllm.engines.llamacpp.grammar_sampling import GrammarSampler
    from chatllm.engines.llamacpp.tool_grammar import tool_call_grammar
    from chatllm.settings import Sampling

    tools = [ToolSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"]) for t in TOOLS]
    spec = tool_call_grammar(tools, NAMED[family], choice)
    assert spec is not None and spec.lazy == (choice == "auto")
    sampler = smollm_engine._sampler(Sampling(temperature=0))
    GrammarSampler(smollm_engine._vocab, spec.gbnf, sampler.sampler, smollm_engine.n_vocab, spec.triggers).close()
    sampler.close()


@pytest.fixture(scope="module")
def smollm_engine(smollm_path):
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(smollm_path, n_ctx=512)
    yield engine
    engine.close()
