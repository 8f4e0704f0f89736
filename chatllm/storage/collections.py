"""Embedding collections in SQLite: named sets of texts with their vectors (float32 blobs), one model and dimension each."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Sequence

from chatllm.errors import ChatllmError, UsageError
from chatllm.storage.sqlite_store import Step, StoreFile, immediate_transaction, open_store

BUSY_SECONDS = 30.0
# Step i moves the file from user_version i to i + 1 (storage/sqlite_store.py); append, never edit a released one.
MIGRATIONS: tuple[Step, ...] = ("""
CREATE TABLE IF NOT EXISTS collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    dimension INTEGER NOT NULL CHECK (dimension > 0),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id INTEGER NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    embedding BLOB NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (collection_id, text_sha256)
);
""",)


@dataclass
class Collection:
    """One collection's row: its name, the model and dimension of its vectors, how many items it holds."""

    name: str
    model: str
    dimension: int
    count: int
    created_at: float
    updated_at: float

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"name": self.name, "model": self.model, "dimension": self.dimension, "items": self.count,
                "created_at": self.created_at, "updated_at": self.updated_at}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CollectionStore:
    """Every collection in one SQLite file (WAL: readers in several processes at once, one writer at a time)."""

    def __init__(self, path: Path | str, *, busy_seconds: float = BUSY_SECONDS):
        self.path = Path(path)
        self._file = StoreFile(self.path, "the collections file",
                               f"move {self.path} aside (chatllm starts a new one) and embed the texts again", busy_seconds)
        self._db = open_store(self._file, MIGRATIONS, foreign_keys=True)

    def _error(self, exc: Exception) -> ChatllmError:
        return self._file.error(exc)

    def _transaction(self) -> ContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db, self._error)

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- collections ----------------------------------------------------------------------------

    def collections(self) -> list[Collection]:
        """Every collection, by name."""
        rows = self._query("SELECT c.name, c.model, c.dimension, (SELECT COUNT(*) FROM items i WHERE i.collection_id = c.id),"
                           " c.created_at, c.updated_at FROM collections c ORDER BY c.name")
        return [Collection(*row) for row in rows]

    def get(self, name: str) -> Collection | None:
        """One collection, or None."""
        return next((c for c in self.collections() if c.name == name), None)

    def require(self, name: str) -> Collection:
        """One collection; a UsageError naming the ones there are when it does not exist."""
        found = self.get(name)
        if found is None:
            names = ", ".join(c.name for c in self.collections())
            raise UsageError(f"no collection named {name!r}",
                             f"collections: {names}" if names else "create one with `chatllm embed --store NAME -m MODEL`")
        return found

    def check_compatible(self, name: str, model: str, dimension: int) -> None:
        """Refuse vectors of another model or dimension than the collection's (no-op for a new collection)."""
        found = self.get(name)
        if found is None:
            return
        if found.model != model:
            raise UsageError(f"collection {name!r} holds vectors of {found.model}, not {model}",
                             f"use -m {found.model}, or store into another collection")
        if found.dimension != dimension:
            raise UsageError(f"collection {name!r} holds {found.dimension}-dimensional vectors, not {dimension}",
                             "store into another collection")

    def remove(self, name: str) -> None:
        """Delete a collection and its items."""
        self.require(name)
        with self._transaction() as db:
            db.execute("DELETE FROM collections WHERE name = ?", (name,))

    # -- items ----------------------------------------------------------------------------------

    def add(self, name: str, model: str, texts: Sequence[str], vectors: Sequence[Sequence[float]]) -> tuple[int, int]:
        """Store texts with their vectors (creating the collection); a text already there is kept. (added, skipped)."""
        import numpy as np

        if not texts:
            return 0, 0
        matrix = np.asarray(vectors, dtype="<f4")
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise ValueError(f"{len(texts)} texts but vectors of shape {matrix.shape}")
        dimension = int(matrix.shape[1])
        now = time.time()
        with self._transaction() as db:
            # Checked inside the write transaction: another process may have created the collection meanwhile.
            self.check_compatible(name, model, dimension)
            db.execute("INSERT OR IGNORE INTO collections (name, model, dimension, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                       (name, model, dimension, now, now))
            coll_id = db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0]
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO items (collection_id, text, text_sha256, embedding, created_at) VALUES (?, ?, ?, ?, ?)",
                           [(coll_id, text, _sha(text), row.tobytes(), now) for text, row in zip(texts, matrix)])
            added = db.total_changes - before
            db.execute("UPDATE collections SET updated_at = ? WHERE id = ?", (now, coll_id))
        return added, len(texts) - added

    def vectors(self, name: str) -> tuple[Collection, list[int], list[str], Any]:
        """A collection, its item ids and texts, and its vectors as one float32 matrix (rows in id order)."""
        import numpy as np

        found = self.require(name)
        rows = self._query("SELECT i.id, i.text, i.embedding FROM items i JOIN collections c ON c.id = i.collection_id"
                           " WHERE c.name = ? ORDER BY i.id", (name,))
        matrix = np.empty((len(rows), found.dimension), dtype=np.float32)
        for n, (item_id, _, blob) in enumerate(rows):
            if not isinstance(blob, bytes) or len(blob) != 4 * found.dimension:
                raise ChatllmError(f"collection {name!r} is corrupt: item {item_id} has a {len(blob or b'')}-byte vector, "
                                   f"not {4 * found.dimension}", f"`chatllm collections rm {name}` and embed the texts again")
            matrix[n] = np.frombuffer(blob, dtype="<f4")
        return found, [r[0] for r in rows], [r[1] for r in rows], matrix
