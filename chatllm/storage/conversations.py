"""The SQLite conversation store: stdlib sqlite3, WAL, schema migrations by PRAGMA user_version."""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Sequence, TypeVar

from chatllm.errors import ChatllmError, UsageError
from chatllm.storage.sqlite_store import Step, StoreFile, immediate_transaction, open_store, statements, user_version

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
    # 3: branches (a conversation forked from another at a turn) and the running summary of compacted exchanges
    lambda db: _branches_and_summaries(db),
    # 4: full-text search over every message. Trigram: substrings in any script (Chinese has no spaces); its row id is
    # conversation_id * 2^20 + seq, which VACUUM cannot renumber (the exchanges' own rowid it can).
    lambda db: _message_search(db),
)
# The message search index (migration 4): the table and its fill from the saved messages, and the triggers that keep it.
FTS_TABLE = """
    CREATE VIRTUAL TABLE messages_fts USING fts5(user, assistant, tokenize = 'trigram');
    INSERT INTO messages_fts (rowid, user, assistant)
    SELECT conversation_id * 1048576 + seq, user, assistant FROM exchanges;
"""
FTS_TRIGGERS = """
    CREATE TRIGGER IF NOT EXISTS exchanges_fts_insert AFTER INSERT ON exchanges BEGIN
        INSERT INTO messages_fts (rowid, user, assistant)
        VALUES (new.conversation_id * 1048576 + new.seq, new.user, new.assistant);
    END;
    CREATE TRIGGER IF NOT EXISTS exchanges_fts_delete AFTER DELETE ON exchanges BEGIN
        DELETE FROM messages_fts WHERE rowid = old.conversation_id * 1048576 + old.seq;
    END;
    CREATE TRIGGER IF NOT EXISTS exchanges_fts_update AFTER UPDATE ON exchanges BEGIN
        DELETE FROM messages_fts WHERE rowid = old.conversation_id * 1048576 + old.seq;
        INSERT INTO messages_fts (rowid, user, assistant)
        VALUES (new.conversation_id * 1048576 + new.seq, new.user, new.assistant);
    END;
"""
# How a damaged search index is made again from the messages. A table whose own parts are gone cannot even be
# dropped: its schema row is removed by hand, then its parts.
FTS_REBUILD = """
    PRAGMA writable_schema = ON;
    DELETE FROM sqlite_master WHERE type = 'table' AND name = 'messages_fts';
    PRAGMA writable_schema = RESET;
    DROP TABLE IF EXISTS messages_fts_data;
    DROP TABLE IF EXISTS messages_fts_idx;
    DROP TABLE IF EXISTS messages_fts_content;
    DROP TABLE IF EXISTS messages_fts_docsize;
    DROP TABLE IF EXISTS messages_fts_config;
""" + FTS_TABLE
FTS_ROW = 1048576  # messages_fts rowid = conversation_id * FTS_ROW + seq


def _add_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """ALTER TABLE ... ADD COLUMN for each column the table lacks (so the step is harmless to run again)."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _branches_and_summaries(db: sqlite3.Connection) -> None:
    """Migration 3: a conversation's parent and fork turn, and the table of running summaries."""
    _add_columns(db, "conversations", {"parent_id": "INTEGER REFERENCES conversations (id) ON DELETE SET NULL",
                                       "fork_seq": "INTEGER"})
    db.execute("CREATE INDEX IF NOT EXISTS conversations_parent ON conversations (parent_id)")
    db.execute("""
        CREATE TABLE IF NOT EXISTS summaries (
            conversation_id INTEGER PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
            text TEXT NOT NULL,
            upto INTEGER NOT NULL,
            window_start INTEGER NOT NULL,
            compactions INTEGER NOT NULL DEFAULT 0,
            facts TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL
        )""")


def _message_search(db: sqlite3.Connection) -> None:
    """Migration 4: the trigram index of every message, kept by triggers, filled from the messages already saved."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'").fetchone():
        return
    for statement in statements(FTS_TABLE + FTS_TRIGGERS):
        db.execute(statement)


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
class StoredSummary:
    """A conversation's running summary of its compacted exchanges, and where the model's view starts."""

    text: str  # empty: the oldest exchanges were only trimmed, never summarized
    upto: int  # the summary covers exchanges [0, upto)
    window_start: int  # the first exchange the model still sees whole
    compactions: int = 0
    facts: list[str] = field(default_factory=list)  # the user's statements kept word for word beside the summary
    model: str = ""


@dataclass
class StoredConversation:
    """A conversation as saved: its row and its exchanges in order (and its summary, its parent when a branch)."""

    id: int
    model: str
    system: str | None
    created_at: float
    updated_at: float
    exchanges: list[Exchange]
    summary: StoredSummary | None = None
    parent_id: int | None = None
    fork_seq: int | None = None  # a branch: the parent's first fork_seq exchanges were copied, then it went its way


@dataclass
class Summary:
    """One line of `chatllm history`."""

    id: int
    model: str
    title: str
    turns: int
    created_at: float
    updated_at: float
    parent_id: int | None = None
    fork_seq: int | None = None

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "id": self.id,
            "model": self.model,
            "title": self.title,
            "turns": self.turns,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "parent_id": self.parent_id,
            "fork_turn": self.fork_seq,
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
@dataclass
class SearchHit:
    """One message that holds every searched term: where it is, and a snippet with the matches marked."""

    conversation_id: int
    turn: int  # 1-based
    role: str  # "user" or "assistant"
    snippet: str  # the matches between HIGHLIGHT marks
    created_at: float
    model: str

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"conversation_id": self.conversation_id, "turn": self.turn, "role": self.role, "snippet": self.snippet,
                "created_at": _iso(self.created_at), "model": self.model}


HIGHLIGHT = ("«", "»")  # around each match in a search snippet
SNIPPET_CHARS = 120
T = TypeVar("T")


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
        self.repairs: list[str] = []  # what was found damaged and mended (the search index), for the caller to say
        self._file = StoreFile(self.path, "the conversation store",
                               f"move {self.path} aside to start a fresh history (chatllm will create a new one)",
                               busy_seconds)
        self._db = open_store(self._file, migrations, foreign_keys=True)
        # the schema has branches and summaries (a store opened on older migrations has not)
        self._branches = any(r[1] == "parent_id" for r in self._db.execute("PRAGMA table_info(conversations)"))

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

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """work(db) in one transaction; a damaged search index (its triggers fail the write) is rebuilt, then retried."""
        try:
            with self._transaction() as db:
                return work(db)
        except ChatllmError:
            if not self._search_index_damaged():
                raise
        self.rebuild_search_index()
        with self._transaction() as db:
            return work(db)

    def create(self, model: str, system: str | None, exchanges: Iterable[Exchange] = (), *,
               parent_id: int | None = None, fork_seq: int | None = None, summary: StoredSummary | None = None) -> int:
        """A new conversation (with any exchanges it already has, a branch's parent and summary); returns its id."""
        now = time.time()
        exchanges = list(exchanges)

        def work(db: sqlite3.Connection) -> int:
            if self._branches:
                cur = db.execute("INSERT INTO conversations (created_at, updated_at, model, system, parent_id, fork_seq)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", (now, now, model, system, parent_id, fork_seq))
            else:
                cur = db.execute("INSERT INTO conversations (created_at, updated_at, model, system) VALUES (?, ?, ?, ?)",
                                 (now, now, model, system))
            conv_id = cur.lastrowid
            assert conv_id is not None  # an INSERT always sets it
            for seq, ex in enumerate(exchanges):
                self._put(db, conv_id, seq, ex)
            if summary is not None:
                self._put_summary(db, conv_id, summary)
            return conv_id

        return self._write(work)

    def put_exchange(self, conv_id: int, seq: int, exchange: Exchange, model: str | None = None) -> None:
        """Store the exchange at position seq (replacing one there) and drop any after it, in one commit."""

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM exchanges WHERE conversation_id = ? AND seq >= ?", (conv_id, seq))
            self._put(db, conv_id, seq, exchange)
            self._touch(db, conv_id, model=model)

        self._write(work)

    def put_exchange_checked(self, conv_id: int, seq: int, exchange: Exchange, *, replaces: Exchange | None = None,
                             model: str | None = None) -> bool:
        """put_exchange, only if the conversation still ends where the caller thinks: nothing at seq and after, or only
        `replaces` (a /retry). False, and nothing written, when another process has added exchanges meanwhile."""

        def work(db: sqlite3.Connection) -> bool:
            rows = db.execute("SELECT created_at, user FROM exchanges WHERE conversation_id = ? AND seq >= ? ORDER BY seq",
                              (conv_id, seq)).fetchall()
            if rows and (replaces is None or rows != [(replaces.created_at, replaces.user)]):
                return False
            db.execute("DELETE FROM exchanges WHERE conversation_id = ? AND seq >= ?", (conv_id, seq))
            self._put(db, conv_id, seq, exchange)
            self._touch(db, conv_id, model=model)
            return True

        return self._write(work)

    def delete_from(self, conv_id: int, seq: int) -> None:
        """Drop the exchanges at position seq and after (for /undo)."""

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM exchanges WHERE conversation_id = ? AND seq >= ?", (conv_id, seq))
            self._touch(db, conv_id)

        self._write(work)

    def set_system(self, conv_id: int, system: str | None) -> None:
        """Change a conversation's system prompt."""
        with self._transaction() as db:
            db.execute("UPDATE conversations SET system = ? WHERE id = ?", (system, conv_id))
            self._touch(db, conv_id)

    def set_summary(self, conv_id: int, summary: StoredSummary | None) -> None:
        """Keep (or with None drop) the conversation's running summary and where the model's view starts."""
        with self._transaction() as db:
            if summary is None:
                db.execute("DELETE FROM summaries WHERE conversation_id = ?", (conv_id,))
            else:
                self._put_summary(db, conv_id, summary)

    def delete(self, conv_id: int) -> None:
        """Delete a conversation and its exchanges (its branches stay, without a parent)."""

        def work(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM conversations WHERE id = ?", (conv_id,)).rowcount == 0:
                raise _not_found(conv_id)

        self._write(work)

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
    def _put_summary(db: sqlite3.Connection, conv_id: int, s: StoredSummary) -> None:
        db.execute(
            "INSERT OR REPLACE INTO summaries (conversation_id, text, upto, window_start, compactions, facts, model,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (conv_id, s.text, s.upto, s.window_start, s.compactions, "\n".join(s.facts), s.model, time.time()),
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
        branch = "parent_id, fork_seq" if self._branches else "NULL, NULL"
        row = self._query(f"SELECT id, model, system, created_at, updated_at, {branch} FROM conversations WHERE id = ?",
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
        srow = self._query("SELECT text, upto, window_start, compactions, facts, model FROM summaries"
                           " WHERE conversation_id = ?", (conv_id,)).fetchone() if self._branches else None
        summary = None
        if srow is not None:
            summary = StoredSummary(srow[0], srow[1], srow[2], srow[3], [f for f in srow[4].split("\n") if f], srow[5])
        return StoredConversation(row[0], row[1], row[2], row[3], row[4], exchanges, summary, row[5], row[6])

    def list(self, limit: int | None = None) -> list[Summary]:
        """Conversations with at least one exchange, most recent first."""
        branch = "c.parent_id, c.fork_seq" if self._branches else "NULL, NULL"
        sql = (
            "SELECT c.id, c.model, c.created_at, c.updated_at, COUNT(e.seq),"
            f" (SELECT user FROM exchanges f WHERE f.conversation_id = c.id ORDER BY f.seq LIMIT 1), {branch}"
            " FROM conversations c JOIN exchanges e ON e.conversation_id = c.id"
            " GROUP BY c.id ORDER BY c.updated_at DESC, c.id DESC"
        )
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [Summary(r[0], r[1], first_line(r[5] or ""), r[4], r[2], r[3], r[6], r[7]) for r in self._query(sql, params)]

    def tree(self, conv_id: int) -> builtins.list[Summary]:
        """Every conversation in the branch tree holding conv_id, its root first, then depth-first by fork turn."""
        self.load(conv_id)  # a wrong id is the usual error
        root = conv_id
        seen = {root}
        while True:
            row = self._query("SELECT parent_id FROM conversations WHERE id = ?", (root,)).fetchone()
            if row is None or row[0] is None or row[0] in seen:
                break
            root = row[0]
            seen.add(root)
        rows = self._query(
            "WITH RECURSIVE t(id) AS (SELECT ? UNION SELECT c.id FROM conversations c JOIN t ON c.parent_id = t.id)"
            " SELECT c.id, c.model, c.created_at, c.updated_at,"
            " (SELECT COUNT(*) FROM exchanges e WHERE e.conversation_id = c.id),"
            " (SELECT user FROM exchanges f WHERE f.conversation_id = c.id ORDER BY f.seq LIMIT 1), c.parent_id, c.fork_seq"
            " FROM conversations c JOIN t ON c.id = t.id",
            (root,),
        ).fetchall()
        nodes = {r[0]: Summary(r[0], r[1], first_line(r[5] or ""), r[4], r[2], r[3], r[6], r[7]) for r in rows}
        children: dict[int | None, list[Summary]] = {}
        for node in nodes.values():
            parent = node.parent_id if node.id != root else None
            children.setdefault(parent, []).append(node)
        ordered: list[Summary] = []

        def walk(node: Summary) -> None:
            ordered.append(node)
            for child in sorted(children.get(node.id, []), key=lambda n: (n.fork_seq or 0, n.id)):
                walk(child)

        walk(nodes[root])
        return ordered

    def search(self, text: str, limit: int = 20) -> builtins.list[SearchHit]:
        """Messages holding every term of text (case-insensitive substrings), newest first; a damaged index is rebuilt."""
        terms = list(dict.fromkeys(t.casefold() for t in text.split()))
        if not terms:
            raise UsageError("nothing to search for", "give a word or a few, e.g. `chatllm history search Lyon`")
        try:
            return self._search(terms, limit)
        except ChatllmError:
            if not self._search_index_damaged():
                raise
        self.rebuild_search_index()
        return self._search(terms, limit)

    def _search(self, terms: Sequence[str], limit: int) -> builtins.list[SearchHit]:
        long_terms = [t for t in terms if len(t) >= 3]  # the trigram index finds these; shorter ones are scanned
        short = [t for t in terms if len(t) < 3]
        where, params = [], []
        if long_terms:
            where.append(f"(e.conversation_id * {FTS_ROW} + e.seq) IN (SELECT rowid FROM messages_fts WHERE messages_fts"
                         " MATCH ?)")
            params.append(" AND ".join('"' + t.replace('"', '""') + '"' for t in long_terms))
        for t in short:
            like = "%" + t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(e.user LIKE ? ESCAPE '\\' OR e.assistant LIKE ? ESCAPE '\\')")
            params += [like, like]
        # A branch's copy of its parent's exchanges is left out while the parent is there to show them.
        sql = ("SELECT e.conversation_id, e.seq, e.user, e.assistant, e.created_at, e.model FROM exchanges e"
               " JOIN conversations c ON c.id = e.conversation_id"
               " WHERE NOT (c.parent_id IS NOT NULL AND e.seq < COALESCE(c.fork_seq, 0)) AND " + " AND ".join(where) +
               " ORDER BY e.created_at DESC, e.conversation_id DESC, e.seq DESC")
        hits: list[SearchHit] = []
        for conv_id, seq, user, assistant, created, model in self._query(sql, tuple(params)):
            for role, body in (("assistant", assistant), ("user", user)):
                folded = body.casefold()
                if all(t in folded for t in terms):
                    hits.append(SearchHit(conv_id, seq + 1, role, snippet(body, terms), created, model))
            if len(hits) >= limit:
                break
        return hits[:limit]

    def _search_index_damaged(self) -> bool:
        """True when the message search index fails its own integrity check (or cannot be read at all)."""
        try:
            self._db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
            return False
        except sqlite3.DatabaseError as exc:
            return "locked" not in str(exc) and "busy" not in str(exc)

    def rebuild_search_index(self) -> None:
        """Make the message search index again from the messages themselves."""
        self.repairs.append("the message search index was damaged; rebuilt it from the saved messages")
        try:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{FTS_REBUILD}\nCOMMIT;")
        except sqlite3.DatabaseError as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise self._error(exc) from None

    def _query(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None


def snippet(text: str, terms: Sequence[str], width: int = SNIPPET_CHARS) -> str:
    """The part of text around its first match, on one line, every match of a term between HIGHLIGHT marks."""
    flat = " ".join(text.split())
    folded = flat.casefold()
    spans = []
    for t in terms:
        i = folded.find(t)
        while i >= 0:
            spans.append((i, i + len(t)))
            i = folded.find(t, i + len(t))
    spans.sort()
    first = spans[0][0] if spans else 0
    lo = max(0, min(first - width // 3, len(flat) - width))
    hi = min(len(flat), lo + width)
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if a < lo or b > hi:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    out, pos = [], lo
    for a, b in merged:
        out += [flat[pos:a], HIGHLIGHT[0], flat[a:b], HIGHLIGHT[1]]
        pos = b
    out.append(flat[pos:hi])
    return ("…" if lo > 0 else "") + "".join(out) + ("…" if hi < len(flat) else "")


def _not_found(conv_id: int) -> UsageError:
    return UsageError(f"no conversation with id {conv_id}", "`chatllm history` lists the saved conversations")
