"""ContextShift on the real llama.cpp engine (SmolLM2): a span cut out of the KV cache in place, nothing re-evaluated."""

from __future__ import annotations

import pytest

from chatllm.engines.contract import ContextShift, complete
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
from chatllm.settings import Sampling
from chatllm.tasks.chat.window_shift import shift_plan

pytestmark = pytest.mark.model
GREEDY = Sampling(temperature=0, max_tokens=16, repeat_penalty=1.0)


def history(n: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You are terse."}]
    for i in range(n):
        msgs += [{"role": "user", "content": f"Say the number {i}."}, {"role": "assistant", "content": f"{i}."}]
    return msgs


def test_shift_out_cuts_a_span_and_the_rest_is_reused_and_saved_consistently(smollm_path):
    engine = LlamaCppEngine(smollm_path, n_ctx=1024)
    try:
        assert isinstance(engine, ContextShift)
        msgs = history(12)
        old = engine.prompt_tokens(engine.render_chat(msgs, add_generation_prompt=False))
        question = [{"role": "user", "content": "Say the number 99."}]
        complete(engine, engine.prompt_tokens(engine.render_chat(msgs + question)), GREEDY)
        shorter = [msgs[0]] + msgs[9:]
        new = engine.prompt_tokens(engine.render_chat(shorter, add_generation_prompt=False))
        span = shift_plan(old, new)
        assert span is not None and span[0] >= 5  # the system prompt is kept
        assert not engine.shift_out(old[:-3] + [1, 2, 3], *span)  # it checks what the cache holds
        assert engine.shift_out(old[: span[1]], *span)
        # a state saved right after the shift (llama.cpp rotates the keys at the next decode) loads back whole
        tokens, data = engine.save_state()
        prompt = engine.prompt_tokens(engine.render_chat(shorter + question))
        answer = complete(engine, prompt, GREEDY)
        assert engine.last_stats.cached_tokens >= len(new)  # the shifted history was not evaluated again
        assert "99" in answer
        engine.close()
        engine = LlamaCppEngine(smollm_path, n_ctx=1024)
        assert engine.load_state(tokens, data) == len(tokens)
        assert complete(engine, prompt, GREEDY) == answer
        assert engine.last_stats.cached_tokens >= len(new)
    finally:
        engine.close()
