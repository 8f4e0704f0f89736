"""How a model family writes reasoning and tool calls, recognised from its chat template's own marker strings.

As llama.cpp's common/chat does, the template source is searched for the markers each family's template writes:
`<|channel|>` is gpt-oss's harmony format, `<tool_call>` a Hermes/Qwen tool caller, `[TOOL_CALLS]` Mistral,
`<|python_tag|>` or `"parameters"` in a JSON call Llama 3.x, `<think>` (or `[THINK]`) a reasoning block. A template
with no tool syntax gets the generic form: chatllm describes the tools in the system prompt and holds the model's
call to a JSON object by grammar. `--chat-format NAME` picks a format by name instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

REASONING_STYLES = ("none", "think", "harmony")
TOOL_STYLES = ("hermes", "llama3", "mistral", "mistral-args", "harmony", "generic")
# How --think/--no-think reaches the model: a template variable, a prefilled (empty) block, gpt-oss's effort, or not at all.
THINK_SWITCHES = ("none", "enable_thinking", "prefill", "reasoning_effort")


@dataclass(frozen=True)
class ChatFormat:
    """A model family's syntax for reasoning blocks, tool calls and tool results."""

    name: str
    reasoning: str = "none"  # none | think (<think>...</think>) | harmony (gpt-oss channels)
    think_open: str = "<think>"
    think_close: str = "</think>"
    opens_think: bool = False  # the generation prompt opens the reasoning block itself (DeepSeek-R1 distills, QwQ)
    think_switch: str = "none"
    tools: str = "generic"  # hermes | llama3 | mistral | mistral-args | harmony | generic
    native_tools: bool = False  # the template renders the tool definitions, calls and results itself
    arguments_key: str = "arguments"  # llama3 writes "parameters"
    special_text: bool = False  # the syntax is made of control tokens (harmony): pieces are rendered with them

    @property
    def thinks(self) -> bool:
        """True for a reasoning model (one that may write a trace before its answer)."""
        return self.reasoning != "none"

    def describe(self) -> dict:
        """What `chatllm show` and `--json` say about the format."""
        return {"chat_format": self.name, "reasoning": self.reasoning, "tool_calls": self.tools,
                "native_tools": self.native_tools, "think_switch": self.think_switch}


GENERIC = ChatFormat("generic")
# The formats `--chat-format` can name (besides llama-cpp-python's own template names, which render the prompt).
NAMED: dict[str, ChatFormat] = {
    "generic": GENERIC,
    "hermes": ChatFormat("hermes", tools="hermes", native_tools=True),
    "qwen3": ChatFormat("qwen3", reasoning="think", think_switch="enable_thinking", tools="hermes", native_tools=True),
    "deepseek-r1": ChatFormat("deepseek-r1", reasoning="think", opens_think=True, think_switch="prefill"),
    "think": ChatFormat("think", reasoning="think", think_switch="prefill"),
    "gpt-oss": ChatFormat("gpt-oss", reasoning="harmony", think_switch="reasoning_effort", tools="harmony",
                          native_tools=True, special_text=True),
    "llama3": ChatFormat("llama3", tools="llama3", native_tools=True, arguments_key="parameters"),
    "mistral": ChatFormat("mistral", tools="mistral", native_tools=True),
    "magistral": ChatFormat("magistral", reasoning="think", think_open="[THINK]", think_close="[/THINK]",
                            tools="mistral-args", native_tools=True),
}


def format_named(name: str) -> ChatFormat | None:
    """The format `--chat-format NAME` names, or None when NAME is not one of chatllm's (a llama-cpp-python template)."""
    key = name.strip().lower().replace("_", "-")
    return NAMED.get({"harmony": "gpt-oss", "r1": "deepseek-r1", "llama-3": "llama3", "qwen": "hermes"}.get(key, key))


def detect_format(source: str | None) -> ChatFormat:
    """The format a chat template's source writes, found by the marker strings of each family."""
    src = source or ""
    if "<|channel|>" in src:
        return NAMED["gpt-oss"]
    reasoning, think_open, think_close = "none", "<think>", "</think>"
    if "[THINK]" in src and "[/THINK]" in src:
        reasoning, think_open, think_close = "think", "[THINK]", "[/THINK]"
    elif "<think>" in src or "</think>" in src:
        reasoning = "think"
    switch = "none"
    if reasoning == "think":
        switch = "enable_thinking" if "enable_thinking" in src else "prefill"
    tools, native, key = "generic", False, "arguments"
    if "<tool_call>" in src and "tools" in src:
        tools, native = "hermes", True
    elif "[TOOL_CALLS]" in src:
        tools, native = ("mistral-args" if "[ARGS]" in src else "mistral"), True
    elif "<|python_tag|>" in src or ('"parameters"' in src and "tools" in src and "<|start_header_id|>" in src):
        tools, native, key = "llama3", True, "parameters"
    name = {"hermes": "qwen3" if reasoning == "think" else "hermes", "llama3": "llama3", "mistral": "mistral",
            "mistral-args": "magistral" if reasoning == "think" else "mistral"}.get(tools, "think" if reasoning == "think" else "generic")
    return ChatFormat(name, reasoning=reasoning, think_open=think_open, think_close=think_close, think_switch=switch,
                      tools=tools, native_tools=native, arguments_key=key)


def with_opening(fmt: ChatFormat, generation_prompt: str) -> ChatFormat:
    """The format, told whether the template's generation prompt opens the reasoning block itself."""
    if fmt.reasoning != "think":
        return fmt
    tail = generation_prompt.rstrip()
    opens = tail.endswith(fmt.think_open)
    return fmt if opens == fmt.opens_think else dataclasses.replace(fmt, opens_think=opens)
