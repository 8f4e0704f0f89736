"""Token-budgeted splitting of long text: paragraphs, then lines, sentences, words, then hard token cuts.

Works on a stream of decoded blocks (chatllm.inputs.iter_text) and yields chunks as it goes, so memory stays
bounded by one chunk plus one block however long the input is. Sentence boundaries include Chinese and
Japanese punctuation (。！？；…), which needs no following space.
"""

from __future__ import annotations

import collections
import itertools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from chatllm.tasks.text.text_rules import SENTENCE_END

Counter = Callable[[str], int]

# A piece longer than this (no blank line in sight) is cut at the best boundary in it, to bound memory.
MAX_PIECE_CHARS = 64 * 1024

_PARAGRAPH_END = re.compile(r"\n[ \t\u3000]*\n\s*")
_LINE_END = re.compile(r"\n")
_CLAUSE_END = re.compile(r"(?:[,;:\uff0c\u3001\uff1a]\s*)")
_WORD_END = re.compile(r"\s+")
_LEVELS = (_PARAGRAPH_END, _LINE_END, SENTENCE_END, _CLAUSE_END, _WORD_END)


@dataclass
class Chunk:
    """A piece of the input that fits the budget, with its token count."""

    text: str
    tokens: int


def split_keep(text: str, pattern: re.Pattern) -> list[str]:
    """Split after each match, keeping separators attached, so the parts join back to the text exactly."""
    parts, start = [], 0
    for m in pattern.finditer(text):
        if m.end() > start:
            parts.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        parts.append(text[start:])
    return parts


def split_sentences(text: str) -> list[str]:
    """Sentences of English or Chinese text (trailing whitespace kept on each)."""
    return split_keep(text, SENTENCE_END)


def split_sentences_stripped(text: str) -> list[str]:
    """The sentences of a text, stripped, empty ones left out."""
    return [s.strip() for s in split_sentences(text) if s.strip()]


def pieces_from_blocks(blocks: Iterable[str], max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Paragraphs (each with its trailing blank lines) from a stream of text blocks, holding at most ~one block."""
    buf = ""
    for block in blocks:
        buf += block
        while True:
            cut = _last_boundary(buf, max_chars)
            if cut <= 0:
                break
            yield from split_keep(buf[:cut], _PARAGRAPH_END)
            buf = buf[cut:]
    if buf:
        yield from split_keep(buf, _PARAGRAPH_END)


def _last_boundary(buf: str, max_chars: int) -> int:
    """Where to cut the buffer: after its last paragraph break, or (when it is too long) at a lesser boundary."""
    last = 0
    for m in _PARAGRAPH_END.finditer(buf):
        if m.end() < len(buf):  # a break at the very end may go on in the next block
            last = m.end()
    if last or len(buf) <= max_chars:
        return last
    window = buf[:max_chars]
    for pattern in (_LINE_END, SENTENCE_END, _CLAUSE_END, _WORD_END):
        ends = [m.end() for m in pattern.finditer(window, max_chars // 2)]
        if ends:
            return ends[-1]
    return max_chars


_GUTENBERG_START = re.compile(r"^\*{3} ?START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*\n?", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*{3} ?END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK", re.M | re.I)
GUTENBERG_LOOK = 64 * 1024


def drop_gutenberg_frame(pieces: Iterable[str], look: int = GUTENBERG_LOOK) -> Iterator[str]:
    """Pieces without a Project Gutenberg header and licence, when the text has their markers; else unchanged.

    The book is what a reader wants summarized, not the 3,000-word licence at its end.
    """
    pieces = iter(pieces)
    head: list[str] = []
    size = 0
    framed = False
    for piece in pieces:
        m = _GUTENBERG_START.search(piece)
        if m:
            head, framed = [piece[m.end():]], True
            break
        head.append(piece)
        size += len(piece)
        if size > look:
            break
    if not framed:
        yield from head
        yield from pieces
        return
    for piece in itertools.chain(head, pieces):
        m = _GUTENBERG_END.search(piece)
        if m:
            yield piece[: m.start()]
            return
        yield piece


def units(piece: str, count: Counter, budget: int, level: int = 1) -> Iterator[tuple[str, int]]:
    """Parts of a piece that each fit the budget: lines, then sentences, clauses, words, then hard token cuts."""
    n = count(piece)
    if n <= budget:
        yield piece, n
        return
    for depth in range(level, len(_LEVELS)):
        parts = split_keep(piece, _LEVELS[depth])
        if len(parts) > 1:
            for part in parts:
                yield from units(part, count, budget, depth + 1)
            return
    yield from hard_split(piece, count, budget)


def hard_split(text: str, count: Counter, budget: int) -> Iterator[tuple[str, int]]:
    """Cut text with no usable boundary into the longest prefixes that fit the budget (binary search)."""
    while text:
        n = count(text)
        if n <= budget:
            yield text, n
            return
        lo, hi = 1, len(text)  # one character is taken even if it alone overflows a tiny budget: progress first
        guess = max(1, min(len(text) - 1, len(text) * budget // max(n, 1)))
        if count(text[:guess]) <= budget:
            lo = guess
        else:
            hi = guess
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(text[:mid]) <= budget:
                lo = mid
            else:
                hi = mid
        head = text[:lo]
        yield head, count(head)
        text = text[lo:]


def chunk_pieces(pieces: Iterable[str], count: Counter, budget: int) -> Iterator[Chunk]:
    """Pack pieces greedily into chunks of at most `budget` tokens, checking each chunk's real count."""
    if budget < 1:
        raise ValueError("budget must be at least 1 token")
    cur: list[tuple[str, int]] = []
    cur_n = 0
    for piece in pieces:
        for unit, n in units(piece, count, budget):
            while cur and cur_n + n > budget:
                chunk, cur = _take(cur, count, budget)
                cur_n = sum(k for _, k in cur)
                if chunk is not None:
                    yield chunk
            if not cur and not unit.strip():
                continue
            cur.append((unit, n))
            cur_n += n
    while cur:
        chunk, cur = _take(cur, count, budget)
        if chunk is not None:
            yield chunk


def chunk_blocks(blocks: Iterable[str], count: Counter, budget: int) -> Iterator[Chunk]:
    """Chunks of at most `budget` tokens from a stream of text blocks (e.g. chatllm.inputs.iter_text)."""
    return chunk_pieces(pieces_from_blocks(blocks), count, budget)


def chunk_text(text: str, count: Counter, budget: int) -> list[Chunk]:
    """Chunks of at most `budget` tokens from one string."""
    return list(chunk_blocks([text], count, budget))


def _take(parts: list[tuple[str, int]], count: Counter, budget: int) -> tuple[Chunk | None, list[tuple[str, int]]]:
    """The longest run of leading parts whose joined text really fits, as a chunk, and the parts left over.

    Token counts are not quite additive across a join, so a packed run can come out a little over the budget: its
    last parts then begin the next chunk rather than making a tiny chunk of their own.
    """
    k = len(parts)
    while True:
        text = "".join(p for p, _ in parts[:k]).strip()
        real = count(text) if text else 0
        if real <= budget or k == 1:
            break
        k -= 1
    rest = parts[k:]
    if not text:
        return None, rest
    if real <= budget:
        return Chunk(text, real), rest
    head, *tail = hard_split(text, count, budget)  # one unit that grew past the budget when stripped
    return Chunk(*head), tail + rest


def drain(queue: collections.deque) -> Iterator[str]:
    """Yield and forget the held pieces, so they are not kept for the whole run."""
    while queue:
        yield queue.popleft()


def opening(text: str, count: Callable[[str], int], budget: int) -> str:
    """The opening of a text, cut to the budget."""
    for piece, _ in hard_split(text.strip(), count, budget):
        return piece
    return ""
