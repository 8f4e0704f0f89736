"""The rows a bench script hands to run_all.py: `--figures FILE` writes them as JSON, so nothing parses printed text."""

from __future__ import annotations

import json
from pathlib import Path


def row(number: str, name: str, ours: float, unit: str, *, reference: float | None = None, reference_label: str = "",
        ratio: float | None = None, target: str = "-", met: bool | None = None, note: str = "") -> dict:
    """One table row: chatllm's value, the reference measured in the same run, their ratio and the target."""
    if ratio is None and reference:
        ratio = ours / reference
    return {"number": number, "name": name, "ours": ours, "unit": unit, "reference": reference,
            "reference_label": reference_label, "ratio": ratio, "target": target, "met": met, "note": note}


def write(path: str | Path | None, rows: list[dict]) -> None:
    """Write the rows to path (nothing when the script was not asked for them)."""
    if path:
        Path(path).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


def read(path: str | Path) -> list[dict]:
    """The rows a script wrote (none when it wrote nothing)."""
    p = Path(path)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() and p.stat().st_size else []


def value(v: float | None, unit: str) -> str:
    """A number with its unit at a sensible precision."""
    if v is None:
        return "-"
    if unit == "%":
        return f"{v:.1f} %"
    if unit == "s":
        return f"{v:.3f} s"
    return f"{v:.1f} {unit}".strip()
