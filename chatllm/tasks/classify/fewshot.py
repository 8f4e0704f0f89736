"""Few-shot examples: the labelled text type, and loading the user's own (--examples FILE); presets.py has the built-ins."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from chatllm.errors import UsageError


@dataclass(frozen=True)
class Example:
    """One labelled text shown to the model before the item."""

    text: str
    label: str


def load_examples(path: Path | str, warn=None) -> list[Example]:
    """Examples from a file: JSON Lines ({"text", "label"}) or TSV/CSV rows of text and label (label last)."""
    from chatllm.inputs import read_text

    name = str(path)
    text = read_text(path, warn)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if lines and lines[0].lstrip().startswith("{"):
        return _examples_from_jsonl(lines, name)
    delimiter = "\t" if "\t" in lines[0] else ","
    examples = []
    for n, row in enumerate(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter), 1):
        cells = [c.strip() for c in row]
        if n == 1 and [c.lower() for c in cells[-1:]] == ["label"]:
            continue  # a header row
        if len(cells) < 2 or not cells[-1] or not delimiter.join(cells[:-1]).strip():
            raise UsageError(f"{name} line {n}: expected `text{_show(delimiter)}label`",
                             "write one example a line: the text, a tab, then its label (or JSON Lines with text and label)")
        examples.append(Example(delimiter.join(cells[:-1]).strip(), cells[-1]))
    if not examples:
        raise UsageError(f"{name} has no examples", "write one example a line: the text, a tab, then its label")
    return examples


def _examples_from_jsonl(lines: list[str], name: str) -> list[Example]:
    examples = []
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{name} line {n} is not valid JSON: {exc.msg}", 'write {"text": "...", "label": "..."} a line')
        if not isinstance(obj, dict) or not str(obj.get("text", "")).strip() or not str(obj.get("label", "")).strip():
            raise UsageError(f"{name} line {n} needs non-empty \"text\" and \"label\"", 'write {"text": "...", "label": "..."} a line')
        examples.append(Example(str(obj["text"]).strip(), str(obj["label"]).strip()))
    return examples


def _show(delimiter: str) -> str:
    return "<TAB>" if delimiter == "\t" else delimiter
