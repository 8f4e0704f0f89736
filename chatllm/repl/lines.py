"""From raw text to messages: \"\"\" blocks, and stdin piped one message per line."""

from __future__ import annotations

from typing import IO, Callable, Iterator


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
