"""Same prompt, same seed, same answer, whatever the KV cache holds, on every kernel path this CPU has (issue 21).

Each test runs with llama.cpp's weight repacking on and off and flash attention on and off, so a CPU whose batched
and single-token kernels round differently cannot turn CI red on one machine only. Gemma 3 has repackable weights
(Q4_K, Q6_K) on any x86 or ARM CPU; SmolLM2 is the chat model.
"""

from __future__ import annotations

import itertools

import pytest

from chatllm.engines.contract import complete, text_stream
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine, captured_log
from chatllm.settings import Sampling

pytestmark = pytest.mark.model
KERNELS = [pytest.param((r, f), id=f"repack-{'on' if r else 'off'}-fa-{'on' if f else 'off'}")
           for r, f in itertools.product((True, False), (True, False))]
GREEDY = Sampling(temperature=0, max_tokens=24, repeat_penalty=1.0)
SEEDED = Sampling(temperature=0.9, seed=7, max_tokens=16)


@pytest.fixture(scope="module", params=KERNELS)
def kernels(request):
    return request.param


@pytest.fixture(scope="module")
def smollm(smollm_path, kernels):
    repack, flash = kernels
    eng = LlamaCppEngine(smollm_path, n_ctx=1024, repack=repack, flash_attn=flash)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def gemma(gemma_path, kernels):
    repack, flash = kernels
    eng = LlamaCppEngine(gemma_path, n_ctx=512, repack=repack, flash_attn=flash)
    eng.load_log = captured_log()
    yield eng
    eng.close()


def user(engine, *turns):
    roles = itertools.cycle(("user", "assistant"))
    return engine.render_chat([{"role": r, "content": t} for r, t in zip(roles, turns)])


def test_repacking_is_what_was_asked_for(gemma, kernels):
    assert gemma.repack == kernels[0]
    assert ("CPU_REPACK model buffer" in gemma.load_log) == kernels[0]
    assert gemma.flash_attn == kernels[1]


@pytest.mark.parametrize("sampling", [GREEDY, SEEDED], ids=["greedy", "seed-7"])
def test_a_cached_prompt_gives_the_fresh_answer(smollm, gemma, sampling):
    for engine, prompt in ((smollm, user(smollm, "用中文写一句关于春天的诗。")),
                           (smollm, user(smollm, "Tell me a story.")),
                           (gemma, gemma.prompt_tokens("The history of the printing press", special=False))):
        engine._rewind(0)  # nothing cached: the prompt is evaluated from scratch
        fresh = complete(engine, prompt, sampling)
        assert engine.last_stats.cached_tokens == 0
        cached = complete(engine, prompt, sampling)
        assert engine.last_stats.cached_tokens == engine.last_stats.prompt_tokens - 1
        streamed = "".join(text_stream(engine.stream(prompt, sampling)))
        assert fresh == cached == streamed


def test_retry_and_undo_repeat_the_reply_whatever_was_generated_since(smollm):
    smollm._rewind(0)
    first = user(smollm, "Name three colours.")
    reply1 = complete(smollm, first, GREEDY)
    second = user(smollm, "Name three colours.", reply1, "And three animals?")
    reply2 = complete(smollm, second, GREEDY)
    assert smollm.last_stats.cached_tokens > 0  # the first exchange came from the cache
    assert complete(smollm, second, GREEDY) == reply2  # /retry: the cache holds the old reply past the prompt
    assert complete(smollm, first, GREEDY) == reply1  # /undo back to the first turn: the cache holds more than it
    other = user(smollm, "Name three colours.", reply1, "And three cities?")
    complete(smollm, other, GREEDY)  # an edited turn shares only part of the cache
    assert complete(smollm, second, GREEDY) == reply2


def test_a_second_engine_gives_the_same_answer(smollm_path, smollm, kernels):
    prompt = user(smollm, "Tell me a story.")
    complete(smollm, prompt, SEEDED)  # cached in the long-lived engine
    expected = complete(smollm, prompt, SEEDED)
    repack, flash = kernels
    with LlamaCppEngine(smollm_path, n_ctx=1024, repack=repack, flash_attn=flash) as other:  # a model switch, a new process
        assert complete(other, prompt, SEEDED) == expected


def test_scores_do_not_depend_on_the_cache(smollm):
    prefix = "The colour of the clear daytime sky is"
    options = [smollm.tokenize(" blue"), smollm.tokenize(" light blue indeed")]
    smollm._rewind(0)
    fresh = smollm.score_continuations(prefix, options)
    assert smollm.score_continuations(prefix, options) == fresh
