"""The tool flags of `ask` and `chat` turned into a tool session (tasks/tools), the terminal's approval question, and
the compact lines that show each call on stderr. Nothing here imports the MCP SDK: the servers do, once they start."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from chatllm.errors import UsageError
from chatllm.output import Output

if TYPE_CHECKING:
    from chatllm.settings import Settings
    from chatllm.tasks.tools.loop import LoopEvent, ToolSession
    from chatllm.tasks.tools.permissions import ApprovalRequest


def wants_tools(mcp: Optional[Sequence[Path]], functions: Optional[Sequence[Path]], names: Optional[Sequence[str]],
                all_tools: bool) -> bool:
    """True when the user asked for runnable tools."""
    return bool(mcp or functions or names or all_tools)


def open_session(settings: "Settings", out: Output, *, mcp: Optional[Sequence[Path]] = None,
                 functions: Optional[Sequence[Path]] = None, definitions: Optional[Sequence[Path]] = None,
                 names: Optional[Sequence[str]] = None, all_tools: bool = False, yes: bool = False,
                 max_steps: Optional[int] = None, interactive: bool) -> "ToolSession":
    """Read the tool files and start the servers (in the background: call `session.toolbox.ready()` once the model
    is loading); a bad file is a UsageError before any model loads."""
    if max_steps is not None and max_steps < 1:
        raise UsageError(f"--max-tool-steps must be 1 or more, not {max_steps}", "leave it out for the default (5)")
    from chatllm.tasks.tools.loop import MAX_STEPS, ToolSession
    from chatllm.tasks.tools.permissions import Permissions
    from chatllm.tasks.tools.toolbox import open_toolbox

    toolbox = open_toolbox(config_dir=settings.config_dir, log_dir=settings.home / "logs", mcp_files=mcp or (),
                           function_files=functions or (), definition_files=definitions or (), names=names or (),
                           all_tools=all_tools, warn=out.warn)
    approver = terminal_approver(out) if interactive else None
    return ToolSession(toolbox, Permissions(yes=yes, ask=approver), max_steps=max_steps or MAX_STEPS)


def terminal_approver(out: Output):
    """The question a terminal asks before a call runs; None when there is no terminal to ask in."""
    if not (_isatty(sys.stdin) and out.err_tty):
        return None

    def ask(request: "ApprovalRequest") -> str:
        from chatllm.tasks.tools.permissions import ALWAYS_SOURCE, ALWAYS_TOOL, NO, YES
        from chatllm.tasks.tools.toolbox import describe_call

        where = "server" if request.kind == "mcp" else "file"
        out.status(f"⚙ {request.source} wants to run {describe_call(request.tool, request.arguments, 200)}")
        question = f"  allow? [y]es / [n]o / [a]lways {request.tool} / always this [s]erver ({request.source}): " \
            if where == "server" else f"  allow? [y]es / [n]o / [a]lways {request.tool} / always this [f]ile ({request.source}): "
        answers = {"y": YES, "yes": YES, "n": NO, "no": NO, "": NO, "a": ALWAYS_TOOL, "always": ALWAYS_TOOL,
                   "s": ALWAYS_SOURCE, "f": ALWAYS_SOURCE, "server": ALWAYS_SOURCE, "file": ALWAYS_SOURCE}
        while True:
            reply = _read_answer(out, question).strip().lower()
            if reply in answers:
                return answers[reply]
            out.status("  type y, n, a or " + ("s" if where == "server" else "f"))

    return ask


def _read_answer(out: Output, question: str) -> str:
    """One line typed at the terminal, echoed even inside the chat (which turns echo off while a reply streams)."""
    out.stderr.write(question)
    out.stderr.flush()
    fd, saved = None, None
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        typing = list(saved)
        typing[3] |= termios.ECHO | termios.ICANON
        termios.tcsetattr(fd, termios.TCSANOW, typing)
    except (ImportError, OSError, ValueError, AttributeError):
        fd = None
    try:
        line = sys.stdin.readline()
        if not line:  # end of input: nobody is there to say yes
            return "n"
        return line
    finally:
        if fd is not None and saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSANOW, saved)


def _isatty(stream) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def show_event(out: Output, event: "LoopEvent") -> None:
    """A call on one dim line of stderr once it ran (in a terminal); the loop's notices as warnings, always."""
    from chatllm.tasks.tools.loop import CallDone, LoopNotice, call_line

    if isinstance(event, LoopNotice):
        out.warn(event.message)
    elif isinstance(event, CallDone) and out.err_tty:
        out.status(f"⚙ {call_line(event.call)}")
