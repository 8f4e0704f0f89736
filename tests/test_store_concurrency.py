"""Many processes opening one SQLite store at once (a fresh file, an older schema), a write lock held too long, and
files that really are damaged: every store opens through storage/sqlite_store.py, so all three stores are raced."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chatllm.errors import ChatllmError
from chatllm.storage.collections import MIGRATIONS as COLLECTION_MIGRATIONS
from chatllm.storage.collections import CollectionStore
from chatllm.storage.conversations import MIGRATIONS, Exchange, Store
from chatllm.storage.file_hashes import file_sha256
from chatllm.storage.search_index import SCHEMA_VERSION, SearchIndex
from chatllm.storage.sqlite_store import StoreBusyError, StoreUnreadableError

WORKERS = 8
ROUNDS = 20
# A step appended to today's migrations, as a new release would: it must run exactly once however many processes race
# (the ALTER would fail on a second run, the count shows how many ran).
EXTRA_STEP = """
ALTER TABLE conversations ADD COLUMN race_note TEXT;
CREATE TABLE IF NOT EXISTS race_steps (pid INTEGER NOT NULL);
INSERT INTO race_steps VALUES (0);
"""
NEWER = (*MIGRATIONS, EXTRA_STEP)


# -- what each racing process does (top level: the workers are spawned, fresh interpreters) ----------------------


def _open_and_write(kind: str, path: str) -> None:
    """Open the store of this kind as chatllm does, and write one thing of this process's own to it."""
    me = f"process {os.getpid()}"
    if kind in ("conversations", "conversations-old"):
        store = Store(path, migrations=NEWER if kind == "conversations-old" else MIGRATIONS)
        store.create("m", None, [Exchange(me, "hello")])
        store.close()
    elif kind == "memo":  # path: a CHATLLM_HOME; each process verifies a file of its own
        mine = Path(path) / f"model-{os.getpid()}.bin"
        mine.write_bytes(me.encode())
        assert file_sha256(mine, Path(path)) == hashlib.sha256(me.encode()).hexdigest()
    elif kind == "collections":
        coll = CollectionStore(path)
        coll.add("c", "m", [me], [[1.0, 0.0]])
        coll.close()
    else:
        index = SearchIndex(Path(path))
        index.add(hashlib.sha256(me.encode()).hexdigest(), len(me), [(1, 1, me)])
        index.close()


def _race_worker(kind: str, paths: list[str], barrier, failures) -> None:
    for path in paths:
        try:
            barrier.wait(timeout=60)  # all WORKERS open the same file at the same moment
        except Exception:
            failures.put(f"{kind}: the barrier broke before {path}")
            return
        try:
            _open_and_write(kind, path)
        except BaseException as exc:
            failures.put(f"{kind} {path}: {type(exc).__name__}: {exc}")


def race(kind: str, paths: list[Path]) -> list[str]:
    """WORKERS real processes open each path in turn, all at once; the failures they report."""
    ctx = multiprocessing.get_context("spawn")
    barrier, failures = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(kind, [str(p) for p in paths], barrier, failures))
             for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert [p.exitcode for p in procs] == [0] * WORKERS, found
    return found


def tables(path: Path) -> list[str]:
    """The names of the tables in a file, sorted (each name at most once: SQLite has one namespace)."""
    db = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        db.close()


def query(path: Path, sql: str) -> list[tuple]:
    """Rows of one query on a file, through a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# -- racing -------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 8 spawned processes, many rounds: seconds each
@pytest.mark.parametrize("kind", ["conversations", "collections", "search"])
def test_eight_processes_open_a_fresh_store_at_once_and_all_succeed(tmp_path, kind):
    paths = [tmp_path / f"round{n}" / f"{kind}.db" for n in range(ROUNDS)]  # the folder too is created by the race
    assert race(kind, paths) == []
    version, table = {"conversations": (len(MIGRATIONS), "exchanges"), "collections": (len(COLLECTION_MIGRATIONS), "items"),
                      "search": (SCHEMA_VERSION, "vectors")}[kind]
    for path in paths:
        assert query(path, "PRAGMA user_version") == [(version,)]
        assert query(path, "PRAGMA journal_mode") == [("wal",)]
        assert table in tables(path)
        if kind == "conversations":
            assert query(path, "SELECT COUNT(*) FROM conversations") == [(WORKERS,)]
        elif kind == "collections":
            assert query(path, "SELECT COUNT(*) FROM collections") == [(1,)]
            assert query(path, "SELECT COUNT(*) FROM items") == [(WORKERS,)]
        else:
            assert query(path, "SELECT COUNT(*) FROM files") == [(WORKERS,)]
            assert query(path, "SELECT COUNT(*) FROM meta") == [(1,)]


def _old_conversation_store(path: Path, wal: bool) -> None:
    """A store as the first release left it (schema version 1), with a conversation in it; WAL or the default journal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    if wal:
        db.execute("PRAGMA journal_mode = WAL")
    assert isinstance(MIGRATIONS[0], str)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO conversations (created_at, updated_at, model) VALUES (1, 1, 'old')")
    db.execute("INSERT INTO exchanges (conversation_id, seq, user, assistant, created_at) VALUES (1, 0, 'kept', 'yes', 1)")
    db.execute("PRAGMA user_version = 1")
    db.close()


@pytest.mark.slow  # 8 spawned processes, many rounds: seconds each
def test_eight_processes_migrate_an_older_conversation_store_at_once_exactly_once(tmp_path):
    paths = [tmp_path / f"round{n}" / "chatllm.db" for n in range(ROUNDS)]
    for n, path in enumerate(paths):
        _old_conversation_store(path, wal=n % 2 == 0)
    assert race("conversations-old", paths) == []
    for path in paths:
        assert query(path, "PRAGMA user_version") == [(len(NEWER),)]
        assert query(path, "SELECT COUNT(*) FROM race_steps") == [(1,)]  # the appended step ran once
        columns = [r[1] for r in query(path, "PRAGMA table_info(conversations)")]
        assert columns.count("race_note") == 1
        assert query(path, "SELECT user FROM exchanges WHERE conversation_id = 1") == [("kept",)]
        assert query(path, "SELECT COUNT(*) FROM conversations") == [(WORKERS + 1,)]
        assert query(path, "PRAGMA journal_mode") == [("wal",)]


def _old_search_index(path: Path) -> None:
    """A search index as version 1 left it (no vectors table), with one file's chunk in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("""
        PRAGMA journal_mode = WAL;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE files (sha TEXT PRIMARY KEY, chars INTEGER NOT NULL, n_chunks INTEGER NOT NULL);
        CREATE TABLE stats (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER,
                            sha TEXT NOT NULL);
        CREATE TABLE chunks (id INTEGER PRIMARY KEY, sha TEXT NOT NULL, seq INTEGER NOT NULL,
                             start_line INTEGER NOT NULL, end_line INTEGER NOT NULL, text TEXT NOT NULL);
        CREATE INDEX chunks_sha ON chunks (sha, seq);
        CREATE VIRTUAL TABLE chunks_fts USING fts5(body, tokenize = 'porter unicode61 remove_diacritics 2');
        INSERT INTO meta VALUES ('fingerprint', 'words|');
        INSERT INTO chunks VALUES (1, 'old', 0, 1, 1, 'otters from the old index');
        INSERT INTO chunks_fts (rowid, body) VALUES (1, 'otters from the old index');
        INSERT INTO files VALUES ('old', 25, 1);
        PRAGMA user_version = 1;
    """)
    db.close()


@pytest.mark.slow  # 8 spawned processes, many rounds: seconds each
def test_eight_processes_migrate_an_older_search_index_at_once(tmp_path):
    paths = [tmp_path / f"round{n}" / "index.db" for n in range(ROUNDS)]
    for path in paths:
        _old_search_index(path)
    assert race("search", paths) == []
    for path in paths:
        assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert "vectors" in tables(path)
        assert query(path, "SELECT COUNT(*) FROM files") == [(WORKERS + 1,)]  # the old file's chunks were kept
    index = SearchIndex(paths[0])
    assert [h.text for h in index.search("otters", ["old"], 3)] == ["otters from the old index"]
    index.close()


@pytest.mark.slow  # 8 spawned processes, many rounds: seconds each
def test_processes_verifying_files_at_once_keep_every_entry_of_the_memo(tmp_path):
    homes = [tmp_path / f"round{n}" for n in range(5)]
    for home in homes:
        home.mkdir()
    assert race("memo", homes) == []
    for home in homes:
        memo = json.loads((home / "verified.json").read_text())
        assert len(memo) == WORKERS  # none dropped by another process's write of the memo
        assert not list(home.glob("*.tmp"))


# -- a lock held too long -----------------------------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    print("held", flush=True)
    sys.stdin.read()  # until the test closes the pipe
    db.execute("ROLLBACK")
""")


@pytest.mark.parametrize("kind", ["conversations", "collections", "search"])
def test_a_write_lock_held_past_the_timeout_is_busy_not_unreadable(tmp_path, kind):
    path = tmp_path / f"{kind}.db"
    opener = {"conversations": lambda seconds: Store(path, busy_seconds=seconds),
              "collections": lambda seconds: CollectionStore(path, busy_seconds=seconds),
              "search": lambda seconds: SearchIndex(path, busy_seconds=seconds)}[kind]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        start = time.monotonic()
        with pytest.raises(StoreBusyError) as info:
            opener(0.5)  # the fresh file needs its schema, so the opener needs the write lock the holder keeps
        waited = time.monotonic() - start
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert "is busy: another chatllm is writing; try again" in info.value.message
    assert info.value.exit_code == 1
    assert "unreadable" not in info.value.message and "aside" not in info.value.hint
    assert 0.4 < waited < 10
    opener(5).close()  # the lock released: the same open succeeds and creates the schema
    assert query(path, "PRAGMA user_version")[0][0] >= 1


# -- files that really are damaged, or not ours to change -----------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_unreadable_and_never_changed(tmp_path):
    path = tmp_path / "chatllm.db"
    path.write_bytes(b"not a database, a user's notes\n" * 300)
    before = path.read_bytes()
    with pytest.raises(StoreUnreadableError) as info:
        Store(path)
    assert info.value.message.endswith("is unreadable: not a SQLite database")
    assert f"move {path} aside" in info.value.hint
    assert path.read_bytes() == before


@pytest.mark.parametrize("wal", [False, True], ids=["journal", "wal"])
def test_a_sqlite_file_with_damaged_pages_is_unreadable_and_never_changed(tmp_path, wal):
    path = tmp_path / "chatllm.db"
    _old_conversation_store(path, wal=wal)
    with open(path, "r+b") as fh:  # every page but the first (the header and the schema) overwritten
        size = fh.seek(0, 2)
        fh.seek(4096)
        fh.write(b"\xab" * (size - 4096))
    before = path.read_bytes()
    with pytest.raises(StoreUnreadableError) as info:
        store = Store(path)  # a WAL file of the current version opens without a check; its first read finds the damage
        store.list()
    assert "is unreadable" in info.value.message and "aside" in info.value.hint
    assert path.read_bytes() == before


def test_a_sound_file_that_fails_to_migrate_is_not_called_unreadable(tmp_path):
    path = tmp_path / "chatllm.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT)")  # another program's table
    db.commit()
    db.close()
    with pytest.raises(ChatllmError) as info:
        Store(path)
    assert not isinstance(info.value, (StoreUnreadableError, StoreBusyError))
    assert "could not be opened" in info.value.message and "aside" not in info.value.hint
    assert tables(path) == ["conversations"] and query(path, "PRAGMA user_version") == [(0,)]


def test_a_newer_store_is_refused_and_never_changed(tmp_path):
    path = tmp_path / "chatllm.db"
    _old_conversation_store(path, wal=False)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 3}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(ChatllmError, match="newer than this chatllm knows"):
        Store(path)
    assert path.read_bytes() == before


# -- the real command ----------------------------------------------------------------------------------------------


@pytest.mark.model
def test_two_chats_started_at_once_on_a_fresh_home_both_succeed(cli_env):
    procs = [subprocess.Popen([sys.executable, "-m", "chatllm", "chat", "--max-tokens", "8"], env=cli_env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [proc.communicate(f"hello from chat {n}\nand a second message\n", timeout=180)
               for n, proc in enumerate(procs)]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert "error:" not in err and out.strip()
    db = Path(cli_env["CHATLLM_HOME"]) / "chatllm.db"
    turns = query(db, "SELECT COUNT(*) FROM exchanges GROUP BY conversation_id")
    assert turns == [(2,), (2,)]
