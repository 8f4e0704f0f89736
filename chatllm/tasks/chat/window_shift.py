"""Where a shorter window is the old one with a span cut out: the plan a ContextShift engine carries out in place;
and the system prompt's cache kept across a compaction, whose summarizer evaluates prompts of its own.

The tokens the KV cache holds for a conversation and the tokens of its window once the oldest exchanges have left
share a head (the system prompt) and a tail (the exchanges still in view). When the new tokens are exactly the old
ones with one span between those cut out, the engine removes that span and shifts the tail back: no token is
evaluated again. Anything else (a template that renders the first message differently, a changed system prompt) is
no such plan, and the window is evaluated again.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from chatllm.engines.contract import StateSnapshots


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shift_plan(old: Sequence[int], new: Sequence[int]) -> tuple[int, int] | None:
    """(start, end) such that new == old[:start] + old[end:], with something cut; None when new is not that."""
    start = common_prefix(old, new)
    end = len(old) - (len(new) - start)
    if end <= start or list(old[end:]) != list(new[start:]):
        return None
    return start, end


@contextmanager
def kept_prefix(engine: object, n_tokens: int) -> Iterator[None]:
    """Whatever the block evaluates on the engine, its KV cache holds its first n_tokens again afterwards (a state
    snapshot of those only, taken and put back: what a compaction does for the system prompt)."""
    snapshots = engine if n_tokens > 0 and isinstance(engine, StateSnapshots) else None
    state = snapshots.save_state(n_tokens) if snapshots is not None else None
    try:
        yield
    finally:
        if snapshots is not None and state is not None:
            snapshots.load_state(*state)
