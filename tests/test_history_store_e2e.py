"""`chatllm history` search, export, import and the store's migrations, as real processes on real SQLite files.

No model is loaded: conversations come from `history import` or straight from SQL written as the last release wrote it.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time

import pytest

from chatllm.storage.conversations import MIGRATIONS
from tests.conftest import run_chatllm


@pytest.fixture
def env(tmp_path) -> dict:
    """chatllm's state under tmp_path, no network, plain output (no model needed)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CHATLLM_", "HUGGING"))}
    env.update(CHATLLM_HOME=str(tmp_path / "home"), HF_ENDPOINT="http://127.0.0.1:9", NO_COLOR="1", COLUMNS="100")
    return env


def cli(env: dict, *args: str, input: str | None = None):
    return run_chatllm(list(args), env, input=input)


def write_messages(path, messages) -> str:
    path.write_text(json.dumps(messages, ensure_ascii=False), encoding="utf-8")
    return str(path)


def release_db(path, conversations) -> None:
    """A chatllm.db exactly as the last release wrote it: its one migration, user_version 1, its rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(f"BEGIN; {MIGRATIONS[0]} PRAGMA user_version = 1; COMMIT;")
    now = time.time()
    for n, (system, pairs) in enumerate(conversations, 1):
        db.execute("INSERT INTO conversations (id, created_at, updated_at, model, system) VALUES (?, ?, ?, 'm.gguf', ?)",
                   (n, now + n, now + n, system))
        for seq, (user, assistant) in enumerate(pairs):
            db.execute("INSERT INTO exchanges (conversation_id, seq, user, assistant, created_at) VALUES (?, ?, ?, ?, ?)",
                       (n, seq, user, assistant, now + n + seq / 100))
    db.commit()
    db.close()


def test_a_store_from_the_last_release_opens_keeps_every_conversation_and_gains_the_new_tables(env, tmp_path):
    db_path = tmp_path / "home" / "chatllm.db"
    release_db(db_path, [("be brief", [("I live in Lyon.", "Nice city."), ("And you?", "I am a model.")]),
                         (None, [("我住在北京市海淀区。", "北京是中国的首都。")])])
    r = cli(env, "history", "--json")
    assert r.returncode == 0, r.stderr
    assert [(c["id"], c["turns"]) for c in json.loads(r.stdout)] == [(2, 1), (1, 2)]
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert {"summaries", "messages_fts", "conversations_parent"} <= tables
    r = cli(env, "history", "show", "1", "--json")
    assert [e["user"] for e in json.loads(r.stdout)["exchanges"]] == ["I live in Lyon.", "And you?"]
    # the messages written before the search existed are found
    r = cli(env, "history", "search", "lyon", "--json")
    assert [(h["conversation_id"], h["turn"], h["role"]) for h in json.loads(r.stdout)] == [(1, 1, "user")]
    r = cli(env, "history", "search", "北京")
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("2@1\tassistant")
    assert "«北京»" in r.stdout


def test_a_store_from_a_newer_chatllm_is_refused_and_left_untouched(env, tmp_path):
    db_path = tmp_path / "home" / "chatllm.db"
    release_db(db_path, [(None, [("hello", "hi")])])
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 3}")
    db.commit()
    db.close()
    for args in (["history"], ["history", "search", "hello"], ["chat", "--continue"]):
        r = cli(env, *args, input="")
        assert r.returncode == 1, r.stderr
        assert "newer than this chatllm knows" in r.stderr and "hint: upgrade chatllm" in r.stderr
        assert "Traceback" not in r.stderr
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 3
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "conversations", "exchanges", "sqlite_sequence"}  # nothing added
    assert db.execute("SELECT user, assistant FROM exchanges").fetchall() == [("hello", "hi")]


def test_search_in_english_and_chinese_newest_first_with_snippets(env, tmp_path):
    first = write_messages(tmp_path / "a.json", [{"role": "user", "content": "My cat Mango sleeps in Lyon all day."},
                                                 {"role": "assistant", "content": "Mango sounds lazy."}])
    second = write_messages(tmp_path / "b.json", [{"role": "system", "content": "简短回答"},
                                                  {"role": "user", "content": "我的猫叫芒果，它住在北京。"},
                                                  {"role": "assistant", "content": "芒果是一个可爱的名字。"},
                                                  {"role": "user", "content": "What about mango juice?"},
                                                  {"role": "assistant", "content": "It is sweet."}])
    assert cli(env, "history", "import", first).stdout.strip() == "1"
    assert cli(env, "history", "import", second).stdout.strip() == "2"
    r = cli(env, "history", "search", "MANGO", "--json")
    hits = json.loads(r.stdout)
    assert [(h["conversation_id"], h["turn"], h["role"]) for h in hits] == [(2, 2, "user"), (1, 1, "assistant"),
                                                                            (1, 1, "user")]
    assert hits[0]["snippet"] == "What about «mango» juice?"
    r = cli(env, "history", "search", "芒果")
    assert [line.split("\t")[:2] for line in r.stdout.splitlines()] == [["2@1", "assistant"], ["2@1", "user"]]
    assert "我的猫叫«芒果»，它住在北京。" in r.stdout
    r = cli(env, "history", "search", "cat", "lyon", "--json")  # every word, in one message
    assert [h["snippet"] for h in json.loads(r.stdout)] == ["My «cat» Mango sleeps in «Lyon» all day."]
    r = cli(env, "history", "search", "nothing-like-this")
    assert r.returncode == 0 and r.stdout == "" and "no saved message holds" in r.stderr
    r = cli(env, "history", "search", "mango", "-n", "0")
    assert r.returncode == 2 and "--limit" in r.stderr


def test_a_damaged_search_index_is_rebuilt_from_the_messages(env, tmp_path):
    path = write_messages(tmp_path / "a.json", [{"role": "user", "content": "The lighthouse keeper is Ada."},
                                                {"role": "assistant", "content": "Ada keeps the light."}])
    cli(env, "history", "import", path)
    db = sqlite3.connect(tmp_path / "home" / "chatllm.db")
    db.execute("UPDATE messages_fts_data SET block = x'00ff00ff00ff00ff00ff00ff' WHERE id > 1")
    db.commit()
    db.close()
    r = cli(env, "history", "search", "lighthouse", "--json")
    assert r.returncode == 0, r.stderr
    assert "search index was damaged; rebuilt it" in r.stderr
    assert [h["turn"] for h in json.loads(r.stdout)] == [1]
    db = sqlite3.connect(tmp_path / "home" / "chatllm.db")
    db.execute("DROP TABLE messages_fts_idx")  # worse: a part of the index is gone, and the next write must not fail
    db.commit()
    db.close()
    r = cli(env, "history", "import", path)
    assert r.returncode == 0, r.stderr
    r = cli(env, "history", "search", "keeper", "--json")
    assert [h["conversation_id"] for h in json.loads(r.stdout)] == [2, 1]


def test_export_in_three_formats_and_import_them_back(env, tmp_path):
    path = write_messages(tmp_path / "a.json", [{"role": "system", "content": "Be terse."},
                                                {"role": "user", "content": "Name a colour."},
                                                {"role": "assistant", "content": "Teal."},
                                                {"role": "user", "content": "Another?"},
                                                {"role": "assistant", "content": "Ochre."}])
    cli(env, "history", "import", path)
    openai = json.loads(cli(env, "history", "export", "1", "--format", "openai").stdout)
    assert openai == json.loads((tmp_path / "a.json").read_text())
    md = cli(env, "history", "export", "1").stdout
    assert "## System" in md and "Ochre." in md
    r = cli(env, "history", "export", "1", "-f", "json", "-o", str(tmp_path / "out.json"))
    assert r.returncode == 0 and r.stdout == ""
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["format"] == "chatllm.conversation" and doc["system"] == "Be terse."
    (tmp_path / "out.md").write_text(md, encoding="utf-8")
    for name in ("out.json", "out.md"):
        r = cli(env, "history", "import", str(tmp_path / name), "--json")
        new = json.loads(r.stdout)["id"]
        again = json.loads(cli(env, "history", "export", str(new), "-f", "openai").stdout)
        assert again == openai
    r = cli(env, "history", "export", "1", "--format", "yaml")
    assert r.returncode == 2 and "md, json, openai" in r.stderr


@pytest.mark.parametrize("content,why", [
    ('{"hello": "world"}', "not a conversation file"),
    ("[1, 2, 3]", "not a conversation file"),
    ('{"messages": [', "is not valid JSON"),
    ("just some notes\nwithout any sections\n", "no conversation found"),
    ('[{"role": "system", "content": "only a system prompt"}]', "holds no exchanges"),
])
def test_an_import_file_that_is_not_a_conversation_is_refused(env, tmp_path, content, why):
    path = tmp_path / ("bad.txt" if why == "no conversation found" else "bad.json")
    path.write_text(content, encoding="utf-8")
    r = cli(env, "history", "import", str(path))
    assert r.returncode == 2 and why in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "home" / "chatllm.db").exists()  # refused before the store is opened


def test_a_missing_or_binary_import_file_is_refused(env, tmp_path):
    r = cli(env, "history", "import", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "hint:" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bin.json").write_bytes(b"\x00\x01\x02" * 50)
    r = cli(env, "history", "import", str(tmp_path / "bin.json"))
    assert r.returncode == 2 and "hint:" in r.stderr and "Traceback" not in r.stderr


def test_tree_of_a_conversation_without_branches_and_of_a_missing_one(env, tmp_path):
    path = write_messages(tmp_path / "a.json", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}])
    cli(env, "history", "import", path)
    r = cli(env, "history", "show", "1", "--tree")
    assert r.returncode == 0 and r.stdout.startswith("1 *  1 turn  ")
    r = cli(env, "history", "show", "9", "--tree")
    assert r.returncode == 2 and "no conversation with id 9" in r.stderr


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX paths")
