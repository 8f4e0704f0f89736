"""`chatllm summarize`: files of any length (or stdin) to streamed summaries, map-reduce beyond the window."""

from typing import TYPE_CHECKING, Annotated, Iterator, List, Optional

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
from chatllm.settings import Sampling, Settings

if TYPE_CHECKING:
    from chatllm.inputs import Source
    from chatllm.tasks.summarize import Progress


class ProgressView:
    """The summarizer's progress events as a bar on stderr: chunks done, tokens/s, time left."""

    def __init__(self, out: Output, label: str):
        self.label = label
        self.bar = ProgressBar(out, f"{label}: reading", total=1000, counted=False)

    def update(self, p: "Progress") -> None:
        """Show one Progress event from the summarizer."""
        if p.stage == "map":
            what = f"{p.done}/{p.total} parts done" if p.total else f"{p.done} parts done"
        elif p.stage == "reduce":
            what = f"merging notes {p.done}/{p.total}"
        elif p.stage == "final":
            what = "writing the summary"
        else:
            what = "reading"
        detail = []
        if p.prompt_tokens:
            detail.append(f"{p.prompt_rate:,.0f} tok/s")
        if 0.02 < p.fraction < 1:
            detail.append(f"~{_duration(p.seconds * (1 - p.fraction) / p.fraction)} left")
        self.bar.update(description=f"{self.label}: {what}", completed=int(p.fraction * 1000), info=" · ".join(detail))

    def stop(self) -> None:
        """Remove the bar before the summary streams to the same terminal."""
        self.bar.stop()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _options(length: str, words: Optional[int], style: str, lang: Optional[str], focus: Optional[str],
             chunk_tokens: Optional[int], settings: Settings, notes: bool = False, cover_names: bool = True):
    from chatllm.tasks.summarize import LENGTHS, STYLES, SummaryOptions

    length, style = length.lower(), style.lower()
    if length not in LENGTHS:
        raise UsageError(f"unknown --length {length!r}", f"use {', '.join(LENGTHS)} (or --words N)")
    if style not in STYLES:
        raise UsageError(f"unknown --style {style!r}", f"use {', '.join(STYLES)}")
    if words is not None and not 1 <= words <= 5000:
        raise UsageError("--words must be between 1 and 5000", "for example --words 100")
    if chunk_tokens is not None and 0 < chunk_tokens < 64 or (chunk_tokens or 0) < 0:
        raise UsageError("--chunk-tokens must be at least 64", "for example --chunk-tokens 2048, or 0 for the whole window")
    # --max-tokens caps each summary only when it was changed from the default; otherwise the length decides.
    cap = settings.sampling.max_tokens if settings.sampling.max_tokens != Sampling().max_tokens else None
    chunks = {} if chunk_tokens is None else {"chunk_tokens": chunk_tokens or None}
    return SummaryOptions(length=length, words=words, style=style, lang=lang or None, focus=focus or None,
                          max_tokens=cap, keep_notes=notes, cover_names=cover_names, **chunks)


def _run(engine, source_blocks, size_hint, label: str, settings: Settings, options, out: Output, workers=()):
    """Summarize one stream: progress on stderr, the final pass streamed to stdout (or returned for --json)."""
    from chatllm.tasks.summarize import Summarizer

    view = ProgressView(out, label)
    started = [False]

    def on_text(piece: str) -> None:
        if out.as_json:
            return
        if not started[0]:
            started[0] = True
            if out.is_tty:
                view.stop()
        out.write(piece)

    try:
        summarizer = Summarizer(engine, settings.sampling, options, on_progress=view.update, workers=workers)
        result = summarizer.summarize(source_blocks, on_text=on_text, size_hint=size_hint)
    finally:
        view.stop()
    if not out.as_json and not result.text.endswith("\n"):
        out.write("\n")
    return result


def _stats_line(result) -> str:
    parts = [f"{result.input_tokens:,} tokens in"]
    if result.levels:
        parts.append(f"{result.chunks} parts, {result.levels} level{'s' if result.levels > 1 else ''}")
    else:
        parts.append("one pass")
    parts.append(f"{result.completion_tokens:,} tokens out")
    rate = result.prompt_tokens / result.seconds if result.seconds else 0
    parts.append(f"{result.seconds:.1f} s ({rate:,.0f} tok/s)")
    if result.finish_reason == "length":
        parts.append("summary stopped at its token limit")
    return ", ".join(parts)


def summarize(
    cli: typer.Context,
    files: Annotated[Optional[List[str]], typer.Argument(
        help="Text files to summarize; - reads stdin (stdin is also read when piped and no FILE is given).",
        show_default=False, metavar="FILE")] = None,
    length: Annotated[str, typer.Option("--length", "-l", metavar="short|medium|long",
                                        help="About 50, 150 or 300 words.")] = "medium",
    words: Annotated[Optional[int], typer.Option("--words", "-w", metavar="N", help="Aim at N words (overrides --length).",
                                                 show_default=False)] = None,
    style: Annotated[str, typer.Option("--style", metavar="paragraph|bullets|tldr",
                                       help="One paragraph, a bulleted list, or a one-sentence TL;DR.")] = "paragraph",
    lang: Annotated[Optional[str], typer.Option("--lang", metavar="LANG", help="Write the summary in LANG [default: the input's].",
                                                show_default=False)] = None,
    focus: Annotated[Optional[str], typer.Option("--focus", metavar="TEXT", help="What to pay attention to, e.g. 'costs and risks'.",
                                                 show_default=False)] = None,
    combine: Annotated[bool, typer.Option("--combine", help="One summary of all the files together.")] = False,
    chunk_tokens: Annotated[Optional[int], typer.Option(
        "--chunk-tokens", metavar="N", help="Largest part for long input, in tokens; 0: as large as --ctx allows [default: 2048].",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per summary): counts, names used.")] = False,
    notes: Annotated[bool, typer.Option("--notes", help="With --json: add every level's notes (large for a book).")] = False,
    cover_names: Annotated[bool, typer.Option(
        "--cover-names/--no-cover-names",
        help="Give each main name the summary leaves out a sentence of its own (not with tldr or --focus).")] = True,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False, parallel: Parallel = None,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None, draft: Draft = None,
) -> None:
    """Summarize files of any length: one pass when the text fits the context window, map-reduce beyond it."""
    context = command_context(cli)
    settings, out = context.settings, context.out
    from chatllm.inputs import gather_sources

    if notes and not as_json:
        raise UsageError("--notes goes with --json", "add --json to get each level's notes in the JSON record")
    options = _options(length, words, style, lang, focus, chunk_tokens, settings, notes, cover_names)
    sources = gather_sources(files, out.warn)  # every input is checked before the model loads

    engine, *workers = context.load_engines(parallel, spare=True)  # with --parallel: workers for the map calls
    if combine and len(sources) > 1:
        groups = [("all files", sources)]
    else:
        groups = [(s.name, [s]) for s in sources]
    many = len(groups) > 1
    for i, (label, group) in enumerate(groups):
        if many and not out.as_json:
            out.line(("\n" if i else "") + f"## {label}\n")
        size = sum(s.size_hint or 0 for s in group) or None
        result = _run(engine, _joined(group, out), size, label, settings, options, out, workers)
        record: dict[str, object] = {"file": label} if not (combine and len(sources) > 1) else {"files": [s.name for s in group]}
        record.update(model=engine.name, **result.as_dict())
        if engine.thinks:
            record["thinking"] = "off: a reasoning model summarizes without a trace"
        out.result(record, lambda: out.status(_stats_line(result)) if out.err_tty else None)


def _joined(sources: "list[Source]", out: Output) -> Iterator[str]:
    """The blocks of several sources in order, a blank line between files so paragraphs never merge."""
    for i, source in enumerate(sources):
        if i:
            yield "\n\n"
        yield from source.blocks(out.warn)
