"""`chatllm translate`: files or stdin, any length, structure kept; each part streamed to stdout as it is done.

`--lines`: line i of the output is the translation of line i of the input (`--json`: one record a line). Without it,
runs of lines that read one sentence or item a line are translated line by line (said on stderr); `.srt` and `.vtt`
subtitles keep their cue numbers and timing lines byte for byte (CRLF line ends included).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, List, Optional

import typer

from chatllm.cli.context import command_context
from chatllm.cli.options import (
    ChatFormat,
    Ctx,
    Device,
    Draft,
    GpuLayers,
    MaxTokens,
    Model,
    Offline,
    Parallel,
    Seed,
    Stop,
    Temperature,
    Threads,
    TopK,
    TopP,
)
from chatllm.errors import UsageError
from chatllm.output import Output, ProgressBar
from chatllm.settings import Sampling

if TYPE_CHECKING:
    from chatllm.inputs import Source
    from chatllm.tasks.translate.translator import Progress, TranslateOptions


def _options(to: str, source: Optional[str], glossary: Optional[Path], part_tokens: Optional[int], cap: Optional[int],
             out: Output, lines: Optional[bool] = None) -> "TranslateOptions":
    from chatllm.inputs import read_text
    from chatllm.tasks.translate.translator import DEFAULT_PART_TOKENS, TranslateOptions, parse_glossary, resolve_language

    target = resolve_language(to)
    src = resolve_language(source) if source else None
    if src is not None and src.code == target.code:
        raise UsageError(f"--from and --to are both {target.name}", "give a different --to language")
    if part_tokens is not None and part_tokens < 16:
        raise UsageError("--part-tokens must be at least 16", "for example --part-tokens 256")
    terms: list[tuple[str, str]] = []
    if glossary is not None:
        terms = parse_glossary(read_text(glossary, out.warn), str(glossary))
    return TranslateOptions(target=target, source=src, glossary=tuple(terms), part_tokens=part_tokens or DEFAULT_PART_TOKENS,
                            max_tokens=cap, line_mode=lines)


def _out_path(directory: Path, source: "Source", code: str) -> Path:
    """DIR/name.LANG.ext for a file, DIR/stdin.LANG.txt for stdin."""
    if source.path == "-":
        return directory / f"stdin.{code}.txt"
    name = Path(source.path)
    return directory / (f"{name.stem}.{code}{name.suffix}" if name.suffix else f"{name.name}.{code}")


def translate(
    cli: typer.Context,
    files: Annotated[Optional[List[str]], typer.Argument(
        help="Text, markdown, .srt or .vtt files; - reads stdin (stdin is also read when piped and no FILE is given).",
        show_default=False, metavar="FILE")] = None,
    to: Annotated[Optional[str], typer.Option("--to", metavar="LANG", help="Target language: a code or a name (zh, Chinese, "
                                                                         "中文, en, ja, fr ...).", show_default=False)] = None,
    source: Annotated[Optional[str], typer.Option("--from", metavar="LANG", help="Source language [default: detected].",
                                                  show_default=False)] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", metavar="DIR",
                                                       help="Write DIR/name.LANG.ext for each file instead of stdout.",
                                                       show_default=False)] = None,
    glossary: Annotated[Optional[Path], typer.Option("--glossary", "-g", metavar="FILE",
                                                     help="TSV of `term<TAB>translation` to use.", show_default=False)] = None,
    part_tokens: Annotated[Optional[int], typer.Option("--part-tokens", metavar="N", help="Largest part sent at once, in "
                                                       "tokens [default: 256].", show_default=False)] = None,
    lines: Annotated[Optional[bool], typer.Option(
        "--lines/--no-lines", help="Each input line is one unit: line i out is the translation of line i in. "
        "--no-lines: join the lines of a paragraph. [default: line by line where the lines read one sentence or "
        "item a line]", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON Lines: one object per part (source, translation, "
                                                         "tokens, retries), then one per file; with --lines, one "
                                                         "object per input line.")] = False,
    parallel: Parallel = None,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None, draft: Draft = None,
) -> None:
    """Translate files of any length, keeping their structure (markdown, code, tables, lines, subtitle timing)."""
    from chatllm.tasks.translate.translator import DEFAULT_TEMPERATURE

    if not to:
        raise UsageError("no target language", "give one with --to: chatllm translate notes.txt --to zh")
    context = command_context(cli, temperature=DEFAULT_TEMPERATURE if temperature is None else temperature)
    settings, out = context.settings, context.out
    from chatllm.inputs import gather_sources

    cap = settings.sampling.max_tokens if max_tokens is not None else None
    options = _options(to, source, glossary, part_tokens, cap, out, lines)
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"{output_dir} is not a directory", "give a directory to -o, or leave it out for stdout")
    sources = gather_sources(files, out.warn)  # every input is checked before the model loads
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)

    engines = context.load_engines(parallel)
    try:
        _translate_all(engines, sources, settings.sampling, options, out, output_dir)
    finally:
        for engine in engines:
            engine.close()


def _translate_all(engines: list, sources: "list[Source]", sampling: Sampling, options: "TranslateOptions", out: Output,
                   output_dir: Optional[Path]) -> None:
    many = len(sources) > 1
    per_line = bool(options.line_mode) and out.as_json  # --lines --json: one record a line, nothing else
    for i, src in enumerate(sources):
        if output_dir is not None:
            path = _out_path(output_dir, src, options.target.code)
            newline = "\r\n" if _crlf_subtitles(src) else None  # text mode writes \r\n for each \n
            with open(path, "w", encoding="utf-8", newline=newline) as fh:
                result = _run(engines, src, sampling, options, out, fh)
            if not out.as_json:
                out.status(f"{src.name} -> {path}")
        else:
            if many and not out.as_json:
                out.line(("\n" if i else "") + f"## {src.name}\n")
            result = _run(engines, src, sampling, options, out, None)
        if per_line:
            if out.err_tty:
                out.status(_stats_line(result))
            continue
        record = {"file": src.name, "model": engines[0].name, **result.as_dict(),
                  **({"thinking": "off: a reasoning model translates without a trace"} if engines[0].thinks else {})}
        if output_dir is not None:
            record["output"] = str(_out_path(output_dir, src, options.target.code))
        out.result(record, lambda: out.status(_stats_line(result)) if out.err_tty else None)


def _crlf_subtitles(src: "Source") -> bool:
    """True for a subtitle file written with CRLF line ends (its translation keeps them; other inputs come out LF)."""
    from chatllm.tasks.translate.subtitles import format_of

    if src.path == "-" or format_of(src.path) is None:
        return False
    try:
        with open(src.path, "rb") as fh:
            return b"\r\n" in fh.read(65536)
    except OSError:
        return False


def _run(engines: list, src: "Source", sampling: Sampling, options: "TranslateOptions", out: Output, fh):
    """Translate one input: parts to stdout (or the file) as they finish, a progress bar on stderr in a terminal."""
    from chatllm.tasks.translate.subtitles import format_of
    from chatllm.tasks.translate.translator import Translator

    bar = ProgressBar(out, f"{src.name}: translating", total=1000 if src.size_hint else None, counted=False)
    last = [""]
    per_line = bool(options.line_mode) and out.as_json
    crlf = fh is None and _crlf_subtitles(src)

    def on_text(text: str) -> None:
        last[0] = text or last[0]
        if fh is not None:
            fh.write(text)
            fh.flush()
        elif not out.as_json:
            out.write(text.replace("\n", "\r\n") if crlf else text)

    def on_part(part) -> None:
        if out.as_json and not per_line:
            out.json({"file": src.name, **part.as_dict()})

    def on_line(line) -> None:
        out.json({"file": src.name, **line.as_dict()})

    def on_progress(p: "Progress") -> None:
        info = f"{p.done} parts · {p.prompt_tokens / p.seconds:,.0f} tok/s" if p.seconds else f"{p.done} parts"
        bar.update(completed=int(p.fraction * 1000) if src.size_hint else None, info=info)

    def warn(message: str) -> None:
        out.warn(f"{src.name}: {message}")

    def note(message: str) -> None:
        out.status(f"{src.name}: {message}")

    layout = format_of(src.path) if src.path != "-" else None
    try:
        translator = Translator(engines[0], sampling, options, on_progress=on_progress, warn=warn, note=note,
                                helpers=engines[1:])
        result = translator.translate(src.blocks(out.warn), on_text=on_text, on_part=on_part,
                                      size_hint=src.size_hint, keep_text=False, layout=layout,
                                      on_line=on_line if per_line else None)
    finally:
        bar.stop()
    if not out.as_json and fh is None and last[0] and not last[0].endswith("\n"):
        out.write("\r\n" if crlf else "\n")
    return result


def _stats_line(result) -> str:
    rate = result.prompt_tokens / result.seconds if result.seconds else 0
    parts = [f"{result.parts} parts", f"{result.completion_tokens:,} tokens out", f"{result.seconds:.1f} s ({rate:,.0f} tok/s)"]
    if result.retries:
        parts.append(f"{result.retries} retried")
    if result.failed:
        parts.append(f"{result.failed} kept in the source language")
    return ", ".join(parts)
