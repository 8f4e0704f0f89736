"""Reading user input from files and stdin, in one place: nothing here prints or loads a model.

Decoding (UTF-8, BOM, CRLF, binary and empty input): `iter_text`, `read_text`. Prompts for `ask`: `gather_prompt`.
Inputs of `summarize`, each probed before the model loads and read again in blocks later: `probe_source`,
`gather_sources`. Inputs of `sentiment`/`classify`: one text (`whole_text`), or items, one per line or one CSV/TSV
cell per row (`line_items`, `csv_column_items`, `nonempty_items`). Warnings go to a `warn` callback; refusals are
UsageErrors.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

from chatllm.errors import UsageError

BLOCK = 1 << 20


def _check_path(path: Path) -> None:
    if str(path) == "-":
        return
    if path.is_dir():
        raise UsageError(f"{path} is a directory", "give a file, or `-` for stdin")
    if not path.exists():
        raise UsageError(f"no such file: {path}", "check the path")


def open_binary(path: Path | str) -> IO[bytes]:
    """Open a file (or `-` for stdin) for bytes, with clear errors."""
    path = Path(path)
    if str(path) == "-":
        return sys.stdin.buffer
    _check_path(path)
    try:
        return open(path, "rb")
    except PermissionError:
        raise UsageError(f"cannot read {path}: permission denied", "check the file's permissions")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", "check the file")


def iter_text(stream: IO[bytes], name: str, warn: Callable[[str], None] | None = None) -> Iterator[str]:
    """Decode a byte stream in blocks: UTF-8 (BOM dropped), CRLF -> LF, invalid bytes replaced with a warning.

    Refuses binary data (NUL bytes) and yields nothing for empty input. Memory stays bounded by the block size.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    first = True
    warned = False
    carry_cr = False
    while True:
        block = stream.read(BLOCK)
        if not block:
            break
        if b"\x00" in block:
            raise UsageError(f"{name} looks like binary data (it has NUL bytes)", "give a text file")
        if first:
            block = block.removeprefix(codecs.BOM_UTF8)
            first = False
        text = decoder.decode(block)
        if not warned and "\ufffd" in text and warn:
            warn(f"{name} is not valid UTF-8; undecodable bytes were replaced with U+FFFD")
            warned = True
        if carry_cr:
            text = "\r" + text
        carry_cr = text.endswith("\r")
        if carry_cr:
            text = text[:-1]
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text:
            yield text
    tail = decoder.decode(b"", final=True) + ("\n" if carry_cr else "")
    if tail:
        if "\ufffd" in tail and not warned and warn:
            warn(f"{name} is not valid UTF-8; undecodable bytes were replaced with U+FFFD")
        yield tail


def read_text(path: Path | str, warn: Callable[[str], None] | None = None, *, limit: int | None = None,
              allow_empty: bool = False, too_long: str | None = None) -> str:
    """A whole text file (or `-` for stdin), decoded; raises UsageError for empty, binary, missing or too-long input."""
    name = "stdin" if str(path) == "-" else str(path)
    stream = open_binary(path)
    try:
        parts, size = [], 0
        for piece in iter_text(stream, name, warn):
            parts.append(piece)
            size += len(piece)
            if limit is not None and size > limit:
                raise UsageError(too_long or f"{name} is too long ({size:,}+ characters)",
                                 "use `chatllm summarize` for long texts, or give a shorter part")
        text = "".join(parts)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if not text.strip() and not allow_empty:
        raise UsageError(f"{name} is empty", "give some text")
    return text


DEFAULT_CTX = 8192  # the context chatllm gives a model when neither --ctx nor the registry says otherwise
CHARS_PER_TOKEN_BOUND = 64  # more text than any tokenizer packs into one token of real input


def prompt_char_limit(n_ctx: int | None = None) -> int:
    """The most characters worth reading for a prompt of n_ctx tokens: past it the text cannot fit anyway."""
    return CHARS_PER_TOKEN_BOUND * (n_ctx or DEFAULT_CTX)


def read_prompt(path: Path | str, warn: Callable[[str], None] | None = None, n_ctx: int | None = None, *,
                allow_empty: bool = False) -> str:
    """A file (or `-` for stdin) as prompt text; stops reading once it cannot fit n_ctx tokens (bounded memory)."""
    name = "stdin" if str(path) == "-" else str(path)
    limit = prompt_char_limit(n_ctx)
    too_long = (f"{name} is too long for a prompt: over {limit:,} characters, which a "
                f"{n_ctx or DEFAULT_CTX:,}-token context window cannot hold")
    return read_text(path, warn, limit=limit, allow_empty=allow_empty, too_long=too_long)


def stdin_is_piped() -> bool:
    """True when stdin is a pipe or file rather than a terminal (or closed)."""
    try:
        return sys.stdin is not None and not sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def gather_prompt(words: list[str] | None, file: Path | None, warn: Callable[[str], None] | None = None,
                  n_ctx: int | None = None, *, allow_empty: bool = False) -> str:
    """The prompt words, then the -f file, then piped stdin, joined by blank lines (reading stops past n_ctx)."""
    parts = [" ".join(words).strip()] if words else []
    if file is not None:
        parts.append(read_prompt(file, warn, n_ctx))
    if stdin_is_piped():
        parts.append(read_prompt("-", warn, n_ctx, allow_empty=True))
    parts = [p for p in parts if p.strip()]
    if not parts and not allow_empty:
        raise UsageError("nothing to ask: no prompt, no -f FILE and no piped input",
                         'give a prompt: chatllm ask "why is the sky blue?"')
    return "\n\n".join(parts)


# -- ask -f FILE|DIR...: the files behind a question ------------------------------------------------

HUGE_FILE_BYTES = 32 << 20  # past this a "text" file is a log or a dump, not something to ask about
MAX_WALKED_FILES = 5000
SNIFF_BYTES = 8192


def _sniff(path: Path) -> str | None:
    """Why a walked file is skipped (binary, empty, unreadable), or None when it looks like text."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if b"\x00" in head:
        return "binary"
    if not head.strip():
        return "empty"
    if head.decode("utf-8", errors="replace").count("\ufffd") > len(head) // 10:
        return "binary"
    return None


def gather_files(paths: Sequence[Path], warn: Callable[[str], None] | None = None) -> list[Path]:
    """The text files behind -f: each FILE checked (missing, binary, empty refused), each DIR walked for text files.

    In a directory, hidden entries are passed over and binary, empty and huge files skipped with a note.
    """
    found: list[Path] = []
    for path in paths:
        if str(path) == "-":
            raise UsageError("-f - cannot be searched by name", "pipe the text in instead: cat notes.txt | chatllm ask -f DIR ...")
        if not path.is_dir():
            probe_source(str(path))  # missing, unreadable, binary and empty files are refused by name
            if path.stat().st_size > HUGE_FILE_BYTES:
                raise UsageError(f"{path} is too big to search ({path.stat().st_size / 2**20:,.0f} MiB; "
                                 f"the limit is {HUGE_FILE_BYTES >> 20} MiB)", "give a part of it, or use chatllm summarize")
            found.append(path)
            continue
        skipped: list[str] = []
        before = len(found)
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(n for n in names if not n.startswith(".")):
                file = Path(root) / name
                if not file.is_file():
                    continue
                why = "huge" if file.stat().st_size > HUGE_FILE_BYTES else _sniff(file)
                if why:
                    skipped.append(f"{file} ({why})")
                    continue
                found.append(file)
                if len(found) > MAX_WALKED_FILES:
                    raise UsageError(f"{path} holds over {MAX_WALKED_FILES:,} text files", "point -f at a smaller folder")
        if warn and skipped:
            shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            warn(f"skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''} in {path}: {shown}")
        if len(found) == before:
            raise UsageError(f"{path} has no text files", "give a folder with text files in it, or name the files")
    return list(dict.fromkeys(found))


# -- summarize: sources probed before the model loads ---------------------------------------------


@dataclass
class Source:
    """One input (a file or stdin), checked before the model loads; its text is read again, in blocks, later."""

    path: str
    name: str
    size_hint: int | None = None  # approximate length in characters
    _stdin_blocks: Iterator[str] | None = field(default=None, repr=False)
    _peeked: list[str] = field(default_factory=list, repr=False)

    def blocks(self, warn: Callable[[str], None] | None = None) -> Iterator[str]:
        """The decoded text, block by block (bounded memory)."""
        if self._stdin_blocks is not None:
            yield from self._peeked
            self._peeked = []
            yield from self._stdin_blocks
            return
        stream = open_binary(self.path)
        try:
            yield from iter_text(stream, self.name, warn)
        finally:
            stream.close()


def probe_source(path: str, warn: Callable[[str], None] | None = None) -> Source:
    """Open an input and read up to its first words: missing, unreadable, directory, binary and empty are refused."""
    is_stdin = path == "-"
    name = "stdin" if is_stdin else path
    stream = open_binary(path)
    size = _stream_size(stream)
    # A file is read again later, so warnings wait for that read; stdin is read once, so it warns now.
    blocks = iter_text(stream, name, warn if is_stdin else None)
    peeked: list[str] = []
    try:
        for block in blocks:
            peeked.append(block)
            if block.strip():
                break
        else:
            raise UsageError(f"{name} is empty", "give a file with some text in it" if not is_stdin
                             else "pipe some text in: cat notes.txt | chatllm summarize")
    finally:
        if not is_stdin:
            stream.close()
    first = "".join(peeked)
    size_hint = None
    if size:
        raw = len(first.encode("utf-8")) or 1
        size_hint = int(size * len(first) / raw)
    if is_stdin:
        return Source(path, name, size_hint, _stdin_blocks=blocks, _peeked=peeked)
    return Source(path, name, size_hint)


def _stream_size(stream: IO[bytes]) -> int | None:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > 0 else None


def gather_sources(files: Sequence[str] | None, warn: Callable[[str], None] | None = None) -> list[Source]:
    """The inputs named (or piped stdin), each probed; refuses a missing input before any model loads."""
    paths = list(files or [])
    if not paths:
        if not stdin_is_piped():
            raise UsageError("nothing to summarize: no FILE and no piped input",
                             "chatllm summarize notes.txt, or: cat notes.txt | chatllm summarize")
        paths = ["-"]
    if paths.count("-") > 1:
        raise UsageError("stdin (-) given more than once", "name - once")
    return [probe_source(p, warn) for p in paths]


# -- sentiment / classify: one text, or one item per line or CSV/TSV row ---------------------------


def whole_text(words: Sequence[str] | None, file: Path | None, warn: Callable[[str], None] | None = None) -> str:
    """The text to classify: the words, else the -f file, else piped stdin; without its final newline."""
    if words:
        text = " ".join(words)
    elif file is not None:
        text = read_text(file, warn)
    elif stdin_is_piped():
        text = read_text("-", warn)
    else:
        raise UsageError("no text to classify", 'give TEXT, -f FILE or piped input: chatllm sentiment "I loved it"')
    if not text.strip():
        raise UsageError("the text is empty", "give some text to classify")
    return text.rstrip("\r\n")  # the file's or echo's final newline is not part of the text --json echoes


def split_lines(blocks: Iterable[str]) -> Iterator[str]:
    """The lines of decoded text blocks (LF line ends, none kept), lazily; a final newline adds no empty line."""
    pending = ""
    for block in blocks:
        pending += block
        *done, pending = pending.split("\n")
        yield from done
    if pending:
        yield pending


def input_lines(words: Sequence[str] | None, file: Path | None,
                warn: Callable[[str], None] | None = None) -> tuple[Iterator[str], str]:
    """Lines of the -f file, else of the words, else of piped stdin, read lazily (bounded memory), and the input's name."""
    if file is not None:
        name = "stdin" if str(file) == "-" else str(file)
        return split_lines(iter_text(open_binary(file), name, warn)), name
    if words:
        return split_lines([" ".join(words)]), "the argument"
    if stdin_is_piped():
        return split_lines(iter_text(open_binary("-"), "stdin", warn)), "stdin"
    raise UsageError("no lines to classify", "pipe them in: cut -f1 reviews.tsv | chatllm sentiment --lines")


def csv_column_items(lines: Iterator[str], column: str, name: str, suffix: str = "") -> Iterator[tuple[str, str | None]]:
    """(cell, error) per CSV/TSV row for a column NAME (header row) or 1-based N; TSV by .tsv, CSV by .csv, else a tab."""
    first = next(lines, None)
    if first is None:
        return
    suffix = suffix.lower()
    delimiter = "\t" if suffix == ".tsv" or (suffix != ".csv" and "\t" in first) else ","
    reader = csv.reader((ln + "\n" for ln in itertools.chain([first], lines)), delimiter=delimiter)
    index = _column_index(column, reader, name)
    for row in reader:
        if not any(cell.strip() for cell in row):
            yield "", None
        elif index < len(row):
            yield row[index], None
        else:
            yield "", f"the row has no column {index + 1}"


def _column_index(column: str, reader: Iterator[list[str]], name: str) -> int:
    if column.strip().isdigit():
        index = int(column) - 1
        if index < 0:
            raise UsageError("--column numbers start at 1", "for example --column 1")
        return index
    header = [cell.strip() for cell in next(reader, [])]
    for candidates in (header, [h.lower() for h in header]):
        key = column.strip() if candidates is header else column.strip().lower()
        if key in candidates:
            return candidates.index(key)
    raise UsageError(f"{name} has no column named {column!r}", f"its header row has: {', '.join(header) or '(nothing)'}")


def line_items(words: Sequence[str] | None, file: Path | None, column: str | None = None,
               warn: Callable[[str], None] | None = None) -> Iterator[tuple[str, str | None]]:
    """(text, error) per item: the input's lines, or one column of its CSV/TSV rows; the input is opened at once."""
    lines, name = input_lines(words, file, warn)
    if column is None:
        return ((line, None) for line in lines)
    return csv_column_items(lines, column, name, file.suffix if file is not None else "")


def nonempty_items(items: Iterator[tuple[str, str | None]]) -> Iterator[tuple[str, str | None]]:
    """The same items, after reading up to the first with text: an input with no text at all is a UsageError."""
    waiting: list[tuple[str, str | None]] = []
    for item in items:  # hold leading empty rows: an input with no text at all is a usage error, not N error rows
        waiting.append(item)
        if item[0].strip():
            break
    if not any(text.strip() for text, _ in waiting):
        raise UsageError("the input has no text to classify", "give one item per line")
    return itertools.chain(waiting, items)


# -- chat input: """ blocks, and a pipe read one message per line --------------------------------


def unwrap_block(text: str) -> str:
    """Drop the \"\"\" fences of a multi-line block."""
    stripped = text.strip()
    if stripped.startswith('"""'):
        stripped = stripped[3:]
        if stripped.endswith('"""'):
            stripped = stripped[:-3]
        return stripped.strip()
    return text


def block_is_open(text: str) -> bool:
    """True while a \"\"\" block has been opened but not closed."""
    stripped = text.strip()
    return stripped.startswith('"""') and not (len(stripped) >= 6 and stripped.endswith('"""'))


def piped_lines(stream: IO[bytes], warn: Callable[[str], None]) -> Iterator[str]:
    """Messages from a pipe: one per line (CRLF, BOM and bad UTF-8 handled); \"\"\" blocks span lines."""
    block: list[str] | None = None
    first, warned = True, False
    while True:
        raw = stream.readline()
        if not raw:
            break
        if first:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
            first = False
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if "\ufffd" in line and not warned:
            warn("stdin is not valid UTF-8; undecodable bytes were replaced with U+FFFD")
            warned = True
        if block is not None:
            block.append(line)
            if line.rstrip().endswith('"""'):
                yield unwrap_block("\n".join(block))
                block = None
        elif block_is_open(line):
            block = [line]
        else:
            yield line
    if block is not None:
        yield unwrap_block("\n".join(block))
