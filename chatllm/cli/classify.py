"""`chatllm sentiment` and `chatllm classify`: labels with probabilities, for one text or a stream of lines."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, List, Optional

import typer

from chatllm.cli.context import CommandContext, command_context
from chatllm.cli.options import ChatFormat, Ctx, Device, GpuLayers, Model, NoCache, Offline, Parallel, Threads
from chatllm.errors import UsageError
from chatllm.output import Output

if TYPE_CHECKING:
    from chatllm.tasks.classify.classifier import Classifier, Result

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
    "--calibrate/--no-calibrate", help="Correct the model's bias toward some labels [default: as the preset says; on with --examples].",
    show_default=False)]
ExplainOpt = Annotated[bool, typer.Option(
    "--explain", help="Say which built-in preset (prompt, examples, label words, calibration) each language got: "
                      "on stderr, or a \"preset\" field in each --json row.")]

ERROR_LABEL = "error"


def sentiment(
    cli: typer.Context,
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
    explain: ExplainOpt = False,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False, no_cache: NoCache = False, parallel: Parallel = None,
) -> None:
    """Sentiment label and its probability, scored by the model itself; one text or thousands of lines."""
    from chatllm.tasks.classify.classifier import NEUTRAL, parse_labels, sentiment_labels

    chosen = parse_labels(labels) if labels else sentiment_labels(neutral)
    if neutral and NEUTRAL not in chosen:
        chosen.append(NEUTRAL)
    _run("sentiment", chosen, {}, examples, text=text, file=file, lines=lines, column=column, lang=lang,
         calibrate=calibrate, context=command_context(cli), parallel=parallel, explain=explain)


def classify(
    cli: typer.Context,
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
    explain: ExplainOpt = False,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False, no_cache: NoCache = False, parallel: Parallel = None,
) -> None:
    """Zero-shot (or few-shot) classification into your labels, with a probability for each."""
    from chatllm.tasks.classify.classifier import parse_labels

    chosen = parse_labels(labels) if labels else None
    _run("classify", chosen, _descriptions(describe), examples, text=text, file=file, lines=lines, column=column,
         lang=lang, calibrate=calibrate, context=command_context(cli), parallel=parallel, explain=explain)


def _descriptions(pairs: Optional[List[str]]) -> dict[str, str]:
    described = {}
    for pair in pairs or []:
        label, sep, text = pair.partition("=")
        if not sep or not label.strip() or not text.strip():
            raise UsageError(f"--describe {pair!r} is not LABEL=TEXT", "for example --describe ad='selling something'")
        described[label.strip()] = text.strip()
    return described


def _run(task: str, labels: Optional[List[str]], descriptions: dict, examples_path: Optional[Path], *,
         text: Optional[List[str]], file: Optional[Path], lines: bool, column: Optional[str], lang: str,
         calibrate: Optional[bool], context: CommandContext, parallel: Optional[int] = None, explain: bool = False) -> None:
    """Check everything the user gave, then load the model once and classify one text or every line."""
    from chatllm.inputs import line_items, nonempty_items, whole_text
    from chatllm.tasks.classify.classifier import Classifier, check_setup
    from chatllm.tasks.classify.fewshot import load_examples

    out = context.out
    if lang not in ("auto", "en", "zh"):
        raise UsageError(f"unknown --lang {lang!r}", "use auto, en or zh")
    shots = load_examples(examples_path, out.warn) if examples_path is not None else None
    if labels is None:  # classify without --labels: the examples' labels, in order of appearance
        labels = list(dict.fromkeys(ex.label for ex in shots or []))
        if len(labels) < 2:
            raise UsageError("classify needs at least two labels", "give them comma-separated: --labels news,blog,ad")
    labels, descriptions, shots = check_setup(labels, descriptions, shots)  # bad labels fail before the model loads

    def build(workers: Optional[int] = 1) -> "list[Classifier]":
        """Load the model, once every input has been checked, and a classifier per worker around it."""
        # Labels are scored one line at a time unless --parallel (or the entry) asks for batches: on a CPU batches
        # gain nothing here (0.96x, docs/BENCHMARKS.md) and their arithmetic moves near-ties (Gemma 3: 6 of 100
        # SST-2 labels flipped against the exact path).
        engines = context.load_engines(workers, local_default=1)
        first = Classifier(engines[0], labels, task=task, descriptions=descriptions, examples=shots,
                           calibrate=calibrate, lang=lang)
        return [first] + [first.on_engine(e) for e in engines[1:]]

    if column is not None or lines:
        items = nonempty_items(line_items(text, file, column, out.warn))
        _run_lines(build(parallel), items, out, explain)
    else:
        one = whole_text(text, file, out.warn)
        _run_one(build()[0], one, out, explain)


def _run_one(classifier: "Classifier", text: str, out: Output, explain: bool = False) -> None:
    result = classifier.classify(text)
    if result.truncated:
        out.warn("the text is long: its start and end were classified, its middle left out")
    if explain and not out.as_json:
        _explain(out, result, set())
    out.result(result.to_json(explain), lambda: out.line(f"{result.label}\t{result.probability:.4f}"))


def _explain(out: Output, result: "Result", shown: set) -> None:
    """The preset an item got, on stderr, the first time each one is used."""
    p = result.preset
    if p is None or (p["name"], p["lang"]) in shown:
        return
    shown.add((p["name"], p["lang"]))
    examples = "examples from --examples" if p["examples"] == "--examples" else f"{p['examples']} built-in examples"
    words = ", ".join(f"{lab}={word}" for lab, word in p["verbalizers"].items())
    turns = "in chat turns" if p.get("chat") else "as plain text"
    out.status(f"preset {p['name']} (lang {p['lang']}, model family {p['family'] or 'unknown'}): {examples} {turns}, "
               f"{'calibrated' if p['calibrate'] else 'not calibrated'}, label words {words}")


def _run_lines(classifiers: "list[Classifier]", items: "Iterator[tuple[str, str | None]]", out: Output,
               explain: bool = False) -> None:
    from chatllm.tasks.text.parallel_map import ordered_map

    shown: set = set()
    start, done, failed, cut = time.perf_counter(), 0, 0, 0
    with out.progress("classifying", total=None) as bar:
        if len(classifiers) == 1 and classifiers[0].batches:
            results = _batched_rows(classifiers[0], items)
        else:
            results = ordered_map(lambda c, item: _classify_row(c, *item), items, classifiers)
        for number, result in enumerate(results, 1):
            if result.error:
                failed += 1
            cut += result.truncated
            if explain and not out.as_json:
                _explain(out, result, shown)
            _print_row(out, result, number, explain)
            done += 1
            bar.advance(1)
    seconds = time.perf_counter() - start
    if cut:
        out.warn(f"{cut} of {done} lines were long: their start and end were classified, their middle left out")
    if failed:
        out.warn(f"{failed} of {done} lines could not be classified (marked `{ERROR_LABEL}` in their rows)")
    if out.err_tty:
        out.status(f"{done} items in {seconds:.1f} s, {done / seconds if seconds > 0 else 0:.1f} items/s")


BATCH_ITEMS = 32  # lines scored per call when the engine batches: a few full decodes, rows out every second or so


def _batched_rows(classifier: "Classifier", items: "Iterator[tuple[str, str | None]]") -> "Iterator[Result]":
    """The lines' results in order, BATCH_ITEMS at a time through the engine's batches (many lines per decode)."""
    import itertools

    from chatllm.tasks.classify.classifier import Result

    while True:
        chunk = list(itertools.islice(items, BATCH_ITEMS))
        if not chunk:
            return
        texts = [text for text, error in chunk if not error]
        scored = iter(classifier.classify_many(texts))
        for text, error in chunk:
            result = Result(text=text, error=error) if error else next(scored)
            if result.error == "empty text":
                result.error = "empty line"
            yield result


def _classify_row(classifier: "Classifier", text: str, error: Optional[str]) -> "Result":
    from chatllm.tasks.classify.classifier import Result

    if error:
        return Result(text=text, error=error)
    result = classifier.classify(text)
    if result.error == "empty text":
        result.error = "empty line"
    return result


def _print_row(out: Output, result: "Result", number: int, explain: bool = False) -> None:
    row = result.to_json(explain)

    def human() -> None:
        if result.error:
            out.line(f"{ERROR_LABEL}\t\tline {number}: {result.error}")
        else:
            out.line(f"{result.label}\t{result.probability:.4f}\t{_one_line(result.text)}")

    out.result({"line": number, **row} if result.error else row, human)


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
