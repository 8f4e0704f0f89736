"""Embeddings with the fake engine: order and batching, collections in SQLite, nearest items, refusals, corruption."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from chatllm.errors import ChatllmError, UsageError
from chatllm.models.model_kinds import check_model_kind, declared_pooling
from chatllm.models.registry import _load_table
from chatllm.storage.collections import CollectionStore
from chatllm.tasks.retrieval.embeddings import embed_stream, embed_texts, nearest, similar, store_stream
from tests.fakes import FakeEngine

TEXTS = ["the cat sat on the mat", "a dog barked at the mailman", "stock markets fell sharply today",
         "the cat is sitting on a mat", "rain is expected this weekend"]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(pooling="mean", name="fake-embedder")


@pytest.fixture
def store(tmp_path):
    s = CollectionStore(tmp_path / "collections.db")
    yield s
    s.close()


def test_vectors_come_back_in_input_order_a_batch_per_call(engine):
    vectors = embed_texts(engine, TEXTS, batch=2)
    assert engine.embedded == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:]]
    assert vectors == [engine.embed([t])[0] for t in TEXTS]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9) for v in vectors)


def test_stream_keeps_ids_and_reports_texts_past_the_window(engine):
    engine.n_ctx = 8
    long_text = "word " * 20
    items = [(1, "short one"), (3, long_text), (4, "another short")]
    flagged: list[int] = []
    out = list(embed_stream(engine, iter(items), batch=2, on_long=flagged.append))
    assert [(e.id, e.text) for e in out] == items
    assert flagged == [3]
    assert out[0].to_json() == {"id": 1, "text": "short one", "embedding": out[0].embedding}


def test_a_chat_model_refuses_to_embed():
    with pytest.raises(ChatllmError):
        FakeEngine().embed(["text"])


def test_stored_collection_finds_the_paraphrase_first(engine, store):
    added, skipped = store_stream(engine, store, "notes", embed_stream(engine, enumerate(TEXTS, 1)))
    assert (added, skipped) == (5, 0)
    matches = similar(engine, store, "notes", "a cat sitting on the mat", top=2)
    assert [m.text for m in matches][0] in (TEXTS[0], TEXTS[3])
    assert {m.text for m in matches} == {TEXTS[0], TEXTS[3]}
    assert matches[0].score >= matches[1].score
    [row] = store.collections()
    assert (row.name, row.model, row.dimension, row.count) == ("notes", "fake-embedder", 16, 5)


def test_the_same_text_is_stored_once(engine, store):
    store_stream(engine, store, "notes", embed_stream(engine, enumerate(TEXTS[:2], 1)))
    added, skipped = store_stream(engine, store, "notes", embed_stream(engine, enumerate(TEXTS[:3], 1)))
    assert (added, skipped) == (1, 2)
    assert store.require("notes").count == 3


def test_another_model_or_dimension_is_refused(engine, store):
    store_stream(engine, store, "notes", embed_stream(engine, enumerate(TEXTS, 1)))
    other = FakeEngine(pooling="mean", name="other-model")
    with pytest.raises(UsageError, match="holds vectors of fake-embedder, not other-model"):
        store_stream(other, store, "notes", embed_stream(other, enumerate(["x y"], 1)))
    with pytest.raises(UsageError, match="holds vectors of fake-embedder") as info:
        similar(other, store, "notes", "query")
    assert "-m fake-embedder" in info.value.hint
    narrow = FakeEngine(pooling="mean", name="fake-embedder", dim=8)
    with pytest.raises(UsageError, match="16-dimensional vectors, not 8"):
        store_stream(narrow, store, "notes", embed_stream(narrow, enumerate(["x y"], 1)))
    assert store.require("notes").count == 5  # nothing of the refused batches was written


def test_unknown_collection_and_rm(engine, store):
    with pytest.raises(UsageError, match="no collection named 'nope'"):
        similar(engine, store, "nope", "query")
    store_stream(engine, store, "a", embed_stream(engine, enumerate(TEXTS, 1)))
    store.remove("a")
    assert store.collections() == []
    with pytest.raises(UsageError):
        store.remove("a")


def test_a_file_that_is_not_a_database_is_reported(tmp_path):
    path = tmp_path / "collections.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ChatllmError, match="unreadable: not a SQLite database") as info:
        CollectionStore(path).collections()
    assert "move" in info.value.hint


def test_a_vector_of_the_wrong_size_is_reported(engine, store, tmp_path):
    store_stream(engine, store, "notes", embed_stream(engine, enumerate(TEXTS, 1)))
    db = sqlite3.connect(tmp_path / "collections.db")
    db.execute("UPDATE items SET embedding = ? WHERE id = 2", (b"\0" * 10,))
    db.commit()
    db.close()
    with pytest.raises(ChatllmError, match="item 2 has a 10-byte vector"):
        similar(engine, store, "notes", "cat")


def test_nearest_orders_by_score_then_insertion():
    import numpy as np

    matrix = np.array([[1, 0], [0, 1], [1, 0], [-1, 0]], dtype=np.float32)
    found = nearest([1.0, 0.0], [10, 11, 12, 13], ["a", "b", "c", "d"], matrix, top=3)
    assert [(m.id, round(m.score, 3)) for m in found] == [(10, 1.0), (12, 1.0), (11, 0.0)]
    assert nearest([1.0, 0.0], [], [], matrix[:0], top=3) == []
    with pytest.raises(UsageError):
        nearest([1.0, 0.0], [10], ["a"], matrix[:1], top=0)


def test_pooling_from_metadata_and_which_models_serve_which_command():
    assert declared_pooling({"general.architecture": "bert", "bert.pooling_type": 1}) == "mean"
    assert declared_pooling({"general.architecture": "qwen3", "qwen3.pooling_type": "3"}) == "last"
    assert declared_pooling({"general.architecture": "llama"}) is None
    check_model_kind("m", "", "mean", embedding=True)
    check_model_kind("m", "embedding", None, embedding=True, header=False)
    check_model_kind("m", "", None, embedding=True, header=False)  # a server: it will say itself
    check_model_kind("m", "", None, embedding=False)
    with pytest.raises(UsageError, match="is not an embedding model"):
        check_model_kind("m", "", None, embedding=True)
    with pytest.raises(UsageError, match="is an embedding model") as info:
        check_model_kind("m", "", "cls", embedding=False)
    assert "chatllm embed -m m" in info.value.hint
    with pytest.raises(UsageError, match="is an embedding model"):
        check_model_kind("m", "embedding", None, embedding=False, header=False)
    with pytest.raises(UsageError, match="reranker"):
        check_model_kind("m", "", "rank", embedding=True)


def test_registry_kind_is_checked(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text('[e]\nkind = "embedding"\nrepo = "o/r"\nfile = "e.gguf"\n')
    assert _load_table(path, "user")["e"].kind == "embedding"
    path.write_text('[e]\nkind = "vectors"\nrepo = "o/r"\nfile = "e.gguf"\n')
    with pytest.raises(ChatllmError, match='kind must be "chat" or "embedding"'):
        _load_table(path, "user")


def test_shipped_embedding_models_are_marked():
    from chatllm.models.registry import shipped_registry_path

    marked = {a for a, s in _load_table(shipped_registry_path(), "builtin").items() if s.kind == "embedding"}
    assert {"bge-small-en-v1.5", "nomic-embed-text-v1.5", "qwen3-embedding-0.6b", "bge-m3"} <= marked


def test_remote_engine_embeds_through_v1_embeddings():
    from chatllm.engines.remote.llama_server_engine import RemoteEngine

    class Server:
        def __init__(self):
            self.asked: list = []

        def post(self, path, body, *, api=False, missing_ok=False):
            self.asked.append((path, body, api))
            return {"data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}]}

    engine = RemoteEngine.__new__(RemoteEngine)
    engine.server, engine.model, engine.name = Server(), "served", "remote"
    assert engine.embed(["a", "b"]) == [[0.6, 0.8], [0.0, 1.0]]
    assert engine.server.asked == [("/embeddings", {"model": "served", "input": ["a", "b"]}, True)]
    with pytest.raises(ChatllmError, match="gave 2 vectors for 3 texts") as info:
        engine.embed(["a", "b", "c"])
    assert "--embeddings" in info.value.hint
