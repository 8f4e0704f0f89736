"""The fake engine the task tests use implements the engine contract, in every tokenization it offers."""

from __future__ import annotations

import inspect

import pytest

from chatllm.engines.contract import Engine, GenerationStats
from tests.fakes import SPLITS, FakeEngine

METHODS = ["tokenize", "count_tokens", "detokenize", "prompt_tokens", "render_chat", "stream", "complete",
           "score_continuations", "embed", "state_key", "save_state", "load_state", "close"]


def test_the_list_of_methods_is_the_contracts():
    declared = {name for name, value in vars(Engine).items() if callable(value) and not name.startswith("_")}
    assert declared == set(METHODS)


@pytest.mark.parametrize("split", SPLITS)
def test_the_fake_is_an_engine(split):
    engine = FakeEngine(split=split)
    assert isinstance(engine, Engine)
    assert isinstance(engine.name, str) and isinstance(engine.n_ctx, int)
    assert isinstance(engine.last_stats, GenerationStats)
    assert isinstance(engine.has_chat_template, bool)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("method", METHODS)
def test_each_contract_method_exists_with_the_contracts_signature(split, method):
    engine = FakeEngine(split=split)
    assert callable(getattr(engine, method))
    assert parameters(getattr(FakeEngine, method)) == parameters(getattr(Engine, method))


@pytest.mark.parametrize("method", METHODS)
def test_both_remote_engines_keep_the_contracts_signatures(method):
    from chatllm.engines.remote.chat_api_engine import ChatRemoteEngine
    from chatllm.engines.remote.llama_server_engine import RemoteEngine

    for cls in (RemoteEngine, ChatRemoteEngine):
        assert parameters(getattr(cls, method)) == parameters(getattr(Engine, method)), (cls.__name__, method)
    for prop in ("has_chat_template", "family", "pooling"):
        assert isinstance(getattr(ChatRemoteEngine, prop), property)


def test_stats_say_whether_their_counts_are_estimates():
    assert GenerationStats().estimated is False  # the local engine and llama-server count with the model's tokenizer
    assert FakeEngine().last_stats.estimated is False


def parameters(method) -> list[tuple]:
    """Names, kinds (positional, keyword-only...) and defaults: what a caller relies on."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]
