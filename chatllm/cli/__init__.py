"""chatllm's command line: the Typer app, its commands, and the one top-level error handler."""

import os
import signal
import sys

from chatllm.errors import INTERRUPTED, ChatllmError, PipeClosed, from_exception, redact
from chatllm.output import Output
from chatllm.stdio import keep_whole_writes

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn every expected failure into `error:`/`hint:` lines and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):  # answered before Typer loads: it alone costs more than Python's startup
        print_version()
        return
    from chatllm.cli.app import app

    keep_whole_writes()
    out = Output()
    # SIGTERM takes the same careful path as Ctrl-C: a reply in flight is kept as interrupted, stores close.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app(args=args, prog_name="chatllm")
    except SystemExit:
        if _TERMINATED:
            sys.exit(128 + signal.SIGTERM)
        raise
    except PipeClosed:
        _quiet_exit(0)
    except BrokenPipeError:
        _quiet_exit(0)
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGTERM if _TERMINATED else INTERRUPTED)
    except ChatllmError as err:
        _report(out, err, debug=_debug(args))
    except Exception as exc:  # the last line of defence: known library failures become ChatllmErrors
        mapped = from_exception(exc)
        if mapped is None:
            mapped = ChatllmError(f"internal error: {type(exc).__name__}: {exc}", "rerun with --debug and report the traceback")
        _report(out, mapped, exc, debug=_debug(args))


def print_version() -> None:
    """The `chatllm --version` line, for the fast path here and for Typer's -V callback."""
    from chatllm import __version__

    print(f"chatllm {__version__}")


_TERMINATED = False


def _interrupt(signum, frame) -> None:
    global _TERMINATED
    _TERMINATED = True
    raise KeyboardInterrupt


def _debug(args: list[str]) -> bool:
    """--debug among the global flags (those before the command), or CHATLLM_DEBUG."""
    value_next = False
    for word in args:
        if value_next:
            value_next = False
        elif word == "--debug":
            return True
        elif word == "--flash-attn":
            value_next = True
        elif not word.startswith("-"):
            break  # the command: what follows is its own
    return os.environ.get("CHATLLM_DEBUG", "").lower() in {"1", "true", "yes"}


def _report(out: Output, err: ChatllmError, exc: BaseException | None = None, *, debug: bool = False) -> None:
    if debug:
        import traceback

        out.stderr.write(redact("".join(traceback.format_exception(exc or err))))
    out.error(err)
    sys.exit(err.exit_code)


def _quiet_exit(code: int) -> None:
    # The reader went away: point stdout at /dev/null so the interpreter's final flush cannot complain.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    os._exit(code)
