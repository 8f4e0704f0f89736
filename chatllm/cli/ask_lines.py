"""`chatllm ask --lines`: many prompts on one model load (or --parallel connections to a server), one output line per
row, in input order, each written as soon as it and every row before it are done."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from chatllm.errors import ChatllmError, UsageError
from chatllm.output import Output, ProgressBar
from chatllm.settings import Settings

if TYPE_CHECKING:
    from chatllm.cli.context import CommandContext
    from chatllm.tasks.ask.batch import Row, RowResult
    from chatllm.tasks.ask.structured_output import JsonSpec

SYNC_SECONDS = 1.0  # fsync OUT at most this often: a flush per row already survives a killed process


def run_batch(context: "CommandContext", *, compose: Callable[[str], str], system: Optional[str],
              spec: "Optional[JsonSpec]", file: Optional[Path], output: Optional[Path], resume: bool,
              parallel: Optional[int] = None) -> None:
    """Check the input and OUT, load the model once, answer every row in order, write each as it finishes."""
    settings, out = context.settings, context.out
    from chatllm.inputs import input_lines, stdin_is_piped
    from chatllm.tasks.ask import batch

    if resume and output is None:
        raise UsageError("--resume needs -o OUT.jsonl: it skips the rows already in OUT",
                         "chatllm ask --lines -o out.jsonl --resume < prompts.txt")
    if file is None and not stdin_is_piped():
        raise UsageError("no prompts: --lines reads one per line from -f FILE or piped stdin",
                         'chatllm ask --lines "Translate to French:" < phrases.txt')
    _check_distinct(file, output)
    lines, name = input_lines(None, file, out.warn)
    jsonl = True if file is not None and file.suffix.lower() == ".jsonl" else None
    rows = batch.nonempty_rows(batch.read_rows(lines, jsonl=jsonl), name)  # empty or binary input fails before the load
    done = batch.finished_ids(output) if resume and output is not None and output.exists() else set()
    sink = RowSink(out, output, structured=spec is not None, append=resume)
    engines: list = []
    try:
        engines = context.load_engines(parallel)
        _answer_all(engines, rows, done, sink, out, settings=settings, compose=compose, system=system, spec=spec,
                    total=_count_rows(file) if _shows_bar(out, output) else None)
    finally:
        for engine in engines:
            engine.close()  # the shared prefix's saved state reaches the disk before the process ends
        sink.close()


def _answer_all(engines: list, rows: "Iterator[Row]", done: set[str], sink: "RowSink", out: Output, *, settings: Settings,
                compose: Callable[[str], str], system: Optional[str], spec: "Optional[JsonSpec]", total: Optional[int]) -> None:
    from chatllm.tasks.ask import batch

    skipped = [0]

    def unfinished() -> "Iterator[Row]":
        for row in rows:
            if done and batch.id_key(row.id) in done:
                skipped[0] += 1
                continue
            yield row

    start, count, failed = time.perf_counter(), 0, 0
    if total is not None:
        total = max(total - len(done), 0)
    try:
        with _bar(out, sink.path, total) as bar:
            for result in batch.run_rows(engines[0], unfinished(), settings.sampling, compose=compose, system=system, spec=spec,
                                         workers=engines):
                sink.write(result)
                count += 1
                if result.error is not None:
                    failed += 1
                    out.warn(f"row {result.row.id}: {result.error}")
                seconds = time.perf_counter() - start
                bar.advance(1, info=f"{count / seconds:.2f} rows/s" + (f", {failed} failed" if failed else ""))
    except (KeyboardInterrupt, ChatllmError) as exc:
        where = f"; they are in {sink.path}: rerun with --resume to go on" if sink.path is not None else ""
        out.warn(f"{'interrupted' if isinstance(exc, KeyboardInterrupt) else 'stopped'} after {count} rows{where}")
        raise
    if skipped[0]:
        out.status(f"skipped {skipped[0]} rows already in {sink.path}")
    seconds = time.perf_counter() - start
    if out.err_tty:
        out.status(f"{count} rows in {seconds:.1f} s, {count / seconds if seconds > 0 else 0:.2f} rows/s"
                   + (f", written to {sink.path}" if sink.path is not None else ""))
    if failed:
        raise ChatllmError(f"{failed} of {count} rows failed", "each failed row has its `error` (see the warnings above); "
                           "the others are answered")


class RowSink:
    """Where rows go: stdout (plain lines, or --json rows), or the -o file as JSON rows; flushed row by row."""

    def __init__(self, out: Output, path: Optional[Path], *, structured: bool, append: bool):
        self.out = out
        self.path = path
        self.structured = structured
        self._file = None
        self._synced = time.monotonic()
        if path is not None:
            try:
                self._file = open(path, "ab" if append else "wb")
            except OSError as exc:
                raise UsageError(f"cannot write {path}: {exc.strerror or exc}", "check the path and its permissions")

    def write(self, result: "RowResult") -> None:
        """One row, on its way at once (a reader or a later --resume sees every finished row)."""
        record = result.record(self.structured)
        if self._file is not None:
            self._file.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            self._file.flush()
            if time.monotonic() - self._synced >= SYNC_SECONDS:
                os.fsync(self._file.fileno())
                self._synced = time.monotonic()
        elif self.out.as_json:
            self.out.json(record)
        else:
            self.out.line(result.line(self.structured))

    def close(self) -> None:
        """Flush and sync OUT (once: a second call does nothing)."""
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None


def _check_distinct(file: Optional[Path], output: Optional[Path]) -> None:
    if file is None or output is None or str(file) == "-":
        return
    try:
        same = output.exists() and file.exists() and os.path.samefile(file, output)
    except OSError:
        same = False
    if same:
        raise UsageError(f"-o {output} is the input file", "write the rows to another file")


def _shows_bar(out: Output, output: Optional[Path]) -> bool:
    # Rows printed to the same terminal would tear a live bar apart; they show the progress themselves there.
    return out.err_tty and (output is not None or not out.is_tty)


def _count_rows(file: Optional[Path]) -> Optional[int]:
    """Non-blank lines of a regular input file (the bar's total), or None for stdin."""
    if file is None or str(file) == "-" or not file.is_file():
        return None
    with open(file, "rb") as fh:
        return sum(1 for raw in fh if raw.strip())


class _NoBar:
    def advance(self, n: float = 1, info: str = "") -> None:
        pass


@contextmanager
def _bar(out: Output, output: Optional[Path], total: Optional[int]) -> "Iterator[ProgressBar | _NoBar]":
    """The progress bar when it can be drawn (see _shows_bar), else one that draws nothing."""
    if not _shows_bar(out, output):
        yield _NoBar()
        return
    with out.progress("rows", total=total) as bar:
        yield bar
