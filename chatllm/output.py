"""The only code that prints: answers on stdout, everything else on stderr; rich in a terminal, plain in a pipe."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from chatllm.errors import ChatllmError, PipeClosed, redact

if TYPE_CHECKING:
    from rich.console import Console


def _isatty(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Output:
    """Owns stdout and stderr; tests inject streams and flip the TTY flags."""

    def __init__(
        self,
        stdout: IO | None = None,
        stderr: IO | None = None,
        *,
        stdout_tty: bool | None = None,
        stderr_tty: bool | None = None,
        color: bool | None = None,
        as_json: bool = False,
    ):
        self.as_json = as_json  # --json: results are JSON documents, the human rendering is skipped
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.is_tty = _isatty(self.stdout) if stdout_tty is None else stdout_tty
        self.err_tty = _isatty(self.stderr) if stderr_tty is None else stderr_tty
        dumb = os.environ.get("TERM", "") == "dumb"
        self.color = (not os.environ.get("NO_COLOR") and not dumb) if color is None else color
        self._console: Console | None = None
        self._err_console: Console | None = None

    # -- consoles (rich is imported only when something is drawn) --------------------------------

    @property
    def console(self) -> Console:
        """A rich Console on stdout, for a terminal."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=self.stdout, force_terminal=self.is_tty, no_color=not self.color, highlight=False, soft_wrap=False
            )
        return self._console

    @property
    def err_console(self) -> Console:
        """A rich Console on stderr."""
        if self._err_console is None:
            from rich.console import Console

            self._err_console = Console(
                file=self.stderr, force_terminal=self.err_tty, no_color=not self.color, highlight=False
            )
        return self._err_console

    @property
    def rich(self) -> bool:
        """Whether stdout gets rendered markdown and colour."""
        return self.is_tty and self.color

    # -- the answer -------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Part of the answer, flushed at once so pipes see it as it comes."""
        try:
            self.stdout.write(text)
            self.stdout.flush()
        except BrokenPipeError:
            raise PipeClosed from None

    def line(self, text: str = "") -> None:
        """One line of the answer."""
        self.write(text + "\n")

    def json(self, obj: object) -> None:
        """One JSON document (or JSON Lines row) on stdout."""
        self.line(json.dumps(obj, ensure_ascii=False))

    def json_value(self, value: object) -> None:
        """A JSON answer on stdout: indented in a terminal, one compact line in a pipe."""
        self.line(json.dumps(value, ensure_ascii=False, indent=2 if self.is_tty else None))

    def result(self, record: object, human: Callable[[], None] | None = None) -> None:
        """One result: the JSON record in --json mode, else whatever `human` prints (nothing if None)."""
        if self.as_json:
            self.json(record)
        elif human is not None:
            human()

    def markdown(self, text: str) -> None:
        """Rendered markdown in a colour terminal, plain text elsewhere."""
        if self.rich:
            from rich.markdown import Markdown

            self.console.print(Markdown(text))
        else:
            self.line(text)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> None:
        """A table: rich in a terminal, tab-separated in a pipe."""
        rows = [[("" if v is None else str(v)) for v in row] for row in rows]
        if self.is_tty:
            from rich.table import Table

            table = Table(*columns, title=title, header_style="bold" if self.color else "")
            for row in rows:
                table.add_row(*(str(cell) for cell in row))
            self.console.print(table)
        else:
            self.line("\t".join(columns))
            for row in rows:
                self.line("\t".join(str(cell) for cell in row))

    # -- everything else goes to stderr ----------------------------------------------------------

    def status(self, message: str) -> None:
        """A dim status line on stderr."""
        if self.err_tty and self.color:
            self.err_console.print(message, style="dim", markup=False, highlight=False)
        else:
            self.stderr.write(message + "\n")
            self.stderr.flush()

    def warn(self, message: str) -> None:
        """`warning: ...` on stderr."""
        self._err_line("warning", message, "yellow")

    def error(self, err: ChatllmError) -> None:
        """`error: ...` and `hint: ...` on stderr, with any token redacted."""
        self._err_line("error", redact(err.message), "bold red")
        if err.hint:
            self._err_line("hint", redact(err.hint), "cyan")

    def _err_line(self, label: str, message: str, style: str) -> None:
        if self.err_tty and self.color:
            from rich.text import Text

            text = Text(f"{label}: ", style=style)
            text.append(message)
            self.err_console.print(text, highlight=False, soft_wrap=True)
        else:
            self.stderr.write(f"{label}: {message}\n")
            self.stderr.flush()

    def confirm(self, question: str) -> bool:
        """Ask y/N on the terminal; False when stdin is not a terminal."""
        if not _isatty(sys.stdin):
            return False
        self.stderr.write(f"{question} [y/N] ")
        self.stderr.flush()
        try:
            answer = sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return False
        return answer.strip().lower() in {"y", "yes"}

    @contextmanager
    def progress(self, description: str, total: float | None = None, *, counted: bool = True) -> Iterator["ProgressBar"]:
        """A progress bar on stderr for the duration of a block (see ProgressBar)."""
        bar = ProgressBar(self, description, total, counted=counted)
        try:
            yield bar
        finally:
            bar.stop()


class ProgressBar:
    """A transient rich progress bar on stderr in a terminal; nothing at all when stderr is a pipe.

    counted=True shows "done/total" and the time left (items); False shows a spinner and the time spent (stages).
    """

    def __init__(self, out: Output, description: str, total: float | None = None, *, counted: bool = True):
        self._bar = None
        self._task = None
        if not out.err_tty:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if counted:
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                       TimeRemainingColumn()]
        else:
            columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                       TimeElapsedColumn()]
        self._bar = Progress(*columns, console=out.err_console, transient=True)
        self._task = self._bar.add_task(description, total=total, info="")
        self._bar.start()

    def advance(self, n: float = 1, info: str = "") -> None:
        """Count n more done."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=n, info=info)

    def update(self, *, description: str | None = None, completed: float | None = None, info: str | None = None) -> None:
        """Change what the bar says or how full it is."""
        if self._bar is not None and self._task is not None:
            if info is None:
                self._bar.update(self._task, description=description, completed=completed)
            else:
                self._bar.update(self._task, description=description, completed=completed, info=info)

    def stop(self) -> None:
        """Remove the bar (it is transient), e.g. before an answer streams to the same terminal."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def format_date(ts: float | None) -> str:
    """A local date and minute (2026-12-01 14:02), or "" for no time."""
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def short_model(name: str) -> str:
    """A model name without the directories of a local path."""
    return os.path.basename(name) if os.sep in name else name


def format_stats(stats, drafts: bool = True) -> str:
    """`12 tokens, 85.3 tok/s, first token 0.21 s` for a GenerationStats (drafts: and how many drafted tokens held)."""
    estimated = getattr(stats, "estimated", False)  # a server without a tokenizer: chatllm's own estimate
    parts = [f"~{stats.completion_tokens} tokens (estimated)" if estimated else f"{stats.completion_tokens} tokens"]
    if stats.tokens_per_second:
        parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    parts.append(f"first token {stats.first_token_seconds:.2f} s")
    drafted = getattr(stats, "drafted_tokens", 0)
    if drafted and drafts:
        parts.append(f"{stats.accepted_tokens} of {drafted} drafted tokens accepted")
    if stats.finish_reason == "length":
        parts.append("stopped at --max-tokens")
    elif stats.finish_reason == "interrupted":
        parts.append("interrupted")
    return ", ".join(parts)


class ThinkingView:
    """A reasoning trace as it streams: its latest lines dim on a terminal's stderr, folded to one line ("thought for
    412 tokens, 9.8 s") once the answer starts; in a pipe, nothing of it on stdout unless show_in_pipe, which writes
    it between <think> tags before the answer."""

    TAIL_LINES = 6
    REDRAW_SECONDS = 0.1

    def __init__(self, out: Output, *, hide: bool = False, show_in_pipe: bool = False):
        self.out = out
        self.hide = hide
        self.to_stdout = show_in_pipe and not out.is_tty and not out.as_json
        self.live_on = out.err_tty and not out.as_json
        self._trace = ""
        self._started: float | None = None
        self._folded = False
        self._drawn = 0.0
        self._live: Any = None  # a rich Live, made at the first piece drawn

    def reasoning(self, text: str) -> None:
        """One piece of the trace."""
        import time

        if self._started is None:
            self._started = time.perf_counter()
            if self.to_stdout:
                self.out.write("<think>\n")
        self._trace += text
        if self.to_stdout:
            self.out.write(text)
        if self.live_on and time.perf_counter() - self._drawn >= self.REDRAW_SECONDS:
            self._drawn = time.perf_counter()
            self._draw()  # at most every REDRAW_SECONDS: drawing must not slow the reply it shows

    def _draw(self) -> None:
        from rich.live import Live
        from rich.text import Text

        if self._live is None:
            self._live = Live(console=self.out.err_console, transient=True, auto_refresh=False)
            self._live.start()
        if self.hide:
            shown = Text(f"thinking... {len(self._trace):,} characters", style="dim")
        else:
            lines = self._trace.rstrip().splitlines()[-self.TAIL_LINES:]
            shown = Text("\n".join(lines), style="dim italic" if self.out.color else "")
        self._live.update(shown, refresh=True)

    def fold(self, tokens: int | None = None) -> None:
        """The answer starts: the trace gives way to its one-line summary (once)."""
        import time

        if self._folded or self._started is None:
            return
        self._folded = True
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self.to_stdout:
            self.out.write("\n</think>\n\n")
        if self.live_on:
            seconds = time.perf_counter() - self._started
            count = f"{tokens:,} tokens" if tokens else f"{len(self._trace):,} characters"
            self.out.status(f"thought for {count}, {seconds:.1f} s")

    @property
    def trace(self) -> str:
        """The trace so far."""
        return self._trace
