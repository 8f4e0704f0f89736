"""One prompt in, one streamed answer out: `ask` through the chat template, `generate` as raw continuation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from chatllm.engines.contract import Engine, GenerationStats, text_stream
from chatllm.settings import Sampling
from chatllm.tasks.ask.structured_output import JsonSpec, decode


@dataclass
class Answer:
    """What one generation produced, and how."""

    model: str
    text: str
    stats: GenerationStats
    data: Any = None  # the validated JSON value when the answer was asked for under a schema
    structured: bool = False

    def as_dict(self) -> dict:
        """The --json record."""
        s = self.stats
        return {
            "model": self.model,
            "text": self.text,
            **({"data": self.data} if self.structured else {}),
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "token_counts": "estimated" if s.estimated else "exact",
            "seconds": round(s.seconds, 3),
            "tokens_per_second": round(s.tokens_per_second, 2),
            "first_token_seconds": round(s.first_token_seconds, 3),
            "finish_reason": s.finish_reason,
            "drafted_tokens": s.drafted_tokens,
            "accepted_tokens": s.accepted_tokens,
        }


def ask(engine: Engine, message: str, sampling: Sampling, *, system: str | None = None,
        on_text: Callable[[str], None] | None = None, spec: JsonSpec | None = None) -> Answer:
    """Answer one message through the model's chat template; under a spec the answer is validated JSON (in data)."""
    prompt, sampling = chat_prompt(engine, message, sampling, system=system, spec=spec)
    answer = _run(engine, prompt, sampling, on_text, strip_leading=True)
    return structured(answer, spec)


def chat_prompt(engine: Engine, message: str, sampling: Sampling, *, system: str | None = None,
                spec: JsonSpec | None = None) -> tuple[str, Sampling]:
    """The prompt `ask` gives the engine for a message, and the sampling it runs with (a schema's grammar added)."""
    if spec is not None:  # the model is told what the grammar holds it to: small models fill fields far better
        system = f"{system}\n\n{spec.instruction()}" if system else spec.instruction()
        sampling = sampling.replace(json_schema=spec.wire_text)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    return engine.render_chat(messages), sampling


def structured(answer: Answer, spec: JsonSpec | None) -> Answer:
    """The answer with its validated JSON value in data when it was asked for under a spec (else unchanged)."""
    if spec is not None:
        answer.data = decode(spec, answer.text, answer.stats.finish_reason)
        answer.structured = True
    return answer


def generate(engine: Engine, text: str, sampling: Sampling, *, on_text: Callable[[str], None] | None = None,
             spec: JsonSpec | None = None) -> Answer:
    """Continue raw text with no chat template (template markers in the text stay plain text); a spec holds it to JSON."""
    if spec is not None:
        sampling = sampling.replace(json_schema=spec.wire_text)
    answer = _run(engine, engine.prompt_tokens(text, special=False), sampling, on_text, strip_leading=False)
    return structured(answer, spec)


def _run(engine: Engine, prompt: str | list[int], sampling: Sampling, on_text: Callable[[str], None] | None,
         strip_leading: bool) -> Answer:
    text = ""
    for piece in text_stream(engine.stream(prompt, sampling)):
        if not text and strip_leading:
            piece = piece.lstrip()
        text += piece
        if on_text is not None and piece:
            on_text(piece)
    return Answer(engine.name, text, engine.last_stats)
