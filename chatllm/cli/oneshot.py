"""`chatllm ask` and `chatllm generate`: one prompt in, one streamed answer out, pipe-friendly."""

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from chatllm.cli.app import app
from chatllm.cli.options import model_command
from chatllm.errors import UsageError
from chatllm.output import Output, format_stats
from chatllm.settings import Settings


def stream_answer(engine, prompt, settings: Settings, out: Output, as_json: bool, strip_leading: bool = True) -> None:
    """Stream a generation to stdout (or collect it for --json); stats to stderr in a terminal."""
    pieces = engine.stream(prompt, settings.sampling)
    if as_json:
        text = "".join(pieces)
        stats = engine.last_stats
        out.json({
            "model": engine.name,
            "text": text,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "seconds": round(stats.seconds, 3),
            "tokens_per_second": round(stats.tokens_per_second, 2),
            "first_token_seconds": round(stats.first_token_seconds, 3),
            "finish_reason": stats.finish_reason,
        })
        return
    text = ""
    for piece in pieces:
        if not text and strip_leading:
            piece = piece.lstrip()
        text += piece
        out.write(piece)
    if not text.endswith("\n"):
        out.write("\n")
    if out.err_tty:
        out.status(format_stats(engine.last_stats))


def gather_input(words: Optional[List[str]], file: Optional[Path], out: Output, n_ctx: Optional[int] = None) -> str:
    """The prompt words, then the -f file, then piped stdin, joined by blank lines (reading stops past n_ctx)."""
    from chatllm.inputs import read_prompt, stdin_is_piped

    parts = [" ".join(words).strip()] if words else []
    if file is not None:
        parts.append(read_prompt(file, out.warn, n_ctx))
    if stdin_is_piped():
        parts.append(read_prompt("-", out.warn, n_ctx, allow_empty=True))
    parts = [p for p in parts if p.strip()]
    if not parts:
        raise UsageError("nothing to ask: no prompt, no -f FILE and no piped input",
                         'give a prompt: chatllm ask "why is the sky blue?"')
    return "\n\n".join(parts)


def read_text_from_bytes(data: bytes, out: Output) -> str:
    """Decode piped bytes with the same rules as files (BOM, CRLF, binary refused)."""
    import io

    from chatllm.inputs import iter_text

    return "".join(iter_text(io.BytesIO(data), "stdin", out.warn))


@app.command()
@model_command
def ask(
    prompt: Annotated[Optional[List[str]], typer.Argument(help="The instruction; piped stdin is appended.", show_default=False)] = None,
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read more input from FILE.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with text and token counts.")] = False,
    *,
    settings: Settings,
) -> None:
    """Ask one question through the model's chat template; the answer streams to stdout.

    Example: cat notes.txt | chatllm ask "what are the action items?"
    """
    from chatllm.loader import load_engine

    out = Output()
    message = gather_input(prompt, file, out, settings.n_ctx)
    engine = load_engine(settings, out)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
    stream_answer(engine, engine.render_chat(messages), settings, out, as_json)


@app.command()
@model_command
def generate(
    prompt: Annotated[Optional[List[str]], typer.Argument(help="Text to continue; piped stdin is appended.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the text from FILE.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with text and token counts.")] = False,
    *,
    settings: Settings,
) -> None:
    """Continue raw text with no chat template (works with base models too).

    Example: chatllm generate "Once upon a time" --max-tokens 50
    """
    from chatllm.loader import load_engine

    out = Output()
    text = gather_input(prompt, file, out, settings.n_ctx)
    engine = load_engine(settings, out)
    stream_answer(engine, engine.prompt_tokens(text, special=False), settings, out, as_json, strip_leading=False)
