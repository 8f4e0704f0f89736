"""The SQLite conversation store: stdlib sqlite3, WAL, schema migrations by PRAGMA user_version."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager, Iterable, Sequence

from chatllm.errors import ChatllmError, UsageError
from chatllm.storage.sqlite_store import Step, StoreFile, immediate_transaction, open_store, user_version

BUSY_SECONDS = 10.0
# Each entry moves the schema from version i to i + 1; never edit a released entry, append a new one. They run in
# one write-locked transaction with the version bump (storage/sqlite_store.py); write them so a rerun is harmless.
MIGRATIONS: tuple[Step, ...] = (
    """
    CREATE TABLE IF NOT EXISTS conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        system TEXT
    );
    CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (updated_at);
    CREATE TABLE IF NOT EXISTS exchanges (
        conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        user TEXT NOT NULL,
        assistant TEXT NOT NULL,
        interrupted INTEGER NOT NULL DEFAULT 0,
        model TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        first_token_seconds REAL,
        seconds REAL,
        PRIMARY KEY (conversation_id, seq)
    );
    """,
    # 2: a reasoning model's trace, kept apart from the answer (never sent back), and the tool calls of the turn
    lambda db: _add_columns(db, "exchanges", {"reasoning": "TEXT NOT NULL DEFAULT ''", "tool_steps": "TEXT"}),
)


def _add_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """ALTER TABLE ... ADD COLUMN for each column the table lacks (so the step is harmless to run again)."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


@dataclass
class Exchange:
    """One user message and the reply to it."""

    user: str
    assistant: str
    interrupted: bool = False
    model: str = ""
    created_at: float = field(default_factory=time.time)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token_seconds: float | None = None
    seconds: float | None = None
    reasoning: str = ""  # a reasoning model's trace: shown, stored, never sent back to the model
    tool_steps: list[dict] = field(default_factory=list)  # the calls made before the answer, with their results


@dataclass
class StoredConversation:
    """A conversation as saved: its row and its exchanges in order."""

    id: int
    model: str
    system: str | None
    created_at: float
    updated_at: float
    exchanges: list[Exchange]


@dataclass
class Summary:
    """One line of `chatllm history`."""

    id: int
    model: str
    title: str
    turns: int
    created_at: float
    updated_at: float

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "id": self.id,
            "model": self.model,
            "title": self.title,
            "turns": self.turns,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _steps(text: str | None) -> list[dict]:
    """The stored tool steps of an exchange (none, or unreadable: none)."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def first_line(text: str, width: int = 60) -> str:
    """The first non-empty line of text, cut to width characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


class Store:
    """Conversations in one SQLite file; every write is its own committed transaction."""

    def __init__(self, path: Path | str, migrations: Sequence[Step] = MIGRATIONS, *, busy_seconds: float = BUSY_SECONDS):
        self.path = Path(path)
        self._file = StoreFile(self.path, "the conversation store",
                               f"move {self.path} aside to start a fresh history (chatllm will create a new one)",
                               busy_seconds)
        self._db = open_store(self._file, migrations, foreign_keys=True)

    def _error(self, exc: Exception) -> ChatllmError:
        return self._file.error(exc)

    @property
    def schema_version(self) -> int:
        """The PRAGMA user_version of the file."""
        return user_version(self._db)

    def _transaction(self) -> ContextManager[sqlite3.Connection]:
        return immediate_transaction(self._db, self._error)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- writes -------------------------------------------------------------------------------------

    def create(self, model: str, system: str | None, exchanges: Iterable[Exchange] = ()) -> int:
        """A new conversation (with any exchanges it already has); returns its id."""
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO conversations (created_at, updated_at, model, system) VALUES (?, ?, ?, ?)",
                (now, now, model, system),
            )
            conv_id = cur.lastrowid
            assert conv_id is not None  # an INSERT always sets it
            for seq, ex in enumerate(exchanges):
                self._put(db, conv_id, seq, ex)
        return conv_id

    def put_exchange(self, conv_id: int, seq: int, exchange: Exchange, model: str | None = None) -> None:
        """Store the exchange at position seq (replacing one there) and drop any after it, in one commit."""
        with self._transaction() as db:
            db.execute("DELETE FROM exchanges WHERE conversation_id = ? AND seq >= ?", (conv_id, seq))
            self._put(db, conv_id, seq, exchange)
            self._touch(db, conv_id, model=model)

    def delete_from(self, conv_id: int, seq: int) -> None:
        """Drop the exchanges at position seq and after (for /undo)."""
        with self._transaction() as db:
            db.execute("DELETE FROM exchanges WHERE conversation_id = ? AND seq >= ?", (conv_id, seq))
            self._touch(db, conv_id)

    def set_system(self, conv_id: int, system: str | None) -> None:
        """Change a conversation's system prompt."""
        with self._transaction() as db:
            db.execute("UPDATE conversations SET system = ? WHERE id = ?", (system, conv_id))
            self._touch(db, conv_id)

    def delete(self, conv_id: int) -> None:
        """Delete a conversation and its exchanges."""
        with self._transaction() as db:
            if db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,)).rowcount == 0:
                raise _not_found(conv_id)

    @staticmethod
    def _put(db: sqlite3.Connection, conv_id: int, seq: int, ex: Exchange) -> None:
        db.execute(
            "INSERT INTO exchanges (conversation_id, seq, user, assistant, interrupted, model, created_at, prompt_tokens,"
            " completion_tokens, first_token_seconds, seconds, reasoning, tool_steps)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conv_id, seq, ex.user, ex.assistant, int(ex.interrupted), ex.model, ex.created_at, ex.prompt_tokens,
             ex.completion_tokens, ex.first_token_seconds, ex.seconds, ex.reasoning or "",
             json.dumps(ex.tool_steps, ensure_ascii=False) if ex.tool_steps else None),
        )

    @staticmethod
    def _touch(db: sqlite3.Connection, conv_id: int, model: str | None = None) -> None:
        if model:
            db.execute("UPDATE conversations SET updated_at = ?, model = ? WHERE id = ?", (time.time(), model, conv_id))
        else:
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (time.time(), conv_id))

    # -- reads --------------------------------------------------------------------------------------

    def latest_id(self) -> int | None:
        """The most recently used conversation that has at least one exchange."""
        row = self._query(
            "SELECT c.id FROM conversations c WHERE EXISTS (SELECT 1 FROM exchanges e WHERE e.conversation_id = c.id)"
            " ORDER BY c.updated_at DESC, c.id DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def load(self, conv_id: int) -> StoredConversation:
        """One conversation with its exchanges; UsageError when there is no such id."""
        row = self._query("SELECT id, model, system, created_at, updated_at FROM conversations WHERE id = ?",
                          (conv_id,)).fetchone()
        if row is None:
            raise _not_found(conv_id)
        rows = self._query(
            "SELECT user, assistant, interrupted, model, created_at, prompt_tokens, completion_tokens,"
            " first_token_seconds, seconds, reasoning, tool_steps FROM exchanges WHERE conversation_id = ? ORDER BY seq",
            (conv_id,),
        ).fetchall()
        exchanges = [Exchange(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9] or "",
                              _steps(r[10])) for r in rows]
        return StoredConversation(row[0], row[1], row[2], row[3], row[4], exchanges)

    def list(self, limit: int | None = None) -> list[Summary]:
        """Conversations with at least one exchange, most recent first."""
        sql = (
            "SELECT c.id, c.model, c.created_at, c.updated_at, COUNT(e.seq),"
            " (SELECT user FROM exchanges f WHERE f.conversation_id = c.id ORDER BY f.seq LIMIT 1)"
            " FROM conversations c JOIN exchanges e ON e.conversation_id = c.id"
            " GROUP BY c.id ORDER BY c.updated_at DESC, c.id DESC"
        )
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [Summary(r[0], r[1], first_line(r[5] or ""), r[4], r[2], r[3]) for r in self._query(sql, params)]

    def _query(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None


def _not_found(conv_id: int) -> UsageError:
    return UsageError(f"no conversation with id {conv_id}", "`chatllm history` lists the saved conversations")
