"""One prompt in, one streamed answer out: `ask` through the chat template, `generate` as raw continuation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from chatllm.runtime.contract import Engine, GenerationStats
from chatllm.settings import Sampling


@dataclass
class Answer:
    """What one generation produced, and how."""

    model: str
    text: str
    stats: GenerationStats

    def as_dict(self) -> dict:
        """The --json record."""
        s = self.stats
        return {
            "model": self.model,
            "text": self.text,
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "seconds": round(s.seconds, 3),
            "tokens_per_second": round(s.tokens_per_second, 2),
            "first_token_seconds": round(s.first_token_seconds, 3),
            "finish_reason": s.finish_reason,
        }


def ask(engine: Engine, message: str, sampling: Sampling, *, system: str | None = None,
        on_text: Callable[[str], None] | None = None) -> Answer:
    """Answer one message through the model's chat template; the reply's leading whitespace is dropped."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    return _run(engine, engine.render_chat(messages), sampling, on_text, strip_leading=True)


def generate(engine: Engine, text: str, sampling: Sampling, *, on_text: Callable[[str], None] | None = None) -> Answer:
    """Continue raw text with no chat template (template markers in the text stay plain text)."""
    return _run(engine, engine.prompt_tokens(text, special=False), sampling, on_text, strip_leading=False)


def _run(engine: Engine, prompt: str | list[int], sampling: Sampling, on_text: Callable[[str], None] | None,
         strip_leading: bool) -> Answer:
    text = ""
    for piece in engine.stream(prompt, sampling):
        if not text and strip_leading:
            piece = piece.lstrip()
        text += piece
        if on_text is not None and piece:
            on_text(piece)
    return Answer(engine.name, text, engine.last_stats)
