"""Translation of documents of any length, structure kept: pure logic over the engine contract.

The document is cut into units by chatllm.tasks.translate.doc_structure (markup, code and URLs never reach the model); a
unit longer than the part budget is cut at sentences by the summarizer's chunker. A part without placeholders is
sent as one plain instruction (small models translate a bare sentence best that way); a part with placeholders
gets a system prompt about them. Each part of a long unit goes with the previous part and its translation. A part
is checked (chatllm.tasks.translate.translation_checks) and, when bad, retried greedily with a stricter system prompt and a
one-shot example (a reply copied back twice gets one last try in the plainest wording); lost placeholders are put
back into the model's own sentence. A part that still fails is said on the warn callback and kept in its source
text, so nothing wrong is printed silently.

Units are independent of each other (context stays inside a unit), so the units of a document, and in particular the
lines of a line-oriented file, go through one ordered map (chatllm.tasks.text.parallel_map) over one translator per
engine: one engine is a plain loop, several connections to a server translate several units at once, and an engine
that decodes several sequences together can take the same batch. Output comes back in input order.
"""

from __future__ import annotations

import copy
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from chatllm.engines.contract import Engine, text_stream
from chatllm.errors import ChatllmError
from chatllm.settings import Sampling
from chatllm.tasks.text.chunking import units
from chatllm.tasks.text.parallel_map import ordered_map
from chatllm.tasks.translate import doc_structure as ds
from chatllm.tasks.translate import subtitles
from chatllm.tasks.translate.languages import LANGUAGES, Language, detect_source, parse_glossary, resolve_language
from chatllm.tasks.translate.translation_checks import (
    CJK_SCRIPTS,
    clean_reply,
    has_pairs,
    mend_spans,
    numbers_missing,
    pairs_kept,
    problem_of,
)

DEFAULT_TEMPERATURE = 0.0  # greedy: a translation wants the likeliest wording, and the retries are then repeatable
DEFAULT_PART_TOKENS = 256  # a longer paragraph is translated a few sentences at a time
REPLY_RATIO, REPLY_EXTRA = 4, 32  # a part's reply may take this many tokens per source token, plus a few
MARK = "\u2063CHATLLM-{}\u2063"
PLAIN_FIRST = True  # a part without placeholders first goes as one plain instruction, no system prompt (measured)
# The one-shot example of the strict retry, by (source, target): shows a small model what a reply in the target is.
EXAMPLES = {("en", "zh"): ("The museum opens at nine, and children get in free.", "博物馆九点开门，儿童免费入场。"),
            ("zh", "en"): ("博物馆九点开门，儿童免费入场。", "The museum opens at nine, and children get in free.")}
__all__ = ["LANGUAGES", "Language", "detect_source", "parse_glossary", "resolve_language", "TranslateOptions", "Part",
           "Line", "Progress", "TranslationResult", "clean_reply", "problem_of", "pairs_kept", "Translator", "translate"]

@dataclass(frozen=True)
class TranslateOptions:
    """What to translate into, from what, with which terms; part size and reply cap."""

    target: Language
    source: Language | None = None  # None: detected from the text, or left unnamed in the prompt
    glossary: tuple[tuple[str, str], ...] = ()
    part_tokens: int = DEFAULT_PART_TOKENS
    max_tokens: int | None = None  # a hard cap on each part's reply
    context: bool = True  # send the previous part of the same unit and its translation along
    line_mode: bool | None = None  # True: every line alone (--lines); False: never; None: line-oriented runs alone


@dataclass
class Part:
    """One translated part: source and translation (spans restored), tokens, retries and how it ended."""

    index: int
    line: int
    source: str
    translation: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    status: str = "ok"  # ok | repaired (lost placeholders put back) | failed (source kept)
    problem: str | None = None
    numbers_missing: tuple[str, ...] = ()  # reported, never rejected: numbers may change form (四, 1st)

    def as_dict(self) -> dict:
        """The JSON-able fields."""
        return {"part": self.index, "line": self.line, "source": self.source, "translation": self.translation,
                "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
                "retries": self.retries, "status": self.status, **({"problem": self.problem} if self.problem else {}),
                **({"numbers_missing": list(self.numbers_missing)} if self.numbers_missing else {})}


_RANK = {"verbatim": 0, "ok": 1, "repaired": 2, "failed": 3}


@dataclass
class Line:
    """One input line and its translation (`--lines`): what the parts on it cost and how they ended."""

    number: int
    source: str
    translation: str
    parts: list[Part] = field(default_factory=list)

    @property
    def status(self) -> str:
        """verbatim (nothing on the line to translate: empty, numbers, code), else the worst of its parts' status."""
        return max((p.status for p in self.parts), key=_RANK.__getitem__, default="verbatim")

    def as_dict(self) -> dict:
        """The JSON-able fields."""
        problem = next((p.problem for p in self.parts if p.problem), None)
        missing = [n for p in self.parts for n in p.numbers_missing]
        return {"line": self.number, "source": self.source, "translation": self.translation,
                "tokens": {"prompt": sum(p.prompt_tokens for p in self.parts),
                           "completion": sum(p.completion_tokens for p in self.parts)},
                "retries": sum(p.retries for p in self.parts), "status": self.status,
                **({"problem": problem} if problem else {}), **({"numbers_missing": missing} if missing else {})}


@dataclass
class Progress:
    """Where a translation stands, passed to the progress callback after every part."""

    done: int
    chars: int  # source characters done
    prompt_tokens: int
    seconds: float
    fraction: float  # 0..1 when the input's size is known, else 0


@dataclass
class TranslationResult:
    """The whole translation (when kept) and what it cost."""

    text: str = ""
    source: str | None = None
    target: str = ""
    parts: int = 0
    retries: int = 0
    failed: int = 0
    repaired: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    estimated: bool = False  # some token counts are chatllm's estimate (a chat server that has no tokenizer)
    layout: str = "text"  # text | lines (--lines) | srt | vtt
    lines_alone: int = 0  # lines translated on their own because their run read line by line (layout text)

    def as_dict(self) -> dict:
        """The JSON-able fields."""
        return {"from": self.source, "to": self.target, "layout": self.layout, "lines_alone": self.lines_alone,
                "parts": self.parts, "retries": self.retries,
                "failed": self.failed, "repaired": self.repaired, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "token_counts": "estimated" if self.estimated else "exact",
                "seconds": round(self.seconds, 3)}


# -- the translator ------------------------------------------------------------------------------


class Translator:
    """Translates documents (streams of text blocks) with one loaded engine."""

    def __init__(self, engine: Engine, sampling: Sampling, options: TranslateOptions,
                 on_progress: Callable[[Progress], None] | None = None, warn: Callable[[str], None] | None = None,
                 note: Callable[[str], None] | None = None, helpers: Sequence[Engine] = ()):
        self.engine = engine
        self.sampling = sampling.replace(think=False)  # a reasoning model translates without a trace
        self.options = options
        self.on_progress = on_progress
        self.warn = warn or (lambda message: None)
        self.note = note or (lambda message: None)  # what the translator decided about the layout, for stderr
        self.helpers = list(helpers)  # more engines (connections to a server) that translate units concurrently
        self.source = options.source
        self._result = TranslationResult()
        self._tokens = [0, 0]
        self._estimated = False
        self._spans: list[str] = []
        self._context: tuple[str, str] | None = None
        self._verb = "into"
        overhead = len(self._prompt("x", None, strict=True, glossary=list(options.glossary))) + 16
        room = engine.n_ctx - overhead
        self.part_budget = min(options.part_tokens, room // (2 + REPLY_RATIO))
        if self.part_budget < 8:
            raise ChatllmError(f"the {engine.n_ctx}-token context window is too small to translate in",
                               "raise --ctx (512 or more), or use a shorter --glossary")

    # prompts ----------------------------------------------------------------------------------

    def _system(self, strict: bool, placeholders: bool) -> str:
        opts = self.options
        src = f" from {self.source.name}" if self.source else ""
        text = (f"You are a professional translator. Translate the user's text{src} into {opts.target.name}. "
                f"Reply with the {opts.target.name} translation only, no notes.")
        if placeholders:
            text += " Keep every [number] placeholder exactly as it is."
        if strict:
            text += f" Translate every sentence once, completely, in {opts.target.name}; add nothing."
        return text

    def _user(self, text: str, glossary: list[tuple[str, str]]) -> str:
        head = f"Translate {self._verb} {self.options.target.name}:\n\n"
        terms = "".join(f"\n{a} = {b}" for a, b in glossary)
        return head + text + (f"\n\n(Use these terms:{terms})" if terms else "")

    def _example(self) -> tuple[str, str] | None:
        return EXAMPLES.get((self.source.code if self.source else "en", self.options.target.code))

    def _prompt(self, text: str, context: tuple[str, str] | None, strict: bool,
                glossary: list[tuple[str, str]]) -> list[int]:
        """The prompt's tokens; the texts are tokenized as plain text so markup in a document stays inert."""
        engine = self.engine
        texts: list[str] = []
        if not engine.has_chat_template:
            label = self.source.name if self.source else "Text"
            if context:
                texts += [context[0], context[1]]
            texts.append(text)
            body = "".join(f"{label}: {MARK.format(i)}\n{self.options.target.name}: {MARK.format(i + 1)}\n"
                           for i in range(0, len(texts) - 1, 2))
            rendered = body + f"{label}: {MARK.format(len(texts) - 1)}\n{self.options.target.name}:"
        else:
            placeholders = bool(ds.placeholders_in(text))
            plain = PLAIN_FIRST and not (strict or placeholders)
            messages = [] if plain else [{"role": "system", "content": self._system(strict, placeholders)}]
            if strict and context is None and (example := self._example()):
                context = example
            if context:
                texts += [self._user(context[0], []), context[1]]
                messages += [{"role": "user", "content": MARK.format(0)}, {"role": "assistant", "content": MARK.format(1)}]
            texts.append(self._user(text, glossary))
            messages.append({"role": "user", "content": MARK.format(len(texts) - 1)})
            rendered = engine.render_chat(messages, think=False)
        tokens: list[int] = []
        rest = rendered
        for i, content in enumerate(texts):
            marker = MARK.format(i)
            if rest.count(marker) != 1:
                raise ChatllmError(f"the chat template of {engine.name} mangles the message",
                                   "pass --chat-format chatml (or llama-3, gemma, ...)")
            before, rest = rest.split(marker)
            tokens += engine.prompt_tokens(before, special=True) if i == 0 else engine.tokenize(before, special=True)
            tokens += engine.tokenize(content, special=False)
        return tokens + engine.tokenize(rest, special=True)

    # running ----------------------------------------------------------------------------------

    def _generate(self, tokens: list[int], src_tokens: int, greedy: bool) -> tuple[str, str]:
        engine = self.engine
        cap = REPLY_RATIO * src_tokens + REPLY_EXTRA
        if self.options.max_tokens:
            cap = min(cap, self.options.max_tokens)
        cap = min(cap, engine.n_ctx - len(tokens) - 1)
        if cap < 4:
            raise ChatllmError(f"a part does not fit the {engine.n_ctx}-token context window", "raise --ctx")
        stop = "\n\n" if engine.has_chat_template else "\n"
        sampling = self.sampling.replace(max_tokens=cap, stop=tuple(self.sampling.stop) + (stop,))
        if greedy:
            sampling = sampling.replace(temperature=0.0)
        stream = text_stream(engine.stream(tokens, sampling))
        try:
            reply = "".join(stream)
        finally:
            stream.close()
        stats = engine.last_stats
        self._estimated |= stats.estimated
        self._tokens[0] += stats.prompt_tokens - stats.cached_tokens
        self._tokens[1] += stats.completion_tokens
        return reply, stats.finish_reason

    def _attempt(self, text: str, context: tuple[str, str] | None, strict: bool) -> tuple[str, str | None]:
        """One model call for a part's text: the cleaned translation and its problem, if any."""
        glossary = [(a, b) for a, b in self.options.glossary if a.lower() in text.lower()]
        tokens = self._prompt(text, context, strict, glossary)
        n = self.engine.count_tokens(text)
        if context and len(tokens) + REPLY_RATIO * n + REPLY_EXTRA >= self.engine.n_ctx:
            tokens = self._prompt(text, None, strict, glossary)
        reply, finish = self._generate(tokens, n, greedy=strict)
        if not self.engine.has_chat_template:  # a base model goes on with the next "Source: ..." line
            reply = reply.strip().split("\n", 1)[0]
        translation = clean_reply(reply, text)
        if sorted(ds.placeholders_in(translation)) != sorted(ds.placeholders_in(text)):
            cjk = self.options.target.script in CJK_SCRIPTS
            translation = mend_spans(text, translation, self._spans, cjk, literal_only=True)
        return translation, problem_of(text, translation, self.options.target, finish, self._spans)

    def translate_piece(self, text: str) -> tuple[str, int, str, str | None]:
        """(translation, retries, status, problem) of one part's text (placeholders in, placeholders out)."""
        context = self._context if self.options.context else None
        cjk = self.options.target.script in CJK_SCRIPTS
        translation, problem = self._attempt(text, context, strict=False)
        if problem is None:
            self._context = (text, translation)
            return translation, 0, "ok", None
        first, lost, retries = problem, translation if problem == "placeholders" else None, 1
        translation, problem = self._attempt(text, None, strict=True)
        if problem is None:
            self._context = (text, translation)
            return translation, 1, "ok", first
        if problem in ("wrong language", "not translated"):
            # Copied back twice: the last resort is the plainest wording there is ("Translate to X:"), which small
            # models sometimes follow where the others failed; it costs a call only on such parts.
            self._verb = "to"
            try:
                third, again = self._attempt(text, None, strict=False)
            finally:
                self._verb = "into"
            retries = 2
            if again is None:
                self._context = (text, third)
                return third, retries, "ok", first
        if problem == "placeholders" or lost is not None:
            candidate = translation if problem == "placeholders" else lost
            assert candidate is not None
            if not has_pairs(self._spans) or pairs_kept(candidate, self._spans):
                mended, still = self._recheck(text, mend_spans(text, candidate, self._spans, cjk))
                if still is None:
                    self._context = (text, mended)
                    return mended, retries, "repaired", first
            repaired = self._between_placeholders(text)
            if repaired is not None:
                return repaired, retries, "repaired", first
        self._context = None
        return text, retries, "failed", problem

    def _recheck(self, text: str, translation: str) -> tuple[str, str | None]:
        return translation, problem_of(text, translation, self.options.target, "stop", self._spans)

    def _between_placeholders(self, text: str) -> str | None:
        """The text translated piece by piece between its placeholders, which then all come back in order."""
        pieces = re.split(r"(\[\d{1,3}\])", text)
        out = []
        for piece in pieces:
            if not ds._LETTER.search(piece) or ds._PLACEHOLDER.fullmatch(piece):
                out.append(piece)
                continue
            core = piece.strip()
            translation, problem = self._attempt(core, None, strict=True)
            if problem is not None and problem != "placeholders":
                return None
            left, right = piece[: len(piece) - len(piece.lstrip())], piece[len(piece.rstrip()):]
            out.append(left + translation + right)
        joined = "".join(out)
        if self.options.target.script in CJK_SCRIPTS:
            joined = re.sub(r"(?<=[\u3000-\u9fff\uff00-\uffef]) +| +(?=[\u3000-\u9fff\uff00-\uffef])", "", joined)
        return joined

    def on_engine(self, engine: Engine) -> "Translator":
        """A translator like this one on another engine (a worker of its own: an engine keeps per-call state)."""
        twin = copy.copy(self)
        twin.engine, twin.helpers = engine, []
        twin._tokens, twin._spans, twin._context, twin._estimated = [0, 0], [], None, False
        return twin

    def translate_unit(self, unit: ds.Unit, line: int) -> tuple[str, list[Part], bool]:
        """One unit: its rendered output, its parts (index 0: numbered by the caller) and whether counts are estimated."""
        pieces = [p for p, _ in units(unit.text, self.engine.count_tokens, self.part_budget)]
        self._spans = unit.spans
        # Context only within a unit (a long paragraph's sentence parts): across paragraphs it did not help on TED
        # talks (chrF 26.6 with, 26.7 without, 40% slower, one more failed part), nor across the lines of a
        # one-sentence-a-line file (docs/BENCHMARKS_HISTORY.md, issue 35); so units are independent.
        self._context = None
        self._estimated = False
        done, parts = [], []
        for piece in pieces:
            core = piece.strip()
            self._tokens = [0, 0]
            translation, retries, status, problem = self.translate_piece(core)
            missing = tuple(numbers_missing(core, translation, self.options.target)) if status != "failed" else ()
            done.append(translation)
            parts.append(Part(0, line, ds.restore(core, unit.spans), ds.restore(translation, unit.spans),
                              self._tokens[0], self._tokens[1], retries, status, problem, missing))
        return ds.render(unit, self._join(done)), parts, self._estimated

    def translate_units(self, jobs: Iterable[tuple[int, "str | ds.Unit"]]) -> Iterator[tuple[int, "str | ds.Unit", tuple]]:
        """(line, item, result) for each (line, item) in order; units are translated by this translator and one per
        helper engine at once (a verbatim string passes through with result ())."""
        workers = [self] + [self.on_engine(engine) for engine in self.helpers]
        for worker in workers[1:]:
            worker.source = self.source

        def run(worker: Translator, job: tuple[int, "str | ds.Unit"]) -> tuple[int, "str | ds.Unit", tuple]:
            line, item = job
            return (line, item, ()) if isinstance(item, str) else (line, item, worker.translate_unit(item, line))

        return ordered_map(run, jobs, workers)

    def translate(self, blocks: Iterable[str], on_text: Callable[[str], None] | None = None,
                  on_part: Callable[[Part], None] | None = None, size_hint: int | None = None,
                  keep_text: bool = True, layout: str | None = None,
                  on_line: Callable[[Line], None] | None = None) -> TranslationResult:
        """Translate a stream of text blocks; each finished piece of output goes to on_text, in order.

        layout: "srt" or "vtt" for subtitles, "text" for a document, None to recognise subtitles by their first
        lines. on_line gets every input line with its translation, in order (meant for --lines, where line i of the
        output is the translation of line i of the input).
        """
        self._start = time.perf_counter()
        opts = self.options
        source_lines: deque[str] = deque()
        lines = _kept(ds.lines_of(blocks), source_lines) if on_line is not None else ds.lines_of(blocks)
        head: list[str] = []
        if layout is None:
            for line in lines:
                head.append(line)
                if len([h for h in head if h.strip()]) >= subtitles.SNIFF_LINES:
                    break
            layout = subtitles.sniff(head) or "text"
        lines = _chain(head, lines)
        if layout in ("srt", "vtt"):
            items = subtitles.split_subtitles(lines, opts.line_mode)
        else:
            items = ds.split_document(lines, opts.line_mode)
        held: list = []
        sample = ""
        for item in items:  # read a little ahead to detect the source language
            held.append(item)
            if isinstance(item, ds.Unit):
                sample += item.text + "\n"
            if len(sample) > 2000:
                break
        self.source = opts.source or detect_source(sample)
        if self.source is not None and self.source.code == opts.target.code:
            self.warn(f"the input already looks like {opts.target.name}; translating anyway")
        self._result = res = TranslationResult(source=self.source.code if self.source else None, target=opts.target.code,
                                               layout="lines" if opts.line_mode and layout == "text" else layout)
        out: list[str] = []
        chars = 0
        tracker = _LineTracker(source_lines, on_line) if on_line is not None else None

        def emit(text: str) -> None:
            if keep_text:
                out.append(text)
            if on_text is not None and text:
                on_text(text)
            if tracker is not None:
                tracker.text(text)

        for _, item, done in self.translate_units(_numbered(_chain(held, items))):
            if isinstance(item, str):
                emit(item)
                chars += len(item)
                continue
            rendered, parts, estimated = done
            if item.by_line:
                if not res.lines_alone:
                    self.note("one sentence or item a line: translating each line on its own "
                              "(--no-lines joins the lines of a paragraph instead)")
                res.lines_alone += 1
            res.estimated |= estimated
            for part in parts:
                res.parts += 1
                part.index = res.parts
                res.retries += part.retries
                res.prompt_tokens += part.prompt_tokens
                res.completion_tokens += part.completion_tokens
                if part.status == "failed":
                    res.failed += 1
                    self.warn(f"line {part.line}: the translation of a part failed twice ({part.problem}); "
                              "kept the source text")
                elif part.status == "repaired":
                    res.repaired += 1
                if tracker is not None:
                    tracker.parts.append(part)
                if on_part is not None:
                    on_part(part)
            emit(rendered)
            chars += len(item.source)
            self._report(res.parts, chars, size_hint)
        if tracker is not None:
            tracker.finish()
        res.text = "".join(out)
        res.seconds = time.perf_counter() - self._start
        return res

    def _join(self, pieces: Sequence[str]) -> str:
        sep = "" if self.options.target.script in CJK_SCRIPTS else " "
        return sep.join(p.strip() for p in pieces)

    def _report(self, done: int, chars: int, size_hint: int | None) -> None:
        if self.on_progress is None:
            return
        seconds = time.perf_counter() - self._start
        fraction = min(1.0, chars / size_hint) if size_hint else 0.0
        self.on_progress(Progress(done, chars, self._result.prompt_tokens, seconds, fraction))


def _chain(head: list, rest: Iterator) -> Iterator:
    yield from head
    yield from rest


def _kept(lines: Iterator[str], into: deque) -> Iterator[str]:
    """The lines, each also put in `into` (the source lines the output lines are matched with)."""
    for line in lines:
        into.append(line)
        yield line


def _numbered(items: Iterable["str | ds.Unit"]) -> Iterator[tuple[int, "str | ds.Unit"]]:
    """(the 1-based line an item starts on, the item)."""
    line = 1
    for item in items:
        yield line, item
        line += item.count("\n") if isinstance(item, str) else len(item.prefixes) - 1


class _LineTracker:
    """Matches output lines with source lines (one for one when nothing moves across lines) and their parts."""

    def __init__(self, source: deque, on_line: Callable[[Line], None]):
        self.source = source
        self.on_line = on_line
        self.parts: list[Part] = []
        self.pending = ""
        self.number = 0

    def text(self, text: str) -> None:
        """Output text as it goes out; every finished line is reported."""
        self.pending += text
        while "\n" in self.pending:
            done, self.pending = self.pending.split("\n", 1)
            self._line(done)

    def _line(self, translation: str) -> None:
        self.number += 1
        source = self.source.popleft().rstrip("\n") if self.source else ""
        self.on_line(Line(self.number, source, translation, self.parts))
        self.parts = []

    def finish(self) -> None:
        """The last line, when the output does not end with a newline."""
        if self.pending or self.parts:
            self._line(self.pending)
            self.pending = ""


def translate(engine: Engine, blocks: Iterable[str], sampling: Sampling, options: TranslateOptions,
              on_text: Callable[[str], None] | None = None, **kw) -> TranslationResult:
    """Translate a stream of text blocks with a loaded engine (see Translator)."""
    return Translator(engine, sampling, options, kw.pop("on_progress", None), kw.pop("warn", None),
                      kw.pop("note", None), kw.pop("helpers", ())).translate(blocks, on_text, **kw)
