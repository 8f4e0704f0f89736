"""Sentences of the document that mention its names, kept while it is read: what an added sentence about a name the
summary left out is written from, so it says what the text says and not what the notes garbled."""

from __future__ import annotations

import re
from typing import Callable

from chatllm.tasks.summarize.names.name_patterns import CJK_CHAR, TITLES, core
from chatllm.tasks.text.text_rules import SENTENCE_END

PER_NAME = 12  # sentences kept per name; past this every other one goes, so those kept still span the document
MAX_NAMES = 5000  # names with sentences kept; a document naming more (a directory) keeps its first ones
COVER_PASSAGES = 4  # sentences about a name an added sentence is written from
COVER_PASSAGE_TOKENS = 400  # ... at most this many tokens of them
SENTENCE_CHARS = 300  # a longer sentence is cut to this many characters around the mention
_BREAK = re.compile(r"\n[ \t\u3000]*\n")  # a blank line ends a sentence too (headings, verse)


class NameEvidence:
    """For each name a segment is told about, the sentence of its first mention there, segment by segment."""

    def __init__(self) -> None:
        self.sentences: dict[str, list[tuple[int, str]]] = {}
        self.segments = 0

    def add(self, text: str, names: list[str]) -> None:
        """Keep, for each of the segment's names, the sentence where the segment first mentions it."""
        self.segments += 1
        for name in names:
            kept = self.sentences.get(name)
            if kept is None:
                if len(self.sentences) >= MAX_NAMES:
                    continue
                kept = self.sentences[name] = []
            sentence = sentence_at(text, name)
            if sentence:
                kept.append((self.segments, sentence))
                if len(kept) > PER_NAME:
                    del kept[1::2]

    def text(self, name: str, count: Callable[[str], int], room: int) -> str:
        """The kept sentences about a name as paragraphs, as many of COVER_PASSAGES as fit `room` tokens ("" if none)."""
        kept: list[str] = []
        for sentence in self.passages(name, COVER_PASSAGES):
            if count("\n\n".join(kept + [sentence])) > room:
                break
            kept.append(sentence)
        return "\n\n".join(kept)

    def passages(self, name: str, limit: int) -> list[str]:
        """Up to `limit` kept sentences that mention the name (the whole name before its parts), spread over the
        document and in its order."""
        words = [re.compile(rf"(?<!\w){re.escape(w)}(?!\w)") for w in _parts(name)]
        scored: dict[str, tuple[int, int]] = {}  # sentence -> (how much of the name it has, where)
        for kept in self.sentences.values():
            for at, sentence in kept:
                if name in sentence:
                    score = len(words) + 1
                else:
                    score = sum(bool(w.search(sentence)) for w in words)
                if score and score > scored.get(sentence, (0, 0))[0]:
                    scored[sentence] = (score, at)
        best = [s for s, _ in sorted(scored.items(), key=lambda kv: (-kv[1][0], kv[1][1]))]
        top = [s for s in best if scored[s][0] == scored[best[0]][0]] if best else []
        if len(top) >= limit:  # enough with the whole name: spread them over the document
            chosen = [top[int(i * len(top) / limit)] for i in range(limit)]
        else:
            chosen = best[:limit]
        return sorted(chosen, key=lambda s: scored[s][1])


def sentence_at(text: str, name: str) -> str:
    """The sentence of the text around the first mention of the name ("" if none), its line breaks made spaces."""
    at = text.find(name)
    if at < 0:
        return ""
    start = 0
    for before in SENTENCE_END.finditer(text, 0, at):
        start = before.end()
    for gap in _BREAK.finditer(text, start, at):
        start = gap.end()
    stop = SENTENCE_END.search(text, at + len(name))
    brk = _BREAK.search(text, at + len(name))
    end = min(stop.end() if stop else len(text), brk.start() if brk else len(text))
    sentence = " ".join(text[start:end].split())
    if len(sentence) > SENTENCE_CHARS:  # cut around the mention, at spaces where there are any
        mid = sentence.find(name)
        lo = max(0, mid - SENTENCE_CHARS // 3)
        piece = sentence[lo:lo + SENTENCE_CHARS]
        if not CJK_CHAR.search(name) and " " in piece:
            piece = piece[piece.find(" ") + 1 if lo else 0: piece.rfind(" ")]
        sentence = piece
    return sentence


def _parts(name: str) -> list[str]:
    """The words of a name a mention may use alone: not its titles ("Dr. Livesey": "Livesey")."""
    if CJK_CHAR.search(name):
        return [name]
    words = [w for w in name.split() if w.lower().rstrip(".") not in TITLES and len(w) > 1]
    return words or [core(name)]
