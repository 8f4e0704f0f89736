"""`chatllm sentiment` and `chatllm classify`: labels with probabilities, for one text or a stream of lines."""

import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterable, Iterator, List, Optional

import typer

from chatllm.cli.app import app
from chatllm.cli.options import model_only_command
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


@app.command()
@model_only_command
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
    *,
    settings: Settings,
) -> None:
    """Sentiment label and its probability, scored by the model itself; one text or thousands of lines.

    Example: cut -f1 reviews.tsv | chatllm sentiment --lines --json > out.jsonl
    """
    from chatllm.tasks.classify import NEUTRAL, parse_labels, sentiment_labels

    chosen = parse_labels(labels) if labels else sentiment_labels(neutral)
    if neutral and NEUTRAL not in chosen:
        chosen.append(NEUTRAL)
    _run("sentiment", chosen, {}, examples, text=text, file=file, lines=lines, column=column, as_json=as_json, lang=lang,
         calibrate=calibrate, settings=settings)


@app.command()
@model_only_command
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
    *,
    settings: Settings,
) -> None:
    """Zero-shot (or few-shot) classification into your labels, with a probability for each.

    Example: chatllm classify --labels news,blog,ad "Buy one, get one free this weekend only!"
    """
    from chatllm.tasks.classify import parse_labels

    chosen = parse_labels(labels) if labels else None
    _run("classify", chosen, _descriptions(describe), examples, text=text, file=file, lines=lines, column=column,
         as_json=as_json, lang=lang, calibrate=calibrate, settings=settings)


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
         calibrate: Optional[bool], settings: Settings) -> None:
    """Check everything the user gave, then load the model once and classify one text or every line."""
    from chatllm.tasks.classify import Classifier
    from chatllm.tasks.fewshot import load_examples

    out = Output()
    if lang not in ("auto", "en", "zh"):
        raise UsageError(f"unknown --lang {lang!r}", "use auto, en or zh")
    shots = load_examples(examples_path, out.warn) if examples_path is not None else None
    if labels is None:  # classify without --labels: the examples' labels, in order of appearance
        labels = list(dict.fromkeys(ex.label for ex in shots or []))
        if len(labels) < 2:
            raise UsageError("classify needs at least two labels", "give them comma-separated: --labels news,blog,ad")
    classifier = Classifier(None, labels, task=task, descriptions=descriptions, examples=shots, calibrate=calibrate,
                            lang=lang)
    if column is not None or lines:
        _run_lines(classifier, _line_source(text, file, out), column, file, as_json, out, settings)
    else:
        _run_one(classifier, _whole_text(text, file, out), as_json, out, settings)


# -- one text ------------------------------------------------------------------------------------


def _whole_text(words: Optional[List[str]], file: Optional[Path], out: Output) -> str:
    from chatllm.inputs import read_text, stdin_is_piped

    if words:
        text = " ".join(words)
    elif file is not None:
        text = read_text(file, out.warn)
    elif stdin_is_piped():
        text = read_text("-", out.warn)
    else:
        raise UsageError("no text to classify", 'give TEXT, -f FILE or piped input: chatllm sentiment "I loved it"')
    if not text.strip():
        raise UsageError("the text is empty", "give some text to classify")
    return text.rstrip("\r\n")  # the file's or echo's final newline is not part of the text --json echoes


def _run_one(classifier: "Classifier", text: str, as_json: bool, out: Output, settings: Settings) -> None:
    from chatllm.loader import load_engine

    classifier.engine = load_engine(settings, out)
    result = classifier.classify(text)
    if result.truncated:
        out.warn("the text is long: its start and end were classified, its middle left out")
    if as_json:
        out.json(result.to_json())
    else:
        out.line(f"{result.label}\t{result.probability:.4f}")


# -- a batch of lines ----------------------------------------------------------------------------


def _line_source(words: Optional[List[str]], file: Optional[Path], out: Output) -> "tuple[Iterator[str], str]":
    """Lines of the input, read lazily (bounded memory), and the input's name."""
    from chatllm.inputs import iter_text, open_binary, stdin_is_piped

    if file is not None:
        name = "stdin" if str(file) == "-" else str(file)
        return _split_lines(iter_text(open_binary(file), name, out.warn)), name
    if words:
        return _split_lines([" ".join(words)]), "the argument"
    if stdin_is_piped():
        return _split_lines(iter_text(open_binary("-"), "stdin", out.warn)), "stdin"
    raise UsageError("no lines to classify", "pipe them in: cut -f1 reviews.tsv | chatllm sentiment --lines")


def _split_lines(blocks: Iterable[str]) -> Iterator[str]:
    pending = ""
    for block in blocks:
        pending += block
        *done, pending = pending.split("\n")
        yield from done
    if pending:
        yield pending


def _items(source: tuple[Iterator[str], str], column: Optional[str], file: Optional[Path]) -> "Iterator[tuple[str, str | None]]":
    """(text, error) per item: the lines themselves, or one column of CSV/TSV rows."""
    lines, name = source
    if column is None:
        for line in lines:
            yield line, None
        return
    import csv

    first = next(lines, None)
    if first is None:
        return
    suffix = file.suffix.lower() if file is not None else ""
    delimiter = "\t" if suffix == ".tsv" or (suffix != ".csv" and "\t" in first) else ","
    reader = csv.reader((ln + "\n" for ln in itertools.chain([first], lines)), delimiter=delimiter)
    index = _column_index(column, reader, name)
    for row in reader:
        if not any(cell.strip() for cell in row):
            yield "", None
        elif index < len(row):
            yield row[index], None
        else:
            yield "", f"the row has no column {index + 1}"


def _column_index(column: str, reader, name: str) -> int:
    if column.strip().isdigit():
        index = int(column) - 1
        if index < 0:
            raise UsageError("--column numbers start at 1", "for example --column 1")
        return index
    header = [cell.strip() for cell in next(reader, [])]
    for candidates in (header, [h.lower() for h in header]):
        key = column.strip() if candidates is header else column.strip().lower()
        if key in candidates:
            return candidates.index(key)
    raise UsageError(f"{name} has no column named {column!r}", f"its header row has: {', '.join(header) or '(nothing)'}")


def _run_lines(classifier: "Classifier", source, column, file, as_json: bool, out: Output, settings: Settings) -> None:
    from chatllm.loader import load_engine

    items = _items(source, column, file)
    waiting: list = []
    for item in items:  # hold leading empty rows: an input with no text at all is a usage error, not N error rows
        waiting.append(item)
        if item[0].strip():
            break
    if not any(text.strip() for text, _ in waiting):
        raise UsageError("the input has no text to classify", "give one item per line")
    classifier.engine = load_engine(settings, out)
    start, done, failed, cut = time.perf_counter(), 0, 0, 0
    with out.progress("classifying", total=None, unit="items") as bar:
        for number, (text, error) in enumerate(itertools.chain(waiting, items), 1):
            result = _classify_row(classifier, text, error)
            if result.error:
                failed += 1
            cut += result.truncated
            _print_row(out, result, number, as_json)
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


def _print_row(out: Output, result: "Result", number: int, as_json: bool) -> None:
    if as_json:
        row = result.to_json()
        out.json({"line": number, **row} if result.error else row)
    elif result.error:
        out.line(f"{ERROR_LABEL}\t\tline {number}: {result.error}")
    else:
        out.line(f"{result.label}\t{result.probability:.4f}\t{_one_line(result.text)}")


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
