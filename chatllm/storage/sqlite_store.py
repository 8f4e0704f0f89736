"""Opening a SQLite file that any number of chatllm processes share: WAL, the busy timeout, schema migrations under
one write lock, and errors that tell a busy file from a damaged one.

Every store (conversations, collections, the search index) opens its file through `open_store`. Its schema is an
ordered tuple of migrations, step i moving the file from `PRAGMA user_version` i to i + 1. They are applied in one
transaction taken with the write lock (BEGIN IMMEDIATE, waiting out the busy timeout) before the version is read, and
the version is bumped in that same transaction: of many processes opening a fresh or older file at once, one migrates
and the others find the work done. A file of a newer chatllm (a version past the last step) is refused untouched.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

from chatllm.errors import ChatllmError

# A migration: an SQL script, or a function given the connection inside the migrating transaction.
Step = Union[str, Callable[[sqlite3.Connection], None]]
# Called under the write lock with the version found; returns the version to migrate from (0 after it dropped
# content that must be built again, as the search index does when its chunker changed).
Reset = Callable[[sqlite3.Connection, int], int]

SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (the primary code: the low byte of an extended one)
_DAMAGE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_ACCESS_CODES = {3, 8, 14}  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN


class StoreBusyError(ChatllmError):
    """Another process held the file's write lock for longer than the busy timeout."""


class StoreUnreadableError(ChatllmError):
    """The file is not a readable SQLite database: not SQLite at all, or its integrity check fails."""


@dataclass(frozen=True)
class StoreFile:
    """A store's SQLite file as the user hears of it: its name in messages, the way to start afresh, the busy timeout."""

    path: Path
    what: str  # "the conversation store"
    fresh_hint: str  # what to do when the file is unreadable
    busy_seconds: float = 10.0

    def error(self, exc: BaseException) -> ChatllmError:
        """The user's error for a SQLite failure on this file: busy, not writable, unreadable (checked), or other."""
        text = str(exc)
        code = _primary_code(exc)
        if code in _BUSY_CODES or "locked" in text or "busy" in text:
            return StoreBusyError(f"{self.what} {self.path} is busy: another chatllm is writing; try again",
                                  f"it held the write lock for over {self.busy_seconds:g} s; run the command again "
                                  "when the other chatllm is done")
        if code in _ACCESS_CODES or "readonly" in text or "unable to open" in text:
            return ChatllmError(f"cannot write {self.what} {self.path}: {text}", "check the permissions of CHATLLM_HOME")
        if code == 13 or "database or disk is full" in text:  # SQLITE_FULL
            return ChatllmError(f"cannot write {self.what} {self.path}: the disk is full", "free some space and try again")
        why = damage(self.path, self.busy_seconds)
        if why is None and code in _DAMAGE_CODES:
            why = text
        if why is not None:
            return self.unreadable(why)
        # A sound SQLite file that still failed: never a reason to move the user's data aside.
        return ChatllmError(f"{self.what} {self.path} could not be opened: {text}",
                            "the file itself is a sound SQLite database, nothing in it was changed: try again, and if "
                            "it persists rerun with --debug and report it (or point CHATLLM_HOME elsewhere)")

    def unreadable(self, why: str) -> StoreUnreadableError:
        """The error for a file that is not a readable SQLite database of ours."""
        return StoreUnreadableError(f"{self.what} {self.path} is unreadable: {why}", self.fresh_hint)

    def newer(self, version: int) -> ChatllmError:
        """The error for a file written by a newer chatllm."""
        return ChatllmError(f"{self.what} {self.path} has schema version {version}, newer than this chatllm knows",
                            "upgrade chatllm, or point CHATLLM_HOME elsewhere")


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code & 0xFF if isinstance(code, int) else None


def damage(path: Path, busy_seconds: float = 5.0) -> str | None:
    """Why the file is not a sound SQLite database (not SQLite, or its quick check fails); None when it is, or is empty."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError:
        return None  # absent or not readable: nothing here says it is damaged
    if not head:
        return None  # an empty file is a database not yet written
    if head != SQLITE_HEADER:
        return "not a SQLite database"
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=min(busy_seconds, 5.0))
        try:
            return integrity_problem(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return str(exc) if _primary_code(exc) in _DAMAGE_CODES or "malformed" in str(exc) else None
    except sqlite3.Error:
        return None


def integrity_problem(db: sqlite3.Connection) -> str | None:
    """What PRAGMA quick_check finds wrong with the database, or None when it answers ok."""
    rows = db.execute("PRAGMA quick_check").fetchall()
    if rows == [("ok",)]:
        return None
    return "integrity check failed: " + "; ".join(str(r[0]) for r in rows[:3])


def open_store(file: StoreFile, migrations: Sequence[Step], *, foreign_keys: bool = False, verify: bool = False,
               reset: Reset | None = None) -> sqlite3.Connection:
    """The file opened in WAL mode with the busy timeout, migrated to the last step; errors as ChatllmErrors.

    The file is checked (quick_check) before chatllm first writes to it, and on every open with verify=True; a
    damaged or newer file is refused without a byte of it changed. Connections are in autocommit mode
    (isolation_level=None): a store takes its own transactions with `immediate_transaction`.
    """
    try:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(file.path, isolation_level=None, timeout=file.busy_seconds)
    except OSError as exc:
        raise ChatllmError(f"cannot open {file.what} {file.path}: {exc.strerror or exc}",
                           "check that CHATLLM_HOME is writable") from None
    except sqlite3.Error as exc:
        raise file.error(exc) from None
    try:
        # Reads first: nothing is written to a file that turns out to be damaged or newer.
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        version = user_version(db)
        if version > len(migrations):
            raise file.newer(version)
        if verify or (mode != "wal" and _size(file.path) > 0):
            problem = integrity_problem(db)
            if problem is not None:
                raise file.unreadable(problem)
        enable_wal(db, file.busy_seconds)
        # NORMAL in WAL mode survives a killed process (not a power cut) and keeps commits fast.
        db.execute("PRAGMA synchronous = NORMAL")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys = ON")
        if version < len(migrations) or reset is not None:
            migrate(db, file, migrations, reset)
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.Error):
            raise file.error(exc) from None
        raise
    return db


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def user_version(db: sqlite3.Connection) -> int:
    """The file's PRAGMA user_version: how many migrations it has had."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, file: StoreFile, migrations: Sequence[Step], reset: Reset | None = None) -> int:
    """Apply the steps the file lacks in one write-locked transaction that reads the version first; the new version."""
    with immediate_transaction(db, file.error):
        version = user_version(db)  # read under the write lock: no other process can be migrating now
        if version > len(migrations):
            raise file.newer(version)
        if reset is not None:
            version = reset(db, version)
        for step in migrations[version:]:
            if callable(step):
                step(db)
            else:
                for statement in statements(step):
                    db.execute(statement)
        if version < len(migrations):
            db.execute(f"PRAGMA user_version = {len(migrations)}")
    return len(migrations)


def statements(script: str) -> list[str]:
    """An SQL script cut into its statements (sqlite3's executescript would commit the open transaction first)."""
    found, start = [], 0
    for end, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start:end + 1]):
            found.append(script[start:end + 1])
            start = end + 1
    found.append(script[start:])
    return [s.strip() for s in found if s.strip().strip(";").strip()]


def enable_wal(db: sqlite3.Connection, seconds: float) -> None:
    """Put db in WAL mode, waiting up to `seconds` for another process that is creating or migrating the file."""
    # SQLite answers a journal-mode change with "database is locked" at once, without its busy handler, while
    # another connection holds the new file's lock: two processes opening a fresh database would see it.
    deadline = time.monotonic() + seconds
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def immediate_transaction(db: sqlite3.Connection, error: Callable[[Exception], ChatllmError]) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on db, rolled back on any exception; SQLite's own errors become error(exc)."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (a full disk, an interrupt)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise error(exc) from None
