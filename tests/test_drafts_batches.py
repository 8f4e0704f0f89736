"""Drafts from the prompt and several sequences per decode on the real SmolLM2 model, against the exact path.

Both change how tokens are batched, and llama.cpp's CPU kernels round a batch differently from a single-token step
(its repacked weights have separate kernels for 1 row and for 4), so a greedy reply can part from the exact path
where two tokens were nearly tied. The tolerance every comparison here states: where a reply parts from the exact
one, the two tokens at the first difference are within GAP nats of each other under the exact path's own
log-probabilities (bench/reproducibility.py measured 0.004-0.67 on SmolLM2 and Qwen); scores differ by at most
SCORE_GAP. Drafts are forced on with a cost table under which every draft pays, so the drafting path runs whatever
this machine's timings are.
"""

from __future__ import annotations

import json

import llama_cpp
import numpy as np
import pytest

from chatllm.engines.contract import complete
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
from chatllm.engines.llamacpp.prompt_lookup import DecodeCosts, Drafter
from chatllm.errors import ContextOverflowError
from chatllm.settings import Sampling

pytestmark = pytest.mark.model
GAP = 1.0
SCORE_GAP = 0.5
GREEDY = Sampling(temperature=0, max_tokens=48, repeat_penalty=1.0)
TEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
        "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under "
        "their leader Rollo, agreed to swear fealty to King Charles III of West Francia.")


class FixedCosts(DecodeCosts):
    """A decode of n tokens costs 1 + slope * (n - 1) steps, whatever the clock says."""

    def __init__(self, slope: float):
        super().__init__()
        self._seconds = {n: 1.0 + slope * (n - 1) for n in range(1, 18)}

    def add(self, n: int, seconds: float) -> None:
        """Timings are ignored."""


@pytest.fixture(scope="module")
def engine(smollm_path):
    eng = LlamaCppEngine(smollm_path, n_ctx=2048, parallel=4)
    yield eng
    eng.close()


def chat(engine, text: str) -> str:
    return engine.render_chat([{"role": "user", "content": text}])


def gap_where_they_part(engine, prompt: str, a: str, b: str) -> float:
    """The exact path's log-probability gap between the two replies' tokens where they first differ (0: no difference)."""
    ta, tb = engine.tokenize(a), engine.tokenize(b)
    i = 0
    while i < min(len(ta), len(tb)) and ta[i] == tb[i]:
        i += 1
    if i == min(len(ta), len(tb)):
        return 0.0
    engine._eval(engine.prompt_tokens(prompt) + ta[:i])
    lp = engine._logprobs_at(-1, np)
    return abs(float(lp[ta[i]] - lp[tb[i]]))


def drafted(engine, prompt, sampling, slope: float = 0.01) -> str:
    saved, engine._costs = engine._costs, FixedCosts(slope)
    try:
        return complete(engine, prompt, sampling.replace(draft="auto"))
    finally:
        engine._costs = saved


def test_drafts_are_verified_and_greedy_replies_part_only_at_near_ties(engine):
    prompts = [chat(engine, f"{TEXT}\n\nCopy the text above word for word."),
               chat(engine, f"{TEXT}\n\nWho was the leader of the Norse raiders? Quote the text."),
               chat(engine, "Write a short poem about the sea.")]
    for prompt in prompts:
        plain = complete(engine, prompt, GREEDY.replace(draft="off"))
        assert engine.last_stats.drafted_tokens == 0
        with_drafts = drafted(engine, prompt, GREEDY)
        stats = engine.last_stats
        assert stats.accepted_tokens <= stats.drafted_tokens
        assert gap_where_they_part(engine, prompt, plain, with_drafts) <= GAP
        # the cache holds no drafted token it did not keep: the exact path answers as before
        assert complete(engine, prompt, GREEDY.replace(draft="off")) == plain
    copy = prompts[0]
    drafted(engine, copy, GREEDY)
    assert engine.last_stats.drafted_tokens > 0 and engine.last_stats.accepted_tokens > 0


def test_the_sampler_draws_once_per_token_whatever_is_drafted(engine):
    """A drafted token is kept only where the sampler's own draw at that position is the same token, so the random
    stream advances exactly once per token: a scripted 'sampler' must come out unchanged, drafts or not."""
    prompt = engine.prompt_tokens(chat(engine, f"{TEXT}\n\nCopy it."))
    body = engine.tokenize(" " + TEXT)
    script = body[:20] + [engine.tokenize(" zebra")[0]] + body[21:40]  # copies, parts once, copies again
    engine._eval(prompt)
    calls = []

    def pick(index: int) -> int:
        calls.append(index)
        return script[len(calls) - 1]

    from chatllm.engines.contract import GenerationStats

    stats = GenerationStats()
    produced = engine._produce(pick, Drafter(prompt, FixedCosts(0.01)), stats, max_tokens=len(script))
    out = []
    for token in produced:
        out.append(token)
        stats.completion_tokens += 1
        if len(out) == len(script):
            break
    produced.close()
    assert out == script and len(calls) == len(script)
    assert stats.drafted_tokens > 0 and stats.accepted_tokens > 10
    assert llama_cpp.llama_memory_seq_pos_max(engine._ctx.memory, 0) == len(engine._tokens) - 1  # no stray drafts


def test_a_grammar_vetoes_drafted_tokens_it_does_not_allow(engine):
    schema = json.dumps({"type": "object", "properties": {"colour": {"enum": ["red", "blue"]}}, "required": ["colour"]})
    prompt = chat(engine, 'Fill in: {"colour": "purple"}. Answer with JSON: {"colour": "purple"}')
    sampling = GREEDY.replace(json_schema=schema, max_tokens=24)
    plain = complete(engine, prompt, sampling.replace(draft="off"))
    text = drafted(engine, prompt, sampling)
    assert json.loads(text)["colour"] in ("red", "blue")
    assert gap_where_they_part(engine, prompt, plain, text) <= GAP


def test_no_draft_is_made_where_a_verify_costs_its_steps(engine):
    prompt = chat(engine, f"{TEXT}\n\nCopy the text above word for word.")
    drafted(engine, prompt, GREEDY, slope=1.0)
    assert engine.last_stats.drafted_tokens == 0


def test_batched_replies_part_from_the_exact_ones_only_at_near_ties(engine):
    cities = ["Paris", "Tokyo", "Rome", "Madrid", "Berlin", "Cairo", "Lima", "Oslo", "Dublin"]
    prompts = [chat(engine, f"In which country is {c}? Answer in one short sentence.") for c in cities]
    exact = [complete(engine, p, GREEDY) for p in prompts]
    items = list(engine.generate_batch(prompts, GREEDY))
    assert sorted(item.index for item in items) == list(range(len(prompts)))
    for item in items:
        assert item.error is None and item.text == "".join(item.pieces)
        assert item.stats.prompt_tokens == len(engine.prompt_tokens(prompts[item.index]))
        assert gap_where_they_part(engine, prompts[item.index], exact[item.index], item.text) <= GAP
    assert all(item.stats.cached_tokens > 10 for item in items)  # the shared template head is evaluated once
    mem = engine._ctx.memory
    assert all(llama_cpp.llama_memory_seq_pos_max(mem, s) == -1 for s in range(1, 5))  # every sequence freed
    assert complete(engine, prompts[0], GREEDY) == exact[0]  # the exact path is untouched


def test_an_item_that_does_not_fit_fails_alone_and_a_long_one_waits_for_room(smollm_path):
    with LlamaCppEngine(smollm_path, n_ctx=512, parallel=4) as small:
        long_prompt = chat(small, "Summarize: " + "the cat sat on the mat " * 40)  # ~250 tokens: two fit at a time
        prompts = [long_prompt, chat(small, "word " * 600), long_prompt, chat(small, "Say hi."), long_prompt]
        items = {item.index: item for item in small.generate_batch(prompts, GREEDY.replace(max_tokens=40))}
        assert isinstance(items[1].error, ContextOverflowError)
        assert all(items[i].error is None and items[i].stats.completion_tokens > 0 for i in (0, 2, 3, 4))
        assert items[0].text == items[2].text == items[4].text  # alike, whichever room they ran in (same neighbours)


def test_batched_scores_match_one_at_a_time_within_the_tolerance(engine):
    prefix = "Review: "
    items = ["a great film", "boring and long", "I loved every minute", "awful acting"]
    conts = [engine.tokenize(" positive"), engine.tokenize(" negative"), engine.tokenize(" quite good overall")]
    requests = [(engine.prompt_tokens(prefix + t + "\nSentiment:"), conts) for t in items]
    one = [engine.score_continuations(t, c) for t, c in requests]
    many = engine.score_batch(requests)
    assert len(many) == len(one) and all(len(m) == 3 for m in many)
    assert max(abs(a - b) for ra, rb in zip(one, many) for a, b in zip(ra, rb)) <= SCORE_GAP


def test_stopping_a_batch_early_frees_its_sequences(engine):
    prompts = [chat(engine, f"Count to {n}.") for n in range(10, 18)]
    batch = engine.generate_batch(prompts, GREEDY)
    first = next(batch)
    batch.close()
    assert first.error is None
    mem = engine._ctx.memory
    assert all(llama_cpp.llama_memory_seq_pos_max(mem, s) == -1 for s in range(1, 5))
    assert engine.last_stats.finish_reason == "interrupted"
    assert complete(engine, prompts[0], GREEDY)  # the engine goes on


# -- through the CLI ---------------------------------------------------------------------------------


def test_json_reports_drafts_and_draft_off_is_the_exact_path(chatllm):
    args = ["ask", "--json", "-t", "0", "-n", "24", "--threads", "1", f"{TEXT}\n\nCopy the first sentence."]
    off = chatllm(*args, "--draft", "off")
    assert off.returncode == 0, off.stderr
    record = json.loads(off.stdout)
    assert record["drafted_tokens"] == 0 and record["accepted_tokens"] == 0
    auto = chatllm(*args)
    assert auto.returncode == 0 and 0 <= json.loads(auto.stdout)["accepted_tokens"] <= json.loads(auto.stdout)["drafted_tokens"]
    bad = chatllm(*args, "--draft", "always")
    assert bad.returncode == 2 and "--draft must be auto or off" in bad.stderr


def test_sentiment_lines_in_batches_agree_with_one_at_a_time(chatllm):
    lines = "A wonderful, moving film.\nDull and far too long.\n\nThe actors seem bored.\nI would see it again.\n" * 3
    runs = {}
    for n in ("1", "4"):
        r = chatllm("sentiment", "--lines", "--json", "--parallel", n, input=lines)
        assert r.returncode == 0, r.stderr
        assert "ignored" not in r.stderr
        runs[n] = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(runs["1"]) == len(runs["4"]) == 15
    for a, b in zip(runs["1"], runs["4"]):
        assert a.get("error") == b.get("error") and a["text"] == b["text"]
        if a.get("label") is None:
            continue
        assert abs(a["scores"]["positive"] - b["scores"]["positive"]) <= 0.05
        if abs(a["scores"]["positive"] - 0.5) > 0.05:
            assert a["label"] == b["label"]


def test_ask_lines_in_batches_keep_order_and_parallel_1_is_the_exact_path(chatllm):
    cities = "Paris\nTokyo\nRome\nMadrid\nBerlin\nLima\n"
    args = ["ask", "--lines", "--json", "-n", "8", "-t", "0", "--threads", "1", "Which country is this city in?"]
    one = chatllm(*args, "--parallel", "1", input=cities)
    four = chatllm(*args, "--parallel", "4", input=cities)
    assert one.returncode == four.returncode == 0, four.stderr
    rows1 = [json.loads(line) for line in one.stdout.splitlines()]
    rows4 = [json.loads(line) for line in four.stdout.splitlines()]
    assert [r["id"] for r in rows4] == [r["id"] for r in rows1] == [1, 2, 3, 4, 5, 6]
    assert all(r["text"] and r["error"] is None for r in rows4)
    assert all(r["cached_tokens"] > 10 for r in rows4[1:])
    again = chatllm(*args, "--parallel", "1", input=cities)  # (warm: the shared prefix comes from the disk cache)
    assert [json.loads(line)["text"] for line in again.stdout.splitlines()] == [r["text"] for r in rows1]
