"""Which passage (and which sentence of it) an answer rests on, as `file:start-end` spans.

An answer's own `[n]` markers are checked against the passages it was given; an answer with no usable marker is
cited from the passage that holds its words; an answer written from passages that share none of its words is cited
from the best-ranked one it was given, marked unverified, so every answer says where it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from chatllm.storage.passage_index import STOPWORDS
from chatllm.tasks.retrieval.passages import CITE_MARK, Passage, words_of
from chatllm.tasks.retrieval.windows import line_span, units

NOT_FOUND = "not found in the files"
# Words an answer may add that no passage needs to hold: yes and no, and Chinese glue characters.
_FREE = frozenset("""yes no not true false none
是 否 不 没 有 的 了 于 在 和 与 及 为 被 其 该 这 那 个 约 共 等 也 都 就 还 由 从 将 把 对 而""".split())
QUOTE_CHARS = 240  # a cited sentence longer than this is shown cut (the JSON keeps it whole)


@dataclass
class Citation:
    """A span the answer rests on: the source number, its file and lines, how it was found, and the sentence."""

    source: int
    file: str
    start_line: int
    end_line: int
    score: float
    how: str  # cited: the model named it and the text agrees; inferred: the model named none, and this source holds
    # the answer's words; unverified: named (or, with none named, the best source the answer was written from), but
    # it shares no words with the answer
    quote: str | None = None  # the sentence of the passage that holds the answer's words

    @property
    def span(self) -> str:
        """`file:start-end`."""
        return f"{self.file}:{self.start_line}-{self.end_line}"

    def line(self) -> str:
        """The human form: `[n] file:start-end` and, where there is one, the sentence in quotes."""
        quote = self.quote or ""
        if len(quote) > QUOTE_CHARS:
            quote = quote[: QUOTE_CHARS - 1].rstrip() + "\u2026"
        return f"[{self.source}] {self.span}" + (f' "{quote}"' if quote else "")

    def as_dict(self) -> dict:
        """The --json form."""
        record = {"source": self.source, "file": self.file, "start_line": self.start_line, "end_line": self.end_line,
                  "score": round(self.score, 4), "how": self.how}
        return {**record, "quote": self.quote} if self.quote else record


def is_not_found(text: str) -> bool:
    """True when an answer says the files do not hold it."""
    return NOT_FOUND[:-1] in " ".join(text.lower().split())


def answer_words(answer_text: str) -> list[str]:
    """The answer's words that say something (stopwords and stray letters such as the s of "town's" aside; all of
    them when that leaves none)."""
    words = words_of(answer_text)
    return [w for w in words if w not in STOPWORDS and (len(w) > 1 or not w.isascii() or w.isdigit())] or words


def support(answer_text: str, question: str, passage_texts: Sequence[str]) -> float:
    """The share of the words an answer adds to its question that the passages hold (1.0 when it adds none): an
    answer of words no passage has was not read in them."""
    asked = set(words_of(question))
    added = [w for w in answer_words(answer_text) if w not in asked and w not in _FREE and w not in STOPWORDS]
    if not added:
        return 1.0
    have: set[str] = set()
    for text in passage_texts:
        have.update(words_of(text))
    return sum(w in have for w in added) / len(added)


def overlap(answer_text: str, passage_text: str) -> float:
    """The share of the answer's words (stopwords aside) found in the passage."""
    words = answer_words(answer_text)
    if not words:
        return 0.0
    have = set(words_of(passage_text))
    return sum(w in have for w in words) / len(words)


def narrow(p: Passage, answer_text: str) -> tuple[int, int, str | None]:
    """Where in a passage the answer is: the lines and the text of the sentence that holds the most of its words
    (the first of equals), when that is most of what the whole passage holds of them and a third of the answer or
    more; else the whole span."""
    words = answer_words(answer_text)
    best: tuple[float, int, int] | None = None
    for a, b in units(p.text, 10**9):
        have = set(words_of(p.text[a:b]))
        share = sum(w in have for w in words) / len(words) if words else 0.0
        if best is None or share > best[0]:
            best = (share, a, b)
    if best is None or best[0] < max(0.3, 0.6 * overlap(answer_text, p.text)):
        return p.start_line, p.end_line, None
    _, a, b = best
    start, end = line_span(p.text, a, b, p.start_line)
    return start, end, " ".join(p.text[a:b].split())


def cite(answer_text: str, passages: Sequence[Passage], *, fallback: int | None = None) -> list[Citation]:
    """The spans the answer cites as [n] (checked against the passages), else the one that holds its words, else
    (given `fallback`, the 0-based passage it was mainly written from) that one, unverified."""
    if is_not_found(answer_text) or not passages or not answer_text.strip():
        return []
    numbers: list[int] = []
    for m in CITE_MARK.finditer(answer_text):
        numbers += [int(n) for n in re.split(r"\s*[,;]\s*", m.group(1))]
    out = []
    for n in dict.fromkeys(numbers):
        if 1 <= n <= len(passages):  # a number outside the sources is an invented citation: dropped
            out.append(_citation(n, passages[n - 1], answer_text, "cited" if overlap(answer_text, passages[n - 1].text) > 0
                                 else "unverified"))
    if not any(c.how == "cited" for c in out):
        best = max(range(len(passages)), key=lambda i: overlap(answer_text, passages[i].text))
        if overlap(answer_text, passages[best].text) >= 0.5:
            out.append(_citation(best + 1, passages[best], answer_text, "inferred"))
        elif not out and fallback is not None and 0 <= fallback < len(passages):
            out.append(_citation(fallback + 1, passages[fallback], answer_text, "unverified"))
    return out


def _citation(n: int, p: Passage, answer_text: str, how: str) -> Citation:
    start, end, quote = narrow(p, answer_text) if how != "unverified" else (p.start_line, p.end_line, None)
    return Citation(n, p.file, start, end, p.score, how, quote)
