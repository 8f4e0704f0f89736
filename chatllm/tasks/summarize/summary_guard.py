"""Keeping invented names (and family ties) out of notes and out of the summary the user sees, without lying in the stream.

A small model writes names the document never contains ("Elizabeth Bennet" in a book without her). Notes are
cleaned sentence by sentence before they reach the next level. The final summary streams one sentence (or bullet
line) at a time: a sentence is held until it ends, checked against the document's index, and then written or
dropped, so nothing that reaches the user is ever taken back. The user waits a sentence longer for the first
words, which is the price of a stream that only shows text the summary keeps.
"""

from __future__ import annotations

import re
import threading
from typing import Callable, Sequence

from chatllm.tasks.summarize.names.entities import EntityTracker, invented_names
from chatllm.tasks.summarize.names.name_patterns import STOP_WORDS
from chatllm.tasks.text.chunking import split_sentences_stripped
from chatllm.tasks.text.text_rules import sentence_end

_ENDED = re.compile("[.!?\u3002\uff01\uff1f][\"'\u201d\u2019)\uff09\u300d]*\\s*$")
_CJK_CHARS = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")
CJK_STOPS = "\u3002\uff01\uff1f\uff1b\u2026\u201d\u300d"


def clean_note(note: str, tracker: EntityTracker, lock: threading.Lock | None = None) -> tuple[str, list[str]]:
    """The note without its sentences that name what the document never does, and those names."""
    kept, removed = [], []
    for sentence in split_sentences_stripped(note):
        if lock is not None:
            with lock:
                bad = untrue(sentence, tracker)
        else:
            bad = untrue(sentence, tracker)
        if bad:
            removed += bad
        else:
            kept.append(sentence)
    return _join(kept), removed


def untrue(text: str, tracker: EntityTracker) -> list[str]:
    """What a generated text says that the document does not: names it never has, family ties it never writes."""
    return invented_names(text, tracker) + tracker.kinship.unstated(text)


def _join(sentences: Sequence[str]) -> str:
    text = ""
    for sentence in sentences:  # Chinese and Japanese sentences join without a space
        text += ("" if not text or text[-1] in CJK_STOPS else " ") + sentence
    return text


_META = re.compile(r"(?:here is|here's|the following is|below is|this is)\b.{0,40}\bsummar", re.I)
_META_LEAD = re.compile(r"(?:(?:here is|here's|the following is|below is|this is)\b[^:\n]{0,60}?\bsummar[^:\n]*|summary)\s*:\s*",
                        re.I)


def tidy_note(note: str) -> str:
    """A note without what a tiny model writes in place of notes: a sentence again, talk of the summary, lists of names.

    Greedy decoding loops ("Stapleton, Dr. Henry, Stapleton, Dr. Henry, ...") and repeats whole sentences; passed on,
    a merge copies the loop and the final pass has nothing to tell. An empty result lets the caller use the text.
    """
    kept, seen = [], set()
    for sentence in split_sentences_stripped(note):
        sentence = _META_LEAD.sub("", sentence, count=1) if _META_LEAD.match(sentence) else sentence
        key = " ".join(re.findall(r"\w+", sentence.lower()))
        if not key or key in seen or _META.match(sentence) or _is_list(sentence):
            continue
        seen.add(key)
        kept.append(sentence)
    return _join(kept)


def _is_list(sentence: str) -> bool:
    """Mostly short items between commas: names listed ("the Psychologist, the Medical Man, ..."), not a sentence about
    them. A sentence of five short adjectives goes too; it is one sentence of a note, and loops cost far more."""
    items = [i.strip() for i in re.split(r"[,;\n\u3001\uff0c\uff1b]", sentence) if i.strip()]
    short = sum(len(i) <= 5 if _CJK_CHARS.search(i) else len(i.split()) <= 3 for i in items)
    return len(items) >= 5 and short >= 0.7 * len(items)


class NameGuard:
    """A stream filter: text goes out a whole sentence or line at a time, and only when it invents no name."""

    def __init__(self, tracker: EntityTracker, on_text: Callable[[str], None] | None, prose: bool = False):
        self.tracker = tracker
        self.on_text = on_text
        self.prose = prose
        self.buffer = ""
        self.parts: list[str] = []
        self.removed: list[str] = []

    @property
    def text(self) -> str:
        """What went out so far."""
        return "".join(self.parts)

    def feed(self, piece: str) -> None:
        """Take a piece of the model's reply; write out every sentence it completes that passes the check."""
        self.buffer += piece
        while True:
            cut = self._boundary()
            if cut is None:
                return
            unit, self.buffer = self.buffer[:cut], self.buffer[cut:]
            self._unit(unit)

    def finish(self) -> str:
        """Check and write out what is left; returns all the text that went out."""
        unit, self.buffer = self.buffer.rstrip(), ""
        if unit.strip():
            self._unit(unit)
        return self.text

    def _boundary(self) -> int | None:
        buf = self.buffer
        lead = len(buf) - len(buf.lstrip())
        ends = []
        end = sentence_end(buf, lead, cjk_from=lead)
        if end is not None:
            ends.append(end)
        newline = buf.find("\n", lead)
        if newline > lead:
            ends.append(newline)  # the newline starts the next unit, so a dropped bullet takes its own line with it
        return min(ends) if ends else None

    def _unit(self, unit: str) -> None:
        if not unit.strip():
            if self.parts:
                self.buffer = unit + self.buffer  # whitespace between units goes out with the next one
            return
        if not any(ch.isalnum() for ch in unit):
            return  # a rule line or stray marks ("---"): nothing a reader wants
        if self.prose and self.buffer.startswith("\n") and is_heading(unit):
            return  # "Summary:", "King", "Frogs, Hatter, Gryphon": a line of a paragraph that says nothing
        if self.prose and _NAME_LIST.search(unit):
            return  # the prompt's name list copied: "Long John Silver, Jim Hawkins, ... are silent men", "moves on to ..."
        if self.parts and repeats(unit, self.text):
            return  # a tiny model says its first sentence again, reworded, and the names it left out get no room
        bad = untrue(unit, self.tracker)
        if bad:
            self.removed += [b for b in bad if b not in self.removed]
            return
        if not self.parts:
            unit = unit.lstrip()
        self.parts.append(unit)
        if self.on_text is not None:
            self.on_text(unit)


_NAME_LIST = re.compile(r"(?<![\w'\u2019])(?:[A-Z][\w.'\u2019-]*(?: [A-Z][\w.'\u2019-]*){0,2}, ){4,}")
_BULLET = re.compile(r"\s*(?:[-*\u2022]|\d+[.)])\s")


def is_heading(line: str) -> bool:
    """Whether a line that ends without a sentence's end is a heading or a list of names, not a bullet or a sentence."""
    if _ENDED.search(line) or _BULLET.match(line):
        return False
    cjk = len(_CJK_CHARS.findall(line))
    return (cjk <= 8 if cjk else len(line.split()) <= 6) or _is_list(line)


def missing_names(text: str, names: Sequence[str]) -> list[str]:
    """The names the text does not write as given (case-insensitive), in their order."""
    low = text.lower()
    return [name for name in names if name.lower() not in low]


def cover_lead(text: str, name: str, bullets: bool) -> tuple[str, str]:
    """What goes between the summary so far and a sentence about a name it left out, and how that sentence starts."""
    if bullets:
        return "\n", "- " + name
    if not text or text[-1] in CJK_STOPS or text[-1].isspace():
        return "", name
    return " ", name


def cover_problem(reply: str, name: str, text: str, tracker: EntityTracker, question: str = "",
                  names: Sequence[str] = ()) -> str:
    """Why a sentence that starts with `name` may not join the summary ("" when it may): it must be whole, say something
    new, invent no name and not make the name one of the other main `names`.

    `question` is what the model was asked: an answer that echoes it ("... does not do anything in the text above")
    says nothing about the text.
    """
    if not _ENDED.search(reply):
        return "cut off"  # by its token limit: half a sentence
    rest = reply.strip().lstrip("- ")[len(name):]
    others = [n for n in names if n != name]
    after = re.match(r"\s*([A-Z][a-z]*)\b", rest)
    if after and (after.group(1).lower() in STOP_WORDS or any(re.match(rf"\s*{re.escape(n)}\b", rest) for n in others)):
        return "starts afresh"  # "Berg She mended ...": a chat server never saw the lead; "King Alice's verdict was"
    said = rest.strip(" ,:;.\u3002\uff0c")
    grams = _grams(said)
    if len(said.split()) < 3 and len(_CJK_CHARS.findall(said)) < 4 or not grams:
        return "says nothing"  # the name and next to nothing
    same = _complement(rest)
    if same and same.lower() in {n.lower() for n in others}:
        return f"makes {name} {same}"  # "King is Queen", "小D是赵太爷": two people made one, never what the text says
    if repeats(said, text):
        return "repeats the summary"
    if grams & _grams(question.replace(name, " ") + " in the text above"):  # every prompt says "the text above"
        return "echoes the question"
    bad = untrue(reply, tracker)
    return f"invents {', '.join(bad)}" if bad else ""


def _complement(rest: str) -> str:
    """What a sentence says its subject is, when that is all of a clause: "is the Queen, and ..." gives "Queen"."""
    m = _COPULA.match(rest)
    return m.group(1).strip() if m else ""


_COPULA = re.compile(r"\s*(?:(?:is|was|are|were)\s+(?:the\s+|a\s+|an\s+)?|是(?:一[个位])?)([^,.;:!?。，；！？、]+)")


def repeats(sentence: str, text: str) -> bool:
    """Whether most of a sentence's word (or CJK character) trigrams are already in the text."""
    grams = _grams(sentence)
    return bool(grams) and len(grams & _grams(text)) > len(grams) / 2


def _grams(text: str) -> set[tuple[str, ...]]:
    """Word trigrams, and CJK character trigrams, lowercased: what two sentences share when one repeats the other."""
    words = re.findall(r"\w+", text.lower())
    out = {tuple(words[i:i + 3]) for i in range(len(words) - 2)}
    cjk = "".join(_CJK_CHARS.findall(text))
    return out | {tuple(cjk[i:i + 3]) for i in range(len(cjk) - 2)}


LOOP_CHARS = 60  # a note whose last this many characters it already wrote is looping (greedy decoding does): it ends


def looping(text: str) -> bool:
    """Whether the text's last LOOP_CHARS characters occur earlier in it (a loop of any period, overlapping or not)."""
    return len(text) > LOOP_CHARS and text.find(text[-LOOP_CHARS:], 0, len(text) - 1) >= 0
