"""The interactive prompt: a prompt_toolkit session with history, multi-line keys and / completion.

The only REPL module that imports prompt_toolkit when loaded; piped chats and other commands never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output as TerminalOutput
from prompt_toolkit.styles import Style

from chatllm.inputs import block_is_open
from chatllm.repl.commands import COMMANDS, SETTABLE


def make_session(history_path: Path | None, *, input: Input | None = None, output: TerminalOutput | None = None,
                 color: bool = True) -> PromptSession[str]:
    """A prompt_toolkit PromptSession: persistent history, Emacs keys, multi-line input, / completion."""
    history: History = InMemoryHistory()
    if history_path is not None:
        try:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(history_path))
        except OSError:
            pass  # an unwritable home only costs the history
    style = Style.from_dict({"prompt": "bold" if color else "", "placeholder": "#888888" if color else "",
                             "continuation": "#888888" if color else ""})
    return PromptSession(
        message=FormattedText([("class:prompt", ">>> ")]),
        history=history,
        auto_suggest=AutoSuggestFromHistory(),
        completer=SlashCompleter(),
        complete_while_typing=True,
        key_bindings=_key_bindings(),
        enable_open_in_editor=True,
        placeholder=FormattedText([("class:placeholder", "Send a message (/help for commands)")]),
        prompt_continuation=lambda width, line_number, wrap_count: FormattedText([("class:continuation", "... ")]),
        style=style,
        include_default_pygments_style=False,
        input=input,
        output=output,
    )


def _key_bindings() -> KeyBindings:
    """Alt-Enter adds a line, as Enter does after a trailing backslash or inside a \"\"\" block; Enter sends; Ctrl-C clears."""
    kb = KeyBindings()

    @kb.add("c-c")
    def _clear(event: KeyPressEvent) -> None:
        # In place, not by leaving the line above a fresh prompt: the rest of a burst of Ctrl-C that stopped a
        # reply lands here, and must leave no trace on the screen.
        event.current_buffer.reset()

    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @kb.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        buf = event.current_buffer
        if buf.text.endswith("\\") and buf.cursor_position == len(buf.text):
            buf.delete_before_cursor(1)
            buf.insert_text("\n")
        elif block_is_open(buf.text):
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    return kb


class SlashCompleter(Completer):
    """Completes slash commands, /set keys, and file names after /save and /load."""

    def __init__(self) -> None:
        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        """Completions for the text before the cursor."""
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
