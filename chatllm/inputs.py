"""Reading user text from files and stdin: encodings, BOM, CRLF, binary and empty input."""

from __future__ import annotations

import codecs
import sys
from pathlib import Path
from typing import IO, Callable, Iterator

from chatllm.errors import UsageError

SNIFF = 64 * 1024
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
