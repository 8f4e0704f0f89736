"""Summaries of text of any length: one pass when it fits the window, else map-reduce sized to the real n_ctx.

Pure logic over the engine contract (chatllm.runtime.contract), so tests drive it with the fake engine. The map calls
may run concurrently on worker engines (connections to one server): notes keep the chunks' order.
"""

from __future__ import annotations

import collections
import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from chatllm.errors import ChatllmError
from chatllm.runtime.contract import Engine
from chatllm.settings import Sampling
from chatllm.tasks.chunking import (
    chunk_pieces,
    drop_gutenberg_frame,
    hard_split,
    pieces_from_blocks,
)
from chatllm.tasks.parallel import ordered_map
from chatllm.tasks.text import boundary_after, guess_language, sentence_end

LENGTHS = {"short": 50, "medium": 150, "long": 300}  # target words
STYLES = ("paragraph", "bullets", "tldr")
TLDR_WORDS = 30
TOKENS_PER_WORD = 1.6  # generous for English; CJK and code run higher, hence the fixed slack below
SLACK = 48  # room for template tokens that differ between the measured and the real prompt, and join effects
DEFAULT_CHUNK_TOKENS = 2048  # prompt processing slows with context length; smaller chunks also summarize better
MIN_SENTENCE_CHARS = 24  # a TL;DR sentence ends at the first full stop after this many characters
FINAL_HEADROOM = 1.4  # the final summary may run this much past its target to finish its sentence
BULLET_LEAD = "-"  # the reply to a bullets request starts with this, so even a tiny model writes a list
PLACEHOLDER = "\u2063CHATLLM-DOCUMENT\u2063"


@dataclass(frozen=True)
class SummaryOptions:
    """What kind of summary to write."""

    length: str = "medium"
    words: int | None = None
    style: str = "paragraph"
    lang: str | None = None
    focus: str | None = None
    max_tokens: int | None = None  # hard cap on every generated summary (partial or final)
    chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS  # cap on map chunks; None: as large as the window allows

    def __post_init__(self):
        if self.length not in LENGTHS:
            raise ValueError(f"length must be one of {', '.join(LENGTHS)}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}")

    @property
    def target_words(self) -> int:
        """How many words the final summary should have."""
        if self.words:
            return self.words
        if self.style == "tldr":
            return TLDR_WORDS
        return LENGTHS[self.length]


@dataclass
class Progress:
    """Where a summarization stands, passed to the progress callback after every model call."""

    stage: str  # "read": deciding; "map": chunks; "reduce": combining notes; "final": the summary itself
    done: int = 0  # calls finished in this stage
    total: int | None = None  # calls expected in this stage (an estimate while the input is still being read)
    chunks: int = 0  # map chunks finished so far
    level: int = 0  # reduce level (1 = first combination of chunk notes)
    prompt_tokens: int = 0  # prompt tokens evaluated so far, all calls
    completion_tokens: int = 0  # tokens generated so far, all calls
    seconds: float = 0.0  # wall time since the start
    fraction: float = 0.0  # estimated share of all the work done, 0..1

    @property
    def prompt_rate(self) -> float:
        """Prompt tokens processed per second of wall time so far."""
        return self.prompt_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SummaryResult:
    """The summary and what it cost."""

    text: str
    input_tokens: int = 0  # tokens of the document itself
    prompt_tokens: int = 0  # tokens evaluated over all calls (document + notes + instructions, minus cache hits)
    completion_tokens: int = 0
    chunks: int = 1
    calls: int = 0
    levels: int = 0  # 0: one pass; 1: chunks then the final pass; 2+: notes were combined in between
    seconds: float = 0.0
    finish_reason: str = "stop"
    calls_log: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The JSON-able fields (no per-call log)."""
        return {
            "summary": self.text,
            "input_tokens": self.input_tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "chunks": self.chunks,
            "calls": self.calls,
            "levels": self.levels,
            "seconds": round(self.seconds, 3),
            "finish_reason": self.finish_reason,
        }


# -- prompts --------------------------------------------------------------------------------------

def _language_clause(opts: SummaryOptions, detected: str | None) -> str:
    lang = opts.lang or detected
    return f" Write in {lang}." if lang else ""


def _focus_clause(opts: SummaryOptions) -> str:
    return f" Focus on {opts.focus.strip()}." if opts.focus and opts.focus.strip() else ""


def final_instruction(opts: SummaryOptions, whole: str, detected: str | None = None) -> str:
    """The instruction for the summary the user sees; `whole` names what is summarized."""
    words = opts.target_words
    if opts.style == "tldr":
        text = f"Summarize {whole} in one sentence of at most {words} words: what it reports and what it concludes."
    elif opts.style == "bullets":
        text = (f"Summarize {whole} as a bulleted list of its key points, one '- ' bullet per line, "
                f"about {words} words in all.")
    else:
        text = f"Summarize {whole} in one paragraph of about {words} words. State the main points plainly."
    return text + _focus_clause(opts) + _language_clause(opts, detected)


def notes_instruction(opts: SummaryOptions, words: int, detected: str | None = None) -> str:
    """The instruction for notes on one part of a longer document (plain: tiny models echo meta-talk)."""
    return f"Summarize the text above in about {words} words." + _focus_clause(opts) + _language_clause(opts, detected)


def merge_instruction(opts: SummaryOptions, words: int, detected: str | None = None) -> str:
    """The instruction for merging notes on consecutive parts into shorter notes."""
    return f"Summarize the text above in about {words} words." + _focus_clause(opts) + _language_clause(opts, detected)


def user_message(body: str, instruction: str) -> str:
    """The document first, the instruction last: small models follow what they read last."""
    return f"{body}\n\n---\n{instruction}"


def join_notes(notes: Sequence[str]) -> str:
    """Notes on consecutive parts, in order, as paragraphs: labels invite small models to copy them."""
    return "\n\n".join(note.strip() for note in notes)


# -- the map-reduce --------------------------------------------------------------------------------


class Summarizer:
    """Summarizes one document (a stream of text blocks) with one loaded engine."""

    def __init__(self, engine: Engine, sampling: Sampling, options: SummaryOptions | None = None,
                 on_progress: Callable[[Progress], None] | None = None, workers: Sequence[Engine] = ()):
        self.engine = engine
        self.workers = list(workers) or [engine]  # the map calls' engines, one thread each (none of them `engine` when several)
        self._lock = threading.Lock()
        self.options = options or SummaryOptions()
        self.on_progress = on_progress
        self.sampling = sampling
        # Past its target length the final summary stops at the next sentence (or bullet) end; the reserve is
        # the hard cap behind that, so a summary is not cut mid-sentence unless the model runs on far too long.
        self.final_target = self._cap(math.ceil(self.options.target_words * TOKENS_PER_WORD))
        self.final_reserve = self._cap(math.ceil(self.final_target * FINAL_HEADROOM) + 24)
        n_ctx = engine.n_ctx
        self.note_reserve = self._cap(max(48, min(320, n_ctx // 10)))
        self._overheads: dict[str, int] = {}
        if self.final_reserve + self._overhead("final") + 16 > n_ctx:
            raise ChatllmError(
                f"a {self.options.target_words}-word summary does not fit the {n_ctx}-token context window",
                "raise --ctx, or ask for fewer --words / a shorter --length, or lower --max-tokens",
            )

    def _cap(self, tokens: int) -> int:
        cap = self.options.max_tokens
        return max(1, min(tokens, cap)) if cap else tokens

    # prompt building ---------------------------------------------------------------------------

    def _overhead(self, kind: str) -> int:
        """Tokens a prompt of this kind costs around its document (measured once with a long instruction)."""
        if kind not in self._overheads:
            instruction = {
                "final": final_instruction(self.options, "the notes on the whole document", "Chinese"),
                "notes": notes_instruction(self.options, 99999, "Chinese"),
                "merge": merge_instruction(self.options, 99999, "Chinese"),
            }[kind]
            pre, post = self._frame(instruction)
            self._overheads[kind] = len(pre) + len(post) + SLACK
        return self._overheads[kind]

    def _frame(self, instruction: str) -> tuple[list[int], list[int]]:
        """Prompt tokens before and after the document for this instruction."""
        content = user_message(PLACEHOLDER, instruction)
        engine = self.engine
        if engine.has_chat_template:
            rendered = engine.render_chat([{"role": "user", "content": content}])
        else:  # a base model: plain text and a cue
            rendered = content + "\n\nAnswer:\n"
        if rendered.count(PLACEHOLDER) != 1:
            raise ChatllmError(f"the chat template of {engine.name} mangles the message",
                               "pass --chat-format chatml (or llama-3, gemma, ...)")
        before, after = rendered.split(PLACEHOLDER)
        return engine.prompt_tokens(before, special=True), engine.tokenize(after, add_bos=False, special=True)

    def _prompt(self, body: str, instruction: str, lead: str = "") -> list[int]:
        # The document is tokenized with special=False so text like "<|im_end|>" in it stays plain text.
        pre, post = self._frame(instruction)
        tokenize = self.engine.tokenize
        return pre + tokenize(body, add_bos=False, special=False) + post + (tokenize(lead) if lead else [])

    def budget(self, kind: str, reserve: int) -> int:
        """How many document tokens a prompt of this kind can hold, leaving `reserve` for the reply."""
        return self.engine.n_ctx - self._overhead(kind) - reserve

    # running -----------------------------------------------------------------------------------

    def _final(self, body: str, instruction: str, on_text: Callable[[str], None] | None) -> str:
        """The summary the user sees, streamed to on_text."""
        style = self.options.style
        lead = BULLET_LEAD if style == "bullets" else ""
        return self._generate(self._prompt(body, instruction, lead), self.final_reserve, on_text,
                              one_sentence=style == "tldr", soft_tokens=self.final_target, lead=lead)

    def _generate(self, tokens: list[int], max_tokens: int, on_text: Callable[[str], None] | None = None,
                  one_sentence: bool = False, soft_tokens: int | None = None, lead: str = "", engine: Engine | None = None) -> str:
        """One model call (on `engine`, else the main one); `lead` is the reply's start already in the prompt, and after
        soft_tokens the reply ends at the next sentence or line end."""
        engine = engine or self.engine
        sampling = self.sampling.replace(max_tokens=max_tokens)
        parts: list[str] = []  # what went out, the lead joined to the first piece
        text = lead  # the reply so far, the lead included
        stream = engine.stream(tokens, sampling)
        cut = False
        soft_from = None  # where in the text the soft limit was reached
        try:
            for piece in stream:
                if not parts and not lead:
                    piece = piece.lstrip()
                    if not piece:
                        continue
                if soft_tokens is not None and soft_from is None and engine.last_stats.completion_tokens > soft_tokens:
                    soft_from = len(text)
                end = None
                if one_sentence:
                    end = sentence_end(text + piece, MIN_SENTENCE_CHARS)
                if soft_from is not None and end is None:
                    end = boundary_after(text + piece, soft_from)
                if end is not None:
                    piece = piece[: max(0, end - len(text))]
                    cut = True
                text += piece
                if not parts and lead:  # the lead goes out with the first real text, or not at all
                    piece = lead + piece
                parts.append(piece)
                if on_text is not None and piece:
                    on_text(piece)
                if cut:
                    break
        finally:
            stream.close()
        stats, res = engine.last_stats, self._result
        with self._lock:  # map calls may end in several threads at once
            res.calls += 1
            res.prompt_tokens += stats.prompt_tokens - stats.cached_tokens
            res.completion_tokens += stats.completion_tokens
            res.finish_reason = "stop" if cut else stats.finish_reason
            res.calls_log.append({"prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_tokens,
                                  "completion_tokens": stats.completion_tokens, "seconds": stats.seconds,
                                  "first_token_seconds": stats.first_token_seconds or stats.seconds})
        return "".join(parts).strip()

    def _report(self, progress: Progress) -> None:
        if self.on_progress is None:
            return
        res = self._result
        progress.prompt_tokens = res.prompt_tokens
        progress.completion_tokens = res.completion_tokens
        progress.seconds = time.perf_counter() - self._start
        progress.chunks = res.chunks if progress.stage != "read" else 0
        self.on_progress(progress)

    def summarize(self, blocks: Iterable[str], on_text: Callable[[str], None] | None = None,
                  size_hint: int | None = None) -> SummaryResult:
        """Summarize a stream of text blocks; the final summary goes to on_text as it is generated.

        size_hint is the input's approximate length in characters (for progress estimates and even chunks).
        """
        self._start = time.perf_counter()
        self._result = res = SummaryResult(text="", chunks=0)
        count = self.engine.count_tokens
        opts = self.options

        # Read until the input is known to fit one pass, or known not to (holding at most one window).
        direct_budget = self.budget("final", self.final_reserve)
        pieces = drop_gutenberg_frame(pieces_from_blocks(blocks))
        held: list[str] = []
        held_tokens = 0
        exhausted = True
        for piece in pieces:
            held.append(piece)
            held_tokens += count(piece)
            if held_tokens > direct_budget:
                exhausted = False
                break
        detected = None if opts.lang else guess_language("".join(itertools.islice(held, 8))[:4000])
        self._report(Progress("read", fraction=0.0))

        if exhausted:
            text = "".join(held).strip()
            if not text:
                raise ChatllmError("the input is empty", "give some text")
            tokens = count(text)
            if tokens <= direct_budget:
                res.input_tokens = tokens
                res.chunks = 1
                self._report(Progress("final", total=1, fraction=0.0))
                instruction = final_instruction(opts, "the text above", detected)
                res.text = self._final(text, instruction, on_text)
                return self._finish(Progress("final", done=1, total=1, fraction=1.0))

        # Map: notes on each chunk. Notes must be small enough that two always fit a merge and a final pass,
        # so every merge level at least halves their number and the recursion ends.
        combined_budget = self.budget("final", self.final_reserve)
        room = self.engine.n_ctx - max(self._overhead("notes"), self._overhead("merge")) - 16
        self.note_reserve = min(self.note_reserve, room // 3, (combined_budget - 16) // 2)
        if opts.chunk_tokens:
            self.note_reserve = min(self.note_reserve, max(16, opts.chunk_tokens // 4))
        if self.note_reserve < 16:
            raise ChatllmError(
                f"the {self.engine.n_ctx}-token context window is too small to summarize this text in parts",
                "raise --ctx (1024 or more is sensible), or lower --words / --max-tokens",
            )
        note_words = max(10, int(self.note_reserve / TOKENS_PER_WORD) - 10)
        map_budget = self.budget("notes", self.note_reserve)
        if opts.chunk_tokens:
            map_budget = max(2 * self.note_reserve, min(map_budget, opts.chunk_tokens))
        merge_budget = self.budget("merge", self.note_reserve)
        if opts.chunk_tokens:
            # Merges and the final pass read no more at once than a chunk: small models follow long input poorly.
            floor = 2 * (self.note_reserve + 8)
            merge_budget = min(merge_budget, max(opts.chunk_tokens, floor))
            combined_budget = min(combined_budget, max(opts.chunk_tokens, floor))
        held_chars = sum(len(p) for p in held)
        est_tokens = None
        if size_hint and held_chars:
            est_tokens = max(held_tokens, int(size_hint * held_tokens / held_chars))
        target = map_budget
        if est_tokens:
            n = math.ceil(est_tokens / map_budget)
            target = min(map_budget, math.ceil(est_tokens / n * 1.08))
        est_chunks = math.ceil(est_tokens / target) if est_tokens else None

        notes: list[str] = []
        chars_done = 0
        instruction = notes_instruction(opts, note_words, detected)
        self._report(Progress("map", done=0, total=est_chunks, fraction=0.0))
        queue = collections.deque(held)
        del held
        chunks = chunk_pieces(itertools.chain(_drain(queue), pieces), count, target)
        jobs = ((chunk, self._prompt(chunk.text, instruction)) for chunk in chunks)  # tokenized here, on the main engine
        for chunk, note in ordered_map(lambda e, job: (job[0], self._generate(job[1], self.note_reserve, engine=e)), jobs,
                                       self.workers):
            # A model that answers nothing still leaves the chunk represented: its opening, cut to size.
            notes.append(note or _extract(chunk.text, count, self.note_reserve))
            res.chunks += 1
            res.input_tokens += chunk.tokens
            chars_done += len(chunk.text)
            total = est_chunks
            if total is not None:
                total = max(total, res.chunks)
            fraction = min(0.95, chars_done / size_hint) if size_hint else 0.0
            self._report(Progress("map", done=res.chunks, total=total, fraction=fraction * 0.9))
        res.levels = 1

        # Reduce: merge notes until they fit one final pass.
        while count(join_notes(notes)) > combined_budget:
            res.levels += 1
            groups = list(self._groups(notes, merge_budget))
            if len(groups) >= len(notes):  # cannot happen with the budgets checked above; never loop forever
                raise ChatllmError("the notes do not shrink when merged", "raise --ctx or lower --max-tokens")
            merged = []
            merge_text = merge_instruction(opts, note_words, detected)
            for i, group in enumerate(groups, 1):
                merged.append(self._generate(self._prompt(join_notes(group), merge_text), self.note_reserve)
                              or _extract(join_notes(group), count, self.note_reserve))
                self._report(Progress("reduce", done=i, total=len(groups), level=res.levels - 1, fraction=0.92))
            notes = merged

        self._report(Progress("final", total=1, fraction=0.95))
        whole = "the text above"
        res.text = self._final(join_notes(notes) if len(notes) > 1 else notes[0],
                               final_instruction(opts, whole, detected), on_text)
        return self._finish(Progress("final", done=1, total=1, fraction=1.0))

    def _groups(self, notes: list[str], budget: int) -> Iterator[list[str]]:
        """Consecutive notes packed so each group's joined text fits the budget."""
        count = self.engine.count_tokens
        group: list[str] = []
        for note in notes:
            if group and count(join_notes(group + [note])) > budget:
                yield group
                group = []
            group.append(note)
        if group:
            yield group

    def _finish(self, progress: Progress) -> SummaryResult:
        res = self._result
        res.seconds = time.perf_counter() - self._start
        self._report(progress)
        return res


def _drain(queue: collections.deque) -> Iterator[str]:
    """Yield and forget the held pieces, so they are not kept for the whole run."""
    while queue:
        yield queue.popleft()


def _extract(text: str, count, budget: int) -> str:
    """The opening of a text, cut to the budget."""
    for piece, _ in hard_split(text.strip(), count, budget):
        return piece
    return ""


def summarize(engine: Engine, blocks: Iterable[str], sampling: Sampling, options: SummaryOptions | None = None,
              on_text: Callable[[str], None] | None = None, on_progress: Callable[[Progress], None] | None = None,
              size_hint: int | None = None) -> SummaryResult:
    """Summarize a stream of text blocks with a loaded engine (see Summarizer)."""
    return Summarizer(engine, sampling, options, on_progress).summarize(blocks, on_text, size_hint)
