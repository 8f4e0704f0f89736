"""The SQLite conversation store: schema migrations, WAL, commits that survive a killed process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from chatllm.errors import ChatllmError, UsageError
from chatllm.storage.conversations import MIGRATIONS, Exchange, Store, first_line


def test_new_store_is_migrated_to_the_latest_schema_in_wal_mode(tmp_path):
    store = Store(tmp_path / "sub" / "chat.db")
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    db = sqlite3.connect(tmp_path / "sub" / "chat.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"conversations", "exchanges"} <= tables


def test_migrations_run_in_order_once_and_keep_data(tmp_path):
    path = tmp_path / "chat.db"
    Store(path, migrations=MIGRATIONS[:1]).close()  # the first release's schema, with a conversation in it
    db = sqlite3.connect(path)
    db.execute("INSERT INTO conversations (id, created_at, updated_at, model, system) VALUES (1, 1, 1, 'm', 'sys')")
    db.execute("INSERT INTO exchanges (conversation_id, seq, user, assistant, created_at) VALUES (1, 0, 'hello', 'hi', 1)")
    db.commit()
    db.close()
    extra = "ALTER TABLE conversations ADD COLUMN title TEXT; UPDATE conversations SET title = 'x';"
    new = Store(path, migrations=MIGRATIONS + (extra,))
    assert new.schema_version == len(MIGRATIONS) + 1
    loaded = new.load(1).exchanges[0]
    assert (loaded.user, loaded.assistant, loaded.reasoning, loaded.tool_steps) == ("hello", "hi", "", [])
    new.close()
    again = Store(path, migrations=MIGRATIONS + (extra,))  # a second open must not re-run the ALTER
    assert again.schema_version == len(MIGRATIONS) + 1


def test_a_failing_migration_changes_nothing(tmp_path):
    path = tmp_path / "chat.db"
    Store(path).close()
    with pytest.raises(ChatllmError):
        Store(path, migrations=MIGRATIONS + ("CREATE TABLE half (x INTEGER); SELECT * FROM no_such_table;",))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0


def test_a_store_from_a_newer_chatllm_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "chat.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(ChatllmError) as info:
        Store(path)
    assert "newer" in info.value.message and "upgrade" in info.value.hint


def test_a_corrupt_file_is_an_error_with_a_hint(tmp_path):
    path = tmp_path / "chat.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ChatllmError) as info:
        Store(path)
    assert "move" in info.value.hint


def test_create_put_load_list_and_delete(tmp_path):
    store = Store(tmp_path / "chat.db")
    assert store.latest_id() is None and store.list() == []
    a = store.create("model-a", None)
    store.put_exchange(a, 0, Exchange("\n  First question here\nsecond line", "answer", completion_tokens=3))
    store.put_exchange(a, 1, Exchange("again", "partial", interrupted=True), model="model-b")
    b = store.create("model-c", "be brief")  # no exchanges yet: not listed, not "latest"
    assert store.latest_id() == a
    [row] = store.list()
    assert (row.id, row.model, row.title, row.turns) == (a, "model-b", "First question here", 2)
    assert row.as_dict()["turns"] == 2 and "T" in row.as_dict()["updated_at"]
    loaded = store.load(a)
    assert [(e.user.strip()[:5], e.interrupted) for e in loaded.exchanges] == [("First", False), ("again", True)]
    assert loaded.exchanges[0].completion_tokens == 3
    store.put_exchange(a, 1, Exchange("again", "complete"))  # /retry replaces in place
    assert [e.assistant for e in store.load(a).exchanges] == ["answer", "complete"]
    store.delete_from(a, 1)  # /undo
    assert len(store.load(a).exchanges) == 1
    store.set_system(b, "new system")
    assert store.load(b).system == "new system"
    store.delete(a)
    with pytest.raises(UsageError):
        store.load(a)
    with pytest.raises(UsageError):
        store.delete(a)


def test_latest_is_the_most_recently_updated(tmp_path):
    store = Store(tmp_path / "chat.db")
    a = store.create("m", None, [Exchange("a", "1")])
    b = store.create("m", None, [Exchange("b", "2")])
    assert store.latest_id() == b
    store.put_exchange(a, 1, Exchange("a2", "3"))
    assert store.latest_id() == a
    assert [r.id for r in store.list(limit=1)] == [a]


def test_committed_exchanges_survive_a_killed_process(tmp_path):
    path = tmp_path / "chat.db"
    code = textwrap.dedent(f"""
        import os, signal
        from chatllm.storage.conversations import Exchange, Store
        store = Store({str(path)!r})
        conv = store.create("m", None)
        store.put_exchange(conv, 0, Exchange("saved question", "saved answer"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9
    store = Store(path)
    [row] = store.list()
    assert store.load(row.id).exchanges[0].assistant == "saved answer"


def test_two_stores_on_one_file_can_both_write(tmp_path):
    one, two = Store(tmp_path / "chat.db"), Store(tmp_path / "chat.db")
    one.create("m", None, [Exchange("from one", "x")])
    two.create("m", None, [Exchange("from two", "y")])
    assert {r.title for r in one.list()} == {"from one", "from two"}


def test_first_line_cuts_long_text():
    assert first_line("\n\n  hello  \nworld") == "hello"
    assert len(first_line("x" * 500)) == 60 and first_line("x" * 500).endswith("…")
