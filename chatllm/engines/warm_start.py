"""Warm starts below the tasks: an engine with state snapshots, wrapped with the KV cache on disk when it is loaded.

The wrapper is the engine (every attribute and capability passes through) plus the WarmStart capability: a task
asks `restore_prefix(tokens)` before its first prompt and `save_prefix(...)` once a state is worth keeping, and
never sees the cache files. Saves are copied out of the engine at once and written in a background thread;
close() waits for the last one, so a process that ends normally never loses the state it saved.
"""

from __future__ import annotations

from typing import Any, Sequence

from chatllm.engines.contract import SavedPrefix, StateSnapshots
from chatllm.storage.kv_cache import MIN_TOKENS, KVCache


class WarmStartEngine:
    """An engine (any capability it has passes through) that restores and saves its KV state through a KVCache."""

    def __init__(self, engine: StateSnapshots, cache: KVCache):
        self.__dict__["_engine"] = engine  # through __dict__: __setattr__ below forwards to the engine
        self.__dict__["_cache"] = cache

    min_tokens = MIN_TOKENS

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._engine, name, value)

    @property
    def wrapped(self) -> StateSnapshots:
        """The engine itself."""
        return self._engine

    def restore_prefix(self, tokens: Sequence[int]) -> SavedPrefix | None:
        """Load the saved state sharing the longest prefix with `tokens`; None when no saved state shares enough."""
        entry = self._cache.restore(self._engine, tokens)
        return SavedPrefix(list(entry.tokens), dict(entry.extra)) if entry is not None else None

    def save_prefix(self, *, n_tokens: int | None = None, slot: str | None = None, extra: dict | None = None) -> bool:
        """Save the state's first n_tokens in the background; a slot replaces that slot's older state."""
        return self._cache.save(self._engine, slot=slot, n_tokens=n_tokens, extra=extra, background=True)

    def close(self) -> None:
        """Wait for a save in flight, then close the engine."""
        try:
            self._cache.flush()
        finally:
            self._engine.close()


def with_warm_start(engine: Any, cache: KVCache | None) -> Any:
    """The engine wrapped with the cache when both exist and its state can be snapshotted, else the engine itself."""
    if cache is None or not isinstance(engine, StateSnapshots) or engine.state_key() is None:
        return engine
    return WarmStartEngine(engine, cache)
