"""The part of a passage worth a small model's time: the run of sentences that holds most of the question's rarer
words, within a token budget. The reranker judges a passage by its window and the answer is written from windows,
so a question costs a few short prompts instead of whole chunks; a citation is narrowed to a window's sentence.

Words are matched lowercased with a light suffix strip ("launched" ~ "launch"); Chinese by character bigrams, as the
index does. A word weighs its rarity among the sentences of the passages being compared (inverse document frequency),
so "Skylab" counts and "year" barely does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from chatllm.storage.passage_index import STOPWORDS
from chatllm.tasks.retrieval.passages import approx_tokens
from chatllm.tasks.text.text_rules import SENTENCE_END

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CLAUSE = re.compile(r"[,;:\uff0c\u3001\uff1a\uff1b]\s*")
_BREAK = re.compile(r"\n+")
_PARAGRAPH = re.compile(r"\n[ \t\u3000]*\n\s*")
# Chinese question words and glue: a bigram of these says nothing about where the answer is.
_CJK_GLUE = frozenset("""什么 哪个 哪些 哪里 哪一 多少 怎么 怎样 如何 为什 为何 是什 是哪 是谁 是多 的是 是由 由哪 有哪 有多 几个
什 么 哪 谁 的 是 了 在 和 与 及 为 有 被 中 其 该 这 那 一 个 年""".split())
_SUFFIXES = ("ings", "ing", "edly", "ed", "es", "s", "ly")


@dataclass(frozen=True)
class Window:
    """A run of a passage's text, by character offsets, with its estimated tokens."""

    start: int
    end: int
    tokens: int

    def text_of(self, passage_text: str) -> str:
        """The window's text, stripped."""
        return passage_text[self.start:self.end].strip()


def stem(word: str) -> str:
    """A light suffix strip so inflections meet: launched, launches, launching -> launch."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def terms(text: str) -> set[str]:
    """The content terms of a text: stemmed words (stopwords aside) and the character bigrams of Chinese runs."""
    out: set[str] = set()
    for run in _CJK_RUN.findall(text):
        grams = [run[i:i + 2] for i in range(len(run) - 1)] or [run]
        out.update(g for g in grams if g not in _CJK_GLUE)
    for word in _WORD.findall(_CJK_RUN.sub(" ", text).lower()):
        if word not in STOPWORDS:
            out.add(stem(word))
    return out


def units(text: str, budget: int, count: Callable[[str], int] = approx_tokens) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of a text (and its lines), a sentence over the budget (in
    `count`'s tokens) cut at its clauses, then into budget-sized slices."""
    spans: list[tuple[int, int]] = []
    for start, end in _split(text, 0, len(text), _BREAK):
        for s_start, s_end in _split(text, start, end, SENTENCE_END):
            if count(text[s_start:s_end]) <= budget:
                spans.append((s_start, s_end))
                continue
            for c_start, c_end in _split(text, s_start, s_end, _CLAUSE):
                spans += _slices(text, c_start, c_end, budget, count)
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _split(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    out, at = [], start
    for m in pattern.finditer(text, start, end):
        if m.end() > at:
            out.append((at, m.end()))
            at = m.end()
    if at < end:
        out.append((at, end))
    return out


def _slices(text: str, start: int, end: int, budget: int, count: Callable[[str], int]) -> list[tuple[int, int]]:
    """A span cut into pieces of at most `budget` tokens (about: a word is counted alone), at word or CJK
    character edges."""
    if count(text[start:end]) <= budget:
        return [(start, end)]
    out, at, used = [], start, 0
    for m in re.finditer(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\S+\s*", text[start:end]):
        cost = count(m.group())
        if used + cost > budget and used:
            out.append((at, start + m.start()))
            at, used = start + m.start(), 0
        used += cost
    out.append((at, end))
    return out


def weights(question: str, texts: Iterable[str]) -> dict[str, float]:
    """Each content term of the question, weighted by its rarity among the sentences of these texts."""
    wanted = terms(question)
    if not wanted:
        return {}
    df = dict.fromkeys(wanted, 0)
    n = 0
    for text in texts:
        for a, b in units(text, 10**9):
            n += 1
            for term in wanted & terms(text[a:b]):
                df[term] += 1
    return {term: math.log(1.0 + (n + 1) / (df[term] + 0.5)) for term in wanted}


def best_window(text: str, weight: dict[str, float], budget: int,
                count: Callable[[str], int] = approx_tokens) -> Window:
    """The run of whole sentences within `budget` tokens (counted by `count`) that covers the most question-term
    weight (ties: the shorter run), widened with its neighbours, the next one first, while they fit."""
    spans = units(text, budget, count)
    if not spans:
        return Window(0, len(text), count(text))
    cost = [count(text[a:b]) for a, b in spans]
    found = [terms(text[a:b]) & set(weight) for a, b in spans]
    best = (-1.0, 0, 0, 0)  # (covered weight, -tokens, first, last)
    for i in range(len(spans)):
        covered: set[str] = set()
        used = 0
        for j in range(i, len(spans)):
            used += cost[j]
            if used > budget:
                break
            covered |= found[j]
            key = (sum(weight[t] for t in covered), -used, i, j)
            if key[:2] > best[:2]:
                best = key
    _, neg_used, first, last = best
    # widen within the paragraph: the answer often sits in the sentence after the one that repeats the question
    return _grow(text, spans, cost, first, last, -neg_used, budget)


def widen(text: str, window: Window, budget: int, count: Callable[[str], int] = approx_tokens) -> Window:
    """The window grown to `budget` tokens by the sentences after it, then those before it, within its paragraphs:
    it keeps its start where it can, so a prompt that held it still shares its tokens."""
    spans = units(text, budget, count)
    inside = [i for i, (a, b) in enumerate(spans) if a < window.end and b > window.start]
    if not inside:
        return window
    cost = [count(text[a:b]) for a, b in spans]
    grown = _grow(text, spans, cost, inside[0], inside[-1], window.tokens, budget)
    return Window(min(grown.start, window.start), max(grown.end, window.end), grown.tokens)


def _grow(text: str, spans: list[tuple[int, int]], cost: list[int], first: int, last: int, used: int,
          budget: int) -> Window:
    """The run [first, last] of spans grown by the ones after it while they fit, then the ones before it, never past
    the paragraphs (blank-line blocks) it touches."""
    lo = max((m.end() for m in _PARAGRAPH.finditer(text, 0, spans[first][0])), default=0)
    after_break = _PARAGRAPH.search(text, spans[last][1] - 1)
    hi = after_break.start() if after_break else len(text)
    while last + 1 < len(spans) and spans[last + 1][0] < hi and used + cost[last + 1] <= budget:
        last += 1
        used += cost[last]
    while first > 0 and spans[first - 1][1] > lo and used + cost[first - 1] <= budget:
        first -= 1
        used += cost[first]
    return Window(spans[first][0], spans[last][1], used)


def line_span(text: str, start: int, end: int, first_line: int) -> tuple[int, int]:
    """The file lines of a character span of a passage whose text begins on first_line."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    top = first_line + text.count("\n", 0, start)
    return top, top + text.count("\n", start, end)
