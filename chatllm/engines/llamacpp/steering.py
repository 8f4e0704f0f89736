"""What the decode loop is told as a reply goes: when a grammar starts (after the reasoning trace, never inside it),
and which tokens to force (the end of a reasoning block that used up its budget)."""

from __future__ import annotations

from typing import Callable

from chatllm.engines.chat_formats.reply_parser import ReplyParser
from chatllm.engines.contract import GenerationStats
from chatllm.engines.llamacpp.tool_grammar import GrammarSpec


class Steering:
    """The grammar due once the answer starts, and the reasoning budget, for one reply read by `parser`."""

    def __init__(self, parser: ReplyParser, grammar: GrammarSpec | None = None, *, thinking: bool = True,
                 budget: int | None = None, close_tokens: list[int] | None = None,
                 stats: Callable[[], GenerationStats] | None = None):
        self.parser = parser
        self.thinking = thinking
        self._grammar = grammar
        self.budget = budget
        self._close = list(close_tokens or [])
        self._forced: list[int] = []
        self.reasoning_tokens = 0
        self._stats = stats  # the reply's live stats: its reasoning count is read while the trace streams
        self.closed_early = False  # the budget ended the trace
        if budget == 0 and parser.in_reasoning and self._close:  # no trace at all: the block closes at once
            self.closed_early = True
            self._forced = list(self._close)

    def grammar_due(self) -> GrammarSpec | None:
        """The grammar, once (when the answer is about to start); None before that, and after it was taken."""
        if self._grammar is None or self._forced or not self.parser.answering(self.thinking):
            return None  # never while tokens are forced: a grammar must see only tokens it chose or allows
        grammar, self._grammar = self._grammar, None
        return grammar

    def forced(self) -> int | None:
        """The next token to feed instead of sampling one, or None."""
        return self._forced.pop(0) if self._forced else None

    def on_token(self, token: int) -> None:
        """Count a generated token; past the budget, queue the end of the reasoning block."""
        if not self.parser.in_reasoning or self._forced:
            return
        self.reasoning_tokens += 1
        if self._stats is not None:
            self._stats().reasoning_tokens = self.reasoning_tokens
        if self.budget is not None and self.reasoning_tokens >= self.budget and self._close and not self.closed_early:
            self.closed_early = True
            self._forced = list(self._close)
