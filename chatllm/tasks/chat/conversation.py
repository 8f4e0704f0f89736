"""A conversation with one model: history, system prompt, context-window trimming, retry/undo, save/load.

The prompt given to the engine grows append-only from turn to turn (the text the KV cache already holds, plus
the new exchange), so llama.cpp's prefix reuse evaluates only the new tokens. /undo, /retry, a new system prompt or
a new model break the prefix once; the next turn rebuilds it.

When the next turn would not fit the window, the oldest exchanges leave the model's view: compacted into the running
summary (compaction.py, the default) or dropped (--overflow trim, or when no summary can be had). An engine with
ContextShift cuts the dropped exchanges out of its KV cache in place (window_shift.py) instead of evaluating the
rest again; --exact-window keeps the re-evaluation.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Generator, Iterator, Sequence

from chatllm.engines.contract import ContextShift, Engine, Event, Reasoning, Text, ToolCall, WarmStart
from chatllm.errors import ChatllmError, NoChatTemplateError, UsageError
from chatllm.settings import Sampling
from chatllm.storage.conversations import Exchange, SearchHit, Store, StoredConversation, StoredSummary, Summary
from chatllm.tasks.chat.compaction import (
    MIN_SUMMARY_TOKENS,
    CompactionFailed,
    Compactor,
    RunningSummary,
    summary_tokens,
    system_with_summary,
)
from chatllm.tasks.chat.transcripts import conversation_json, read_conversation_file, transcript_markdown
from chatllm.tasks.chat.window_shift import common_prefix, kept_prefix, shift_plan
from chatllm.tasks.tools.loop import LoopEvent, StepStarted, ToolSession, exchange_messages

OVERFLOW = ("compact", "trim")  # what happens to the oldest exchanges when a turn would not fit the window


def require_chat_template(engine: Engine) -> Engine:
    """The engine itself if it can chat; otherwise it is closed and NoChatTemplateError raised."""
    if not engine.has_chat_template:
        name = engine.name
        engine.close()
        raise NoChatTemplateError(name)
    return engine


class Turn:
    """One reply being generated: iterate it for text pieces; `text` holds what came so far."""

    def __init__(self, conv: "Conversation", user: str, tokens: list[int], full: str, prompt: str, seq: int):
        self.conv = conv
        self.user = user
        self.tokens = tokens
        self.full = full  # the template's own rendering of this prompt
        self.prompt = prompt  # what the engine got (the cached text + the new part)
        self.seq = seq  # position of this exchange in the conversation
        self.window = conv._start
        self.text = ""
        self.reasoning = ""  # a reasoning model's trace: kept apart, never sent back to the model
        self.on_reasoning: Callable[[str], None] | None = None  # who draws the trace while it streams
        self.tool_steps: list[dict] = []  # the calls made before the answer (tasks/tools/loop.py fills them in)
        self.on_tool: Callable[[LoopEvent], None] | None = None  # who shows the calls as they are made
        self.done = False
        self.exchange: Exchange | None = None
        self._gen: Generator[str, None, None] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    def _run(self) -> Generator[str, None, None]:
        conv = self.conv
        if conv.tools is not None and conv.tools.active():  # the tool loop: calls, results, then the answer
            messages = conv.messages(self.window, self.seq) + [{"role": "user", "content": self.user}]
            events = conv.tools.run(conv.engine, messages, conv.sampling, self.tool_steps, prompt=(self.full, self.tokens))
        else:
            events = conv.engine.stream(self.tokens, conv.sampling)
        pieces = self._text_of(events)
        try:
            for piece in pieces:
                if not self.text:
                    piece = piece.lstrip()
                    if not piece:
                        continue
                self.text += piece
                yield piece
            self.done = True
        finally:
            pieces.close()  # a reply stopped early is marked "interrupted" by the engine

    def _text_of(self, events: Iterator[Event | LoopEvent]) -> Generator[str, None, None]:
        """The answer's text pieces; the trace goes to self.reasoning (and on_reasoning) on the way."""
        try:
            for event in events:
                if isinstance(event, Reasoning):
                    self.reasoning += event.text
                    if self.on_reasoning is not None:
                        self.on_reasoning(event.text)
                elif isinstance(event, Text) and event.text:
                    yield event.text
                elif not isinstance(event, (Text, Reasoning, ToolCall)):  # the tool loop's own events
                    if self.on_tool is not None:
                        self.on_tool(event)
                    if isinstance(event, StepStarted):
                        self.text = ""  # that reply's text is the step's; the answer comes after the results
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Stop generating (at the current token)."""
        if self._gen is not None:
            self._gen.close()

    @property
    def interrupted(self) -> bool:
        """True when the reply was stopped before the model finished it."""
        return not self.done


class Conversation:
    """A system prompt and exchanges, rendered through the engine's chat template, saved as they complete."""

    def __init__(
        self,
        engine: Engine,
        sampling: Sampling,
        *,
        system: str | None = None,
        store: Store | None = None,
        model: str | None = None,
        notice: Callable[[str], None] | None = None,
        open_engine: Callable[[str], Engine] | None = None,
        overflow: str = "compact",
        exact_window: bool = False,
    ):
        if overflow not in OVERFLOW:
            raise UsageError(f"overflow must be compact or trim, not {overflow!r}", "use --overflow compact or trim")
        self.engine = engine
        self.sampling = sampling
        self.system = system or None
        self.store = store
        self.model = model or engine.name
        self.notice = notice or (lambda message: None)
        self._open_engine = open_engine  # MODEL -> a loaded Engine, for switch_model; the CLI passes the loader
        self.exchanges: list[Exchange] = []
        self.id: int | None = None
        self.created_at = time.time()
        self.last_stats = None
        self.context_tokens = 0  # tokens the model's context held after the last reply
        self._start = 0  # the first exchange still inside the model's context window
        # (start, end, text, tokens): what the KV cache holds after exchanges[start:end], as text and as tokens
        self._cache: tuple[int, int, str, list[int]] | None = None
        self._warm = False  # the engine's KV cache already holds this conversation (or a restore was tried)
        self.overflow = overflow
        self.exact_window = exact_window  # trims evaluate the window again rather than shift the KV cache in place
        self.summary = RunningSummary()  # the exchanges compacted so far, in the model's view after the system prompt
        self._no_compaction: str | None = None  # why compaction cannot work in this window (then it only trims)
        self.last_shift_seconds: float | None = None  # how long the last trim took to shift the KV cache in place
        self._measured: dict[tuple[int, int], tuple[str, list[int]]] = {}  # (start, end): (text, tokens), in a trim
        self.tools: ToolSession | None = None  # the tools offered, and the loop that runs their calls (set by the command)
        self._offered_key = repr(None)

    # -- state --------------------------------------------------------------------------------------

    @property
    def reply_reserve(self) -> int:
        """Tokens kept free for the reply: --max-tokens, but at most half the window."""
        return max(1, min(self.sampling.max_tokens, self.engine.n_ctx // 2))

    @property
    def window_start(self) -> int:
        """Index of the oldest exchange the model still sees."""
        return self._start

    def messages(self, start: int = 0, end: int | None = None) -> list[dict]:
        """The chat messages for exchanges[start:end], after the system prompt (and the running summary)."""
        system = system_with_summary(self.system, self.summary.block())
        msgs = [{"role": "system", "content": system}] if system else []
        for ex in self.exchanges[start:end]:
            msgs += exchange_messages(ex.user, ex.tool_steps)  # the message, with the results of its calls (if any)
            msgs.append({"role": "assistant", "content": ex.assistant})
        return msgs

    def offered_tools(self) -> list | None:
        """The tools every prompt of this chat offers (None: no tool loop); when they change (/tools on|off), the
        prompt the KV cache holds no longer starts the next one."""
        offered = self.tools.offered() if self.tools is not None and self.tools.active() else None
        key = repr(offered)
        if key != self._offered_key:
            self._offered_key = key
            self._reset_cache()
        return offered

    def _reset_cache(self) -> None:
        self._cache = None

    # -- turns --------------------------------------------------------------------------------------

    @contextmanager
    def turn(self, text: str) -> Iterator[Turn]:
        """Send a user message: `with conv.turn(text) as t: for piece in t: ...`; the exchange is saved on exit.

        Leaving early (break, Ctrl-C) keeps the partial reply, marked interrupted; an engine error saves nothing.
        """
        if not text.strip():
            raise UsageError("empty message", "type something to send")
        with self._run(text, len(self.exchanges)) as t:
            yield t

    @contextmanager
    def retry(self) -> Iterator[Turn]:
        """Generate the last reply again; the new one replaces it once it is done (or interrupted)."""
        if not self.exchanges:
            raise UsageError("nothing to retry yet", "send a message first")
        with self._run(self.exchanges[-1].user, len(self.exchanges) - 1) as t:
            yield t

    @contextmanager
    def _run(self, text: str, seq: int) -> Iterator[Turn]:
        t = self._begin(text, seq)
        try:
            yield t
        except KeyboardInterrupt:
            self._finish(t)
            raise
        except BaseException:
            t.close()
            raise
        else:
            self._finish(t)

    def _begin(self, text: str, seq: int) -> Turn:
        n_ctx, reserve = self.engine.n_ctx, self.reply_reserve
        if seq < self.summary.upto:  # /retry of an exchange the summary already holds
            self._forget_summary()
        start = max(min(self._start, seq), self.summary.upto)
        full, prompt, tokens = self._render(start, seq, text)
        if len(tokens) + reserve > n_ctx:
            start = self._make_room(start, seq, text, n_ctx, reserve)
            full, prompt, tokens = self._render(start, seq, text)
        self._start = start
        self._restore(tokens)
        return Turn(self, text, tokens, full, prompt, seq)

    def _render(self, start: int, end: int, text: str) -> tuple[str, str, list[int]]:
        msgs = self.messages(start, end)
        full = self.engine.render_chat(msgs + [{"role": "user", "content": text}], add_generation_prompt=True,
                                       think=self.sampling.think, tools=self.offered_tools())
        cache = self._cache if self._cache and self._cache[:2] == (start, end) else None
        if cache is None:
            return full, full, self.engine.prompt_tokens(full)
        cached_text, cached_tokens = cache[2], cache[3]
        if full.startswith(cached_text):
            prompt = full
        else:
            # The template re-renders history differently (today's date...): keep what the cache holds and
            # append only the template's rendering of the new message.
            try:
                base = self.engine.render_chat(msgs, add_generation_prompt=False, tools=self.offered_tools())
            except ChatllmError:
                base = None
            if base is None or not full.startswith(base):
                return full, full, self.engine.prompt_tokens(full)
            prompt = cached_text + full[len(base):]
        # Tokenize only the new part: the cost of a turn stays flat however long the conversation gets.
        return full, prompt, cached_tokens + self.engine.tokenize(prompt[len(cached_text):], special=True)

    def _make_room(self, start: int, end: int, text: str, n_ctx: int, reserve: int) -> int:
        """The first exchange the model sees once the oldest left its view: compacted, else trimmed."""
        self._check_fits(end, text, n_ctx, reserve)
        if self.overflow == "compact" and self._no_compaction is None:
            try:
                return self._compact_for(start, end, text, n_ctx, reserve)
            except CompactionFailed as exc:
                if exc.lasting:
                    self._no_compaction = exc.message
                self.notice(f"note: could not compact ({exc.message}); trimming instead"
                            + ("; this chat only trims from now on" if exc.lasting else ""))
        return self._trim(start, end, text, n_ctx, reserve)

    def _check_fits(self, end: int, text: str, n_ctx: int, reserve: int) -> None:
        """Refuse a message that cannot fit even alone (with the system prompt and the summary)."""
        alone = len(self._render(end, end, text)[2])
        if alone + reserve > n_ctx:
            what = "message" + (" with the system prompt" if self.system else "")
            raise ChatllmError(
                f"{what} too long: {alone} tokens + {reserve} for the reply exceed the {n_ctx}-token context window",
                "shorten it, lower the reply length (/set max_tokens N), or start the chat with a larger --ctx",
            )

    def _first_kept(self, start: int, end: int, text: str, n_ctx: int, reserve: int, extra: int = 0,
                    target: float = 0.75, tight: bool = False) -> int:
        """The first exchange to keep so the prompt (and `extra` tokens more) fits in `target` of the window if it
        can (so the window moves once every few turns rather than on every turn), else in all of it; tight: the
        latest such exchange (a compaction's summary should not read more than it must)."""

        self._measured = {}  # the windows measured here: _shift need not tokenize the one kept again

        def size(s: int) -> int:
            full, _, tokens = self._render(s, end, text)
            self._measured[(s, end)] = (full, tokens)
            return len(tokens) + reserve + extra

        alone = size(end)
        budget = int(n_ctx * target) if alone <= int(n_ctx * target) else n_ctx
        # Guess from the characters each exchange holds (a little past what is needed), then check, and walk on only if
        # the guess falls short: usually one tokenization of the window rather than a binary search's six or seven
        # (they are most of what a trim costs). Unless tight, the start found may drop an exchange more than needed.
        total = size(start)
        chars = [len(ex.user) + len(ex.assistant) + 1 for ex in self.exchanges[start:end]]
        per_char = max(0, total - alone) / max(1, sum(chars))
        s, dropped = start, 0.0
        while s < end and dropped < (total - budget) * 1.1:
            dropped += chars[s - start] * per_char
            s += 1
        s = max(s, start + 1)
        while s < end and size(s) > budget:
            s += 1
        while tight and s > start + 1 and size(s - 1) <= budget:
            s -= 1
        return s

    def _trim(self, start: int, end: int, text: str, n_ctx: int, reserve: int) -> int:
        """Drop the oldest exchanges from the view so the prompt fits; the first exchange kept."""
        began = time.perf_counter()
        lo = self._first_kept(start, end, text, n_ctx, reserve)
        dropped = lo - start
        shifted = self._shift(start, lo, end)
        if shifted:  # the whole trim: finding what to drop, and cutting it out of the KV cache
            self.last_shift_seconds = time.perf_counter() - began
        how = f", shifted in place in {self.last_shift_seconds * 1000:.0f} ms" if self.last_shift_seconds else ""
        self.notice(
            f"note: dropped the {'oldest exchange' if dropped == 1 else f'{dropped} oldest exchanges'} from the "
            f"model's view to fit its {n_ctx}-token context (the saved conversation keeps everything{how})"
        )
        self._start = lo
        self._save_window()
        return lo

    def _shift(self, start: int, new_start: int, end: int) -> bool:
        """Cut exchanges[start:new_start] out of the engine's KV cache in place; False: the window is evaluated again."""
        self.last_shift_seconds = None
        cache, self._cache = self._cache, None
        if self.exact_window or not isinstance(self.engine, ContextShift) or cache is None or cache[:2] != (start, end):
            return False
        began = time.perf_counter()
        try:
            text = self.engine.render_chat(self.messages(new_start, end), add_generation_prompt=False,
                                           tools=self.offered_tools())
        except ChatllmError:
            return False
        tokens = None
        measured, self._measured = self._measured.get((new_start, end)), {}
        if measured is not None and measured[0].startswith(text):
            # The window with the new message was just tokenized: the history is all of it but the message's part.
            tail = self.engine.tokenize(measured[0][len(text):], special=True)
            if tail and measured[1][-len(tail):] == tail:
                tokens = measured[1][: -len(tail)]
        if tokens is None:
            tokens = self.engine.prompt_tokens(text)
        span = shift_plan(cache[3], tokens)
        if span is None or not self.engine.shift_out(cache[3][:span[1]], *span):
            return False
        self._cache = (new_start, end, text, tokens)
        self.last_shift_seconds = time.perf_counter() - began
        return True

    # -- compaction ---------------------------------------------------------------------------------

    def _compact_for(self, start: int, end: int, text: str, n_ctx: int, reserve: int) -> int:
        """Compact the oldest exchanges so the prompt fits beside a summary at its largest; the first exchange kept."""
        room = summary_tokens(n_ctx)
        if room < MIN_SUMMARY_TOKENS:
            raise CompactionFailed(f"the {n_ctx}-token context has no room for a summary", lasting=True)
        held = self.compacted_tokens
        if len(self._render(end, end, text)[2]) + reserve + room - held > n_ctx:
            raise CompactionFailed("no room for a summary beside this message")
        # Down to half the window: a summary costs seconds, so it is written once every several turns.
        return self._compact(self._first_kept(start, end, text, n_ctx, reserve, extra=room - held, target=0.5,
                                             tight=True))

    def compact(self, keep: int = 1) -> int:
        """Compact every exchange the model sees but the last `keep` into the summary (/compact); how many went in."""
        if keep < 0:
            raise UsageError("keep must be 0 or more", "for example /compact 2")
        cut = len(self.exchanges) - keep
        if cut <= max(self.summary.upto, 0):
            raise UsageError("nothing to compact", "the summary already holds every exchange but the last "
                             f"{keep}" if self.summary.upto else "send a few messages first")
        before = self.summary.upto
        try:
            self._compact(cut)
        except CompactionFailed as exc:
            raise ChatllmError(f"could not compact: {exc.message}", exc.hint or "try again, or go on: the chat trims "
                               "when it must") from None
        return cut - before

    def _compact(self, cut: int) -> int:
        """Summarize exchanges[summary.upto:cut] into the running summary; the model's view starts at cut."""
        first = self.summary.upto
        if cut <= first:
            return cut
        span = f"exchange {cut}" if cut - first == 1 else f"exchanges {first + 1}-{cut}"
        self.notice(f"compacting {span} into the conversation's summary (Ctrl-C cancels)...")
        began = time.perf_counter()
        # The summarizer evaluates its own prompts: what the KV cache held for this conversation is gone after it,
        # but for the system prompt, which is put back.
        held, self._cache = self._cache, None
        with kept_prefix(self.engine, self._system_prefix(held[3] if held else [])):
            new = Compactor(self.engine, self.sampling, on_progress=self.notice).summarize(self.summary,
                                                                                           self.exchanges[first:cut])
        new.upto, new.compactions = cut, self.summary.compactions + 1
        self.summary, self._start = new, cut
        self._save_window()
        size = self.engine.count_tokens(new.block())
        kept = f", {len(new.facts)} of the user's statements word for word" if new.facts else ""
        self.notice(f"note: compacted {span} into a {size}-token summary in {time.perf_counter() - began:.1f} s{kept} "
                    "(the saved conversation keeps everything)")
        return cut

    def _system_prefix(self, held: Sequence[int]) -> int:
        """How many of the cached tokens `held` are the system prompt's own (what stays whatever the summary)."""
        if not self.system or not held:
            return 0
        try:
            head = self.engine.prompt_tokens(self.engine.render_chat([{"role": "system", "content": self.system}],
                                                                     add_generation_prompt=False,
                                                                     tools=self.offered_tools()))
        except ChatllmError:
            return 0
        return common_prefix(head, held)

    def _forget_summary(self) -> None:
        """Drop the running summary (it holds an exchange that is gone or being redone); the view starts again at 0."""
        self.summary = RunningSummary()
        self._start = 0
        self._reset_cache()
        self._save_window()

    def _save_window(self) -> None:
        """Keep the summary and the view's start with the conversation, so --continue resumes with them."""
        if self.store is None or self.id is None:
            return
        s = self.summary
        stored = StoredSummary(s.text, s.upto, self._start, s.compactions, list(s.facts), self.model)
        self.store.set_summary(self.id, stored if (s.upto or self._start) else None)

    @property
    def compacted_tokens(self) -> int:
        """How many tokens the running summary takes in the model's view."""
        block = self.summary.block()
        return self.engine.count_tokens(block) if block else 0

    def _finish(self, t: Turn) -> None:
        t.close()
        stats = getattr(self.engine, "last_stats", None)
        self.last_stats = stats
        if not t.text and not t.tool_steps:
            return  # stopped before the first token: nothing worth keeping
        ex = Exchange(
            user=t.user,
            assistant=t.text,
            reasoning=t.reasoning,
            tool_steps=t.tool_steps,
            interrupted=t.interrupted,
            model=self.model,
            prompt_tokens=getattr(stats, "prompt_tokens", None),
            completion_tokens=getattr(stats, "completion_tokens", None),
            first_token_seconds=getattr(stats, "first_token_seconds", None),
            seconds=getattr(stats, "seconds", None),
        )
        replaced = self.exchanges[t.seq] if t.seq < len(self.exchanges) else None
        del self.exchanges[t.seq:]
        self.exchanges.append(ex)
        t.exchange = ex
        self.context_tokens = (ex.prompt_tokens or 0) + (ex.completion_tokens or 0)
        self._remember_prompt(t)
        self._persist(t.seq, ex, replaced)
        if isinstance(self.engine, WarmStart) and self.id is not None:
            self.engine.save_prefix(slot=f"chat:{self.id}")  # a fresh process resumes from it

    def _remember_prompt(self, t: Turn) -> None:
        msgs = self.messages(t.window, t.seq + 1)
        try:
            after = self.engine.render_chat(msgs, add_generation_prompt=False, tools=self.offered_tools())
        except ChatllmError:
            after = ""
        if not after.startswith(t.full):
            self._cache = None
            return
        tail = after[len(t.full):]  # the reply and the end-of-turn markup, as the template writes them
        self._cache = (t.window, t.seq + 1, t.prompt + tail, t.tokens + self.engine.tokenize(tail, special=True))

    # -- the KV cache on disk ------------------------------------------------------------------------

    def warm_up(self) -> int:
        """Restore the saved state of this conversation's history (once, before the first turn); tokens restored."""
        if self._warm or not isinstance(self.engine, WarmStart) or not self.exchanges:
            return 0
        try:
            history = self.engine.render_chat(self.messages(self._start), add_generation_prompt=False,
                                              tools=self.offered_tools())
        except ChatllmError:
            return 0
        return self._restore(self.engine.prompt_tokens(history))

    def _restore(self, tokens: Sequence[int]) -> int:
        if self._warm or not isinstance(self.engine, WarmStart):
            return 0
        self._warm = True  # after the first turn the engine's own cache is better than any file
        saved = self.engine.restore_prefix(tokens)
        return len(saved.tokens) if saved is not None else 0

    # -- editing ------------------------------------------------------------------------------------

    def undo(self) -> Exchange:
        """Drop the last exchange (also from the store)."""
        if not self.exchanges:
            raise UsageError("nothing to undo", "the conversation is empty")
        ex = self.exchanges.pop()
        self._start = min(self._start, len(self.exchanges))
        self._reset_cache()
        if self.store is not None and self.id is not None:
            self.store.delete_from(self.id, len(self.exchanges))
        if len(self.exchanges) < self.summary.upto:
            self._forget_summary()
        return ex

    def clear(self) -> None:
        """Start a new conversation with the same model and system prompt."""
        self.exchanges = []
        self.id = None
        self.created_at = time.time()
        self._start = 0
        self.summary = RunningSummary()
        self.context_tokens = 0
        self._reset_cache()

    def set_system(self, text: str | None) -> None:
        """Replace the system prompt (None removes it)."""
        self.system = text or None
        self._reset_cache()
        if self.store is not None and self.id is not None:
            self.store.set_system(self.id, self.system)

    def switch_engine(self, engine: Engine, model: str | None = None) -> None:
        """Continue the same conversation on another model."""
        self.engine = engine
        self.model = model or engine.name
        self._start = self.summary.upto
        self._warm = False
        self._no_compaction = None
        self._reset_cache()

    def switch_model(self, model: str) -> Engine:
        """Load MODEL through the engine factory and continue on it; the old engine is closed, the new returned.

        A model without a chat template is refused (NoChatTemplateError) and the conversation stays as it was.
        """
        if self._open_engine is None:
            raise UsageError("switching models is not available here", "start a new chat with --model MODEL")
        new = require_chat_template(self._open_engine(model))
        old = self.engine
        self.switch_engine(new)
        old.close()
        return new

    def adopt(self, system: str | None, exchanges: list[Exchange], conv_id: int | None = None) -> None:
        """Take over a saved conversation: with conv_id it continues that row, otherwise it is saved as a new one."""
        self.clear()
        self.system = system or None
        self.exchanges = list(exchanges)
        self.id = conv_id
        if conv_id is None and self.store is not None and self.exchanges:
            self.id = self.store.create(self.model, self.system, self.exchanges)

    def resume(self, stored: StoredConversation, system: str | None = None) -> None:
        """Continue a conversation from the store (system overrides its system prompt when given)."""
        self.adopt(stored.system, stored.exchanges, stored.id)
        self.created_at = stored.created_at
        if stored.summary is not None:
            kept = stored.summary
            upto = min(kept.upto, len(self.exchanges))
            self.summary = RunningSummary(kept.text, upto, kept.compactions, list(kept.facts)) if upto else RunningSummary()
            self._start = max(upto, min(kept.window_start, len(self.exchanges)))
        if system is not None and system != stored.system:
            self.set_system(system)

    def branch_to(self, conv_id: int, at: int, summary: RunningSummary, start: int) -> None:
        """Go on as conversation conv_id, a branch holding the first `at` exchanges with that summary (branching.py)."""
        if at < len(self.exchanges):
            self._reset_cache()
        del self.exchanges[at:]
        self.summary = summary
        self._start = max(summary.upto, min(start, at))
        self.id = conv_id

    def saved(self, limit: int | None = None) -> list[Summary]:
        """The most recent saved conversations (at most limit), from the store this conversation is saved in."""
        if self.store is None:
            raise ChatllmError("no conversation store", "")
        return self.store.list(limit)

    def search(self, text: str, limit: int = 20) -> list[SearchHit]:
        """Saved messages (of every conversation) holding every word of text, newest first."""
        if self.store is None:
            raise ChatllmError("no conversation store", "")
        return self.store.search(text, limit)

    def _persist(self, seq: int, ex: Exchange, replaced: Exchange | None = None) -> None:
        if self.store is None:
            return
        if self.id is None:
            self.id = self.store.create(self.model, self.system, self.exchanges)
        elif not self.store.put_exchange_checked(self.id, seq, ex, replaces=replaced, model=self.model):
            # Another chatllm went on with this conversation meanwhile: its exchanges stay, this one starts a branch.
            old = self.id
            self.id = self.store.create(self.model, self.system, self.exchanges, parent_id=old, fork_seq=seq)
            self._save_window()
            self.notice(f"note: conversation {old} was continued by another chatllm meanwhile; this exchange is saved "
                        f"in a new branch, conversation {self.id} (both are kept)")

    # -- files --------------------------------------------------------------------------------------

    def to_markdown(self) -> str:
        """The conversation as a markdown transcript."""
        return transcript_markdown(self.system, self.exchanges, model=self.model, conv_id=self.id,
                                   created_at=self.created_at)

    def to_json(self) -> dict:
        """The conversation as a JSON-ready dict."""
        return conversation_json(self.system, self.exchanges, model=self.model, conv_id=self.id,
                                 created_at=self.created_at)

    def save(self, path: Path) -> Path:
        """Write a markdown transcript, or JSON when the name ends in .json."""
        path = Path(path).expanduser()
        text = (json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n"
                if path.suffix.lower() == ".json" else self.to_markdown())
        try:
            path.write_text(text, encoding="utf-8")
        except IsADirectoryError:
            raise UsageError(f"{path} is a directory", "give a file name, e.g. /save chat.md")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}", "check the path and its permissions")
        return path

    def load(self, path: Path) -> None:
        """Replace this conversation with one from a .md or .json file (saved as a new conversation)."""
        system, exchanges = read_conversation_file(Path(path).expanduser())
        self.adopt(system, exchanges)
