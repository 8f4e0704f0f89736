"""The chat loop: reads messages and slash commands, streams replies; talks to a Conversation only.

Ctrl-C while a reply streams stops it at the next token: the partial reply is kept in the conversation (and the
store) marked as interrupted, so what the user saw is what the model remembers; /retry regenerates it and /undo
drops it. Ctrl-C before the first token (while the prompt is evaluated) abandons the turn and keeps nothing; a
second Ctrl-C while the engine is still busy stops at once and keeps what came so far. Either way the model, the
conversation and its store stay valid.

A Ctrl-C never cuts into drawing or saving: KeyboardInterrupt is raised only while the engine computes (or outside
a reply), once per burst of presses, and the terminal keeps NOFLSH so the kernel does not throw away output the
terminal has not drawn yet. After an interrupt the screen shows exactly the partial reply that was saved.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Iterable, Iterator

from chatllm.errors import ChatllmError, UsageError
from chatllm.inputs import unwrap_block
from chatllm.output import Output, ThinkingView, format_date, format_stats, short_model
from chatllm.repl.commands import COMMANDS, INPUT_HELP, parse_set, sampling_text, setting_name
from chatllm.repl.views import LiveMarkdownView, PlainView, ReplyView, chat_markdown
from chatllm.storage.conversations import HIGHLIGHT, first_line
from chatllm.tasks.chat.branching import edit_turn, fork
from chatllm.tasks.chat.conversation import Conversation, Turn
from chatllm.tasks.chat.transcripts import tool_lines
from chatllm.tasks.tools.loop import CallDone, LoopNotice, StepStarted, call_line

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession


class Repl:
    """Reads messages and slash commands, streams replies, keeps the conversation valid whatever happens."""

    def __init__(self, conv: Conversation, out: Output, *, session: PromptSession[str] | None = None,
                 interactive: bool = True, hide_thinking: bool = False, show_thinking: bool = False):
        self.conv = conv
        self.out = out
        self.hide_thinking = hide_thinking  # a reasoning trace: one summary line, not drawn while it streams
        self.show_thinking = show_thinking  # in a pipe: the trace on stdout too, between <think> tags
        self.session = session
        self.interactive = interactive
        self.errors = 0
        self._stop = False
        self._sigint = _RAISE  # what a Ctrl-C does now (see _on_sigint)
        self._waiting = False  # inside the engine, between two pieces: the one safe place to raise mid-reply
        self._turn: Turn | None = None

    # -- running ----------------------------------------------------------------------------------------

    def run_interactive(self) -> None:
        """Prompt until /exit or Ctrl-D; Ctrl-C at the prompt clears the line."""
        if self.session is None:
            raise ValueError("run_interactive needs a prompt session")
        self.banner()
        if self.conv.exchanges:
            self.show_transcript()
        with _quiet_tty(True), self._sigint_handled():
            while True:
                # Presses left over from a burst that stopped a reply must not cut in: until prompt_toolkit's raw
                # mode reads Ctrl-C as a key (which clears the line), SIGINT stays with _on_sigint, which ignores it.
                self._sigint = _QUIET
                try:
                    text = self.session.prompt(handle_sigint=False)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                if not self.handle(text):
                    break

    def run_piped(self, lines: Iterable[str]) -> None:
        """One message (or slash command) per line; plain replies on stdout."""
        for line in lines:
            if not self.handle(line):
                break

    def banner(self) -> None:
        """One dim line: model, context, how to get help."""
        engine = self.conv.engine
        self.out.status(f"chatllm chat · {short_model(engine.name)} · {engine.n_ctx}-token context · /help · "
                        "Ctrl-D quits")
        self.out.status(INPUT_HELP)

    def show_transcript(self) -> None:
        """Print the exchanges of a resumed conversation."""
        self.out.status(f"resumed conversation {self.conv.id} ({_plural(len(self.conv.exchanges), 'exchange')})")
        for ex in self.conv.exchanges:
            self.out.line(">>> " + ex.user.replace("\n", "\n... "))
            for line in tool_lines(ex.tool_steps):
                self.out.status(f"⚙ {line}")
            self.print_markdown(ex.assistant.strip())
            if ex.interrupted:
                self.out.status("[interrupted]")
            self.out.line()

    def print_markdown(self, text: str) -> None:
        """A finished reply: rendered in a colour terminal, plain elsewhere."""
        if self.out.rich and self.interactive:
            self.out.console.print(chat_markdown(text))
        else:
            self.out.line(text)

    def handle(self, text: str) -> bool:
        """Act on one input; False when the chat should end. Errors are shown, never raised."""
        text = unwrap_block(text)
        if not text.strip():
            return True
        try:
            self._sigint = _RAISE
            if text.startswith("/") and not text.startswith("//"):
                return self.command(text.strip())
            self.send(text[1:] if text.startswith("//") else text)
        except ChatllmError as err:
            self.errors += 1
            self.out.error(err)
        except KeyboardInterrupt:
            if not self.interactive:
                raise
            self.out.status("interrupted")
        return True

    # -- replies ----------------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Send a message and stream the reply."""
        self._reply(self.conv.turn(text))

    def _reply(self, turn_manager: AbstractContextManager[Turn]) -> None:
        turn = None
        with _quiet_tty(self.interactive), self._sigint_handled():
            try:
                with turn_manager as turn:
                    self.stream(turn)
            except KeyboardInterrupt:
                if not self.interactive or turn is None:
                    raise
            if turn is not None:
                self.after_reply(turn)

    def stream(self, turn: Turn) -> None:
        """Show the reply as it streams; Ctrl-C stops it at the next token."""
        view = self._new_view()
        self._stop, self._turn, self._sigint = False, turn, _STREAM
        thinking = ThinkingView(self.out, hide=self.hide_thinking, show_in_pipe=self.show_thinking)
        turn.on_reasoning = thinking.reasoning
        started = True

        def on_tool(event: object) -> None:  # a reply that made calls is over: its text stays, the calls show
            nonlocal view, started
            if isinstance(event, StepStarted):
                view.finish(turn.text)
                view, started = self._new_view(), False
            self.show_tool_event(event)

        turn.on_tool = on_tool
        pieces = iter(turn)
        try:
            view.start()
            while not self._stop:
                self._waiting = True
                try:
                    piece = next(pieces, None)
                finally:
                    self._waiting = False
                if piece is None:
                    break
                thinking.fold(self.conv.engine.last_stats.reasoning_tokens)
                if not started:
                    view.start()
                    started = True
                view.update(turn.text, piece)
            if self._stop and not turn.text:
                raise KeyboardInterrupt  # pressed before the first token, while the waiting mark was drawn
        finally:
            # From here on a Ctrl-C changes nothing: the view draws, and the conversation saves, this same text.
            self._sigint = _QUIET
            thinking.fold(self.conv.engine.last_stats.reasoning_tokens)
            view.finish(turn.text)

    def _new_view(self) -> ReplyView:
        return LiveMarkdownView(self.out.console) if self.out.rich and self.interactive else PlainView(self.out)

    def show_tool_event(self, event: object) -> None:
        """A call on one dim line of stderr once it ran (in a terminal); the loop's notices as warnings, always."""
        if isinstance(event, LoopNotice):
            self.out.warn(event.message)
        elif isinstance(event, CallDone) and self.out.err_tty:
            self.out.status(f"⚙ {call_line(event.call)}")

    def request_stop(self) -> None:
        """Stop the streaming reply at the next token (what Ctrl-C does)."""
        self._stop = True

    def after_reply(self, turn: Turn) -> None:
        """The dim stats line on stderr (in a terminal)."""
        stats = self.conv.last_stats
        if turn.interrupted and turn.exchange is None:
            self.out.status("interrupted before the first token: nothing kept")
            return
        if stats is not None and (self.out.err_tty or (self.interactive and self.out.is_tty)):
            self.out.status(format_stats(stats))
        elif turn.interrupted:
            self.out.status("[interrupted]")

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._sigint == _QUIET:
            return  # a reply is being drawn and saved, or the prompt is starting: nothing is left to stop
        if self._sigint == _STREAM and not (self._waiting and (self._stop or not (self._turn and self._turn.text))):
            # Stop cleanly at the next token. Raising here could cut a half-written frame or save; only inside
            # the engine, before the first token or at a second press, is giving up at once safe.
            self.request_stop()
            return
        self._sigint = _QUIET  # one KeyboardInterrupt per burst: the next presses find nothing more to stop
        raise KeyboardInterrupt

    @contextmanager
    def _sigint_handled(self) -> Iterator[None]:
        """Ctrl-C goes through _on_sigint in the block (interactive, main thread); the old handler comes back after."""
        if (not self.interactive or threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) == self._on_sigint):
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- slash commands ---------------------------------------------------------------------------------

    def command(self, text: str) -> bool:
        """Run one slash command; False for /exit."""
        name, _, arg = text.partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("/exit", "/quit", "/bye"):
            return False
        handler = getattr(self, "cmd_" + name[1:], None)
        if name not in COMMANDS or handler is None:
            import difflib

            close = difflib.get_close_matches(name, list(COMMANDS), n=1)
            raise UsageError(f"unknown command {name}",
                             (f"did you mean {close[0]}? " if close else "") + "/help lists the commands; "
                             "start a message with // to send a literal /")
        handler(arg)
        return True

    def cmd_help(self, arg: str) -> None:
        """List the commands."""
        width = max(len(n) + len(a) for n, (a, _) in COMMANDS.items()) + 2
        lines = [f"  {(name + ' ' + args).ljust(width)} {help_}" for name, (args, help_) in COMMANDS.items()]
        self.out.line("\n".join(["Commands:"] + lines + ["", INPUT_HELP, "Ctrl-D or /exit leaves; the conversation is "
                                                         "saved after every reply (chatllm history)."]))

    def cmd_clear(self, arg: str) -> None:
        """New conversation."""
        self.conv.clear()
        self.out.status("new conversation")

    def cmd_system(self, arg: str) -> None:
        """Show or set the system prompt."""
        if not arg:
            self.out.line(self.conv.system or "(no system prompt)")
            return
        self.conv.set_system(None if arg == "-" else arg)
        self.out.status("system prompt removed" if arg == "-" else "system prompt set")

    def cmd_model(self, arg: str) -> None:
        """Show the model, or switch to another one."""
        if not arg:
            engine = self.conv.engine
            self.out.line(f"{engine.name} ({engine.n_ctx}-token context)")
            return
        new = self.conv.switch_model(arg)
        self.out.status(f"now chatting with {new.name} ({new.n_ctx}-token context); the conversation goes on")

    def cmd_retry(self, arg: str) -> None:
        """Regenerate the last reply."""
        self._reply(self.conv.retry())

    def cmd_undo(self, arg: str) -> None:
        """Drop the last exchange."""
        ex = self.conv.undo()
        self.out.status(f"dropped: {first_line(ex.user)}")

    def cmd_branch(self, arg: str) -> None:
        """Fork the conversation here into a new saved one."""
        if arg:
            raise UsageError("/branch takes no argument", "it forks here; /edit N TEXT forks before message N")
        old = self.conv.id
        new = fork(self.conv)
        self.out.status(f"branched conversation {old} into conversation {new}; {old} stays as it was")

    def cmd_edit(self, arg: str) -> None:
        """Rewrite message N and go on from there in a new branch."""
        number, _, text = arg.partition(" ")
        try:
            n = int(number)
        except ValueError:
            raise UsageError("/edit needs the number of the message to rewrite", "for example /edit 2 What about cats?")
        if not 1 <= n <= len(self.conv.exchanges):
            edit_turn(self.conv, n)  # the one error for a turn that does not exist
        text = text.strip()
        if not text and self.interactive and self.session is not None:
            text = self.session.prompt(default=self.conv.exchanges[n - 1].user, handle_sigint=False)
        if not text.strip():
            raise UsageError(f"/edit {n} needs the new text of message {n}", f"for example /edit {n} What about cats?")
        old = self.conv.id
        new = edit_turn(self.conv, n)
        self.out.status(f"editing message {n} in a new branch: conversation {new} ({old} stays as it was)")
        self.send(text)

    def cmd_compact(self, arg: str) -> None:
        """Summarize the exchanges the model sees, all but the last few."""
        try:
            keep = int(arg) if arg else 1
        except ValueError:
            raise UsageError(f"/compact takes how many exchanges to keep in full, not {arg!r}", "for example /compact 2")
        with self._sigint_handled():
            self.conv.compact(keep)

    def cmd_save(self, arg: str) -> None:
        """Save a transcript."""
        if not self.conv.exchanges:
            raise UsageError("nothing to save yet", "send a message first")
        name = arg or f"chatllm-{self.conv.id or 'chat'}-{time.strftime('%Y%m%d-%H%M%S')}.md"
        path = self.conv.save(Path(name))
        self.out.status(f"saved {path}")

    def cmd_load(self, arg: str) -> None:
        """Load a conversation file."""
        if not arg:
            raise UsageError("/load needs a file", "for example /load chat.md")
        self.conv.load(Path(arg))
        self.out.status(f"loaded {_plural(len(self.conv.exchanges), 'exchange')} from {arg}"
                        + (f" as conversation {self.conv.id}" if self.conv.id is not None else ""))
        if self.interactive:
            for ex in self.conv.exchanges[-3:]:
                self.out.line(">>> " + first_line(ex.user))
                self.print_markdown(ex.assistant.strip())

    def cmd_set(self, arg: str) -> None:
        """Show or change sampling."""
        if not arg:
            self.out.line(sampling_text(self.conv.sampling))
            return
        key, _, value = arg.partition(" ")
        if not value.strip() and key.lower() not in ("stop", "seed"):
            raise UsageError(f"/set {key} needs a value", f"for example /set {key} 0.7")
        self.conv.sampling = parse_set(self.conv.sampling, key, value)
        self.out.status(f"{setting_name(key)} set")

    def cmd_stats(self, arg: str) -> None:
        """Speed and context use."""
        conv, engine = self.conv, self.conv.engine
        lines = [
            f"model:        {engine.name}",
            f"conversation: {conv.id if conv.id is not None else '(not saved yet)'}, "
            f"{_plural(len(conv.exchanges), 'exchange')}"
            + (f" (the model sees from #{conv.window_start + 1})" if conv.window_start else ""),
            f"context:      {conv.context_tokens} of {engine.n_ctx} tokens" if conv.last_stats is not None
            else f"context:      {engine.n_ctx} tokens, nothing evaluated yet in this session",
            "compacted:    " + _compacted(conv),
        ]
        if conv.last_stats is not None:
            s = conv.last_stats
            lines.append(f"last reply:   {format_stats(s, drafts=False)}; prompt {s.prompt_tokens} tokens, "
                         f"{s.cached_tokens} reused from the cache")
            if s.drafted_tokens:
                lines.append(f"drafts:       {s.accepted_tokens} of {s.drafted_tokens} tokens drafted from the "
                             "conversation accepted")
            else:
                lines.append("drafts:       off (--draft off)" if conv.sampling.draft == "off" else
                             "drafts:       none in the last reply (made only where it copies and they pay)")
        lines.append("sampling:     " + sampling_text(conv.sampling))
        self.out.line("\n".join(lines))

    def cmd_tools(self, arg: str) -> None:
        """List the tools, or switch one (or a whole server's) on or off."""
        tools = self.conv.tools
        if tools is None:
            raise UsageError("tools are not available here", "start the chat with --mcp FILE or --functions FILE.py")
        verb, _, name = arg.partition(" ")
        if verb:
            if verb.lower() not in ("on", "off") or not name.strip():
                raise UsageError("/tools takes on NAME or off NAME", "for example /tools off get_time, /tools on SERVER")
            changed = tools.toolbox.switch(name.strip(), verb.lower() == "on")
            self.out.status(f"{verb.lower()}: {', '.join(changed)}")
            return
        entries = tools.toolbox.entries()
        if not entries:
            self.out.line("no tools yet: start the chat with --mcp FILE, --functions FILE.py or -T NAME (/mcp lists "
                          "the servers of mcp.json; /tools on SERVER starts one)")
            return
        self.out.table(["tool", "source", "state", "description"], [
            [e.name, e.source.name, "on" if e.on else "off", first_line(e.spec.description)[:60]] for e in entries])

    def cmd_mcp(self, arg: str) -> None:
        """The MCP servers (and tool files): running, or failed and why."""
        tools = self.conv.tools
        rows = tools.toolbox.servers() if tools is not None else []
        if not rows:
            self.out.line("no MCP servers: give --mcp FILE, or write mcp.json in the config dir")
            return
        self.out.table(["name", "command or URL", "state"], [list(row) for row in rows])

    def cmd_history(self, arg: str) -> None:
        """Recent saved conversations, or a search of every message."""
        word, _, rest = arg.partition(" ")
        if word.lower() == "search":
            self.history_search(rest.strip())
            return
        try:
            limit = int(arg) if arg else 20
        except ValueError:
            raise UsageError(f"/history takes a number, not {arg!r}", "for example /history 50")
        rows = self.conv.saved(limit)
        if not rows:
            self.out.line("no saved conversations yet")
            return
        self.out.table(["id", "model", "first message", "turns", "date"], [
            [("*" if r.id == self.conv.id else "") + str(r.id), short_model(r.model), r.title, r.turns,
             format_date(r.updated_at)] for r in rows])


    def history_search(self, text: str) -> None:
        """Every saved message holding the words, newest first."""
        if not text:
            raise UsageError("/history search needs some text", "for example /history search Lyon")
        hits = self.conv.search(text)
        if not hits:
            self.out.line(f"no message holds {text!r}")
            return
        for hit in hits:
            mark = "*" if hit.conversation_id == self.conv.id else ""
            self.out.line(f"{mark}{hit.conversation_id}@{hit.turn} {hit.role}: {_marked(hit.snippet, self.out.rich)}")


def _compacted(conv: Conversation) -> str:
    s = conv.summary
    mode = "trim" if conv.overflow == "trim" else "compact"
    if not s.upto:
        dropped = f"; the first {_plural(conv.window_start, 'exchange')} left the view" if conv.window_start else ""
        return f"nothing yet (--overflow {mode}{dropped})"
    kept = f", {len(s.facts)} statements word for word" if s.facts else ""
    return f"{_plural(s.upto, 'exchange')} in a {conv.compacted_tokens}-token summary ({_plural(s.compactions, 'compaction')}{kept})"


def _marked(snippet: str, rich: bool) -> str:
    """A search snippet with its matches in bold (a colour terminal) or between the marks (elsewhere)."""
    if not rich:
        return snippet
    return snippet.replace(HIGHLIGHT[0], "\x1b[1m").replace(HIGHLIGHT[1], "\x1b[22m")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# What a Ctrl-C does: raise KeyboardInterrupt (a command runs), stop the reply (it streams), or nothing.
_RAISE, _STREAM, _QUIET = "raise", "stream", "quiet"


@contextmanager
def _quiet_tty(enabled: bool) -> Iterator[None]:
    """Outside the prompt's own raw mode: no echo of keys typed ahead or ^C, and no flush of the tty's queues on ^C."""
    # By default a ^C makes the kernel drop the output the terminal has not read yet (a lagging terminal may hold
    # a whole reply there): the reply just printed, or the cursor moves the live view relies on, would vanish.
    fd = None
    try:
        if enabled and sys.stdin is not None and sys.stdin.isatty():
            import termios

            fd = sys.stdin.fileno()
            saved = termios.tcgetattr(fd)
            quiet = list(saved)
            quiet[3] = (quiet[3] & ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))) | termios.NOFLSH
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (ImportError, OSError, ValueError, AttributeError):
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
