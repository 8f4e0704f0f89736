"""Sentence vectors and nearest neighbours, written against the engine contract: embed texts, store them, search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from chatllm.engines.contract import Engine, as_embedder
from chatllm.errors import UsageError

if TYPE_CHECKING:
    from chatllm.storage.collections import CollectionStore

BATCH = 64  # texts per engine.embed call: bounds memory on a long --lines input, and paces the progress line


def _vectors(engine: Engine, texts: Sequence[str]) -> list[list[float]]:
    """The engine's vectors of the texts (its Embedder capability, a one-line error without it)."""
    return as_embedder(engine, "sentence vectors").embed(texts)


def embed_texts(engine: Engine, texts: Sequence[str], batch: int = BATCH) -> list[list[float]]:
    """L2-normalised vectors of the texts, in order, a batch of texts per engine call (the hybrid-retrieval entry point)."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch):
        vectors.extend(_vectors(engine, texts[start:start + batch]))
    if len(vectors) != len(texts):
        raise RuntimeError(f"the engine gave {len(vectors)} vectors for {len(texts)} texts")
    return vectors


@dataclass
class Embedded:
    """One input text and its vector; id is its 1-based line number in the input (1 for a single text)."""

    id: int
    text: str
    embedding: list[float]

    def to_json(self) -> dict:
        """The JSON Lines record: {"id", "text", "embedding"}."""
        return {"id": self.id, "text": self.text, "embedding": self.embedding}


def too_long(engine: Engine, text: str) -> bool:
    """True when the text is past the model's window (it will be cut; a BERT model adds [CLS] and [SEP])."""
    return engine.count_tokens(text) + 2 > engine.n_ctx


def embed_stream(engine: Engine, items: Iterable[tuple[int, str]], batch: int = BATCH,
                 on_long: Callable[[int], None] | None = None) -> Iterator[Embedded]:
    """(id, text) items embedded in input order, a batch at a time (bounded memory for any input length)."""
    pending: list[tuple[int, str]] = []
    for item in items:
        pending.append(item)
        if len(pending) == batch:
            yield from _flush(engine, pending, on_long)
            pending = []
    if pending:
        yield from _flush(engine, pending, on_long)


def _flush(engine: Engine, items: list[tuple[int, str]], on_long: Callable[[int], None] | None) -> Iterator[Embedded]:
    if on_long is not None:
        for item_id, text in items:
            if too_long(engine, text):
                on_long(item_id)
    for (item_id, text), vector in zip(items, _vectors(engine, [text for _, text in items])):
        yield Embedded(item_id, text, vector)


def store_stream(engine: Engine, store: "CollectionStore", name: str, items: Iterable[Embedded],
                 batch: int = BATCH) -> tuple[int, int]:
    """Save embedded items in a collection, a batch per transaction; (added, already there)."""
    added = skipped = 0
    pending: list[Embedded] = []

    def flush() -> None:
        nonlocal added, skipped
        a, s = store.add(name, engine.name, [e.text for e in pending], [e.embedding for e in pending])
        added, skipped = added + a, skipped + s
        pending.clear()

    for item in items:
        if not pending:
            # refuse a model or dimension mismatch before embedding everything
            store.check_compatible(name, engine.name, len(item.embedding))
        pending.append(item)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return added, skipped


@dataclass
class Match:
    """One nearest item: its id in the collection, its text, and its cosine similarity to the query."""

    id: int
    text: str
    score: float

    def to_json(self) -> dict:
        """JSON-ready form."""
        return {"id": self.id, "text": self.text, "score": round(self.score, 6)}


def nearest(query_vector: Sequence[float], ids: Sequence[int], texts: Sequence[str], matrix, top: int) -> list[Match]:
    """The top items by cosine similarity (vectors are unit length, so a dot product), best first."""
    import numpy as np

    if top < 1:
        raise UsageError(f"--top must be 1 or more, not {top}", "for example --top 5")
    if not len(ids):
        return []
    query = np.asarray(query_vector, dtype=np.float32)
    if query.shape != (matrix.shape[1],):
        raise UsageError(f"the query vector has {query.shape[0]} dimensions, the collection {matrix.shape[1]}",
                         "search with the collection's own model")
    scores = matrix @ query
    k = min(top, len(ids))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.lexsort((best, -scores[best]))]  # by score, ties by insertion order
    return [Match(int(ids[i]), texts[i], float(scores[i])) for i in best]


def similar(engine: Engine, store: "CollectionStore", name: str, query: str, top: int = 10) -> list[Match]:
    """The items of a collection nearest to the query text, embedded with the collection's model."""
    found, ids, texts, matrix = store.vectors(name)
    if found.model != engine.name:
        raise UsageError(f"collection {name!r} holds vectors of {found.model}, not {engine.name}",
                         f"search with -m {found.model} (or leave -m out)")
    return nearest(_vectors(engine, [query])[0], ids, texts, matrix, top)
