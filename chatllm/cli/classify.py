"""`chatllm sentiment` and `chatllm classify`: labels with probabilities, one text or a batch of lines."""

import csv
import io
from pathlib import Path
from typing import Annotated, Iterator, List, Optional

import typer

from chatllm.cli.app import app
from chatllm.cli.options import model_only_command
from chatllm.errors import UsageError
from chatllm.output import Output
from chatllm.settings import Settings

TextArg = Annotated[Optional[List[str]], typer.Argument(help="The text (else -f FILE or stdin).", show_default=False)]
FileOpt = Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the input from FILE.")]
LinesOpt = Annotated[bool, typer.Option("--lines", help="Each input line is one item; one result per line.")]
ColumnOpt = Annotated[Optional[str], typer.Option("--column", help="With --lines on CSV/TSV: the column NAME or number N (1-based).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON (JSON Lines with --lines): label, scores, text.")]
ExamplesOpt = Annotated[Optional[Path], typer.Option("--examples", help="Few-shot examples: a TSV/CSV of text,label rows.")]


def _read_input(words: Optional[List[str]], file: Optional[Path], out: Output) -> str:
    from chatllm.inputs import read_text, stdin_is_piped

    if words:
        return " ".join(words)
    if file is not None:
        return read_text(file, out.warn)
    if stdin_is_piped():
        return read_text("-", out.warn)
    raise UsageError("no text to classify", 'give TEXT, -f FILE, or pipe lines in: cut -f1 reviews.tsv | chatllm sentiment --lines')


def _items(text: str, lines: bool, column: Optional[str], file: Optional[Path]) -> Iterator[str]:
    if not lines:
        yield text
        return
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    if column is None:
        yield from rows
        return
    delimiter = "\t" if (file and file.suffix.lower() == ".tsv") or "\t" in rows[0] else ","
    reader = csv.reader(io.StringIO("\n".join(rows)), delimiter=delimiter)
    index = int(column) - 1 if column.isdigit() else None
    if index is None:
        header = next(reader, [])
        if column not in header:
            raise UsageError(f"no column named {column!r}", f"columns: {', '.join(header)}")
        index = header.index(column)
    if index < 0:
        raise UsageError("--column numbers start at 1", "for example --column 1")
    for row in reader:
        yield row[index] if index < len(row) else ""


def _load_examples(path: Path, out: Output) -> list[tuple[str, str]]:
    from chatllm.inputs import read_text

    text = read_text(path, out.warn)
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if len(r) >= 2]
    if rows and rows[0][:2] in (["text", "label"], ["sentence", "label"]):
        rows = rows[1:]
    if not rows:
        raise UsageError(f"{path} has no text,label rows", "one example per line: text<TAB>label")
    return [(r[0], r[1].strip()) for r in rows]


def _describe(pairs: Optional[List[str]]) -> dict:
    described = {}
    for pair in pairs or []:
        label, sep, text = pair.partition("=")
        if not sep or not label.strip():
            raise UsageError(f"--describe {pair!r} is not label=text", "for example --describe ad='selling something'")
        described[label.strip()] = text.strip()
    return described


def _run(settings: Settings, labels: List[str], task: str, words, file, lines, column, as_json, examples,
         describe) -> None:
    from chatllm.loader import load_engine
    from chatllm.tasks.classify import Classifier

    out = Output()
    labels = [label.strip() for label in labels if label.strip()]
    if len(set(labels)) < 2:
        raise UsageError("classification needs at least two different labels", "for example --labels news,blog,ad")
    described = _describe(describe)
    shots = _load_examples(examples, out) if examples else None
    text = _read_input(words, file, out)
    items = _items(text, lines, column, file)
    engine = load_engine(settings, out)
    classifier = Classifier(engine, labels, task=task, examples=shots, descriptions=described)
    failed = 0
    for number, item in enumerate(items, 1):
        result = classifier.classify(item)
        if result.error:
            failed += 1
            if not lines:
                raise UsageError(f"cannot classify: {result.error}", "give some text")
            if as_json:
                out.json({"line": number, **result.as_dict()})
            else:
                out.line(f"error\t\tline {number}: {result.error}")
            continue
        if as_json:
            out.json(result.as_dict())
        elif lines:
            out.line(f"{result.label}\t{result.scores[result.label]:.3f}\t{item}")
        else:
            out.line(f"{result.label}\t{result.scores[result.label]:.3f}")
    if failed and out.err_tty:
        out.warn(f"{failed} line(s) could not be classified")


@app.command()
@model_only_command
def sentiment(
    text: TextArg = None,
    file: FileOpt = None,
    lines: LinesOpt = False,
    column: ColumnOpt = None,
    as_json: JsonOpt = False,
    neutral: Annotated[bool, typer.Option("--neutral", help="Add a neutral label.")] = False,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Comma-separated labels instead of positive,negative.")] = None,
    examples: ExamplesOpt = None,
    *,
    settings: Settings,
) -> None:
    """Sentiment with probabilities from the model's own label scores (calibrated; few-shot built in).

    Example: cut -f1 reviews.tsv | chatllm sentiment --lines --json > out.jsonl
    """
    chosen = labels.split(",") if labels else ["positive", "negative"] + (["neutral"] if neutral else [])
    _run(settings, chosen, "sentiment", text, file, lines, column, as_json, examples, None)


@app.command()
@model_only_command
def classify(
    labels: Annotated[str, typer.Option("--labels", "-l", help="Comma-separated labels, e.g. news,blog,ad.")],
    text: TextArg = None,
    file: FileOpt = None,
    lines: LinesOpt = False,
    column: ColumnOpt = None,
    as_json: JsonOpt = False,
    describe: Annotated[Optional[List[str]], typer.Option("--describe", help="Explain a label: label=text (repeatable).")] = None,
    examples: ExamplesOpt = None,
    *,
    settings: Settings,
) -> None:
    """Zero-shot (or few-shot) classification into your labels, with probabilities.

    Example: chatllm classify --labels news,blog,ad "Buy one, get one free this weekend only!"
    """
    _run(settings, labels.split(","), "classify", text, file, lines, column, as_json, examples, describe)
