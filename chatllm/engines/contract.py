"""The one engine contract every task is written against: the llama.cpp engine implements it, so does a remote one.

A task never asks which engine it has. Tokens are ints, prompts are either text (tokenized with the model's
special markers parsed) or token lists, and every generation leaves its counts in `last_stats`.

A prompt is opaque outside its engine: what render_chat returns (and the tokens of it) is only ever given back to the
same engine, cut, counted and joined as tokens. The chat-completions engine (engines/remote/chat_api_engine.py) relies on it:
its render_chat writes a transcript whose turn markers are token ids of its own, so stream() reads the messages back
out of the tokens, and a task never needs to know whether a server wants text or messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Protocol, Sequence, runtime_checkable

from chatllm.settings import Sampling


@dataclass
class GenerationStats:
    """Counts and timings of one generation."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    first_token_seconds: float = 0.0
    seconds: float = 0.0
    finish_reason: str = "stop"  # stop | length | interrupted
    estimated: bool = False  # the token counts are chatllm's estimate, not the model's tokenizer's (a server without one)

    @property
    def tokens_per_second(self) -> float:
        """Generation speed after the first token."""
        gen_time = self.seconds - self.first_token_seconds
        n = self.completion_tokens - 1
        return n / gen_time if n > 0 and gen_time > 0 else 0.0


@runtime_checkable
class Engine(Protocol):
    """A loaded model: tokenize and count, render a chat, stream a reply with stats, score continuations."""

    name: str
    n_ctx: int
    last_stats: GenerationStats

    @property
    def has_chat_template(self) -> bool:
        """True when render_chat can work (the model's own template or a chat-format override)."""
        ...

    @property
    def family(self) -> str | None:
        """The model family as its file says (e.g. "qwen2", "smollm"), for choosing task presets; None if unknown."""
        ...

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Text to token ids (special=True parses template markers like <|im_start|>)."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens the text costs."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids back to text."""
        ...

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]:
        """A whole prompt's tokens, BOS added where the model wants one."""
        ...

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Messages ({"role", "content"}) as the model's prompt text; ChatllmError when it has no template."""
        ...

    def stream(self, prompt: str | Sequence[int], sampling: Sampling) -> Generator[str, None, None]:
        """Text pieces as they are generated (whole characters only); close() it to stop; stats in last_stats."""
        ...

    def complete(self, prompt: str | Sequence[int], sampling: Sampling) -> str:
        """The whole generated text at once."""
        ...

    def score_continuations(self, prefix: str | Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Log-probability of each token sequence following the prefix."""
        ...

    @property
    def pooling(self) -> str | None:
        """The sentence pooling the model declares (mean, cls, last), None when it has none or the engine cannot tell."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised sentence vectors of the texts, in input order (an embedding model, loaded for embeddings)."""
        ...

    def state_key(self) -> dict | None:
        """What a saved KV state depends on (model file, context, template, kernels); None when it cannot be saved."""
        ...

    def save_state(self, n_tokens: int | None = None) -> tuple[list[int], memoryview] | None:
        """The tokens the KV cache holds (cut to the first n_tokens) and its state as bytes; None when there is none."""
        ...

    def load_state(self, tokens: Sequence[int], data: memoryview) -> int:
        """Make the KV cache hold `tokens` from state bytes save_state gave; tokens restored (0: failed, cache empty)."""
        ...

    def close(self) -> None:
        """Free the model; the engine is unusable afterwards."""
        ...
