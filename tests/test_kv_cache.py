"""The KV cache on disk without a model: keys, damaged files, eviction over the cap, atomic writes, the tasks' use of it."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from chatllm.engines.warm_start import with_warm_start
from chatllm.errors import ChatllmError
from chatllm.settings import Sampling, Settings
from chatllm.storage.conversations import Store
from chatllm.storage.kv_cache import SUFFIX, KVCache, max_bytes_setting
from chatllm.tasks.chat.conversation import Conversation
from chatllm.tasks.classify.classifier import Classifier
from tests.fakes import FakeEngine

SAMPLING = Sampling(max_tokens=8, temperature=0)


def warm(engine: FakeEngine, text: str) -> list[int]:
    """Make the fake's KV cache hold text's tokens, as a prompt evaluation would."""
    tokens = engine.prompt_tokens(text)
    engine.cache = list(tokens)
    return tokens


@pytest.fixture
def kv(tmp_path) -> KVCache:
    notes: list[str] = []
    cache = KVCache(tmp_path / "kv", 10**9, notice=notes.append)
    cache.notes = notes  # type: ignore[attr-defined]
    return cache


def files(kv: KVCache) -> list[Path]:
    return sorted(kv.directory.glob("*" + SUFFIX))


def test_a_saved_state_comes_back_into_a_fresh_engine_with_the_same_identity(kv):
    tokens = warm(FakeEngine(), " ".join(f"word{i}" for i in range(20)))
    assert kv.save(_engine_with(tokens))
    fresh = FakeEngine()
    entry = kv.restore(fresh, tokens + fresh.tokenize(" and more"))
    assert entry is not None and entry.tokens == tokens and fresh.cache == tokens and fresh.loaded_states == 1


def _engine_with(tokens: list[int], **kw) -> FakeEngine:
    engine = FakeEngine(**kw)
    engine.cache = list(tokens)
    return engine


def test_another_identity_or_a_short_common_prefix_restores_nothing(kv):
    tokens = warm(FakeEngine(), " ".join(f"w{i}" for i in range(40)))
    kv.save(_engine_with(tokens))
    assert kv.restore(FakeEngine(n_ctx=800), tokens) is None  # another context size: another identity
    assert kv.restore(FakeEngine(name="other"), tokens) is None
    assert kv.restore(FakeEngine(), tokens[:4] + [999999]) is None  # too little in common to be worth loading
    assert kv.restore(FakeEngine(), tokens) is not None


def test_the_longest_common_prefix_wins(kv):
    base = warm(FakeEngine(), " ".join(f"w{i}" for i in range(30)))
    longer = base + FakeEngine().tokenize(" x1 x2 x3 x4 x5")
    kv.save(_engine_with(base))
    kv.save(_engine_with(longer))
    assert len(files(kv)) == 2
    fresh = FakeEngine()
    assert kv.restore(fresh, longer + FakeEngine().tokenize(" next")).tokens == longer
    assert kv.restore(FakeEngine(), base + FakeEngine().tokenize(" elsewhere")).tokens == base


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty", "header"])
def test_a_damaged_file_is_detected_deleted_never_loaded_and_rebuilt(kv, damage):
    tokens = warm(FakeEngine(), " ".join(f"w{i}" for i in range(30)))
    kv.save(_engine_with(tokens))
    (path,) = files(kv)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 7])
    elif damage == "flip":
        cut = len(data) - 40  # inside the state bytes
        path.write_bytes(data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1:])
    elif damage == "foreign":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(data[:27] + b"[" + data[28:])  # the header's opening brace
    fresh = FakeEngine()
    assert kv.restore(fresh, tokens) is None
    assert fresh.loaded_states == 0 and fresh.cache == []
    assert not path.exists() and any("removed a damaged KV cache file" in n for n in kv.notes)
    kv.save(_engine_with(tokens))  # rebuilt
    assert kv.restore(FakeEngine(), tokens) is not None


def test_a_state_the_engine_refuses_is_deleted(kv, monkeypatch):
    tokens = warm(FakeEngine(), " ".join(f"w{i}" for i in range(30)))
    kv.save(_engine_with(tokens))
    fresh = FakeEngine()
    monkeypatch.setattr(fresh, "load_state", lambda tokens, data: 0)
    assert kv.restore(fresh, tokens) is None
    assert files(kv) == []


def test_over_the_cap_the_least_recently_used_entries_go(tmp_path):
    probe = KVCache(tmp_path / "probe", 10**9)
    one = warm(FakeEngine(), " ".join(f"a{i}" for i in range(50)))
    probe.save(_engine_with(one))
    size = files(probe)[0].stat().st_size
    kv = KVCache(tmp_path / "kv", int(size * 2.5))
    texts = [" ".join(f"{p}{i}" for i in range(50)) for p in "abcd"]
    saved = []
    base = time.time() - 100  # last-use times set by hand, one apart: no two entries tie, however slow the machine
    for n, text in enumerate(texts):
        before = set(files(kv))
        tokens = warm(FakeEngine(), text)
        kv.save(_engine_with(tokens))
        saved.append(tokens)
        for path in set(files(kv)) - before:
            os.utime(path, (base + n, base + n))
        if n == 1:
            first = next(p for p in files(kv) if p in before)
            assert kv.restore(FakeEngine(), saved[0]) is not None
            assert first.stat().st_mtime > base + 50  # a use makes "a" the most recent...
            os.utime(first, (base + 10, base + 10))  # ...kept that way on the hand-set clock
    assert kv.total_bytes() <= kv.max_bytes
    left = {tuple(e.tokens) for e in kv.entries()}
    assert tuple(saved[3]) in left and tuple(saved[0]) in left and tuple(saved[1]) not in left


def test_an_entry_larger_than_the_cap_is_not_written(tmp_path):
    kv = KVCache(tmp_path / "kv", 100)
    assert not kv.save(_engine_with(warm(FakeEngine(), " ".join(f"w{i}" for i in range(40)))))
    assert files(kv) == []


def test_writes_are_atomic_private_and_survive_concurrent_writers(kv):
    tokens = warm(FakeEngine(), " ".join(f"w{i}" for i in range(200)))
    errors = []

    def writer():
        try:
            for _ in range(10):
                kv_own = KVCache(kv.directory, kv.max_bytes)
                kv_own.save(_engine_with(tokens))
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(40):
        entry = kv.restore(FakeEngine(), tokens)
        assert entry is None or entry.tokens == tokens  # a reader sees a whole entry or none
    for t in threads:
        t.join()
    assert not errors and len(files(kv)) == 1 and not list(kv.directory.glob(".tmp-*"))
    assert kv.restore(FakeEngine(), tokens) is not None and kv.notes == []
    assert stat.S_IMODE(kv.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(files(kv)[0].stat().st_mode) == 0o600


def test_a_crashed_writers_temp_file_is_ignored_then_cleaned_up(kv):
    kv.directory.mkdir(parents=True)
    tmp = kv.directory / ".tmp-123-4-abcd"
    tmp.write_bytes(b"half a state")
    assert kv.entries() == []
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    kv.evict()
    assert not tmp.exists()


def test_a_slot_keeps_one_entry_per_conversation_and_clear_empties(kv):
    engine = FakeEngine()
    for n in range(3):
        warm(engine, " ".join(f"w{i}" for i in range(20 + n * 5)))
        kv.save(engine, slot="chat:1")
    kv.save(_engine_with(warm(FakeEngine(), " ".join(f"z{i}" for i in range(20)))), slot="chat:2")
    assert sorted(e.slot for e in kv.entries()) == ["chat:1", "chat:2"]
    assert kv.clear() == 2 and kv.entries() == []


def test_the_model_file_is_named_by_its_sha256_not_its_path(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"first model")

    class OnDisk(FakeEngine):
        def state_key(self):
            return {"engine": "fake", "model_path": str(model)}

    settings = Settings(home=tmp_path / "home", config_dir=tmp_path, hub_cache=tmp_path / "hub", hf_endpoint="http://x")
    kv = KVCache(tmp_path / "kv", 10**9, settings=settings)
    tokens = warm(FakeEngine(), " ".join(f"w{i}" for i in range(30)))
    engine = OnDisk()
    engine.cache = list(tokens)
    kv.save(engine)
    assert kv.restore(OnDisk(), tokens) is not None
    model.write_bytes(b"another model, same name")
    assert KVCache(tmp_path / "kv", 10**9, settings=settings).restore(OnDisk(), tokens) is None


@pytest.mark.parametrize("raw,expected", [("", 2 * 1024**3), ("0", 0), ("500M", 500 * 1024**2), ("1.5G", 1536 * 1024**2),
                                          ("4096", 4096), ("2gb", 2 * 1024**3)])
def test_the_cap_setting(monkeypatch, raw, expected):
    monkeypatch.setenv("CHATLLM_KV_CACHE_MAX", raw)
    assert max_bytes_setting() == expected


@pytest.mark.parametrize("raw", ["lots", "-1", "12Q"])
def test_a_bad_cap_is_an_error_with_a_hint(monkeypatch, raw):
    monkeypatch.setenv("CHATLLM_KV_CACHE_MAX", raw)
    with pytest.raises(ChatllmError) as err:
        max_bytes_setting()
    assert err.value.hint


def chat_once(kv, store, message, engine=None, resume=None):
    engine = engine or FakeEngine()
    conv = Conversation(with_warm_start(engine, kv), SAMPLING, store=store)
    if resume is not None:
        conv.resume(store.load(resume))
        conv.warm_up()
    with conv.turn(message) as t:
        reply = "".join(t)
    if kv is not None:
        kv.flush()
    return conv, engine, reply


def test_a_resumed_conversation_starts_from_the_saved_state(kv, tmp_path):
    store = Store(tmp_path / "chat.db")
    conv, first, _ = chat_once(kv, store, "hello there my friend how are you today")
    assert first.saved_states == 1 and [e.slot for e in kv.entries()] == [f"chat:{conv.id}"]
    _, engine, _ = chat_once(kv, store, "and again", resume=conv.id)
    assert engine.loaded_states == 1
    assert engine.last_stats.cached_tokens >= len(first.streamed[0])  # the whole first prompt came from disk
    _, cold, _ = chat_once(None, store, "and again", resume=conv.id)
    assert cold.last_stats.cached_tokens == 0 and cold.loaded_states == 0
    assert len(kv.entries()) == 1  # the conversation's newer state replaced its older one
    store.close()


def test_a_classifier_reuses_the_saved_prefix_and_calibration(kv):
    cues = {"positive": ["good"], "negative": ["bad"]}
    first = Classifier(with_warm_start(FakeEngine(cues=cues), kv), ["positive", "negative"])
    a = first.classify("a good film")
    kv.flush()
    engine = FakeEngine(cues=cues)
    second = Classifier(with_warm_start(engine, kv), ["positive", "negative"])
    b = second.classify("a good film")
    assert a.scores == b.scores and engine.loaded_states == 1
    assert len(engine.calls) == 1  # only the item: the calibration came from the cache
    cold = FakeEngine(cues=cues)
    assert Classifier(cold, ["positive", "negative"]).classify("a good film").scores == a.scores
    assert len(cold.calls) == 2
