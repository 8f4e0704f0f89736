"""Built-in few-shot prompts per task and language, and loading the user's own examples (--examples FILE)."""

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


@dataclass(frozen=True)
class Preset:
    """How one task is asked in one language: the field names, the instruction and the built-in examples."""

    text_field: str
    answer_field: str
    instruction: str  # "{labels}" is replaced by the label list
    separator: str  # joins labels inside the instruction
    examples: tuple[Example, ...] = ()
    always_instruct: bool = False  # else the instruction appears only when the examples do not cover every label
    calibrate: bool = True
    item_tokens: int = 384  # a longer item keeps its start and end; the middle rarely changes the label


def _ex(*pairs: tuple[str, str]) -> tuple[Example, ...]:
    return tuple(Example(text, label) for text, label in pairs)


# The order matters to a small model (recency bias); this one was chosen on ../shared/data/sentiment/sst2_tune.tsv.
# Neutral examples only join when the label set has neutral, so the two-label prompt is the tuned one.
SENTIMENT = {
    "en": Preset(
        text_field="Text",
        answer_field="Sentiment",
        instruction="Classify the sentiment of each text as {labels}.",
        separator=", ",
        examples=_ex(
            ("not as bad as I feared, and the ending is genuinely touching.", "positive"),
            ("the jokes fall flat and the plot makes no sense.", "negative"),
            ("the film was released in the spring and runs about two hours.", "neutral"),
            ("a warm, funny and beautifully acted film that stays with you long after the credits.", "positive"),
            ("a dull, lifeless mess that wastes a talented cast.", "negative"),
            ("the hotel is next to the train station.", "neutral"),
        ),
        item_tokens=128,
    ),
    # Measured on chnsenticorp_tune.csv: zero-shot with calibration 72.5%, these six hand-written examples without
    # calibration 63% (with it 56%: SmolLM2 then calls nearly every review positive). So no built-in Chinese examples.
    "zh": Preset(
        text_field="Text",
        answer_field="Sentiment",
        instruction="判断每条评论的情感，从以下标签中选一个：{labels}。",
        separator="、",
        always_instruct=True,
        item_tokens=128,
    ),
}

CLASSIFY = {
    "en": Preset(
        text_field="Text",
        answer_field="Category",
        instruction="Classify each text into one of these categories: {labels}.",
        separator=", ",
        always_instruct=True,
    ),
    "zh": Preset(
        text_field="Text",
        answer_field="Category",
        instruction="将每段文本归入以下类别之一：{labels}。",
        separator="、",
        always_instruct=True,
    ),
}

PRESETS = {"sentiment": SENTIMENT, "classify": CLASSIFY}


def preset(task: str, lang: str) -> Preset:
    """The built-in prompt for a task ("sentiment" or "classify") in a language ("en" or "zh")."""
    table = PRESETS[task]
    return table.get(lang, table["en"])


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
