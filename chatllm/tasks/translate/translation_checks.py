"""What makes a part's translation bad, and what can be mended without asking the model again.

Checks: empty, runaway, repetition, wrong language (skipped for a part made of names or code, which may stay as it
is), lost placeholders, broken link/emphasis pairs. Mends: a protected span the model copied literally, or dropped,
goes back in the model's own sentence instead of rejecting a fluent reply; numbers travel as text and are only
counted, since they legitimately change form (四, 1st, 2,000).
"""

from __future__ import annotations

import re
from typing import Sequence

from chatllm.tasks.text.text_rules import CJK_IDEOGRAPH, SCRIPTS, letters
from chatllm.tasks.translate import doc_structure as ds
from chatllm.tasks.translate.languages import Language, detect_source

_LABEL = re.compile(r"^\s*(?:here is[^:\n]{0,60}|(?:the )?translation[^:\n]{0,30}|(?:[A-Z][a-z]+ )?(?:chinese|english|"
                    r"japanese|text)|翻译|译文|中文|英文)\s*[:：]\s*", re.I)
_QUOTES = {'"': '"', "\u201c": "\u201d", "\u300c": "\u300d", "'": "'"}
_REPEAT = re.compile(r"(.{2,40}?)\1{4,}", re.S)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*")
_CJK_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万亿]")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
CJK_SCRIPTS = ("Chinese", "Japanese")


def clean_reply(reply: str, source: str) -> str:
    """A reply without what small models add around a translation: labels, fences, quotes, extra lines."""
    text = reply.strip().split("\n\n", 1)[0] if "```" not in reply else reply.strip()  # notes follow a blank line
    if text.startswith("```") and not source.startswith("```"):
        text = text.strip("`").strip()
    m = _LABEL.match(text)
    if m and not _LABEL.match(source) and len(text) > m.end():
        text = text[m.end():].strip()
    close = _QUOTES.get(text[:1])
    if close and text.endswith(close) and len(text) > 2 and not source.startswith(text[:1]):
        text = text[1:-1].strip()
    return ds.rewrap(text, 1)[0] if "\n" in text else text


def _script_share(text: str, script: str) -> float:
    pattern = dict(SCRIPTS)[script]
    n = letters(text)
    if script == "Japanese":
        hits = len(pattern.findall(text)) + len(CJK_IDEOGRAPH.findall(text))
    else:
        hits = len(pattern.findall(text))
    return hits / n if n else 1.0


def names_only(source: str) -> bool:
    """True when a Latin-script text is mostly capitalised names and code ("Python SDK"): it may come back as it is."""
    plain = ds._PLACEHOLDER.sub(" ", source)
    if guess_script(plain) is not None:
        return False
    words = _WORD.findall(plain)
    common = [w for w in words if w[0].islower() and len(w) > 1 and not any(c.isupper() for c in w[1:])]
    return not common or len(common) < len(words) / 3


def guess_script(text: str) -> str | None:
    """The non-Latin script that makes up 30% of a text's letters, or None."""
    return next((s for s, _ in SCRIPTS if _script_share(text, s) > 0.3), None) if letters(text) else None


def problem_of(source: str, translation: str, target: Language, finish_reason: str,
               spans: Sequence[str] = ()) -> str | None:
    """Why a part's translation is bad (empty, runaway, repetition, wrong language, lost placeholders), or None."""
    plain = ds._PLACEHOLDER.sub(" ", translation)
    if not plain.strip() and letters(ds._PLACEHOLDER.sub(" ", source)):
        return "empty"
    if finish_reason == "length":
        return "runaway"
    rep = _REPEAT.search(translation)
    if rep and not _REPEAT.search(source) and len(rep.group(0)) >= 12:
        return "repetition"
    if letters(plain) >= 4 and not names_only(source):
        if target.script is not None and _script_share(plain, target.script) < 0.3:
            return "wrong language"
        if target.script is None:
            if guess_script(plain) is not None:
                return "wrong language"
            if letters(source) >= 24 and " ".join(translation.split()) == " ".join(source.split()) \
                    and detect_source(source) is not None:
                return "not translated"
    if sorted(ds.placeholders_in(translation)) != sorted(ds.placeholders_in(source)) or not pairs_kept(translation, spans):
        return "placeholders"
    return None


def _paired(span: str, closer: str) -> bool:
    return span == "[" and closer.startswith("](") or span in ("**", "__", "*", "_") and closer == span


def pairs_kept(translation: str, spans: Sequence[str]) -> bool:
    """True when every opening span ([ of a link, ** of emphasis) still comes before its closer, with text between."""
    where = {k: m for m in ds._PLACEHOLDER.finditer(translation) if (k := int(m.group(1)) - 1) < len(spans)}
    for i, span in enumerate(spans[:-1]):
        if _paired(span, spans[i + 1]) and i in where and i + 1 in where:
            if not translation[where[i].end():where[i + 1].start()].strip():
                return False
    return True


def has_pairs(spans: Sequence[str]) -> bool:
    """True when the spans include a link or emphasis pair (whose text must stay between them)."""
    return any(_paired(a, b) for a, b in zip(spans, spans[1:]))


def mend_spans(source: str, translation: str, spans: Sequence[str], cjk: bool, literal_only: bool = False) -> str:
    """The translation with each lost placeholder put back: where the model copied the span itself, else (unless
    literal_only) at the same relative place as in the source, at a word boundary; duplicates are dropped."""
    wanted = ds.placeholders_in(source)
    seen: set[int] = set()

    def once(m: re.Match) -> str:
        k = int(m.group(1)) - 1
        if k not in wanted or k in seen:
            return ""
        seen.add(k)
        return m.group(0)

    text = ds._PLACEHOLDER.sub(once, translation)
    for k in wanted:
        if k in seen or not 0 <= k < len(spans):
            continue
        span = spans[k]
        bare = span.strip("`") if span.startswith("`") else span
        for literal in dict.fromkeys((span, bare)):
            if len(literal) >= 2 and literal in text:
                text = text.replace(literal, ds.placeholder(k), 1)
                seen.add(k)
                break
    for k in wanted:
        if k in seen or literal_only:
            continue
        at = source.index(ds.placeholder(k)) / max(1, len(source))
        text = _insert_at(text, round(at * len(text)), ds.placeholder(k), cjk)
        seen.add(k)
    return " ".join(text.split())


def _insert_at(text: str, goal: int, piece: str, cjk: bool) -> str:
    cuts = [0, len(text)] + [i for i in range(1, len(text)) if text[i - 1] == " " or cjk and not text[i - 1].isascii()
                             and not text[i].isascii()]
    cut = min(cuts, key=lambda c: abs(c - goal))
    left, right = text[:cut].rstrip(), text[cut:].lstrip()
    gap = "" if cjk else " "
    return (left + (gap if left else "") + piece + (gap if right else "") + right).strip()


def numbers_missing(source: str, translation: str, target: Language) -> list[str]:
    """The source's numbers not found in the translation (as digits, or as numerals for a CJK target)."""
    digits = {re.sub(r"\D", "", n) for n in _NUMBER.findall(translation)}
    missing = [n for n in _NUMBER.findall(source) if re.sub(r"\D", "", n) not in digits]
    if missing and target.script in CJK_SCRIPTS and _CJK_NUMERAL.search(translation):
        missing = [n for n in missing if len(re.sub(r"\D", "", n)) > 4]
    return missing
