"""The speed-related defaults of issue 6: load-aware thread count, the cheap exact sampler chain, no wasted decode."""

from __future__ import annotations

import pytest
from llama_cpp import _internals as internals

from chatllm.engines.contract import complete
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
from chatllm.engines.llamacpp.threads import default_threads, other_busy_cores
from chatllm.settings import Sampling


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 9.0, 1), (8, 3.0, 5), (1, 0.0, 1), (4, 1.2, 3)],
)
def test_default_threads_leaves_the_busy_cores_alone(cores, busy, expected):
    assert default_threads(cores, busy) == expected


def test_other_busy_cores_reads_this_machine():
    busy = other_busy_cores()
    assert isinstance(busy, float) and busy >= 0.0
    assert 1 <= default_threads() <= 4096


def test_a_task_that_is_runnable_only_for_an_instant_costs_no_thread(monkeypatch):
    import chatllm.engines.llamacpp.threads as devices

    readings = iter([(1.4, 3), (1.4, 1), (1.4, 3), (1.4, 2)])  # a blip of one other task, then a steady one
    monkeypatch.setattr(devices, "_loadavg", lambda: next(readings))
    assert devices.other_busy_cores(interval=0) == 0.0
    monkeypatch.setattr(devices, "_loadavg", lambda: (1.4, 2))  # another task runnable at every sample
    assert devices.other_busy_cores(interval=0) == 1.0
    monkeypatch.setattr(devices, "_loadavg", lambda: (0.3, 3))  # runnable now, but not over the last minute
    assert devices.other_busy_cores(interval=0) == 0.3


def _unfiltered_sampler(engine: LlamaCppEngine, s: Sampling) -> internals.LlamaSampler:
    """The plain chain (penalties over the whole vocabulary first), to compare against."""
    sampler = internals.LlamaSampler()
    sampler.add_penalties(engine.n_vocab, 64, s.repeat_penalty, 0.0, 0.0)
    if s.temperature <= 0:
        sampler.add_greedy()
        return sampler
    sampler.add_top_k(s.top_k)
    sampler.add_top_p(s.top_p, 1)
    sampler.add_min_p(s.min_p, 1)
    sampler.add_temp(s.temperature)
    sampler.add_dist(s.seed & 0xFFFFFFFF)
    return sampler


@pytest.fixture(scope="module")
def engine(smollm_path):
    eng = LlamaCppEngine(smollm_path, n_ctx=512, n_threads=1)
    yield eng
    eng.close()


@pytest.mark.model
@pytest.mark.parametrize("sampling", [Sampling(temperature=0, max_tokens=40)]
                         + [Sampling(temperature=t, seed=k, max_tokens=40) for k, t in ((1, 0.7), (2, 1.3))])
def test_top_k_before_penalties_samples_exactly_the_same(engine, sampling, monkeypatch):
    prompt = engine.render_chat([{"role": "user", "content": "List ten animals, one per line."}])
    fast = complete(engine, prompt, sampling)
    monkeypatch.setattr(LlamaCppEngine, "_sampler", _unfiltered_sampler)
    assert complete(engine, prompt, sampling) == fast


@pytest.mark.model
def test_stop_at_max_tokens_keeps_the_cache_usable(engine):
    prompt = engine.render_chat([{"role": "user", "content": "Write a poem about rain."}])
    tokens = engine.prompt_tokens(prompt)
    answer = complete(engine, tokens, Sampling(temperature=0, max_tokens=6))
    stats = engine.last_stats
    assert stats.completion_tokens == 6 and stats.finish_reason == "length"
    # the next prompt extends the previous one: everything but the unevaluated last token comes from the cache
    follow = tokens + engine.tokenize(answer) + engine.tokenize(" More.")
    complete(engine, follow, Sampling(temperature=0, max_tokens=2))
    assert engine.last_stats.cached_tokens >= len(tokens) + 4
