"""Standard output and error that never drop bytes: what `PYTHONUNBUFFERED=1` would otherwise lose on a signal.

Unbuffered (python -u, PYTHONUNBUFFERED, as many container images set), sys.stdout writes straight to the file
descriptor and keeps no record of a partial write. A terminal that lags fills the pty; a signal (Ctrl-C, a resize)
then ends the blocked write early, and the rest of that write, a frame of the live view or a piece of a reply, is
gone from the screen while the history has it. A raw layer that writes again until every byte is out keeps the
unbuffered behaviour (each write goes out at once) without the loss; buffered streams already do this.
"""

from __future__ import annotations

import io
import os
import sys
from typing import BinaryIO, cast


class WholeWrites(io.RawIOBase):
    """A raw file-descriptor writer whose write() returns only when every byte is written."""

    def __init__(self, fd: int):
        self.fd = fd

    def writable(self) -> bool:
        """Always: it only writes."""
        return True

    def fileno(self) -> int:
        """The descriptor written to."""
        return self.fd

    def isatty(self) -> bool:
        """Whether the descriptor is a terminal."""
        return os.isatty(self.fd)

    def write(self, data) -> int:
        """Write all of data, again after each partial write (os.write itself retries a write a signal cut short)."""
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        return done


def keep_whole_writes() -> None:
    """Give unbuffered sys.stdout and sys.stderr a raw layer that writes every byte; buffered ones are left alone."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        raw = getattr(stream, "buffer", None)
        if not isinstance(raw, io.FileIO) or not isinstance(stream, io.TextIOWrapper):
            continue
        stream.flush()
        newline = None if os.name == "nt" else "\n"  # what Python gives its own stdio: "\r\n" written on Windows
        fixed = io.TextIOWrapper(cast(BinaryIO, WholeWrites(raw.fileno())), encoding=stream.encoding, errors=stream.errors,
                                 newline=newline, line_buffering=stream.line_buffering, write_through=True)
        setattr(sys, name, fixed)
