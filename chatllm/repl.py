"""The chat REPL: prompt_toolkit input, slash commands, streamed replies; talks to a Conversation only.

Ctrl-C while a reply streams stops it at the next token: the partial reply is kept in the conversation (and the
store) marked as interrupted, so what the user saw is what the model remembers; /retry regenerates it and /undo
drops it. Ctrl-C before the first token (while the prompt is evaluated) abandons the turn and keeps nothing, as
does a second Ctrl-C. Either way the model, the conversation and its store stay valid.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from prompt_toolkit.completion import Completer

from chatllm.errors import ChatllmError, NoChatTemplateError, UsageError
from chatllm.output import format_date, short_model, Output, format_stats
from chatllm.settings import Sampling, Settings, check_sampling
from chatllm.tasks.chat import Conversation, Turn

COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("", "list these commands"),
    "/exit": ("", "leave the chat (also /quit or Ctrl-D)"),
    "/quit": ("", "leave the chat"),
    "/clear": ("", "start a new conversation (same model and system prompt)"),
    "/system": ("[TEXT | -]", "show the system prompt, set it, or remove it with -"),
    "/model": ("[MODEL]", "show the model, or switch to another one (downloaded if needed)"),
    "/retry": ("", "generate the last reply again"),
    "/undo": ("", "drop the last exchange"),
    "/save": ("[FILE]", "save the conversation: markdown, or JSON when FILE ends in .json"),
    "/load": ("FILE", "load a conversation from a .md or .json file"),
    "/set": ("[KEY VALUE]", "show or change sampling: temperature, top_p, top_k, max_tokens, seed, ..."),
    "/stats": ("", "speed of the last reply, context use, sampling"),
    "/history": ("[N]", "list saved conversations (resume one with `chatllm chat --resume ID`)"),
}
INPUT_HELP = 'Alt-Enter or a trailing \\ adds a line · """ starts a block · Ctrl-C stops a reply'
SET_ALIASES = {"temp": "temperature", "max-tokens": "max_tokens", "top-p": "top_p", "top-k": "top_k",
               "min-p": "min_p", "repeat-penalty": "repeat_penalty", "n": "max_tokens"}
SETTABLE = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "stop")


def parse_set(sampling: Sampling, key: str, value: str) -> Sampling:
    """Sampling with KEY set to VALUE (as typed after /set), validated."""
    key = SET_ALIASES.get(key.lower(), key.lower().replace("-", "_"))
    if key not in SETTABLE:
        raise UsageError(f"unknown setting {key!r}", f"settable: {', '.join(SETTABLE)}")
    value = value.strip()
    if key == "stop":
        stops = () if value.lower() in ("", "none", "-") else (value.encode().decode("unicode_escape"),)
        return dataclasses.replace(sampling, stop=stops)
    if key == "seed":
        if value.lower() in ("none", "random", "-"):
            return dataclasses.replace(sampling, seed=None)
    kind = int if key in ("top_k", "max_tokens", "seed") else float
    try:
        number = kind(value)
    except ValueError:
        raise UsageError(f"{key} must be {'a whole number' if kind is int else 'a number'}, not {value!r}",
                         f"for example /set {key} {dataclasses.asdict(Sampling())[key]}")
    changed = dataclasses.replace(sampling, **{key: number})
    return check_sampling(changed, name=lambda k: k, example=lambda label, v: f"/set {label} {v}")


def unwrap_block(text: str) -> str:
    """Drop the \"\"\" fences of a multi-line block."""
    stripped = text.strip()
    if stripped.startswith('"""'):
        stripped = stripped[3:]
        if stripped.endswith('"""'):
            stripped = stripped[:-3]
        return stripped.strip()
    return text


def block_is_open(text: str) -> bool:
    """True while a \"\"\" block has been opened but not closed."""
    stripped = text.strip()
    return stripped.startswith('"""') and not (len(stripped) >= 6 and stripped.endswith('"""'))


# -- reply views ----------------------------------------------------------------------------------------


class PlainView:
    """Writes pieces as they come (pipes, NO_COLOR, dumb terminals)."""

    def __init__(self, out: Output):
        self.out = out

    def start(self) -> None:
        """Nothing to set up."""

    def update(self, text: str, piece: str) -> None:
        """Write the new piece."""
        self.out.write(piece)

    def finish(self, text: str) -> None:
        """End the reply with a newline."""
        if text and not text.endswith("\n"):
            self.out.write("\n")

    def stop(self) -> None:
        """Nothing to tear down."""


class LiveMarkdownView:
    """Rendered markdown that updates in place: only the tail that fits the screen while streaming, then the
    whole reply printed once, so a reply longer than the screen neither flickers nor repeats lines."""

    def __init__(self, console, fps: float = 12.0):
        self.console = console
        self.interval = 1.0 / fps
        self._live = None
        self._last = 0.0

    def start(self) -> None:
        """Show a waiting mark until the first token."""
        from rich.live import Live
        from rich.text import Text

        self._live = Live(console=self.console, auto_refresh=False, transient=True, redirect_stdout=False,
                          redirect_stderr=False, vertical_overflow="crop")
        self._live.start()
        self._live.update(Text("…", style="dim"), refresh=True)

    def update(self, text: str, piece: str) -> None:
        """Redraw, at most fps times a second."""
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(text)

    def _draw(self, text: str) -> None:
        height = max(3, self.console.size.height - 2)
        source = markdown_tail(text, height + 4)
        lines = self.console.render_lines(chat_markdown(source), self.console.options, pad=False)
        while lines and not any(seg.text.strip() for seg in lines[-1]):
            lines.pop()
        self._live.update(_Lines(lines[-height:]), refresh=True)

    def finish(self, text: str) -> None:
        """Replace the live tail with the whole reply, printed once."""
        self.stop()
        if text:
            self.console.print(chat_markdown(text))

    def stop(self) -> None:
        """Erase the live region."""
        if self._live is not None:
            self._live.stop()
            self._live = None


def chat_markdown(text: str):
    """A rich Markdown that shows <tags> in replies as text instead of hiding them as HTML."""
    from markdown_it import MarkdownIt
    from rich.markdown import Markdown

    md = Markdown("")
    md.markup = text
    md.parsed = MarkdownIt().enable("strikethrough").enable("table").disable(["html_inline", "html_block"]).parse(text)
    return md


class _Lines:
    """Pre-rendered lines as a rich renderable."""

    def __init__(self, lines):
        self.lines = lines

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        for i, line in enumerate(self.lines):
            yield from line
            if i < len(self.lines) - 1:
                yield Segment.line()


def markdown_tail(text: str, max_lines: int) -> str:
    """The end of a markdown text, about max_lines source lines, cut where it still renders the same:
    at a blank line outside code fences, or inside a fence (which is then reopened)."""
    lines = text.split("\n")
    if len(lines) <= max_lines:
        return text
    fence_before: list[str | None] = []
    fence = None
    for line in lines:
        fence_before.append(fence)
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")) and len(line) - len(stripped) < 4:
            if fence is None:
                fence = stripped.rstrip()
            elif stripped.rstrip() == stripped[:3] * (len(stripped.rstrip()) // 3) and stripped[:3] == fence[:3]:
                fence = None
    for i in range(len(lines) - max_lines, 0, -1):
        if fence_before[i] is not None:
            return fence_before[i] + "\n" + "\n".join(lines[i:])
        if not lines[i - 1].strip():
            return "\n".join(lines[i:])
    return text


# -- input ----------------------------------------------------------------------------------------------


def make_session(history_path: Path | None, *, input=None, output=None, color: bool = True):
    """A prompt_toolkit PromptSession: persistent history, Emacs keys, multi-line input, / completion."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.styles import Style

    history = InMemoryHistory()
    if history_path is not None:
        try:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(history_path))
        except OSError:
            pass  # an unwritable home only costs the history
    kb = KeyBindings()

    @kb.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    @kb.add("enter")
    def _enter(event) -> None:
        buf = event.current_buffer
        if buf.text.endswith("\\") and buf.cursor_position == len(buf.text):
            buf.delete_before_cursor(1)
            buf.insert_text("\n")
        elif block_is_open(buf.text):
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    style = Style.from_dict({"prompt": "bold" if color else "", "placeholder": "#888888" if color else "",
                             "continuation": "#888888" if color else ""})
    return PromptSession(
        message=FormattedText([("class:prompt", ">>> ")]),
        history=history,
        auto_suggest=AutoSuggestFromHistory(),
        completer=SlashCompleter(),
        complete_while_typing=True,
        key_bindings=kb,
        enable_open_in_editor=True,
        placeholder=FormattedText([("class:placeholder", "Send a message (/help for commands)")]),
        prompt_continuation=lambda width, line_number, wrap_count: FormattedText([("class:continuation", "... ")]),
        style=style,
        include_default_pygments_style=False,
        input=input,
        output=output,
    )


class SlashCompleter(Completer):
    """Completes slash commands, /set keys, and file names after /save and /load."""

    def __init__(self):
        from prompt_toolkit.completion import PathCompleter

        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document, complete_event):
        """Completions for the text before the cursor."""
        from prompt_toolkit.completion import Completion
        from prompt_toolkit.document import Document

        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        if " " not in text:
            for name, (args, help_) in COMMANDS.items():
                if name.startswith(text):
                    yield Completion(name, start_position=-len(text), display_meta=help_)
            return
        command, _, rest = text.partition(" ")
        if command == "/set" and " " not in rest:
            for key in SETTABLE:
                if key.startswith(rest):
                    yield Completion(key, start_position=-len(rest))
        elif command in ("/save", "/load"):
            yield from self._paths.get_completions(Document(rest, len(rest)), complete_event)


def piped_lines(stream: IO[bytes], warn: Callable[[str], None]) -> Iterator[str]:
    """Messages from a pipe: one per line (CRLF, BOM and bad UTF-8 handled); \"\"\" blocks span lines."""
    block: list[str] | None = None
    first, warned = True, False
    while True:
        raw = stream.readline()
        if not raw:
            break
        if first:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
            first = False
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if "\ufffd" in line and not warned:
            warn("stdin is not valid UTF-8; undecodable bytes were replaced with U+FFFD")
            warned = True
        if block is not None:
            block.append(line)
            if line.rstrip().endswith('"""'):
                yield unwrap_block("\n".join(block))
                block = None
        elif block_is_open(line):
            block = [line]
        else:
            yield line
    if block is not None:
        yield unwrap_block("\n".join(block))


# -- the loop -------------------------------------------------------------------------------------------


class Repl:
    """Reads messages and slash commands, streams replies, keeps the conversation valid whatever happens."""

    def __init__(self, conv: Conversation, out: Output, settings: Settings, *, store=None,
                 load_engine: Callable | None = None, session=None, interactive: bool = True):
        self.conv = conv
        self.out = out
        self.settings = settings
        self.store = store
        self._load_engine = load_engine
        self.session = session
        self.interactive = interactive
        self.errors = 0
        self._stop = False

    # -- running ----------------------------------------------------------------------------------------

    def run_interactive(self) -> None:
        """Prompt until /exit or Ctrl-D; Ctrl-C at the prompt clears the line."""
        self.banner()
        if self.conv.exchanges:
            self.show_transcript()
        while True:
            try:
                text = self.session.prompt()
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

    def _reply(self, turn_manager) -> None:
        turn = None
        try:
            with turn_manager as turn:
                self.stream(turn)
        except KeyboardInterrupt:
            if not self.interactive or turn is None:
                raise
        self.after_reply(turn)

    def stream(self, turn: Turn) -> None:
        """Show the reply as it streams; Ctrl-C stops it at the next token."""
        view = LiveMarkdownView(self.out.console) if self.out.rich and self.interactive else PlainView(self.out)
        with self._interruptible(turn), _no_echo(self.interactive):
            view.start()
            try:
                for piece in turn:
                    view.update(turn.text, piece)
                    if self._stop:
                        break
            finally:
                view.finish(turn.text)

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

    @contextmanager
    def _interruptible(self, turn: Turn) -> Iterator[None]:
        self._stop = False
        if threading.current_thread() is not threading.main_thread() or not self.interactive:
            yield
            return

        def on_sigint(signum, frame):
            # Before the first token (the prompt is still being evaluated) there is nothing to keep: give up
            # at once. After it, stop cleanly at the next token. A second Ctrl-C always gives up at once.
            if self._stop or not turn.text:
                raise KeyboardInterrupt
            self.request_stop()

        previous = signal.signal(signal.SIGINT, on_sigint)
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
        engine = self.conv.engine
        if not arg:
            self.out.line(f"{engine.name} ({engine.n_ctx}-token context)")
            return
        load = self._load_engine
        if load is None:
            from chatllm.runtime.loader import load_engine as load
        settings = self.settings.replace(model=arg)
        new = load(settings, self.out)
        if not new.has_chat_template:
            name = new.name
            new.close()
            raise NoChatTemplateError(name)
        self.conv.switch_engine(new)
        self.settings = settings
        engine.close()
        self.out.status(f"now chatting with {new.name} ({new.n_ctx}-token context); the conversation goes on")

    def cmd_retry(self, arg: str) -> None:
        """Regenerate the last reply."""
        self._reply(self.conv.retry())

    def cmd_undo(self, arg: str) -> None:
        """Drop the last exchange."""
        ex = self.conv.undo()
        self.out.status(f"dropped: {_first_line(ex.user)}")

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
                self.out.line(">>> " + _first_line(ex.user))
                self.print_markdown(ex.assistant.strip())

    def cmd_set(self, arg: str) -> None:
        """Show or change sampling."""
        if not arg:
            self.out.line(_sampling_text(self.conv.sampling))
            return
        key, _, value = arg.partition(" ")
        if not value.strip() and key.lower() not in ("stop", "seed"):
            raise UsageError(f"/set {key} needs a value", f"for example /set {key} 0.7")
        self.conv.sampling = parse_set(self.conv.sampling, key, value)
        self.out.status(f"{SET_ALIASES.get(key.lower(), key.lower().replace('-', '_'))} set")

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
        ]
        if conv.last_stats is not None:
            s = conv.last_stats
            lines.append(f"last reply:   {format_stats(s)}; prompt {s.prompt_tokens} tokens, "
                         f"{s.cached_tokens} reused from the cache")
        lines.append("sampling:     " + _sampling_text(conv.sampling))
        self.out.line("\n".join(lines))

    def cmd_history(self, arg: str) -> None:
        """Recent saved conversations."""
        if self.store is None:
            raise ChatllmError("no conversation store", "")
        try:
            limit = int(arg) if arg else 20
        except ValueError:
            raise UsageError(f"/history takes a number, not {arg!r}", "for example /history 50")
        rows = self.store.list(limit)
        if not rows:
            self.out.line("no saved conversations yet")
            return
        self.out.table(["id", "model", "first message", "turns", "date"], [
            [("*" if r.id == self.conv.id else "") + str(r.id), short_model(r.model), r.title, r.turns,
             format_date(r.updated_at)] for r in rows])


def _sampling_text(s: Sampling) -> str:
    return "  ".join(f"{k}={list(s.stop)!r}" if k == "stop" else f"{k}={getattr(s, k)}" for k in SETTABLE)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _first_line(text: str) -> str:
    from chatllm.store import first_line

    return first_line(text)


@contextmanager
def _no_echo(enabled: bool) -> Iterator[None]:
    """While a reply streams, keystrokes typed ahead (and ^C) are not echoed into it; they wait for the prompt."""
    fd = None
    try:
        if enabled and sys.stdin is not None and sys.stdin.isatty():
            import termios

            fd = sys.stdin.fileno()
            saved = termios.tcgetattr(fd)
            quiet = list(saved)
            quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (ImportError, OSError, ValueError, AttributeError):
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
