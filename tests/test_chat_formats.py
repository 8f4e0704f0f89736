"""Chat formats on real templates: each family recognised from its markers, conversations with tools and thinking
rendered as the family expects, and replies read back into reasoning, text and tool calls as they stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatllm.engines.chat_formats.formats import NAMED, detect_format, format_named, with_opening
from chatllm.engines.chat_formats.prompting import finish_prompt, prepare
from chatllm.engines.chat_formats.reply_parser import ReplyParser
from chatllm.engines.chat_formats.tool_calls import ToolSpec, call_schema, lenient_calls, tools_from_json, tools_to_json
from chatllm.engines.chat_templates import ChatTemplate
from chatllm.engines.contract import Reasoning, Text, ToolCall

TEMPLATES = Path(__file__).parent / "templates"
WEATHER = ToolSpec("get_weather", "The weather in a city now.",
                   {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"]})
TIME = ToolSpec("get_time", "The time in a city.", {"type": "object", "properties": {"city": {"type": "string"}},
                                                      "required": ["city"]})
TOOLS = [WEATHER, TIME]


def source(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def render(name: str, messages, tools=None, think=None, add_generation_prompt=True) -> str:
    fmt = detect_format(source(name))
    msgs, variables = prepare(fmt, messages, tools, think)
    prompt = ChatTemplate(source(name), bos="<s>", eos="</s>", model=name, hint="").render(msgs, add_generation_prompt, **variables)
    return finish_prompt(fmt, prompt, think, add_generation_prompt)


@pytest.mark.parametrize("name,family,reasoning,tools,switch", [
    ("Qwen-Qwen3-0.6B", "qwen3", "think", "hermes", "enable_thinking"),
    ("Qwen-Qwen2.5-7B-Instruct", "hermes", "none", "hermes", "none"),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "think", "think", "generic", "enable_thinking"),
    ("llama-cpp-deepseek-r1", "think", "think", "generic", "prefill"),
    ("openai-gpt-oss-120b", "gpt-oss", "harmony", "harmony", "reasoning_effort"),
    ("meta-llama-Llama-3.2-3B-Instruct", "llama3", "none", "llama3", "none"),
    ("mistralai-Mistral-Nemo-Instruct-2407", "mistral", "none", "mistral", "none"),
    ("mistralai-Ministral-3-14B-Reasoning-2512", "magistral", "think", "mistral-args", "prefill"),
    ("HuggingFaceTB-SmolLM3-3B", "think", "think", "generic", "enable_thinking"),
])
def test_each_family_is_recognised_by_its_markers(name, family, reasoning, tools, switch):
    fmt = detect_format(source(name))
    assert (fmt.name, fmt.reasoning, fmt.tools, fmt.think_switch) == (family, reasoning, tools, switch)


def test_a_template_without_markers_and_no_template_are_the_generic_form():
    assert detect_format("{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}").name == "generic"
    assert detect_format(None).name == "generic"


def test_a_name_chooses_a_format_and_a_template_name_does_not():
    assert format_named("qwen3") is NAMED["qwen3"] and format_named("harmony") is NAMED["gpt-oss"]
    assert format_named("chatml") is None  # llama-cpp-python's template names render prompts instead


def test_whether_the_generation_prompt_opens_the_block():
    user = [{"role": "user", "content": "hi"}]
    r1 = with_opening(detect_format(source("llama-cpp-deepseek-r1")), render("llama-cpp-deepseek-r1", user))
    qwen = with_opening(detect_format(source("Qwen-Qwen3-0.6B")), render("Qwen-Qwen3-0.6B", user))
    assert r1.opens_think and not qwen.opens_think


def test_qwen3_gets_its_tools_and_its_thinking_switch():
    prompt = render("Qwen-Qwen3-0.6B", [{"role": "user", "content": "Weather in Oslo?"}], tools=TOOLS, think=False)
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt and prompt.endswith("<think>\n\n</think>\n\n")
    assert render("Qwen-Qwen3-0.6B", [{"role": "user", "content": "x"}], think=True).endswith("<|im_start|>assistant\n")


def test_earlier_reasoning_is_never_sent_back_and_calls_and_results_render():
    history = [{"role": "user", "content": "Weather in Oslo?"},
               {"role": "assistant", "content": "", "reasoning": "SECRET TRACE",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
               {"role": "tool", "name": "get_weather", "content": "rain, 4 C"},
               {"role": "assistant", "content": "It rains.", "reasoning": "SECRET TRACE 2"},
               {"role": "user", "content": "And tomorrow?"}]
    for name in ("Qwen-Qwen3-0.6B", "Qwen-Qwen2.5-7B-Instruct", "mistralai-Mistral-Nemo-Instruct-2407", "HuggingFaceTB-SmolLM3-3B",
                 "meta-llama-Llama-3.2-3B-Instruct", "openai-gpt-oss-120b"):
        prompt = render(name, history, tools=TOOLS)
        assert "SECRET" not in prompt, name
        assert "rain, 4 C" in prompt and "Oslo" in prompt, name
    qwen = render("Qwen-Qwen3-0.6B", history, tools=TOOLS)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in qwen
    assert "<tool_response>\nrain, 4 C\n</tool_response>" in qwen
    generic = render("HuggingFaceTB-SmolLM3-3B", history, tools=TOOLS)  # no tool syntax of its own
    assert '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}' in generic
    assert "not instructions" in generic and "You can call these tools" in generic


def test_the_same_history_renders_the_same_prompt():  # call ids derive from the call: the KV cache keeps holding
    history = [{"role": "user", "content": "a"},
               {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_time", "arguments": {"city": "X"}}}]},
               {"role": "tool", "tool_call_id": "", "name": "get_time", "content": "noon"}]
    assert render("mistralai-Mistral-Nemo-Instruct-2407", history, tools=TOOLS) == \
        render("mistralai-Mistral-Nemo-Instruct-2407", history, tools=TOOLS)


def test_llama3_without_tools_says_nothing_of_tools():
    prompt = render("meta-llama-Llama-3.2-3B-Instruct", [{"role": "user", "content": "hi"}])
    assert "Environment: ipython" not in prompt  # `tools is not none` saw an undefined value as tools offered
    assert "Environment: ipython" in render("meta-llama-Llama-3.2-3B-Instruct", [{"role": "user", "content": "hi"}], tools=TOOLS)


def test_gpt_oss_reasoning_effort_and_the_prefilled_empty_block():
    assert "Reasoning: high" in render("openai-gpt-oss-120b", [{"role": "user", "content": "hi"}], think="high")
    assert "Reasoning: low" in render("openai-gpt-oss-120b", [{"role": "user", "content": "hi"}], think=False)
    off = render("llama-cpp-deepseek-r1", [{"role": "user", "content": "hi"}], think=False)
    assert off.endswith("<think>\n</think>\n\n")


# -- reading replies back ------------------------------------------------------------------------------------------


def parse(fmt, text: str, *, tools=TOOLS, in_reasoning=False, step: int = 1):
    """The events of a reply fed `step` characters at a time, as a stream cuts it."""
    parser = ReplyParser(fmt, in_reasoning=in_reasoning, tools=tools)
    events = []
    for i in range(0, len(text), step):
        events += parser.feed(text[i:i + step])
    return events + parser.finish()


def joined(events, kind) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


def calls(events) -> list[ToolCall]:
    return [e for e in events if isinstance(e, ToolCall)]


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_think_block_is_reasoning_and_the_rest_the_answer(step):
    events = parse(NAMED["qwen3"], "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4.", step=step)
    assert joined(events, Reasoning) == "Let me see: 2+2." and joined(events, Text) == "It is 4."


def test_a_block_the_prompt_opened_and_one_never_closed():
    events = parse(NAMED["deepseek-r1"], "thinking hard</think>\n\nDone.", in_reasoning=True)
    assert joined(events, Reasoning) == "thinking hard" and joined(events, Text) == "Done."
    never = parse(NAMED["qwen3"], "<think>I keep going and going")
    assert joined(never, Reasoning) == "I keep going and going" and joined(never, Text) == ""


def test_text_keeps_its_leading_space_and_a_lone_tag_later_is_text():
    assert joined(parse(NAMED["generic"], " continued", tools=()), Text) == " continued"
    assert joined(parse(NAMED["qwen3"], "Use <think> tags."), Text) == "Use <think> tags."


@pytest.mark.parametrize("step", [1, 5, 1000])
@pytest.mark.parametrize("reply", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '```json\n{\n  "name": "get_weather",\n  "arguments": {"city": "Paris"}\n}\n```',
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
])
def test_a_hermes_call_in_tags_in_a_markdown_block_or_bare(reply, step):
    events = parse(NAMED["hermes"], reply, step=step)
    assert [(c.name, c.arguments, c.error) for c in calls(events)] == [("get_weather", {"city": "Paris"}, None)]
    assert joined(events, Text) == ""  # call markup never reaches the screen as prose


def test_two_calls_and_text_around_them():
    reply = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "get_time", "arguments": {"city": "B"}}\n</tool_call>')
    assert [(c.name, c.arguments) for c in calls(parse(NAMED["hermes"], reply, step=2))] == \
        [("get_weather", {"city": "A"}), ("get_time", {"city": "B"})]


def test_code_that_is_not_a_call_stays_text():
    reply = "Here:\n```python\nprint({'name': 1})\n```\nDone."
    events = parse(NAMED["hermes"], reply, step=2)
    assert joined(events, Text) == reply and not calls(events)
    other = parse(NAMED["hermes"], '{"answer": 42}')
    assert joined(other, Text) == '{"answer": 42}' and not calls(other)


@pytest.mark.parametrize("reply,error", [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": ', "cut off"),
    ('<tool_call>\n{"name": "get_weather" "arguments": {}}\n</tool_call>', "not valid JSON"),
    ('<tool_call>\n{"name": "launch_rocket", "arguments": {}}\n</tool_call>', "no tool named 'launch_rocket'"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"days": 2}}\n</tool_call>', "'city' is a required property"),
    ('<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": 3}"}\n</tool_call>', "is not of type 'string'"),
])
def test_a_bad_call_is_a_call_with_its_error_never_an_exception(reply, error):
    found = calls(parse(NAMED["hermes"], reply))
    assert len(found) == 1 and error in (found[0].error or ""), found


def test_the_generic_form_llama3_and_mistral_calls():
    generic = calls(parse(NAMED["generic"], '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "A"}}, '
                                            '{"name": "get_time", "arguments": {"city": "B"}}]}'))
    assert [c.name for c in generic] == ["get_weather", "get_time"] and not any(c.error for c in generic)
    llama = calls(parse(NAMED["llama3"], '<|python_tag|>{"name": "get_time", "parameters": {"city": "C"}}'))
    assert [(c.name, c.arguments) for c in llama] == [("get_time", {"city": "C"})]
    mistral = calls(parse(NAMED["mistral"], '[TOOL_CALLS][{"name": "get_time", "arguments": {"city": "D"}}]', step=3))
    assert [(c.name, c.arguments) for c in mistral] == [("get_time", {"city": "D"})]
    magistral = parse(NAMED["magistral"], '[THINK]plan[/THINK][TOOL_CALLS]get_time[ARGS]{"city": "E"}', step=2)
    assert joined(magistral, Reasoning) == "plan" and [(c.name, c.arguments) for c in calls(magistral)] == [("get_time", {"city": "E"})]


@pytest.mark.parametrize("step", [1, 7, 1000])
def test_gpt_oss_channels(step):
    reply = ("<|channel|>analysis<|message|>The user wants weather.<|end|><|start|>assistant<|channel|>commentary "
             'to=functions.get_weather <|constrain|>json<|message|>{"city": "Rome"}<|call|>')
    events = parse(NAMED["gpt-oss"], reply, step=step)
    assert joined(events, Reasoning) == "The user wants weather."
    assert [(c.name, c.arguments) for c in calls(events)] == [("get_weather", {"city": "Rome"})]
    final = parse(NAMED["gpt-oss"], "<|channel|>analysis<|message|>Hmm.<|end|><|start|>assistant<|channel|>final"
                                    "<|message|>Hello there<|return|>", step=step)
    assert joined(final, Reasoning) == "Hmm." and joined(final, Text) == "Hello there"


def test_without_tools_json_and_tags_are_text():
    events = parse(NAMED["hermes"], '<tool_call>{"name": "x"}</tool_call>', tools=())
    assert joined(events, Text) == '<tool_call>{"name": "x"}</tool_call>'


def test_lenient_reading_of_what_small_models_write():
    assert lenient_calls('Sure!\n```json\n{"name": "a", "arguments": {"x": 1}}\n```') == [{"name": "a", "arguments": {"x": 1}}]
    assert lenient_calls('[{"name": "a", "parameters": {}}, {"function": {"name": "b", "arguments": "{}"}}]') == \
        [{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{}"}]
    assert lenient_calls("no call here") is None


def test_tools_travel_as_json_and_a_call_schema_holds_names_and_arguments():
    assert tools_from_json(tools_to_json(TOOLS)) == TOOLS
    schema = call_schema(TOOLS)
    assert [b["properties"]["name"]["const"] for b in schema["anyOf"]] == ["get_weather", "get_time"]
    only = call_schema(TOOLS, only="get_time", key="parameters")
    assert only["properties"]["name"] == {"const": "get_time"} and "parameters" in only["required"]
    json.dumps(schema)
