"""What tasks are written against: a core generation contract and small capabilities an engine may add.

`Engine` is the core every engine implements: tokenize and count, render a chat, stream a reply as typed events,
stats, close. The capabilities are separate Protocols: `LabelScorer` (log-probabilities of continuations),
`Embedder` (sentence vectors), `StateSnapshots` (the KV state as bytes), `WarmStart` (saved states on disk, which
the loader adds by wrapping an engine that has snapshots), `ContextShift` (a span cut out of the KV cache in place),
and `BatchGeneration` / `BatchScoring` (independent items through the model together, several sequences per decode:
`batching()` says whether an engine runs them so). A task that needs one asks for it with `require()`; an engine
without it is a one-line error naming the engine and the capability, never a stub that returns nothing.

A reply streams as events: `Text` is the answer, `Reasoning` a thinking model's trace; more kinds (tool calls) are
added beside them. A task that wants only the answer reads `text_stream(...)`, which passes text and skips any other
kind, so adding an event kind touches only the tasks that use it.

A prompt is opaque outside its engine: what render_chat returns (and the tokens of it) is only ever given back to the
same engine, cut, counted and joined as tokens. The chat-completions engine relies on it: its render_chat writes a
transcript whose turn markers are token ids of its own, so stream() reads the messages back out of the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable, Iterator, Protocol, Sequence, Union, runtime_checkable

from chatllm.errors import ChatllmError
from chatllm.settings import Sampling


@dataclass
class GenerationStats:
    """Counts and timings of one generation."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    first_token_seconds: float = 0.0
    seconds: float = 0.0
    finish_reason: str = "stop"  # stop | length | interrupted | tool_calls
    estimated: bool = False  # the token counts are chatllm's estimate, not the model's tokenizer's (a server without one)
    reasoning_tokens: int = 0  # of completion_tokens, how many were a thinking model's trace
    reasoning_seconds: float = 0.0  # from the first reasoning token to the first answer token
    drafted_tokens: int = 0  # proposed by prompt-lookup drafts (speculative decoding)
    accepted_tokens: int = 0  # of those, the ones the model agreed with

    @property
    def tokens_per_second(self) -> float:
        """Generation speed after the first token."""
        gen_time = self.seconds - self.first_token_seconds
        n = self.completion_tokens - 1
        return n / gen_time if n > 0 and gen_time > 0 else 0.0


# -- the events of a streamed reply ---------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A piece of the answer (whole characters only)."""

    text: str


@dataclass(frozen=True)
class Reasoning:
    """A piece of a thinking model's reasoning trace: never part of the answer."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: its tool's name and arguments (a JSON object), or why they could not be read."""

    name: str
    arguments: dict
    id: str = ""
    raw: str = ""  # the call as the model wrote it
    error: str | None = None  # the call was malformed (not JSON, no name...): what went wrong


Event = Union[Text, Reasoning, ToolCall]


def text_stream(events: Iterable[Event]) -> Generator[str, None, None]:
    """The answer's text pieces of a stream, every other kind of event skipped; closing it closes the stream."""
    try:
        for event in events:
            if isinstance(event, Text) and event.text:
                yield event.text
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def complete(engine: "Engine", prompt: str | Sequence[int], sampling: Sampling) -> str:
    """The whole answer at once."""
    return "".join(text_stream(engine.stream(prompt, sampling)))


# -- the core contract and its capabilities -------------------------------------------------------


@runtime_checkable
class Engine(Protocol):
    """A loaded model that generates: tokenize and count, render a chat, stream a reply with stats."""

    name: str
    n_ctx: int
    last_stats: GenerationStats

    @property
    def has_chat_template(self) -> bool:
        """True when render_chat can work (the model's own template or a chat-format override)."""
        ...

    @property
    def thinks(self) -> bool:
        """True for a reasoning model: it may write a trace (Reasoning events) before its answer."""
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

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]:
        """A whole prompt's tokens, BOS added where the model wants one."""
        ...

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, *,
                    tools: Sequence[Any] | None = None, think: bool | str | None = None) -> str:
        """Messages ({"role", "content"}; assistant "tool_calls", "tool" results) as the model's prompt text, the
        tools (ToolSpec) offered as its family offers them, thinking on/off/effort where the model can be told;
        ChatllmError when it has no template."""
        ...

    def stream(self, prompt: str | Sequence[int], sampling: Sampling) -> Generator[Event, None, None]:
        """The reply as events while it is generated; close() it to stop; counts and timings in last_stats."""
        ...

    def close(self) -> None:
        """Free the model; the engine is unusable afterwards."""
        ...


@runtime_checkable
class LabelScorer(Protocol):
    """Scores continuations: what sentiment and classify need."""

    def score_continuations(self, prefix: str | Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Log-probability of each token sequence following the prefix."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Sentence vectors: what embed, similar and hybrid retrieval need."""

    name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised sentence vectors of the texts, in input order."""
        ...


@runtime_checkable
class StateSnapshots(Protocol):
    """The KV state as bytes, so it can be kept on disk and restored by another process."""

    name: str

    def state_key(self) -> dict | None:
        """What a saved state depends on (model file, context, template, kernels); None when it cannot be saved."""
        ...

    def save_state(self, n_tokens: int | None = None) -> tuple[list[int], memoryview] | None:
        """The tokens the KV cache holds (cut to the first n_tokens) and its state as bytes; None when there is none."""
        ...

    def load_state(self, tokens: Sequence[int], data: memoryview) -> int:
        """Make the KV cache hold `tokens` from state bytes save_state gave; tokens restored (0: failed, cache empty)."""
        ...


@dataclass
class SavedPrefix:
    """A state restored from disk: the tokens the engine's cache now holds, and what was saved with them."""

    tokens: list[int]
    extra: dict


@runtime_checkable
class WarmStart(Protocol):
    """Saved KV states on disk: restore the longest saved prefix of a prompt, save the current one (in the background)."""

    min_tokens: int  # a shorter prefix is cheaper to evaluate than to load: it is neither restored nor saved

    def restore_prefix(self, tokens: Sequence[int]) -> SavedPrefix | None:
        """Load the saved state sharing the longest prefix with `tokens` (at least a few tokens); None when none does."""
        ...

    def save_prefix(self, *, n_tokens: int | None = None, slot: str | None = None, extra: dict | None = None) -> bool:
        """Save the state's first n_tokens (all of it by default); a slot replaces that slot's older state."""
        ...


@dataclass
class BatchItem:
    """One finished item of a batch: its place in the input, its text (and the pieces it streamed as), or its error."""

    index: int
    text: str = ""
    pieces: list[str] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    error: ChatllmError | None = None  # the prompt could not run (too long for the window, empty): only this item failed


@runtime_checkable
class BatchGeneration(Protocol):
    """Independent prompts generated together, several sequences per decode, a shared prefix evaluated once."""

    parallel: int  # sequences decoded together; 1 runs one prompt at a time, exactly as stream() does

    def generate_batch(self, prompts: Iterable[str | Sequence[int]], sampling: Sampling,
                       on_piece: Callable[[int, str], bool] | None = None) -> Iterator[BatchItem]:
        """Every prompt's reply, each yielded as it finishes (any order: BatchItem.index says which); the prompts are
        read as room frees up. on_piece(index, text) sees each piece as it comes; True ends that item there."""
        ...


@runtime_checkable
class BatchScoring(Protocol):
    """Label scoring of many items per decode."""

    parallel: int

    def score_batch(self, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[list[float]]:
        """For each (prompt tokens, continuations): the continuations' log-probabilities, as score_continuations."""
        ...


def batching(engine: object) -> Any:
    """The engine when it generates batches of items together (BatchGeneration with parallel > 1), else None."""
    if isinstance(engine, BatchGeneration) and getattr(engine, "parallel", 1) > 1:
        return engine
    return None


def batch_scoring(engine: object) -> Any:
    """The engine when it scores batches of items together (BatchScoring with parallel > 1), else None."""
    if isinstance(engine, BatchScoring) and getattr(engine, "parallel", 1) > 1:
        return engine
    return None


@runtime_checkable
class ContextShift(Protocol):
    """Cut a span out of the KV cache in place: what follows it moves back without being evaluated again.

    llama.cpp's sequence remove + position shift: a chat that outgrows its window drops its oldest exchanges in
    milliseconds instead of evaluating the rest again. The tokens kept keep the keys they were computed with while the
    dropped span was in view, so what follows is close to, not the same as, evaluating the shorter prompt afresh.
    """

    def shift_out(self, held: Sequence[int], start: int, end: int) -> bool:
        """If the KV cache begins with `held`, remove its positions [start, end) and move what follows back to close
        the gap; False (the cache as it was) when it does not hold them or cannot shift."""
        ...


class MissingCapability(ChatllmError):
    """The engine cannot do what the task needs (e.g. embeddings on a chat-only server)."""


def as_label_scorer(engine: object, what: str) -> LabelScorer:
    """The engine as a LabelScorer, or a one-line error naming the engine and the capability."""
    return _require(engine, LabelScorer, "label scoring", what)


def as_embedder(engine: object, what: str) -> Embedder:
    """The engine as an Embedder, or a one-line error naming the engine and the capability."""
    return _require(engine, Embedder, "embeddings", what)


def _require(engine: object, capability: Any, wanted: str, what: str) -> Any:
    if not isinstance(engine, capability):
        name = getattr(engine, "name", type(engine).__name__)
        raise MissingCapability(f"{name} cannot do {what}: it has no {wanted}",
                                "pick a model that can (`chatllm models` lists them), e.g. a local GGUF model")
    return engine
