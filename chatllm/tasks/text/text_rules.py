"""What a task needs to know about text itself: which script and language it is in, and where sentences end."""

from __future__ import annotations

import re

CJK_IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Scripts that give a language away, checked in this order (kana before ideographs: Japanese uses both).
SCRIPTS = [
    ("Japanese", re.compile(r"[\u3040-\u30ff]")),
    ("Korean", re.compile(r"[\uac00-\ud7af]")),
    ("Chinese", CJK_IDEOGRAPH),
    ("Russian", re.compile(r"[\u0400-\u04ff]")),
    ("Arabic", re.compile(r"[\u0600-\u06ff]")),
    ("Greek", re.compile(r"[\u0370-\u03ff]")),
    ("Hebrew", re.compile(r"[\u0590-\u05ff]")),
    ("Hindi", re.compile(r"[\u0900-\u097f]")),
    ("Thai", re.compile(r"[\u0e00-\u0e7f]")),
]

_CLOSERS = "\"'\u201d\u2019\u300d\u300f\uff09)\\]"  # closing quotes and brackets that belong to the sentence
# A Western sentence ends at . ! ? (and closers) before a space, so "e.g.x" and "3.5" do not end one, nor does the
# full stop of a title or an initial ("Dr. Mortimer", "J. Smith").
_NOT_AFTER = "".join(rf"(?<!\b{t})" for t in ("Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Mt", "Prof", "Rev", "Capt",
                                             "Col", "Gen", "Lt", "Sgt", "vs", r"e\.g", r"i\.e", "[A-Z]"))
WESTERN_STOP = re.compile(rf"(?:{_NOT_AFTER}\.|[!?])[.!?]*[{_CLOSERS}]*(?=\s)")
# A Chinese or Japanese sentence ends at its full stops, with no space needed.
CJK_STOP = re.compile(rf"[\u3002\uff01\uff1f]+[{_CLOSERS}]*")
# For splitting text into sentences: either kind of stop, CJK semicolons and ellipses too, with what follows.
SENTENCE_END = re.compile(
    rf"(?:{WESTERN_STOP.pattern}\s*)"
    rf"|(?:[\u3002\uff01\uff1f\uff1b\u2026!?;]+[{_CLOSERS}]*\s*)"
    r"|(?:[\uff0e\uff61]\s*)"  # full-width and half-width ideographic full stops
)


def letters(text: str) -> int:
    """How many letters (of any script) the text has."""
    return sum(1 for ch in text if ch.isalpha())


def detect_language(text: str) -> str:
    """"zh" when CJK ideographs are at least a fifth of the letters, else "en" (for choosing a prompt language)."""
    n = letters(text)
    if not n:
        return "en"
    return "zh" if len(CJK_IDEOGRAPH.findall(text)) / n >= 0.2 else "en"


def guess_language(sample: str) -> str | None:
    """The language of a text when its script gives it away (Chinese, Japanese, Russian...); None for Latin."""
    n = letters(sample)
    if not n:
        return None
    for name, pattern in SCRIPTS:
        hits = len(pattern.findall(sample))
        if name in ("Japanese", "Korean") and hits >= max(5, n // 20):
            return name
        if hits >= n * 0.3:
            return name
    return None


def sentence_end(text: str, start: int, cjk_from: int = 0) -> int | None:
    """Where the first sentence ends: a CJK full stop from `cjk_from`, a Western one after `start` (skips 'e.g.')."""
    ends = [m.end() for m in (WESTERN_STOP.search(text, start), CJK_STOP.search(text, cjk_from)) if m]
    return min(ends) if ends else None


def boundary_after(text: str, start: int) -> int | None:
    """The first sentence end or line break at or after `start`: where an over-long reply may stop."""
    newline = text.find("\n", start)
    ends = [e for e in (sentence_end(text, start, cjk_from=start), newline if newline >= 0 else None) if e is not None]
    return min(ends, default=None)
