"""Markdown and plain text as translatable units between verbatim pieces, and the protected spans inside a unit.

What is never sent to a model: front matter, fenced code, table rules, heading/list/quote markers and indents,
horizontal rules, HTML-only lines, and within a line inline code, URLs, e-mail addresses, link targets, HTML tags and
emphasis markers. Numbers stay in the text: as placeholders they cost small models fluency ("[1]-month-old").
A blank line is always verbatim, so the output has exactly the input's paragraphs. A run of lines that reads as one
sentence or short item a line (`line_oriented`), or every line under `--lines`, gives one unit a line, so output
line i is the translation of input line i; any other run is one unit, and its translation is wrapped again to about
as many lines, only where a line may break (spaces, CJK punctuation: never inside a word or a number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_FRONT = re.compile(r"^(---|\+\+\+)[ \t]*$")
_RULE = re.compile(r"^[ \t]*([-*_])([ \t]*\1){2,}[ \t]*$")
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$")
_HTML_LINE = re.compile(r"^[ \t]*(<[^>]*>[ \t]*)+$")
_HEADING = re.compile(r"^([ \t]{0,3}#{1,6}[ \t]+)(.*?)([ \t]+#+[ \t]*)?$")
_MARKER = re.compile(r"^([ \t]*(?:>[ \t]?)*[ \t]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?)?)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
MAX_FRONT_LINES = 200  # a `---` line this far from its partner is a rule, not front matter

# Inline spans a model must not touch, tried in this order at each position (longest first by construction).
_SPANS = re.compile(
    r"(`+).+?\1"  # inline code
    r"|!\[[^\]\n]*\]\([^)\s]*(?:\s+\"[^\"]*\")?\)"  # an image, whole
    r"|\]\([^)\s]*(?:\s+\"[^\"]*\")?\)"  # a link's target, after its text
    r"|<(?:https?://|mailto:)[^>\s]+>"  # an autolink
    r"|</?[A-Za-z][A-Za-z0-9-]*(?:\.[\w.-]+)?(?:\s[^<>]*)?/?>"  # an HTML tag (or a WebVTT <c.class> tag)
    r"|<\d[\d:.]*>"  # a WebVTT timestamp tag inside a cue
    r"|\{\\[^{}\n]*\}"  # an SRT/ASS override tag such as {\an8}
    r"|(?:https?|ftp)://[^\s<>()\[\]]+[^\s<>()\[\].,;:!?'\"\u3002\uff0c]"  # a URL, without trailing punctuation
    r"|www\.[A-Za-z0-9-]+\.[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"\u3002\uff0c]"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # an e-mail address
    r"|\*\*|__|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])"  # emphasis markers
    r"|\[(?=[^\]\n]*\]\()"  # a link's opening bracket
)
_LETTER = re.compile(r"[^\W\d_]")


@dataclass
class Unit:
    """Text to translate: the lines' prefixes, the text (protected spans as placeholders) and the spans."""

    prefixes: list[str]
    text: str
    spans: list[str] = field(default_factory=list)
    lead: str = ""  # spans and spaces at the start, kept verbatim (never sent)
    trail: str = ""  # the same at the end
    by_line: bool = False  # one line of a run that was found line-oriented (not forced by --lines)

    @property
    def source(self) -> str:
        """The unit's original text (lines joined), spans restored."""
        return self.lead + restore(self.text, self.spans) + self.trail


def placeholder(i: int) -> str:
    """The stand-in for the i-th protected span: short, no spaces, and copied verbatim by small models."""
    return f"[{i + 1}]"


_PLACEHOLDER = re.compile(r"\[(\d{1,3})\]")


def restore(text: str, spans: list[str]) -> str:
    """Put the spans back in place of their placeholders."""
    def put(m: re.Match) -> str:
        i = int(m.group(1)) - 1
        return spans[i] if 0 <= i < len(spans) else m.group(0)
    return _PLACEHOLDER.sub(put, text) if spans else text


def placeholders_in(text: str) -> list[int]:
    """The span numbers (0-based) of the placeholders in a text, in order."""
    return [int(m.group(1)) - 1 for m in _PLACEHOLDER.finditer(text)]


def protect(text: str) -> tuple[str, list[str], str, str]:
    """(text with placeholders, spans, lead, trail): spans at either end are cut off verbatim instead."""
    parts: list[str] = []
    spans: list[str] = []
    pos = 0
    for m in _SPANS.finditer(text):
        if spans and m.start() == pos:  # touching spans (**3**) are one span: fewer placeholders to keep
            spans[-1] += m.group(0)
            pos = m.end()
            continue
        parts.append(text[pos:m.start()])
        parts.append("\0")
        spans.append(m.group(0))
        pos = m.end()
    parts.append(text[pos:])
    # Spans at the ends (and the spaces around them) stay outside: nothing to translate there.
    lead_n = 0
    while lead_n < len(spans) and not parts[2 * lead_n].strip():
        lead_n += 1
    trail_n = 0
    while trail_n < len(spans) - lead_n and not parts[-1 - 2 * trail_n].strip():
        trail_n += 1
    lead = _fill(parts[: 2 * lead_n], spans[:lead_n])
    mid = parts[2 * lead_n: len(parts) - 2 * trail_n]
    trail = _fill(parts[len(parts) - 2 * trail_n:], spans[len(spans) - trail_n:]) if trail_n else ""
    mid_spans = spans[lead_n: len(spans) - trail_n]
    body, k = [], 0
    for piece in mid:
        if piece == "\0":
            body.append(placeholder(k))
            k += 1
        else:
            body.append(piece)
    joined = "".join(body)
    stripped = joined.strip()
    if not stripped:
        return "", [], "", ""
    left = joined[: len(joined) - len(joined.lstrip())]
    right = joined[len(joined.rstrip()):]
    return stripped, mid_spans, lead + left, right + trail


def _fill(parts: list[str], spans: list[str]) -> str:
    out, k = [], 0
    for piece in parts:
        if piece == "\0":
            out.append(spans[k])
            k += 1
        else:
            out.append(piece)
    return "".join(out)


def make_unit(prefixes: list[str], text: str) -> "Unit | str":
    """A Unit for the text, or the text itself (verbatim) when it has nothing to translate."""
    body, spans, lead, trail = protect(text)
    if not _LETTER.search(_PLACEHOLDER.sub("", body)):
        return prefixes[0] + text
    return Unit(prefixes, body, spans, lead, trail)


def split_document(lines: Iterable[str], line_mode: bool | None = None) -> Iterator["str | Unit"]:
    """Verbatim strings and Units, in order, from the document's lines (each with its newline).

    line_mode True: every line is a unit of its own; False: a run of lines is always one unit; None: a run is split
    into lines when it reads line by line (`line_oriented`)."""
    lines = iter(lines)
    first = True
    para: list[str] = []
    for line in lines:
        if first:
            first = False
            if _FRONT.match(line.rstrip("\n")):
                held = [line]
                for more in lines:
                    held.append(more)
                    if more.rstrip("\n") == line.rstrip("\n") or more.rstrip("\n") == "..." or len(held) > MAX_FRONT_LINES:
                        break
                if len(held) > 1 and held[-1].rstrip("\n") in (line.rstrip("\n"), "...") and len(held) <= MAX_FRONT_LINES:
                    yield "".join(held)
                    continue
                para.extend(held[:1])
                lines = _chain(held[1:], lines)
                continue
        fence = _FENCE.match(line)
        if fence:
            yield from paragraph(para, line_mode)
            para = []
            mark = fence.group(1)
            held = [line]
            for more in lines:
                held.append(more)
                close = _FENCE.match(more)
                if close and close.group(1)[0] == mark[0] and len(close.group(1)) >= len(mark) \
                        and not more.strip()[len(close.group(1)):].strip():
                    break
            yield "".join(held)
            continue
        if not line.strip():
            yield from paragraph(para, line_mode)
            para = []
            yield line
            continue
        para.append(line)
    yield from paragraph(para, line_mode)


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def paragraph(lines: list[str], line_mode: bool | None = None) -> Iterator["str | Unit"]:
    """One paragraph's lines: structural lines on their own, a run of plain lines as one unit (one prefix a line), or
    as one unit a line (line_mode True, or None and the run reads line by line)."""
    run: list[tuple[str, str]] = []  # (prefix, content) of a run of lines that read as one text
    for line in lines:
        body = line.rstrip("\n")
        newline = line[len(body):]
        if _TABLE_RULE.match(body) and "|" in body or _RULE.match(body) or _HTML_LINE.match(body):
            yield from _run(run, line_mode)
            run = []
            yield line
            continue
        if body.lstrip().startswith("|"):
            yield from _run(run, line_mode)
            run = []
            yield from _table_row(body)
            yield newline
            continue
        heading = _HEADING.match(body)
        if heading:
            yield from _run(run, line_mode)
            run = []
            yield from _items([heading.group(1)], heading.group(2))
            yield (heading.group(3) or "") + newline
            continue
        prefix = _MARKER.match(body).group(1)  # type: ignore[union-attr]
        content = body[len(prefix):]
        if run and prefix.strip():  # a new list item or quote line begins a new run
            yield from _run(run, line_mode)
            run = []
        run.append((prefix, content))
    yield from _run(run, line_mode)


def _run(run: list[tuple[str, str]], line_mode: bool | None = None) -> Iterator["str | Unit"]:
    """A run of lines as one unit (or one unit a line); the final newline of the last line comes after it."""
    if not run:
        return
    if len(run) > 1 and (line_mode or line_mode is None and line_oriented([c for _, c in run])):
        for i, (prefix, content) in enumerate(run):
            if i:
                yield "\n"
            for item in _items([prefix], content):
                if isinstance(item, Unit):
                    item.by_line = line_mode is None
                yield item
        yield "\n"
        return
    text = _join([c for _, c in run])
    yield from _items([p for p, _ in run], text)
    yield "\n"


def _items(prefixes: list[str], text: str) -> Iterator["str | Unit"]:
    item = make_unit(prefixes, text)
    if isinstance(item, str) and len(prefixes) > 1:
        yield "\n".join(p + c for p, c in zip(prefixes, _rewrap_plain(text, len(prefixes))))
    else:
        yield item


def _rewrap_plain(text: str, n: int) -> list[str]:
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    out = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
    return (out + [""] * n)[:n]


def _join(contents: list[str]) -> str:
    """Wrapped lines as one text: a space between Western words, nothing between CJK characters."""
    out = ""
    for c in contents:
        c = c.strip()
        if out and c and not (_is_cjk(out[-1]) and _is_cjk(c[0])):
            out += " "
        out += c
    return out


def _table_row(body: str) -> Iterator["str | Unit"]:
    """A table row: the pipes and cell padding verbatim, each cell's text a unit of its own."""
    cells = _CELL_SPLIT.split(body)
    for i, cell in enumerate(cells):
        if i:
            yield "|"
        stripped = cell.strip()
        if not stripped:
            yield cell
            continue
        left = cell[: len(cell) - len(cell.lstrip())]
        right = cell[len(cell.rstrip()):]
        yield left
        yield from _items([""], stripped)
        yield right


def _is_cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef" or "\u3000" <= ch <= "\u303f"


# A line that ends one of these ways ends its sentence or item; one ending in a comma or a dash goes on.
_LINE_END = re.compile(r"[.!?\u2026:;\u3002\uff01\uff1f\uff1a\uff1b][\"'\u201d\u2019\u300d\u300f\uff09)\]*_`]*$")
_GOES_ON = re.compile(r"[,\uff0c\u3001\-\u2013\u2014/&+(\[]$")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")
SHORT_ITEM = 3  # words (two CJK characters count as one): a line this short is an item whatever follows
ITEM = 8  # a line up to this long without a stop is an item when the next line does not go on in lower case
LINE_SHARE = 0.75  # this share of a run's line ends must end a sentence or an item


def _size(line: str) -> float:
    return len(_ASCII_WORD.findall(line)) + sum(1 for ch in line if _is_cjk(ch)) / 2


def _ends_item(line: str, after: str) -> bool:
    """True when the line ends a sentence or an item (the next line starts a new one)."""
    if not line or _GOES_ON.search(line):
        return False
    goes_on = after[:1].islower()  # "...?'\nsaid Filby": the sentence goes on whatever the line ended with
    if _LINE_END.search(line):
        return not goes_on
    size = _size(line)
    return size <= SHORT_ITEM or size <= ITEM and not goes_on


def line_oriented(contents: list[str]) -> bool:
    """True when a run of lines reads as one sentence or short item a line (subtitles, string tables, one sentence a
    line) rather than one paragraph wrapped at a width: most of its line ends end a sentence or an item."""
    lines = [c.strip() for c in contents]
    if len(lines) < 2:
        return False
    ended = sum(_ends_item(line, after) for line, after in zip(lines, lines[1:]))
    return ended >= LINE_SHARE * (len(lines) - 1)


# Where a line of CJK text may break without cutting a word: after its punctuation, before an opening bracket.
_CJK_BREAK_AFTER = "\uff0c\u3002\u3001\uff1b\uff1a\uff01\uff1f\uff09\u300d\u300f\u300b\u3009\u3011\u3015\u2026\u201d\u2019"
_CJK_OPEN = "\uff08\u300c\u300e\u300a\u3008\u3010\u3014\u201c\u2018"


def break_points(text: str) -> list[int]:
    """Where text may be cut into lines: after a space (not one inside a number such as `1 000`), after CJK
    punctuation or before a CJK opening bracket; never between two letters, digits or CJK characters of a word."""
    cuts = []
    for i in range(1, len(text)):
        a, b = text[i - 1], text[i]
        if a == " ":
            if b != " " and not (i >= 2 and text[i - 2].isdigit() and b.isdigit()):
                cuts.append(i)
        elif a in _CJK_BREAK_AFTER and b not in _CJK_BREAK_AFTER and b != " " or b in _CJK_OPEN and a != " ":
            cuts.append(i)
    return cuts


def rewrap(text: str, n: int) -> list[str]:
    """A translation on up to n lines of similar length, cut only at break_points (in CJK text at its punctuation
    where it has some); fewer lines (down to one) when it has too few places to break, never an empty line."""
    text = " ".join(line.strip() for line in text.split("\n") if line.strip()) if "\n" in text else text
    if n <= 1:
        return [text]
    cuts = break_points(text)
    if sum(map(_is_cjk, text)) * 2 > len(text):  # mostly CJK: its punctuation first, a space beside a Latin word after
        cuts = [c for c in cuts if text[c - 1] in _CJK_BREAK_AFTER or text[c] in _CJK_OPEN] or cuts
    lines, start = [], 0
    for k in range(1, n):
        goal = len(text) * k // n
        options = [c for c in cuts if c > start and text[c:].strip()]
        if not options:
            break
        cut = min(options, key=lambda c: abs(c - goal))
        lines.append(text[start:cut].strip())
        start = cut
    lines.append(text[start:].strip())
    return [line for line in lines if line] or [""]


def render(unit: Unit, translation: str) -> str:
    """The unit's output: the translation (placeholders filled) on up to as many lines as its source, prefixes kept."""
    lines = rewrap(translation, len(unit.prefixes))
    filled = [restore(line, unit.spans) for line in lines]
    filled[0] = unit.lead + filled[0]
    filled[-1] = filled[-1] + unit.trail
    return "\n".join(p + line for p, line in zip(unit.prefixes, filled))


def lines_of(blocks: Iterable[str]) -> Iterator[str]:
    """The lines of a stream of text blocks, each with its newline (the last may have none)."""
    pending = ""
    for block in blocks:
        pending += block
        *done, pending = pending.split("\n")
        for line in done:
            yield line + "\n"
    if pending:
        yield pending
