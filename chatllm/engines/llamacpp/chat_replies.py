"""The chat side of LlamaCppEngine: rendering a conversation (tools, thinking switch) in the model's family format,
and streaming a reply as events (reasoning, text, tool calls) with the grammar and the reasoning budget applied."""

from __future__ import annotations

import time
from typing import Callable, Generator, Sequence

from chatllm.engines.chat_formats.formats import ChatFormat, with_opening
from chatllm.engines.chat_formats.prompting import finish_prompt, prepare
from chatllm.engines.chat_formats.reply_parser import ReplyParser
from chatllm.engines.chat_formats.tool_calls import ToolSpec, tools_from_json
from chatllm.engines.contract import Event, GenerationStats, Reasoning
from chatllm.engines.llamacpp.steering import Steering
from chatllm.engines.llamacpp.tool_grammar import GrammarSpec, tool_call_grammar
from chatllm.settings import Sampling


class ChatRepliesMixin:
    """render_chat and stream for LlamaCppEngine (which provides the template, tokens and the decode loop)."""

    format: ChatFormat
    last_stats: GenerationStats
    _opening_checked: bool
    _render_template: Callable[..., str]
    _pieces: Callable[..., Generator[str, None, None]]
    _gbnf: Callable[[str], str]
    tokenize: Callable[..., list[int]]
    prompt_tokens: Callable[..., list[int]]
    detokenize: Callable[[Sequence[int]], str]

    @property
    def thinks(self) -> bool:
        """True for a reasoning model (its template writes a reasoning block or channel)."""
        return self.format.thinks

    @property
    def reply_format(self) -> ChatFormat:
        """The family format, once told whether the generation prompt opens the reasoning block itself."""
        if not self._opening_checked:
            self._opening_checked = True
            if self.format.reasoning == "think":
                try:
                    probe = self._render_template([{"role": "user", "content": "x"}], True)
                except Exception:  # a template that refuses the probe still renders real conversations
                    probe = ""
                self.format = with_opening(self.format, probe)
        return self.format

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, *,
                    tools: Sequence[ToolSpec] | None = None, think: bool | str | None = None) -> str:
        """The prompt for these messages in the model's own template: tools offered as its family offers them,
        earlier reasoning left out, thinking switched on or off where the model can be told."""
        fmt = self.reply_format
        msgs, variables = prepare(fmt, messages, tools, think)
        prompt = self._render_template(msgs, add_generation_prompt, **variables)
        return finish_prompt(fmt, prompt, think, add_generation_prompt)

    def stream(self, prompt: str | Sequence[int], sampling: Sampling) -> Generator[Event, None, None]:
        """The reply as events while tokens arrive: Reasoning, Text (whole characters), ToolCall; stats in last_stats.

        A grammar (the --schema's, or the tool calls') starts where the answer starts, never inside the reasoning
        trace; after --reasoning-budget tokens of trace the block is closed and the answer begins."""
        tokens = self.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)
        fmt = self.reply_format
        tools = tools_from_json(sampling.tools) if sampling.tool_choice != "none" else []
        thinking = fmt.thinks and sampling.think is not False
        in_reasoning = fmt.reasoning == "think" and bool(tokens) and self._opens_reasoning(tokens, fmt)
        grammar = self._reply_grammar(sampling, tools, fmt)
        if grammar is not None and tools and not grammar.lazy and fmt.tools == "hermes":
            # The whole reply is a list of calls: names and keys repeat by nature, and a repetition penalty cut
            # Qwen's lists short (docs/BENCHMARKS.md). Kept for the generic form: SmolLM2 without it repeats one
            # call until the token limit.
            sampling = sampling.replace(repeat_penalty=1.0)
        if grammar is not None and fmt.reasoning == "think" and thinking and not in_reasoning and tokens:
            # The model would open the block itself: opened here, so the grammar knows to wait for its end.
            tokens = tokens + self.tokenize(fmt.think_open + "\n", special=True)
            in_reasoning = True
        parser = ReplyParser(fmt, in_reasoning=in_reasoning, tools=tools)
        steer = Steering(parser, grammar, thinking=thinking, budget=sampling.reasoning_budget,
                         close_tokens=self._close_tokens(fmt), stats=lambda: self.last_stats)
        pieces = self._pieces(tokens, sampling, steer)
        started = time.perf_counter()
        trace_from: float | None = None
        answer_at: float | None = None
        try:
            for piece in pieces:
                for event in parser.feed(piece):
                    if isinstance(event, Reasoning):
                        trace_from = trace_from or time.perf_counter()
                    elif answer_at is None:
                        answer_at = time.perf_counter()
                    yield event
            for event in parser.finish():
                yield event
        finally:
            pieces.close()
            stats = self.last_stats
            stats.reasoning_tokens = steer.reasoning_tokens
            if trace_from is not None:
                stats.reasoning_seconds = (answer_at or time.perf_counter()) - trace_from
            elif in_reasoning and answer_at is not None:
                stats.reasoning_seconds = answer_at - started
            if parser.calls and stats.finish_reason == "stop":
                stats.finish_reason = "tool_calls"

    def _opens_reasoning(self, tokens: Sequence[int], fmt: ChatFormat) -> bool:
        """True when the prompt ends inside an open reasoning block (the template opened it)."""
        tail = self.detokenize(tokens[-8:]).rstrip()
        return tail.endswith(fmt.think_open)

    def _close_tokens(self, fmt: ChatFormat) -> list[int]:
        """What ends a reasoning block early: the closing tag (or gpt-oss's switch to its final channel)."""
        if fmt.reasoning == "think":
            return self.tokenize("\n" + fmt.think_close + "\n\n", special=True)
        if fmt.reasoning == "harmony":
            return self.tokenize("<|end|><|start|>assistant<|channel|>final<|message|>", special=True)
        return []

    def _reply_grammar(self, sampling: Sampling, tools: list[ToolSpec], fmt: ChatFormat) -> GrammarSpec | None:
        if tools:
            return tool_call_grammar(tools, fmt, sampling.tool_choice)
        if sampling.json_schema:
            return GrammarSpec(self._gbnf(sampling.json_schema))
        return None
