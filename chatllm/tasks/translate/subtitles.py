"""SubRip (.srt) and WebVTT (.vtt) subtitles as verbatim pieces and translatable units (doc_structure's model).

A cue is a block of lines between blank lines with a timing line (`00:00:01,000 --> 00:00:04,000`): everything up to
and including the timing line (the cue number or identifier, the timestamps and cue settings) is verbatim, and so are
the blank lines between cues, the WEBVTT header and its NOTE, STYLE and REGION blocks. Only the cue's text is
translated, as one paragraph (doc_structure.paragraph: a cue of one sentence a line, or of `- ` dialogue lines, goes
line by line; a sentence wrapped over two lines goes as one unit and comes back on up to two lines). Tags inside a
cue (`<i>`, `<c.yellow>`, `<v Roger>`, `{\\an8}`) are protected spans, so cue boundaries and timing never move.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Iterable, Iterator

from chatllm.tasks.translate import doc_structure as ds

TIMING = re.compile(r"^[ \t]*(?:\d+:)?\d{1,2}:\d{2}[,.]\d{1,3}[ \t]*-->[ \t]*(?:\d+:)?\d{1,2}:\d{2}[,.]\d{1,3}")
_VTT_HEAD = re.compile(r"^\ufeff?WEBVTT(?:[ \t].*)?$")
_VTT_BLOCK = re.compile(r"^(?:NOTE|STYLE|REGION)(?:[ \t].*)?$")
FORMATS = {".srt": "srt", ".vtt": "vtt"}
SNIFF_LINES = 4  # non-blank lines read to recognise a subtitle file on stdin


def format_of(name: str) -> str | None:
    """"srt" or "vtt" from a file name's suffix, else None."""
    return FORMATS.get(PurePath(name).suffix.lower())


def sniff(head: Iterable[str]) -> str | None:
    """"vtt" or "srt" when the first lines of a text look like subtitles (for stdin and odd names), else None."""
    lines = [line.strip() for line in head if line.strip()][:SNIFF_LINES]
    if not lines:
        return None
    if _VTT_HEAD.match(lines[0]):
        return "vtt"
    if TIMING.match(lines[0]) or len(lines) > 1 and lines[0].isdigit() and TIMING.match(lines[1]):
        return "srt"
    return None


def split_subtitles(lines: Iterable[str], line_mode: bool | None = None) -> Iterator["str | ds.Unit"]:
    """Verbatim strings and Units, in order, from a subtitle file's lines (each with its newline)."""
    block: list[str] = []
    seen_cue = False
    for line in lines:
        if line.strip():
            block.append(line)
            continue
        if block:
            yielded, cue = _block(block, seen_cue, line_mode)
            seen_cue |= cue
            yield from yielded
            block = []
        yield line
    if block:
        yield from _block(block, seen_cue, line_mode)[0]


def _block(block: list[str], seen_cue: bool, line_mode: bool | None) -> tuple[list["str | ds.Unit"], bool]:
    """One block's pieces, and whether it was a cue."""
    timing = next((i for i, line in enumerate(block) if TIMING.match(line)), None)
    if timing is None:
        first = block[0].strip()
        # Text after a blank line inside a cue (a common slip in .srt files) is still the cue's text; a header,
        # a NOTE/STYLE/REGION block or anything before the first cue stays as it is.
        if not seen_cue or _VTT_HEAD.match(first) or _VTT_BLOCK.match(first):
            return ["".join(block)], False
        return _text(block, line_mode), False
    head = "".join(block[: timing + 1])
    if not head.endswith("\n"):  # a timing line at the very end of the file, without a newline
        return [head], True
    return [head, *_text(block[timing + 1:], line_mode)], True


def _text(lines: list[str], line_mode: bool | None) -> list["str | ds.Unit"]:
    """A cue's text lines as paragraph pieces, ending with a newline exactly where the source's last line has one."""
    if not lines:
        return []
    pieces = list(ds.paragraph(lines, line_mode))
    if not lines[-1].endswith("\n") and pieces and pieces[-1] == "\n":
        pieces.pop()
    for piece in pieces:
        if isinstance(piece, ds.Unit):
            piece.by_line = False  # inside a cue, going line by line is the cue's layout, not a guess to report
    return pieces
