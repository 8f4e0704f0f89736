"""Batches of prompts: rows from plain lines or JSON Lines, answered in input order on one engine (or concurrently on
several connections to one server), and the ids an earlier run already wrote (for --resume).

The engine's KV cache keeps the longest common token prefix of consecutive prompts, so a shared system prompt and
an instruction composed before each row's text are evaluated once: each row costs only its own tokens (a server
does the same per slot, with cache_prompt). An engine that batches (BatchGeneration, --parallel N > 1 on a local
model) runs N rows together, one sequence each, in the same decodes; their answers still come out in input order.
That shared prefix is also saved on disk (a WarmStart engine), so the next batch with the same instruction starts
warm; a batch whose rows share no more than the chat template's own header saves nothing.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from chatllm.engines.contract import BatchGeneration, BatchItem, Engine, GenerationStats, WarmStart, batching
from chatllm.errors import ChatllmError, EngineUnavailable, NoChatTemplateError, UsageError
from chatllm.settings import Sampling
from chatllm.tasks.ask.oneshot import Answer, ask, chat_prompt, structured
from chatllm.tasks.ask.structured_output import JsonSpec
from chatllm.tasks.text.parallel_map import in_input_order, ordered_map

# Row texts that begin with characters of different kinds: what their prompts share is what every row's prompt shares
# (whitespace before a row's text tokenizes by what follows it: "\n\n" is one token before "4", two before "Good"),
# and a token less for a kind not probed here.
_PROBES = ("A", "b", "4", "\u00bf", '"')


@dataclass
class Row:
    """One prompt: its id (the row's own, else its 1-based line number), its text and system prompt, or why it is unusable."""

    id: Any
    line: int
    prompt: str = ""
    system: str | None = None
    error: str | None = None


@dataclass
class RowResult:
    """What one row gave: the answer, or the error that stopped it (with the counts of any generation it got to)."""

    row: Row
    answer: Answer | None = None
    error: str | None = None
    stats: GenerationStats | None = None

    def record(self, structured: bool) -> dict:
        """The --json row: id, text (data under a schema), token counts, finish reason and error (null when it worked)."""
        s = self.stats or GenerationStats()
        answer = self.answer if self.error is None else None
        body = {"data": answer.data if answer else None} if structured else {"text": answer.text if answer else None}
        return {
            "id": self.row.id,
            **body,
            "prompt_tokens": s.prompt_tokens,
            "cached_tokens": s.cached_tokens,
            "completion_tokens": s.completion_tokens,
            "finish_reason": s.finish_reason if self.stats is not None else None,
            "error": self.error,
        }

    def line(self, structured: bool) -> str:
        """The plain output line: the answer on one line, compact JSON under a schema, "" for a failed row."""
        if self.answer is None or self.error is not None:
            return ""
        if structured:
            return json.dumps(self.answer.data, ensure_ascii=False)
        return one_line(self.answer.text.rstrip())


def one_line(text: str) -> str:
    r"""Text on one line, reversibly: backslash, newline and carriage return written as \\, \n and \r."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


# -- reading rows ---------------------------------------------------------------------------------


def read_rows(lines: Iterable[str], *, jsonl: bool | None = None) -> Iterator[Row]:
    """Rows from input lines, blank lines skipped. JSON Lines when jsonl, or (None) when the first row is {"prompt": ...}."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if jsonl is None:
            jsonl = _is_json_row(line)
        yield _json_row(line, number) if jsonl else Row(number, number, line.strip())


def nonempty_rows(rows: Iterator[Row], name: str) -> Iterator[Row]:
    """The same rows, after reading up to the first: an input without a single prompt is a UsageError."""
    first = next(rows, None)
    if first is None:
        raise UsageError(f"{name} has no prompts (every line is empty)", "give one prompt per line, or JSON Lines rows {\"prompt\": ...}")
    return itertools.chain([first], rows)


def _is_json_row(line: str) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and "prompt" in value


def _json_row(line: str, number: int) -> Row:
    try:
        value = json.loads(line)
    except ValueError as exc:
        where = f" ({exc.msg} at column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        return Row(number, number, error=f"line {number} is not a JSON row{where}")
    if not isinstance(value, dict):
        return Row(number, number, error=f"line {number} is not a JSON object")
    row_id = value.get("id")
    if row_id is None:
        row_id = number
    elif isinstance(row_id, bool) or not isinstance(row_id, (str, int, float)):
        return Row(number, number, error=f'line {number}: "id" must be a string or a number')
    prompt, system = value.get("prompt"), value.get("system")
    if not isinstance(prompt, str) or not prompt.strip():
        return Row(row_id, number, error='the row has no "prompt" text')
    if system is not None and not isinstance(system, str):
        return Row(row_id, number, error='"system" must be a string')
    return Row(row_id, number, prompt.strip(), system)


# -- answering ------------------------------------------------------------------------------------


def run_rows(engine: Engine, rows: Iterable[Row], sampling: Sampling, *, compose: Callable[[str], str],
             system: str | None = None, spec: JsonSpec | None = None, workers: Sequence[Engine] = ()) -> Iterator[RowResult]:
    """Answer the rows in input order, on `engine` (several rows per decode when it batches) or concurrently on
    `workers` (one thread each); a failed row carries its error and the batch goes on, but an unreachable engine
    stops it (rows before it are all yielded). An engine with warm starts restores the rows' shared prefix from
    disk, or saves it (for the next batch) at the end."""
    if not engine.has_chat_template:  # would fail every row alike: once, up front
        raise NoChatTemplateError(engine.name)
    pending: list[int] | None = None
    if isinstance(engine, WarmStart) and len(workers) <= 1:
        try:
            pending = warm_start(engine, shared_prefix(engine, compose, system, spec))
        except ChatllmError:
            pass  # a template that refuses these messages fails each row alike, with the row's own error

    def one(worker: Engine, row: Row) -> RowResult:
        return answer_row(worker, row, sampling, compose=compose, system=system, spec=spec)

    # A reasoning model's batch would carry its trace in the text and its grammar from the first token: one at a time
    thinking = getattr(engine, "thinks", False) and sampling.think is not False
    batcher = batching(engine) if len(workers) <= 1 and not thinking else None
    if batcher is not None:
        results = batched_rows(batcher, rows, sampling, compose=compose, system=system, spec=spec)
    else:
        results = ordered_map(one, rows, list(workers) or [engine])
    last = None
    for last in results:
        yield last
    # Saved after the last row, not the first: cutting the engine's cache back to the prefix would cost the next row
    # the tokens it shares with the one before. Only when that row's prompt began with the prefix.
    if isinstance(engine, WarmStart) and pending and last is not None and last.row.system is None \
            and last.stats is not None and last.stats.prompt_tokens > len(pending):
        engine.save_prefix(n_tokens=len(pending))


def shared_prefix(engine: Engine, compose: Callable[[str], str], system: str | None, spec: JsonSpec | None) -> list[int]:
    """The prompt tokens every row shares (a row's own system prompt aside), or [] when that is only the chat
    template's header: the batch's instruction, system prompt or schema must put something of its own there."""
    def tokens(text: str, sys_text: str | None) -> list[int]:
        if spec is not None:  # as ask() tells the model about the schema
            sys_text = f"{sys_text}\n\n{spec.instruction()}" if sys_text else spec.instruction()
        messages = ([{"role": "system", "content": sys_text}] if sys_text else []) + [{"role": "user", "content": text}]
        return engine.prompt_tokens(engine.render_chat(messages))

    def common(prompts: list[list[int]]) -> int:
        return len(os.path.commonprefix(prompts)) - 1

    rows = [tokens(compose(p), system) for p in _PROBES]
    shared = rows[0][: max(common(rows), 0)]
    return shared if len(shared) > common([tokens(p, None) for p in _PROBES]) else []


def warm_start(engine: WarmStart, prefix: list[int]) -> list[int] | None:
    """Load the saved state of the batch's shared prefix into the engine; the prefix when it is still to be saved
    (once the rows have evaluated it: a batch without a saved state runs as it did without a cache), else None."""
    if len(prefix) < engine.min_tokens or len(prefix) >= getattr(engine, "n_ctx", 0) - 1:
        return None  # short: cheaper to evaluate than to load; too long: each row fails on its own
    saved = engine.restore_prefix(prefix)
    return None if saved is not None and saved.tokens == prefix else prefix


def answer_row(engine: Engine, row: Row, sampling: Sampling, *, compose: Callable[[str], str],
               system: str | None = None, spec: JsonSpec | None = None) -> RowResult:
    """One row through `ask`: the row's system prompt overrides the shared one; a ChatllmError becomes the row's error."""
    if row.error is not None:
        return RowResult(row, error=row.error)
    before = engine.last_stats
    try:
        answer = ask(engine, compose(row.prompt), sampling, system=row.system if row.system is not None else system, spec=spec)
    except (UsageError, EngineUnavailable):
        raise  # the flags' fault (a schema the grammar cannot take) or a server gone, not the row's: all would fail alike
    except ChatllmError as err:
        # a fresh stats object means the row got as far as generating; otherwise the counts are the last row's
        stats = engine.last_stats if engine.last_stats is not before else None
        return RowResult(row, error=err.message, stats=stats)
    return RowResult(row, answer, stats=answer.stats)


def batched_rows(engine: BatchGeneration, rows: Iterable[Row], sampling: Sampling, *, compose: Callable[[str], str],
                 system: str | None = None, spec: JsonSpec | None = None) -> Iterator[RowResult]:
    """The rows through the engine's own batches (BatchGeneration): the prompts `ask` would give, several answered
    per decode, results in input order, each as soon as it and every row before it are done."""
    seen: list[Row] = []  # every row read, by input position
    running: list[int] = []  # the input position of each prompt handed to the engine, by its batch index
    early: list[tuple[int, RowResult]] = []  # rows that never reach the engine (their own error), with their position
    run_sampling = sampling.replace(json_schema=spec.wire_text) if spec is not None else sampling

    def prompts() -> Iterator[str]:
        for row in rows:
            seen.append(row)
            if row.error is not None:
                early.append((len(seen) - 1, RowResult(row, error=row.error)))
                continue
            try:
                prompt, _ = chat_prompt(engine, compose(row.prompt), sampling,  # type: ignore[arg-type]
                                        system=row.system if row.system is not None else system, spec=spec)
            except UsageError:
                raise
            except ChatllmError as err:  # the template refuses this row's messages: the row's own error
                early.append((len(seen) - 1, RowResult(row, error=err.message)))
                continue
            running.append(len(seen) - 1)
            yield prompt

    def finished() -> Iterator[tuple[int, RowResult]]:
        for item in engine.generate_batch(prompts(), run_sampling):
            yield from early
            early.clear()
            position = running[item.index]
            yield position, _row_result(engine, seen[position], item, spec)
        yield from early

    for _, result in in_input_order(finished(), index=lambda pair: pair[0]):
        yield result


def _row_result(engine: BatchGeneration, row: Row, item: BatchItem, spec: JsonSpec | None) -> RowResult:
    """A finished batch item as the row's result: the answer `ask` would give, or the row's error."""
    if item.error is not None:
        return RowResult(row, error=item.error.message, stats=item.stats if item.stats.completion_tokens else None)
    answer = Answer(getattr(engine, "name", ""), item.text.lstrip(), item.stats)
    try:
        answer = structured(answer, spec)
    except (UsageError, EngineUnavailable):
        raise
    except ChatllmError as err:
        return RowResult(row, error=err.message, stats=item.stats)
    return RowResult(row, answer, stats=item.stats)


# -- resuming -------------------------------------------------------------------------------------


def id_key(value: Any) -> str:
    """A row id as a set key: 3 and "3" stay two ids, as they are two JSON values."""
    return json.dumps(value, ensure_ascii=False)


def finished_ids(path: Path) -> set[str]:
    """The ids (as id_key) of the rows an earlier run wrote to OUT; a last row cut short by a kill is cut from the file."""
    keys: set[str] = set()
    good = 0  # the offset just past the last whole row
    add_newline = False
    try:
        with open(path, "r+b") as fh:
            for number, raw in enumerate(fh, 1):
                complete = raw.endswith(b"\n")
                if not raw.strip():
                    good += len(raw)
                    continue
                try:
                    value = json.loads(raw)
                except ValueError:
                    value = None
                if not isinstance(value, dict) or "id" not in value:
                    if complete:
                        raise UsageError(f"{path} line {number} is not a row of `chatllm ask --lines`",
                                         "resume into the file the batch wrote, or give a new -o file")
                    break  # the row being written when the batch was killed: dropped, so it runs again
                keys.add(id_key(value["id"]))
                good += len(raw)
                add_newline = not complete
            if add_newline:  # a whole row whose newline never made it: keep the row, end its line
                fh.seek(good)
                fh.write(b"\n")
            else:
                fh.truncate(good)
    except OSError as exc:
        raise UsageError(f"cannot resume {path}: {exc.strerror or exc}", "check the file and its permissions")
    return keys
