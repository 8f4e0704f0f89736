"""How a streaming reply is drawn: plain pieces, or markdown redrawn in place; rich is imported only to draw."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator, Protocol

from chatllm.output import Output

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.live import Live
    from rich.markdown import Markdown
    from rich.segment import Segment


class ReplyView(Protocol):
    """What the REPL drives while a reply streams."""

    def start(self) -> None:
        """Before the first piece."""

    def update(self, text: str, piece: str) -> None:
        """A new piece; text is the whole reply so far."""

    def finish(self, text: str) -> None:
        """The reply is over (done or stopped)."""


class PlainView:
    """Writes pieces as they come (pipes, NO_COLOR, dumb terminals)."""

    def __init__(self, out: Output):
        self.out = out
        self._shown = 0  # characters of the reply written so far

    def start(self) -> None:
        """Nothing to set up."""

    def update(self, text: str, piece: str) -> None:
        """Write what the screen does not show yet (the new piece)."""
        self._show(text)

    def finish(self, text: str) -> None:
        """Write whatever came without being shown (a piece the reply got as it was stopped), then a newline."""
        self._show(text)
        if text and not text.endswith("\n"):
            self.out.write("\n")

    def _show(self, text: str) -> None:
        if len(text) > self._shown:
            self.out.write(text[self._shown:])
            self._shown = len(text)

    def stop(self) -> None:
        """Nothing to tear down."""


class LiveMarkdownView:
    """Rendered markdown that updates in place: only the tail that fits the screen while streaming, then the
    whole reply printed once, so a reply longer than the screen neither flickers nor repeats lines."""

    def __init__(self, console: Console, fps: float = 12.0):
        self.console = console
        self.interval = 1.0 / fps
        self._live: Live | None = None
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
        if self._live is None:
            return
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


def chat_markdown(text: str) -> Markdown:
    """A rich Markdown that shows <tags> in replies as text instead of hiding them as HTML."""
    from markdown_it import MarkdownIt
    from rich.markdown import Markdown

    md = Markdown("")
    md.markup = text
    md.parsed = MarkdownIt().enable("strikethrough").enable("table").disable(["html_inline", "html_block"]).parse(text)
    return md


class _Lines:
    """Pre-rendered lines as a rich renderable."""

    def __init__(self, lines: list[list[Segment]]):
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
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
    fence: str | None = None
    for line in lines:
        fence_before.append(fence)
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")) and len(line) - len(stripped) < 4:
            if fence is None:
                fence = stripped.rstrip()
            elif stripped.rstrip() == stripped[:3] * (len(stripped.rstrip()) // 3) and stripped[:3] == fence[:3]:
                fence = None
    for i in range(len(lines) - max_lines, 0, -1):
        reopen = fence_before[i]
        if reopen is not None:
            return reopen + "\n" + "\n".join(lines[i:])
        if not lines[i - 1].strip():
            return "\n".join(lines[i:])
    return text
