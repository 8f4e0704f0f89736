"""`chatllm sentiment` and `chatllm classify`: labels with probabilities, for one text or a stream of lines."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, List, Optional

import typer

from chatllm.cli.cache import NoCache, open_kv_cache
from chatllm.cli.options import ChatFormat, Ctx, Device, GpuLayers, Model, Offline, Threads, model_settings
from chatllm.errors import UsageError
from chatllm.output import Output
from chatllm.settings import Settings

if TYPE_CHECKING:
    from chatllm.tasks.classify import Classifier, Result

TextArg = Annotated[Optional[List[str]], typer.Argument(help="The text (else -f FILE or piped stdin).", show_default=False)]
FileOpt = Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the input from FILE (`-` for stdin).")]
LinesOpt = Annotated[bool, typer.Option("--lines", help="Each input line is one item; results stream one per line, in order.")]
ColumnOpt = Annotated[Optional[str], typer.Option(
    "--column", metavar="NAME|N",
    help="CSV/TSV input: classify this column. NAME reads the header row; N (1-based) treats every row as data. Implies --lines.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON ({label, scores, text}); JSON Lines with --lines.")]
ExamplesOpt = Annotated[Optional[Path], typer.Option(
    "--examples", help="Few-shot examples instead of the built-in ones: `text<TAB>label` lines, CSV, or JSON Lines.")]
LangOpt = Annotated[str, typer.Option("--lang", help="Prompt language: auto (by each text's CJK share), en or zh.")]
CalibrateOpt = Annotated[Optional[bool], typer.Option(
    "--calibrate/--no-calibrate", help="Correct the model's bias toward some labels [default: on, except built-in Chinese sentiment].",
    show_default=False)]

ERROR_LABEL = "error"


def sentiment(
    text: TextArg = None,
    file: FileOpt = None,
    lines: LinesOpt = False,
    column: ColumnOpt = None,
    as_json: JsonOpt = False,
    neutral: Annotated[bool, typer.Option("--neutral", help="Add the label neutral.")] = False,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Comma-separated labels instead of positive,negative.")] = None,
    examples: ExamplesOpt = None,
    lang: LangOpt = "auto",
    calibrate: CalibrateOpt = None,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False, no_cache: NoCache = False,
) -> None:
    """Sentiment label and its probability, scored by the model itself; one text or thousands of lines.

    Example: cut -f1 reviews.tsv | chatllm sentiment --lines --json > out.jsonl
    """
    settings = model_settings(model=model, device=device, gpu_layers=gpu_layers, ctx=ctx, threads=threads,
                              chat_format=chat_format, offline=offline)
    from chatllm.tasks.classify import NEUTRAL, parse_labels, sentiment_labels

    chosen = parse_labels(labels) if labels else sentiment_labels(neutral)
    if neutral and NEUTRAL not in chosen:
        chosen.append(NEUTRAL)
    _run("sentiment", chosen, {}, examples, text=text, file=file, lines=lines, column=column, as_json=as_json, lang=lang,
         calibrate=calibrate, settings=settings, no_cache=no_cache)


def classify(
    text: TextArg = None,
    labels: Annotated[Optional[str], typer.Option("--labels", "-l", help="Comma-separated labels, e.g. news,blog,ad.")] = None,
    describe: Annotated[Optional[List[str]], typer.Option(
        "--describe", metavar="LABEL=TEXT", help="Explain a label to the model (repeatable).")] = None,
    file: FileOpt = None,
    lines: LinesOpt = False,
    column: ColumnOpt = None,
    as_json: JsonOpt = False,
    examples: ExamplesOpt = None,
    lang: LangOpt = "auto",
    calibrate: CalibrateOpt = None,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False, no_cache: NoCache = False,
) -> None:
    """Zero-shot (or few-shot) classification into your labels, with a probability for each.

    Example: chatllm classify --labels news,blog,ad "Buy one, get one free this weekend only!"
    """
    settings = model_settings(model=model, device=device, gpu_layers=gpu_layers, ctx=ctx, threads=threads,
                              chat_format=chat_format, offline=offline)
    from chatllm.tasks.classify import parse_labels

    chosen = parse_labels(labels) if labels else None
    _run("classify", chosen, _descriptions(describe), examples, text=text, file=file, lines=lines, column=column,
         as_json=as_json, lang=lang, calibrate=calibrate, settings=settings, no_cache=no_cache)


def _descriptions(pairs: Optional[List[str]]) -> dict[str, str]:
    described = {}
    for pair in pairs or []:
        label, sep, text = pair.partition("=")
        if not sep or not label.strip() or not text.strip():
            raise UsageError(f"--describe {pair!r} is not LABEL=TEXT", "for example --describe ad='selling something'")
        described[label.strip()] = text.strip()
    return described


def _run(task: str, labels: Optional[List[str]], descriptions: dict, examples_path: Optional[Path], *,
         text: Optional[List[str]], file: Optional[Path], lines: bool, column: Optional[str], as_json: bool, lang: str,
         calibrate: Optional[bool], settings: Settings, no_cache: bool = False) -> None:
    """Check everything the user gave, then load the model once and classify one text or every line."""
    from chatllm.inputs import line_items, nonempty_items, whole_text
    from chatllm.tasks.classify import Classifier, check_setup
    from chatllm.tasks.fewshot import load_examples

    out = Output(as_json=as_json)
    if lang not in ("auto", "en", "zh"):
        raise UsageError(f"unknown --lang {lang!r}", "use auto, en or zh")
    shots = load_examples(examples_path, out.warn) if examples_path is not None else None
    if labels is None:  # classify without --labels: the examples' labels, in order of appearance
        labels = list(dict.fromkeys(ex.label for ex in shots or []))
        if len(labels) < 2:
            raise UsageError("classify needs at least two labels", "give them comma-separated: --labels news,blog,ad")
    labels, descriptions, shots = check_setup(labels, descriptions, shots)  # bad labels fail before the model loads

    def build() -> "Classifier":
        """Load the model, once every input has been checked, and the classifier around it."""
        from chatllm.runtime.loader import load_engine

        return Classifier(load_engine(settings, out), labels, task=task, descriptions=descriptions, examples=shots,
                          calibrate=calibrate, lang=lang, kv_cache=open_kv_cache(settings, out, no_cache))

    if column is not None or lines:
        items = nonempty_items(line_items(text, file, column, out.warn))
        _run_lines(build(), items, out)
    else:
        one = whole_text(text, file, out.warn)
        _run_one(build(), one, out)


def _run_one(classifier: "Classifier", text: str, out: Output) -> None:
    result = classifier.classify(text)
    if result.truncated:
        out.warn("the text is long: its start and end were classified, its middle left out")
    out.result(result.to_json(), lambda: out.line(f"{result.label}\t{result.probability:.4f}"))


def _run_lines(classifier: "Classifier", items: "Iterator[tuple[str, str | None]]", out: Output) -> None:
    start, done, failed, cut = time.perf_counter(), 0, 0, 0
    with out.progress("classifying", total=None) as bar:
        for number, (text, error) in enumerate(items, 1):
            result = _classify_row(classifier, text, error)
            if result.error:
                failed += 1
            cut += result.truncated
            _print_row(out, result, number)
            done += 1
            bar.advance(1)
    seconds = time.perf_counter() - start
    if cut:
        out.warn(f"{cut} of {done} lines were long: their start and end were classified, their middle left out")
    if failed:
        out.warn(f"{failed} of {done} lines could not be classified (marked `{ERROR_LABEL}` in their rows)")
    if out.err_tty:
        out.status(f"{done} items in {seconds:.1f} s, {done / seconds if seconds > 0 else 0:.1f} items/s")


def _classify_row(classifier: "Classifier", text: str, error: Optional[str]) -> "Result":
    from chatllm.tasks.classify import Result

    if error:
        return Result(text=text, error=error)
    result = classifier.classify(text)
    if result.error == "empty text":
        result.error = "empty line"
    return result


def _print_row(out: Output, result: "Result", number: int) -> None:
    row = result.to_json()

    def human() -> None:
        if result.error:
            out.line(f"{ERROR_LABEL}\t\tline {number}: {result.error}")
        else:
            out.line(f"{result.label}\t{result.probability:.4f}\t{_one_line(result.text)}")

    out.result({"line": number, **row} if result.error else row, human)


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
