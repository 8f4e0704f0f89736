"""A conversation with one model: history, system prompt, context-window trimming, retry/undo, save/load.

The prompt given to the engine grows append-only from turn to turn (the text the KV cache already holds, plus
the new exchange), so llama.cpp's prefix reuse evaluates only the new tokens. Trimming, /undo, /retry, a new
system prompt or a new model break the prefix once; the next turn rebuilds it.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Generator, Iterator, Sequence

from chatllm.engines.contract import Engine, Event, Reasoning, Text, ToolCall, WarmStart
from chatllm.errors import ChatllmError, NoChatTemplateError, UsageError
from chatllm.settings import Sampling
from chatllm.storage.conversations import Exchange, Store, StoredConversation, Summary
from chatllm.tasks.chat.transcripts import conversation_json, read_conversation_file, transcript_markdown
from chatllm.tasks.tools.loop import LoopEvent, StepStarted, ToolSession, exchange_messages


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
    ):
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
        """The chat messages for exchanges[start:end], after the system prompt."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
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
        start = min(self._start, seq)
        full, prompt, tokens = self._render(start, seq, text)
        if len(tokens) + reserve > n_ctx:
            start = self._trim(start, seq, text, n_ctx, reserve)
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

    def _trim(self, start: int, end: int, text: str, n_ctx: int, reserve: int) -> int:
        """The first exchange to keep so the prompt fits; refuses a message that cannot fit even alone."""
        alone = len(self._render(end, end, text)[2])
        if alone + reserve > n_ctx:
            what = "message" + (" with the system prompt" if self.system else "")
            raise ChatllmError(
                f"{what} too long: {alone} tokens + {reserve} for the reply exceed the {n_ctx}-token context window",
                "shorten it, lower the reply length (/set max_tokens N), or start the chat with a larger --ctx",
            )

        def fits(s: int, budget: int) -> bool:
            return len(self._render(s, end, text)[2]) + reserve <= budget

        # Drop a quarter of the window more than needed, so trimming (which re-evaluates the whole prompt)
        # happens once every few turns rather than on every turn.
        budget = n_ctx - n_ctx // 4 if fits(end, n_ctx - n_ctx // 4) else n_ctx
        lo, hi = start + 1, end  # fits(hi) holds; find the smallest s that fits
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid, budget):
                hi = mid
            else:
                lo = mid + 1
        dropped = lo - start
        self._reset_cache()
        self.notice(
            f"note: dropped the {'oldest exchange' if dropped == 1 else f'{dropped} oldest exchanges'} from the "
            f"model's view to fit its {n_ctx}-token context (the saved conversation keeps everything)"
        )
        return lo

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
        del self.exchanges[t.seq:]
        self.exchanges.append(ex)
        t.exchange = ex
        self.context_tokens = (ex.prompt_tokens or 0) + (ex.completion_tokens or 0)
        self._remember_prompt(t)
        self._persist(t.seq, ex)
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
        return ex

    def clear(self) -> None:
        """Start a new conversation with the same model and system prompt."""
        self.exchanges = []
        self.id = None
        self.created_at = time.time()
        self._start = 0
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
        self._start = 0
        self._warm = False
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
        if system is not None and system != stored.system:
            self.set_system(system)

    def saved(self, limit: int | None = None) -> list[Summary]:
        """The most recent saved conversations (at most limit), from the store this conversation is saved in."""
        if self.store is None:
            raise ChatllmError("no conversation store", "")
        return self.store.list(limit)

    def _persist(self, seq: int, ex: Exchange) -> None:
        if self.store is None:
            return
        if self.id is None:
            self.id = self.store.create(self.model, self.system, self.exchanges)
        else:
            self.store.put_exchange(self.id, seq, ex, model=self.model)

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
