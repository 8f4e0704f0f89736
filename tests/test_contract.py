"""The engine contract: a small core every engine implements, and capabilities each engine has or has not.

The fake engine the task tests use implements the core and every capability, with the same signatures; the remote
engines implement the core, scoring and embeddings but no state snapshots (a server keeps its own cache); a task that
needs a capability an engine lacks gets a one-line error naming both.
"""

from __future__ import annotations

import inspect

import pytest

from chatllm.engines.contract import (
    Embedder,
    Engine,
    GenerationStats,
    LabelScorer,
    MissingCapability,
    Reasoning,
    StateSnapshots,
    Text,
    WarmStart,
    as_embedder,
    as_label_scorer,
    complete,
    text_stream,
)
from chatllm.settings import Sampling
from tests.fakes import SPLITS, FakeEngine

CORE = ["tokenize", "count_tokens", "prompt_tokens", "render_chat", "stream", "close"]
CAPABILITIES = {LabelScorer: ["score_continuations"], Embedder: ["embed"],
                StateSnapshots: ["state_key", "save_state", "load_state"],
                WarmStart: ["restore_prefix", "save_prefix"]}


def declared(protocol) -> set[str]:
    """The methods a Protocol declares itself."""
    return {name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}


def test_the_core_and_each_capability_declare_what_the_lists_say():
    assert declared(Engine) == set(CORE)
    for protocol, methods in CAPABILITIES.items():
        assert declared(protocol) == set(methods), protocol.__name__


def test_no_capability_method_is_part_of_the_core():
    core = declared(Engine)
    for methods in CAPABILITIES.values():
        assert not core & set(methods)


@pytest.mark.parametrize("split", SPLITS)
def test_the_fake_is_an_engine_with_every_capability_but_warm_starts(split):
    engine = FakeEngine(split=split)
    assert isinstance(engine, Engine)
    assert isinstance(engine, LabelScorer) and isinstance(engine, Embedder) and isinstance(engine, StateSnapshots)
    assert not isinstance(engine, WarmStart)  # the loader adds that by wrapping
    assert isinstance(engine.name, str) and isinstance(engine.n_ctx, int)
    assert isinstance(engine.last_stats, GenerationStats)
    assert isinstance(engine.has_chat_template, bool)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("method", CORE + [m for p in (LabelScorer, Embedder, StateSnapshots) for m in CAPABILITIES[p]])
def test_each_method_has_the_contracts_signature(split, method):
    protocol = next((p for p, ms in CAPABILITIES.items() if method in ms), Engine)
    engine = FakeEngine(split=split)
    assert callable(getattr(engine, method))
    assert parameters(getattr(FakeEngine, method)) == parameters(getattr(protocol, method))


@pytest.mark.parametrize("method", CORE + ["score_continuations", "embed"])
def test_both_remote_engines_keep_the_contracts_signatures(method):
    from chatllm.engines.remote.chat_api_engine import ChatRemoteEngine
    from chatllm.engines.remote.llama_server_engine import RemoteEngine

    protocol = LabelScorer if method == "score_continuations" else Embedder if method == "embed" else Engine
    for cls in (RemoteEngine, ChatRemoteEngine):
        assert parameters(getattr(cls, method)) == parameters(getattr(protocol, method)), (cls.__name__, method)
    for prop in ("has_chat_template", "family"):
        assert isinstance(getattr(ChatRemoteEngine, prop), property)


def test_a_server_engine_has_no_state_snapshots_rather_than_stubs():
    from chatllm.engines.remote.chat_api_engine import ChatRemoteEngine
    from chatllm.engines.remote.llama_server_engine import RemoteEngine

    for cls in (RemoteEngine, ChatRemoteEngine):
        assert not any(hasattr(cls, m) for m in CAPABILITIES[StateSnapshots]), cls.__name__


def test_the_local_engine_class_has_every_capability():
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    for protocol in (LabelScorer, Embedder, StateSnapshots):
        for method in CAPABILITIES[protocol]:
            assert parameters(getattr(LlamaCppEngine, method)) == parameters(getattr(protocol, method)), method


class ChatOnly:
    """An engine with the core only (a chat-completions server that cannot score or embed)."""

    name = "chat-only-server"


def test_a_missing_capability_is_one_error_naming_the_engine_and_the_capability():
    with pytest.raises(MissingCapability) as err:
        as_embedder(ChatOnly(), "similar")
    assert "chat-only-server" in err.value.message and "embeddings" in err.value.message and "similar" in err.value.message
    assert err.value.hint
    with pytest.raises(MissingCapability, match="label scoring"):
        as_label_scorer(ChatOnly(), "sentiment")
    engine = FakeEngine(pooling="mean")
    assert as_embedder(engine, "similar") is engine


def test_text_stream_passes_the_answer_and_skips_other_events():
    def events():
        yield Reasoning("let me think")
        yield Text("Hello")
        yield Reasoning("more")
        yield Text(" world")

    assert list(text_stream(events())) == ["Hello", " world"]


def test_text_stream_closes_the_stream_it_reads():
    engine = FakeEngine(reply="one two three four")
    stream = engine.stream("hi", Sampling(max_tokens=10))
    pieces = text_stream(stream)
    assert next(pieces) == "one"
    pieces.close()
    assert engine.last_stats.finish_reason == "interrupted"


def test_complete_joins_the_answer():
    assert complete(FakeEngine(reply="one two"), "hi", Sampling()) == "one two"


def test_the_warm_start_wrapper_passes_every_capability_through(tmp_path):
    from chatllm.engines.warm_start import WarmStartEngine, with_warm_start
    from chatllm.storage.kv_cache import KVCache

    engine = FakeEngine(pooling="mean")
    wrapped = with_warm_start(engine, KVCache(tmp_path / "kv"))
    assert isinstance(wrapped, WarmStartEngine) and isinstance(wrapped, WarmStart)
    assert isinstance(wrapped, Engine) and isinstance(wrapped, LabelScorer) and isinstance(wrapped, Embedder)
    assert wrapped.name == engine.name and wrapped.wrapped is engine
    assert with_warm_start(engine, None) is engine  # --no-cache
    assert with_warm_start(ChatOnly(), KVCache(tmp_path / "kv")).__class__ is ChatOnly  # nothing to snapshot
    wrapped.close()
    assert engine.closed


def test_stats_say_whether_their_counts_are_estimates():
    assert GenerationStats().estimated is False  # the local engine and llama-server count with the model's tokenizer
    assert FakeEngine().last_stats.estimated is False


def parameters(method) -> list[tuple]:
    """Names, kinds (positional, keyword-only...) and defaults: what a caller relies on."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]
