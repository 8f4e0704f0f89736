"""Summaries of text of any length: one pass when it fits the window, else map-reduce sized to the real n_ctx.

Pure logic over the engine contract (chatllm.engines.contract), so tests drive it with the fake engine. The map calls
may run concurrently on worker engines (connections to one server): notes keep the chunks' order.

Names are carried by counting (chatllm.tasks.summarize.names.entities), not by the model's memory: each chunk is counted before its
note is asked for, the note is told the names in its chunk, merges and the final pass are told the main names, and
invented names are cut from every note and from the final summary as it streams (chatllm.tasks.summarize.summary_guard).
Options, results and prompts live in chatllm.tasks.summarize.summary_prompts and are re-exported here.
"""

from __future__ import annotations

import collections
import itertools
import math
import threading
import time
from typing import Callable, Iterable, Iterator, Sequence

from chatllm.engines.contract import Engine, GenerationStats, batching, text_stream
from chatllm.errors import ChatllmError
from chatllm.settings import Sampling
from chatllm.tasks.summarize.names.entities import EntityTracker
from chatllm.tasks.summarize.names.name_evidence import COVER_PASSAGE_TOKENS, NameEvidence
from chatllm.tasks.summarize.summary_guard import (
    LOOP_CHARS,
    NameGuard,
    clean_note,
    cover_lead,
    cover_problem,
    looping,
    missing_names,
    tidy_note,
)
from chatllm.tasks.summarize.summary_prompts import (
    MAIN_ENTITIES,
    TOKENS_PER_WORD,
    Progress,
    SummaryOptions,
    SummaryResult,
    cover_questions,
    events_block,
    final_instruction,
    join_notes,
    key_events,
    merge_instruction,
    notes_instruction,
    user_message,
)
from chatllm.tasks.text.chunking import chunk_pieces, drain, drop_gutenberg_frame, opening, pieces_from_blocks
from chatllm.tasks.text.parallel_map import in_input_order, ordered_map
from chatllm.tasks.text.text_rules import boundary_after, guess_language, sentence_end

SLACK = 48  # room for template tokens that differ between the measured and the real prompt, and join effects
MIN_SENTENCE_CHARS = 24  # a TL;DR sentence ends at the first full stop after this many characters
FINAL_HEADROOM = 1.4  # the final summary may run this much past its target to finish its sentence
BULLET_LEAD = "-"  # the reply to a bullets request starts with this, so even a tiny model writes a list
RULE = "\n---"  # the line between the document and the instruction in every prompt (user_message)
PLACEHOLDER = "\u2063CHATLLM-DOCUMENT\u2063"
ENTITY_TOKENS = 64  # room for the list of names in an instruction (at most n_ctx / 16)
SEGMENT_CHARS = 3000  # text that fits one pass is counted in segments of this size, for the spread of its names
COVER_TOKENS = 48  # the most one sentence about a main name the summary left out may take
COVER_ROOM = 1.6  # the summary with those sentences may reach this many times its target length
COVER_MIN_ROOM = 0.5  # ... or run this share of its target past what the summary itself wrote, whichever is more


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
        self.sampling = sampling = sampling.replace(think=False)  # a reasoning model summarizes without a trace
        # Notes feed every later level, so they are greedy unless asked otherwise; the repeat penalty keeps greedy
        # decoding of a tiny model out of loops.
        temp = self.options.note_temperature
        self.note_sampling = sampling if temp is None else sampling.replace(
            temperature=temp, repeat_penalty=max(1.1, sampling.repeat_penalty))
        self.tracker = EntityTracker()
        self.evidence = NameEvidence()
        self._tracker_lock = threading.Lock()  # the map's feeder thread counts chunks while notes are checked
        # Past its target length the final summary stops at the next sentence (or bullet) end; the reserve is
        # the hard cap behind that, so a summary is not cut mid-sentence unless the model runs on far too long.
        self.final_target = self._cap(math.ceil(self.options.target_words * TOKENS_PER_WORD))
        self.final_reserve = self._cap(math.ceil(self.final_target * FINAL_HEADROOM) + 24)
        n_ctx = engine.n_ctx
        self.note_reserve = self._cap(max(48, min(320, n_ctx // 10)))
        self._overheads: dict[str, int] = {}
        # The names get what room a small window can spare, up to ENTITY_TOKENS; with none, no names are listed.
        self.entity_reserve = 0
        spare = n_ctx - self.final_reserve - self._overhead("final") - 16
        self.entity_reserve = min(ENTITY_TOKENS, n_ctx // 16) if spare >= 3 * ENTITY_TOKENS else 0
        self._overheads.clear()
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
            one = ["X"] if self.entity_reserve else []  # the names themselves are held to entity_reserve tokens
            instruction = {
                "final": final_instruction(self.options, "the notes on the whole document", "Chinese", one),
                "notes": notes_instruction(self.options, 99999, "Chinese", one),
                "merge": merge_instruction(self.options, 99999, "Chinese", one),
            }[kind]
            pre, post = self._frame(instruction)
            self._overheads[kind] = len(pre) + len(post) + SLACK + self.entity_reserve
        return self._overheads[kind]

    def _frame(self, instruction: str) -> tuple[list[int], list[int]]:
        """Prompt tokens before and after the document for this instruction."""
        content = user_message(PLACEHOLDER, instruction)
        engine = self.engine
        if engine.has_chat_template:
            rendered = engine.render_chat([{"role": "user", "content": content}], think=False)
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

    def _fit(self, names: Iterable[str]) -> list[str]:
        """As many of the names, best first, as fit the room kept for them in an instruction."""
        kept: list[str] = []
        for name in names:
            if not self.entity_reserve or self.engine.count_tokens(", ".join(kept + [name])) > self.entity_reserve:
                break
            kept.append(name)
        return kept

    def budget(self, kind: str, reserve: int) -> int:
        """How many document tokens a prompt of this kind can hold, leaving `reserve` for the reply."""
        return self.engine.n_ctx - self._overhead(kind) - reserve

    # running -----------------------------------------------------------------------------------

    def _final(self, body: str, whole: str, detected: str | None, on_text: Callable[[str], None] | None) -> str:
        """The summary the user sees, streamed to on_text a checked sentence at a time (summarize_guard)."""
        style = self.options.style
        lead = BULLET_LEAD if style == "bullets" else ""
        names = self._fit(e.name for e in self.main)
        res = self._result
        cover = self.options.cover_names and style != "tldr" and not self.options.focus and bool(names)
        for strict in (False, True):
            guard = NameGuard(self.tracker, on_text, prose=style != "bullets")
            instruction = final_instruction(self.options, whole, detected, names, strict=strict)
            self._generate(self._prompt(body, instruction, lead), self.final_reserve, guard.feed,
                           one_sentence=style == "tldr", soft_tokens=self.final_target, lead=lead)
            text = guard.finish()
            res.removed += [n for n in guard.removed if n not in res.removed]
            if text:  # something true went out; what was dropped was whole sentences of it
                if cover:
                    text += self._cover(body, detected, text, names, on_text)
                return text
            res.regenerated = True  # nothing went out yet, so a second try is still honest
        # Twice nothing but invented names: the first checked sentences of what the model read, cut to length.
        fallback, _ = clean_note(body, self.tracker)
        words = fallback.split()[: self.options.target_words]
        text = " ".join(words)
        if on_text is not None and text:
            on_text(text)
        return text

    def _cover(self, body: str, detected: str | None, text: str, names: list[str], on_text: Callable[[str], None] | None) -> str:
        """One greedy sentence for each main name the summary left out, best first, while the reply's room lasts: a tiny
        model names two or three people however it is asked, but asked about one, its reply started by it, it answers."""
        added, finish = "", self._result.finish_reason
        # A summary that ran long still leaves its added sentences COVER_MIN_ROOM of its target: names before length.
        least = self.engine.count_tokens(text) + math.ceil(self.final_target * COVER_MIN_ROOM)
        room = self._cap(max(math.ceil(self.final_target * COVER_ROOM), least)) - COVER_TOKENS // 2
        source_room = min(COVER_PASSAGE_TOKENS, self.budget("final", COVER_TOKENS))
        for name in missing_names(text, names):
            so_far = text + added
            if self.engine.count_tokens(so_far) > room:
                break
            sep, lead = cover_lead(so_far, name, self.options.style == "bullets")
            source = self.evidence.text(name, self.engine.count_tokens, source_room) or body
            for ask, lead in cover_questions(self.options, name, detected, lead):
                reply = self._generate(self._prompt(source, ask, lead), COVER_TOKENS, one_sentence=True, lead=lead)
                reply = reply.partition("\n")[0].rstrip()
                problem = cover_problem(reply, name, so_far, self.tracker, ask, names)
                if not problem:
                    break
                self._result.dropped.append({"name": name, "sentence": reply, "why": problem})
            else:
                continue  # asked twice, it said nothing the checks let through
            added += sep + reply
            self._result.added_names.append(name)
            if on_text is not None:
                on_text(sep + reply)
        self._result.finish_reason = finish  # how the summary itself ended, not the last added sentence
        return added

    def _generate(self, tokens: list[int], max_tokens: int, on_text: Callable[[str], None] | None = None,
                  one_sentence: bool = False, soft_tokens: int | None = None, lead: str = "", engine: Engine | None = None) -> str:
        """One model call (on `engine`, else the main one); `lead` is the reply's start already in the prompt, and after
        soft_tokens the reply ends at the next sentence or line end."""
        engine = engine or self.engine
        # Only the final pass streams (on_text); every other call writes notes, with the notes' sampling.
        sampling = (self.sampling if on_text is not None else self.note_sampling).replace(max_tokens=max_tokens)
        reply = _Reply(lead, one_sentence, on_text)
        stream = text_stream(engine.stream(tokens, sampling))
        try:
            for piece in stream:
                if soft_tokens is not None and reply.soft_from is None and engine.last_stats.completion_tokens > soft_tokens:
                    reply.soft_from = len(reply.text)
                if reply.feed(piece):
                    break
        finally:
            stream.close()
        self._count(engine.last_stats, reply.cut)
        return reply.result()

    def _count(self, stats: GenerationStats, cut: bool) -> None:
        """One model call's tokens and timings into the result."""
        res = self._result
        with self._lock:  # map calls may end in several threads at once
            res.calls += 1
            res.prompt_tokens += stats.prompt_tokens - stats.cached_tokens
            res.completion_tokens += stats.completion_tokens
            res.estimated |= stats.estimated
            res.finish_reason = "stop" if cut else stats.finish_reason
            res.calls_log.append({"prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_tokens,
                                  "completion_tokens": stats.completion_tokens, "seconds": stats.seconds,
                                  "first_token_seconds": stats.first_token_seconds or stats.seconds})

    def _map_notes(self, jobs: Iterator[tuple]) -> Iterator[tuple]:
        """(chunk, note) for every map job in order: on the worker engines, or in the main engine's own batches."""
        batcher = batching(self.engine) if len(self.workers) == 1 else None
        if batcher is None:
            yield from ordered_map(lambda e, job: (job[0], self._generate(job[1], self.note_reserve, engine=e)), jobs,
                                   self.workers)
            return
        chunks: list = []
        replies: dict[int, _Reply] = {}

        def prompts() -> Iterator[list[int]]:
            for chunk, tokens in jobs:
                replies[len(chunks)] = _Reply("", False, None)
                chunks.append(chunk)
                yield tokens

        def on_piece(index: int, piece: str) -> bool:
            return replies[index].feed(piece)

        sampling = self.note_sampling.replace(max_tokens=self.note_reserve)
        items = batcher.generate_batch(prompts(), sampling, on_piece)
        for item in in_input_order(items, index=lambda it: it.index):
            if item.error is not None:
                raise item.error
            reply = replies.pop(item.index)
            self._count(item.stats, reply.cut)
            yield chunks[item.index], reply.result()

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
                for start in range(0, len(text), SEGMENT_CHARS):
                    segment = text[start:start + SEGMENT_CHARS]
                    self.evidence.add(segment, self.tracker.observe(segment))
                self._set_main()
                self._report(Progress("final", total=1, fraction=0.0))
                res.text = self._final(text, "the text above", detected, on_text)
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
        floor = 2 * (self.note_reserve + 8)
        if opts.chunk_tokens:
            # Merges and the final pass read no more at once than a chunk: small models follow long input poorly.
            merge_budget = min(merge_budget, max(opts.chunk_tokens, floor))
            combined_budget = min(combined_budget, max(opts.chunk_tokens, floor))
        # The final pass reads the key events before the notes; the notes keep room for two, so merges still end.
        events_budget = max(0, min(combined_budget // 5, combined_budget - floor))
        notes_budget = combined_budget - events_budget
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
        self._report(Progress("map", done=0, total=est_chunks, fraction=0.0))
        queue = collections.deque(held)
        del held
        chunks = chunk_pieces(itertools.chain(drain(queue), pieces), count, target)
        jobs = (self._map_job(chunk, note_words, detected) for chunk in chunks)  # tokenized here, on the main engine
        map_start = time.perf_counter()
        for chunk, note in self._map_notes(jobs):
            # A model that answers nothing (or only invents) still leaves the chunk represented: its opening, cut to size.
            notes.append(self._clean(note) or opening(chunk.text, count, self.note_reserve))
            res.chunks += 1
            res.input_tokens += chunk.tokens
            chars_done += len(chunk.text)
            total = est_chunks
            if total is not None:
                total = max(total, res.chunks)
            fraction = min(0.95, chars_done / size_hint) if size_hint else 0.0
            self._report(Progress("map", done=res.chunks, total=total, fraction=fraction * 0.9))
        res.levels = 1
        res.map_seconds = time.perf_counter() - map_start
        self._set_main()
        names = self._fit(e.name for e in self.main)
        self._keep(notes)

        # Reduce: merge notes until they fit one final pass.
        while count(join_notes(notes)) > notes_budget:
            res.levels += 1
            groups = list(self._groups(notes, merge_budget))
            if len(groups) >= len(notes):  # cannot happen with the budgets checked above; never loop forever
                raise ChatllmError("the notes do not shrink when merged", "raise --ctx or lower --max-tokens")
            merged = []
            merge_text = merge_instruction(opts, note_words, detected)  # a list of names here made greedy merges list them
            for i, group in enumerate(groups, 1):
                note = self._generate(self._prompt(join_notes(group), merge_text), self.note_reserve)
                merged.append(self._clean(note) or opening(join_notes(group), count, self.note_reserve))
                self._report(Progress("reduce", done=i, total=len(groups), level=res.levels - 1, fraction=0.92))
            notes = merged
            self._keep(notes)

        self._report(Progress("final", total=1, fraction=0.95))
        body = join_notes(notes) if len(notes) > 1 else notes[0]
        events = key_events(notes, names, count, events_budget) if len(notes) > 1 and events_budget else []
        if events:
            body = events_block(events) + "\n\n" + body
        res.text = self._final(body, "the text above", detected, on_text)
        return self._finish(Progress("final", done=1, total=1, fraction=1.0))

    def _map_job(self, chunk, note_words: int, detected: str | None) -> tuple:
        """A chunk and its prompt, told the names that occur in it (counted first, so later checks know them)."""
        with self._tracker_lock:
            local = self.tracker.observe(chunk.text)
            self.evidence.add(chunk.text, local)
        instruction = notes_instruction(self.options, note_words, detected, self._fit(local))
        return chunk, self._prompt(chunk.text, instruction)

    def _clean(self, note: str) -> str:
        """A note without loops, lists, repeats (tidy_note) and sentences naming what the document never does."""
        text, removed = clean_note(tidy_note(note), self.tracker, self._tracker_lock)
        self._result.removed += [n for n in removed if n not in self._result.removed]
        return text

    def _set_main(self) -> None:
        self.main = self.tracker.top(MAIN_ENTITIES)
        self._result.entities = [e.as_dict() for e in self.main]

    def _keep(self, notes: list[str]) -> None:
        if self.options.keep_notes:
            self._result.notes = (self._result.notes or []) + [list(notes)]

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


class _Reply:
    """Where one reply ends, piece by piece: at the prompt's separator the model copies, at the first sentence end
    (one_sentence), at a boundary past a soft limit, or (notes) where it starts looping; the pieces that go out."""

    def __init__(self, lead: str, one_sentence: bool, on_text: Callable[[str], None] | None):
        self.lead = lead
        self.one_sentence = one_sentence
        self.on_text = on_text
        self.parts: list[str] = []  # what went out, the lead joined to the first piece
        self.text = lead  # the reply so far, the lead included
        self.cut = False
        self.soft_from: int | None = None  # where in the text the soft limit was reached

    def feed(self, piece: str) -> bool:
        """Take the next piece (what of it belongs to the reply goes out); True when the reply ends here."""
        if not self.parts and not self.lead:
            piece = piece.lstrip()
            if not piece:
                return False
        text = self.text
        end = None
        whole = text + piece
        rule = whole.find(RULE, max(0, len(text) - len(RULE)))
        if rule >= 0:  # the model copies the prompt's separator: what follows is no longer its answer
            end = rule
        elif self.one_sentence:
            end = sentence_end(whole, MIN_SENTENCE_CHARS)
        if self.soft_from is not None and end is None:
            end = boundary_after(whole, self.soft_from)
        if end is None and self.on_text is None and looping(whole):
            end = len(whole) - LOOP_CHARS  # what follows would be dropped by tidy_note anyway
        if end is not None:
            piece = piece[: max(0, end - len(text))]
            self.cut = True
        self.text += piece
        if not self.parts and self.lead:  # the lead goes out with the first real text, or not at all
            piece = self.lead + piece
        self.parts.append(piece)
        if self.on_text is not None and piece:
            self.on_text(piece)
        return self.cut

    def result(self) -> str:
        """The reply as it went out, stripped."""
        return "".join(self.parts).strip()


def summarize(engine: Engine, blocks: Iterable[str], sampling: Sampling, options: SummaryOptions | None = None,
              on_text: Callable[[str], None] | None = None, on_progress: Callable[[Progress], None] | None = None,
              size_hint: int | None = None) -> SummaryResult:
    """Summarize a stream of text blocks with a loaded engine (see Summarizer)."""
    return Summarizer(engine, sampling, options, on_progress).summarize(blocks, on_text, size_hint)
