"""One fake engine for the task tests: the engine contract and every capability (scoring, embeddings, state snapshots),
without a model."""

from __future__ import annotations

import hashlib
import math
import re
from array import array
from typing import Callable, ClassVar, Generator, Mapping, Sequence

from chatllm.engines.chat_formats.formats import ChatFormat
from chatllm.engines.chat_formats.prompting import prepare
from chatllm.engines.chat_formats.reply_parser import ReplyParser
from chatllm.engines.chat_formats.tool_calls import ToolSpec, tools_from_json
from chatllm.engines.contract import Event, GenerationStats
from chatllm.errors import ChatllmError, NoChatTemplateError
from chatllm.settings import Sampling

# Chat template styles: (a message's opening, its closing, the generation prompt).
TEMPLATES = {
    "tags": ("<{role}> ", " </end> ", "<assistant> "),
    "phi": ("<|{role}|>\n", "<|end|>\n", "<|assistant|>\n"),
}

SPLITS = ("words", "chars", "4chars")
FAKE_FORMAT = ChatFormat("fake", reasoning="think", tools="generic")


class FakeEngine:
    """A model-free engine: predictable tokens, scripted replies, a KV cache, and a record of every call.

    Choices made at construction (the defaults are a small chat model: words, no BOS, "tags", 400 tokens):

    - split: how text becomes tokens. "words" (a token per space-separated word; spacing is not kept, so
      detokenize joins words with single spaces), "chars" (a token per character) or "4chars" (a token per
      four characters). Pieces are interned to int ids shared by every fake, BOS is id 0.
    - bos: whether prompt_tokens (and tokenize(add_bos=True)) put BOS first.
    - template: "tags" (`<role> text </end> `), "phi" (`<|role|>\\ntext<|end|>\\n`) or None for a base model.
      unstable=True stamps `<date{epoch}> ` on top, like templates that print today's date.
    - replies: scripted replies, consumed in order; once they run out, `reply` (a text, or a function of the
      call number counted from 1), else "reply to <the last user message>". A reply is cut to max_tokens.
    - cues, bias: score_continuations gives a label (the continuation's text) -0.05 a token when the item
      (the prefix after its last "Text:") holds one of the label's cues, -0.5 a token otherwise, plus bias.
    - on_piece(i) runs before the i-th generated piece (tests press Ctrl-C there); fail_after=i raises a
      ChatllmError at that piece.
    - pooling, dim: an embedding model ("mean", ...): embed gives each text the normalised sum of a fixed random
      +-1 vector per lowercase word, so texts sharing words are near; pooling=None refuses embed like a chat model.

    What the tests read: streamed (each streamed prompt's ids), prompts (the same as word/piece strings),
    streamed_texts (the same as text), max_tokens (each stream's), prompt_texts (texts given to
    prompt_tokens), full_tokenizations (prompt_tokens and count_tokens calls), calls (each scored prefix),
    cache (the ids the 'KV cache' holds), last_stats, closed.
    """

    BOS: ClassVar[int] = 0
    _vocab: ClassVar[list[str]] = ["<s>"]
    _ids: ClassVar[dict[str, int]] = {}

    def __init__(
        self,
        *,
        split: str = "words",
        bos: bool = False,
        template: str | None = "tags",
        n_ctx: int = 400,
        name: str = "fake",
        replies: Sequence[str] = (),
        reply: str | Callable[[int], str] | None = None,
        cues: Mapping[str, Sequence[str]] | None = None,
        bias: Mapping[str, float] | None = None,
        unstable: bool = False,
        on_piece: Callable[[int], None] | None = None,
        fail_after: int | None = None,
        family: str | None = None,
        pooling: str | None = None,
        dim: int = 16,
        estimated: bool = False,
        thinks: bool = False,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if template is not None and template not in TEMPLATES:
            raise ValueError(f"template must be one of {tuple(TEMPLATES)} or None, not {template!r}")
        self.split = split
        self.bos = bos
        self.template = template
        self.has_chat_template = template is not None  # a plain attribute: tests turn it off
        self.family = family  # what a GGUF's metadata would say; None: unknown
        self.thinks = thinks  # a reasoning model: its replies may open with a <think> block
        self.n_ctx = n_ctx
        self.name = name
        self.replies = list(replies)
        self.reply = reply
        self.cues = dict(cues or {})
        self.bias = dict(bias or {})
        self.unstable = unstable
        self.epoch = 0
        self.on_piece = on_piece
        self.fail_after = fail_after
        self.last_stats = GenerationStats()
        self.estimated = estimated  # counts as a chat server without a tokenizer gives them
        self.closed = False
        self.streamed: list[list[int]] = []
        self.max_tokens: list[int] = []
        self.samplings: list[Sampling] = []
        self.prompt_texts: list[str] = []
        self.full_tokenizations = 0
        self.calls: list[list[int]] = []
        self.cache: list[int] = []
        self.saved_states = 0
        self.loaded_states = 0
        self.pooling, self.dim = pooling, dim  # plain attributes, like has_chat_template
        self.embedded: list[list[str]] = []  # the texts of each embed call
        self.rendered_tools: list[list[str] | None] = []  # the tool names each render_chat was given
        self.rendered_think: list[bool | str | None] = []

    # -- tokens -----------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        # `special` changes nothing: template markers are ordinary pieces to the fake.
        ids = [self._id(piece) for piece in self._pieces(text)]
        return ([self.BOS] if add_bos and self.bos else []) + ids

    def count_tokens(self, text: str) -> int:
        self.full_tokenizations += 1
        return len(self.tokenize(text))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return (" " if self.split == "words" else "").join(self.pieces(tokens))

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]:
        self.prompt_texts.append(prompt)
        self.full_tokenizations += 1
        return self.tokenize(prompt, add_bos=True, special=special)

    def pieces(self, tokens: Sequence[int]) -> list[str]:
        """Each token's piece of text, BOS left out."""
        return [self._vocab[t] for t in tokens if t != self.BOS]

    def _pieces(self, text: str) -> list[str]:
        """The text cut into one piece per token; the pieces join back into the text."""
        if self.split == "words":
            return re.findall(r" *[^ ]+", text)  # a word with the spaces before it
        size = 1 if self.split == "chars" else 4
        return [text[i:i + size] for i in range(0, len(text), size)]

    def _id(self, piece: str) -> int:
        if self.split == "words":
            piece = piece.lstrip(" ")
        if piece not in self._ids:
            self._ids[piece] = len(self._vocab)
            self._vocab.append(piece)
        return self._ids[piece]

    # -- chat template ----------------------------------------------------------------------------

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, *,
                    tools: Sequence[ToolSpec] | None = None, think: bool | str | None = None) -> str:
        if not self.has_chat_template:
            raise NoChatTemplateError(self.name)
        self.rendered_tools.append([t.name for t in tools] if tools else None)
        self.rendered_think.append(think)
        messages, _ = prepare(FAKE_FORMAT, messages, tools, think)  # calls and results written as the generic form
        opening, closing, generation = TEMPLATES[self.template]
        stamp = f"<date{self.epoch}> " if self.unstable else ""
        body = "".join(opening.format(role=m["role"]) + m["content"] + closing for m in messages)
        return stamp + body + (generation if add_generation_prompt else "")

    # -- generation -------------------------------------------------------------------------------

    def stream(self, prompt: str | Sequence[int], sampling: Sampling) -> Generator[Event, None, None]:
        tokens = self._tokens_of(prompt)
        self._check_usable(len(tokens))
        self.streamed.append(tokens)
        self.max_tokens.append(sampling.max_tokens)
        self.samplings.append(sampling)
        stats = self.last_stats = GenerationStats(prompt_tokens=len(tokens), cached_tokens=self._load_cache(tokens),
                                                  first_token_seconds=0.01, seconds=0.02, finish_reason="length",
                                                  estimated=self.estimated)
        pieces = self._pieces(self._next_reply(tokens))
        tools = tools_from_json(sampling.tools) if sampling.tool_choice != "none" else []
        parser = ReplyParser(FAKE_FORMAT, tools=tools)  # <think> blocks and {"tool_calls": ...} replies become events
        try:
            for i, piece in enumerate(pieces[: sampling.max_tokens]):
                if i == self.fail_after:
                    raise ChatllmError("engine failed", "")
                if self.on_piece:
                    self.on_piece(i)
                stats.completion_tokens += 1
                self.cache.append(self._id(piece))
                yield from parser.feed(piece)
            yield from parser.finish()
            if len(pieces) <= sampling.max_tokens:
                stats.finish_reason = "tool_calls" if parser.calls else "stop"
        except (KeyboardInterrupt, GeneratorExit):
            stats.finish_reason = "interrupted"
            raise

    def _next_reply(self, tokens: list[int]) -> str:
        if self.replies:
            return self.replies.pop(0)
        if callable(self.reply):
            return self.reply(len(self.streamed))
        if self.reply is not None:
            return self.reply
        return "reply to " + self._last_user_message(self.detokenize(tokens))

    def _last_user_message(self, text: str) -> str:
        if self.template is not None:
            opening, closing, _ = TEMPLATES[self.template]
            text = text.rsplit(opening.format(role="user").strip(), 1)[-1].split(closing.strip(), 1)[0]
        return text.strip()

    def _load_cache(self, tokens: list[int]) -> int:
        """Make the cache hold the prompt; returns how many leading tokens it already held."""
        keep = 0
        # like the real engine, the last prompt token is always evaluated again for its logits
        while keep < min(len(tokens) - 1, len(self.cache)) and self.cache[keep] == tokens[keep]:
            keep += 1
        self.cache = list(tokens)
        return keep

    # -- scoring ----------------------------------------------------------------------------------

    def score_continuations(self, prefix: str | Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        tokens = self._tokens_of(prefix)
        self._check_usable(len(tokens) + max((len(c) for c in continuations), default=0))
        self.calls.append(tokens)
        self._load_cache(tokens)
        item = self.detokenize(tokens).rsplit("Text:", 1)[-1].lower()
        scores = []
        for cont in continuations:
            label = self.detokenize(cont).strip()
            per_token = -0.05 if any(cue in item for cue in self.cues.get(label, ())) else -0.5
            # a log-prob per token, so a multi-token label is scored as a whole sequence
            scores.append(per_token * len(cont) + self.bias.get(label, 0.0))
        return scores

    # -- embeddings -------------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.closed:
            raise AssertionError("the engine was used after close()")
        if self.pooling is None:
            raise ChatllmError(f"{self.name} makes no sentence vectors", "use an embedding model")
        self.embedded.append(list(texts))
        vectors = []
        for text in texts:
            total = [0.0] * self.dim
            for word in re.findall(r"\w+", text.lower()):
                bits = int.from_bytes(hashlib.sha256(word.encode()).digest(), "little")  # dim <= 256
                total = [t + (1.0 if bits >> i & 1 else -1.0) for i, t in enumerate(total)]
            norm = math.sqrt(sum(t * t for t in total)) or 1.0
            vectors.append([t / norm for t in total])
        return vectors

    # -- shared -----------------------------------------------------------------------------------

    def state_key(self) -> dict | None:
        return {"engine": "fake", "name": self.name, "n_ctx": self.n_ctx, "split": self.split, "template": self.template}

    def save_state(self, n_tokens: int | None = None) -> tuple[list[int], memoryview] | None:
        # The 'state' is the cached ids themselves, so a restore can be checked against what was saved.
        if n_tokens is not None:
            del self.cache[n_tokens:]
        if not self.cache:
            return None
        self.saved_states += 1
        return list(self.cache), memoryview(array("i", self.cache).tobytes())

    def load_state(self, tokens: Sequence[int], data: memoryview) -> int:
        self.cache = []
        held = array("i")
        held.frombytes(bytes(data))
        if list(held) != list(tokens):
            return 0
        self.cache = list(tokens)
        self.loaded_states += 1
        return len(tokens)

    def close(self) -> None:
        self.closed = True

    @property
    def prompts(self) -> list[list[str]]:
        """Each streamed prompt as its pieces (words in the "words" split)."""
        return [self.pieces(tokens) for tokens in self.streamed]

    @property
    def streamed_texts(self) -> list[str]:
        """Each streamed prompt as text."""
        return [self.detokenize(tokens) for tokens in self.streamed]

    def _tokens_of(self, prompt: str | Sequence[int]) -> list[int]:
        return self.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)

    def _check_usable(self, n_tokens: int) -> None:
        if self.closed:
            raise AssertionError("the engine was used after close()")
        # A real engine raises ContextOverflowError; here it fails the test, since the tasks must fit their
        # prompts themselves and an engine error must not pass for the task's own refusal.
        if n_tokens >= self.n_ctx:
            raise AssertionError(f"{n_tokens} tokens overflow the {self.n_ctx}-token window")


class FakeBatchEngine(FakeEngine):
    """A FakeEngine that also runs batches (BatchGeneration, BatchScoring): up to `parallel` prompts at a time, each
    through the ordinary stream, finishing in reverse order within a group so tasks must restore the input order.
    What the tests read besides: groups (the batch indices of each group), scored_batches (requests per score_batch)."""

    def __init__(self, *, parallel: int = 3, **kw):
        super().__init__(**kw)
        self.parallel = parallel
        self.groups: list[list[int]] = []
        self.scored_batches: list[int] = []

    def generate_batch(self, prompts, sampling, on_piece=None):
        from chatllm.engines.contract import BatchItem
        from chatllm.errors import ContextOverflowError

        source = enumerate(prompts)
        while True:
            group = []
            for index, prompt in source:
                group.append((index, prompt))
                if len(group) == self.parallel:
                    break
            if not group:
                return
            self.groups.append([i for i, _ in group])
            done = []
            for index, prompt in group:
                pieces: list[str] = []
                n = len(self._tokens_of(prompt))
                if n >= self.n_ctx:  # as the real engine's batch: this item fails, the others run
                    done.append(BatchItem(index, error=ContextOverflowError(n, self.n_ctx)))
                    continue
                try:
                    stream = self.stream(prompt, sampling)
                    for event in stream:
                        pieces.append(event.text)
                        if on_piece is not None and on_piece(index, event.text):
                            stream.close()
                            self.last_stats.finish_reason = "stop"
                            break
                except ChatllmError as err:
                    done.append(BatchItem(index, error=err))
                    continue
                done.append(BatchItem(index, "".join(pieces), pieces, self.last_stats))
            yield from reversed(done)

    def score_batch(self, requests):
        self.scored_batches.append(len(requests))
        return [self.score_continuations(tokens, conts) for tokens, conts in requests]
