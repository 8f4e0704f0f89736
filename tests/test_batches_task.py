"""The tasks on an engine that runs its own batches (BatchGeneration, BatchScoring), on fake engines: the same
results as one prompt at a time, in input order, with bad rows in place. The real engine's batches are checked
against its plain path in tests/test_drafts_batches.py."""

from __future__ import annotations

import json

import pytest

from chatllm.engines.contract import BatchItem, batch_scoring, batching
from chatllm.settings import Sampling
from chatllm.tasks.ask import batch
from chatllm.tasks.ask.structured_output import json_spec
from chatllm.tasks.classify.classifier import Classifier
from chatllm.tasks.summarize import Summarizer, SummaryOptions
from chatllm.tasks.text.parallel_map import in_input_order
from tests.fakes import FakeBatchEngine, FakeEngine

GREEDY = Sampling(temperature=0)


def test_results_in_any_order_come_out_in_input_order():
    arrived = [3, 0, 2, 1, 6, 5, 4]
    assert list(in_input_order(arrived, index=lambda i: i)) == list(range(7))
    assert list(in_input_order([2, 0], index=lambda i: i)) == [0, 2]  # a gap (an item that never ran) is skipped


def test_batching_needs_the_capability_and_more_than_one_sequence():
    assert batching(FakeEngine()) is None and batch_scoring(FakeEngine()) is None
    assert batching(FakeBatchEngine(parallel=1)) is None
    engine = FakeBatchEngine(parallel=4)
    assert batching(engine) is engine and batch_scoring(engine) is engine


def rows(*texts: str) -> list[batch.Row]:
    return [batch.Row(i, i, t) for i, t in enumerate(texts, 1)]


def test_batched_rows_give_the_plain_answers_in_input_order():
    texts = [f"phrase number {i}" for i in range(1, 12)]
    plain = list(batch.run_rows(FakeEngine(), iter(rows(*texts)), GREEDY, compose=lambda t: "Say: " + t))
    engine = FakeBatchEngine(parallel=4)
    batched = list(batch.run_rows(engine, iter(rows(*texts)), GREEDY, compose=lambda t: "Say: " + t))
    assert [r.row.id for r in batched] == list(range(1, 12))
    assert [r.answer.text for r in batched] == [r.answer.text for r in plain]
    assert engine.groups[0] == [0, 1, 2, 3] and len(engine.groups) == 3  # four at a time


def test_a_bad_row_keeps_its_place_and_the_others_run():
    good = rows("a one", "b two", "c three")
    bad = batch.Row(9, 9, error="line 9 is not a JSON row")
    too_long = batch.Row(10, 10, " ".join(["word"] * 500))  # past the fake's 400-token window
    results = list(batch.run_rows(FakeBatchEngine(), iter([good[0], bad, good[1], too_long, good[2]]), GREEDY,
                                  compose=str))
    assert [r.row.id for r in results] == [1, 9, 2, 10, 3]
    assert [r.error is None for r in results] == [True, False, True, False, True]
    assert "not a JSON row" in results[1].error and "context window" in results[3].error


def test_schema_rows_are_validated_per_row():
    spec = json_spec("name")
    engine = FakeBatchEngine(replies=['{"name": "Ada"}', "not json", '{"name": "Bo"}'])
    results = list(batch.run_rows(engine, iter(rows("x", "y", "z")), GREEDY, compose=str, spec=spec))
    assert [r.answer.data if r.error is None else None for r in results] == [{"name": "Ada"}, None, {"name": "Bo"}]
    assert "not valid JSON" in results[1].error
    assert all(s.json_schema == spec.wire_text for s in engine.samplings)  # the grammar went with every prompt


def test_the_cli_rows_are_the_same_through_a_batching_engine(tmp_path, monkeypatch):
    from chatllm.cli.ask_lines import run_batch
    from chatllm.cli.context import CommandContext
    from chatllm.output import Output
    from chatllm.settings import load_settings

    monkeypatch.setenv("CHATLLM_HOME", str(tmp_path))
    outputs = []
    for engine in (FakeEngine(), FakeBatchEngine(parallel=2)):
        monkeypatch.setattr("chatllm.engines.loader.load_engine", lambda settings, out, **kw: engine)
        src, dest = tmp_path / "in.txt", tmp_path / f"out-{len(outputs)}.jsonl"
        src.write_text("one\ntwo\n\nthree\nfour\nfive\n", encoding="utf-8")
        import io

        context = CommandContext(load_settings(), Output(io.StringIO(), io.StringIO()), warm_start=False)
        run_batch(context, compose=str, system=None, spec=None, file=src, output=dest, resume=False)
        outputs.append([json.loads(line) for line in dest.read_text().splitlines()])
    assert [r["id"] for r in outputs[1]] == [1, 2, 4, 5, 6]
    assert [r["text"] for r in outputs[1]] == [r["text"] for r in outputs[0]]


def test_summarize_map_notes_through_batches_match_the_plain_summary():
    text = "\n\n".join(f"Paragraph {i} tells of event {i} in the town, and of what the people said." for i in range(80))
    options = SummaryOptions(length="short", chunk_tokens=96)

    def run(engine):
        return Summarizer(engine, Sampling(temperature=0, max_tokens=40), options).summarize([text]), engine

    # a note that goes on past the prompt's separator is cut there, in both paths
    def reply(n):
        return f"note {n} about the town\n--- and then something else entirely"

    alone, _ = run(FakeEngine(n_ctx=400, reply=reply))
    batched, engine = run(FakeBatchEngine(n_ctx=400, reply=reply, parallel=3))
    assert batched.chunks == alone.chunks > 3 and batched.text == alone.text
    assert batched.completion_tokens == alone.completion_tokens  # the cut ended each note at the separator
    assert engine.groups and max(len(g) for g in engine.groups) == 3


def test_classify_many_equals_one_by_one_and_scores_many_per_call():
    cues = {"positive": ["great", "love"], "negative": ["awful", "hate"]}
    texts = ["I love it, great", "awful, I hate it", "", "great great", "hate", "国产电影很好看"]
    one = Classifier(FakeEngine(cues=cues), ["positive", "negative"])
    engine = FakeBatchEngine(cues=cues)
    many = Classifier(engine, ["positive", "negative"])
    assert many.batches and not one.batches
    got = many.classify_many(texts)
    want = [one.classify(t) for t in texts]
    assert [(r.label, r.error) for r in got] == [(r.label, r.error) for r in want]
    for a, b in zip(got, want):
        assert a.scores == pytest.approx(b.scores)
    assert engine.scored_batches and sum(engine.scored_batches) == 5  # the empty text is never scored


def test_the_classify_cli_rows_keep_their_order_through_batches():
    from chatllm.cli.classify import _batched_rows

    cues = {"positive": ["good"], "negative": ["bad"]}
    classifier = Classifier(FakeBatchEngine(cues=cues), ["positive", "negative"])
    items = iter([("good film", None), ("", None), ("x", "line 3: not text"), ("bad film", None)] * 20)
    results = list(_batched_rows(classifier, items))
    assert len(results) == 80
    assert [r.label for r in results[:4]] == ["positive", None, None, "negative"]
    assert [r.error for r in results[:4]] == [None, "empty line", "line 3: not text", None]


def test_a_batch_item_says_where_it_belongs():
    item = BatchItem(3, "text", ["te", "xt"])
    assert item.index == 3 and item.error is None and item.stats.completion_tokens == 0


def test_the_default_number_of_sequences_follows_the_cores_and_the_device():
    from chatllm.engines.llamacpp.multi_sequence import default_parallel, shared_prefix

    assert default_parallel(0, cores=2) == 4 and default_parallel(0, cores=1) == 2 and default_parallel(0, cores=16) == 8
    assert default_parallel(-1, cores=2) == 16  # every layer on a GPU
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]  # each keeps its last token to evaluate
