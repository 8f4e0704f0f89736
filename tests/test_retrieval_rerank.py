"""Reranking passages with the model, windows, the not-found line and citations, on the fake engine.

The fake scores a continuation (here: the question) -0.05 a token when the text after the prompt's last "Text:"
holds one of the question's cues, else -0.5 a token; so a window holding a cue has relevance 0.45 (its mean
log-probability per token above the empty text's), every other window 0.
"""

from __future__ import annotations

import pytest

from chatllm.errors import ChatllmError
from chatllm.settings import Sampling
from chatllm.storage.search_index import SearchIndex
from chatllm.tasks.retrieval import file_answers as retrieval
from chatllm.tasks.retrieval import windows
from chatllm.tasks.retrieval.citations import NOT_FOUND, cite, support
from chatllm.tasks.retrieval.file_answers import Rerank, RetrievalAnswer
from chatllm.tasks.retrieval.passages import Doc, Passage
from chatllm.tasks.retrieval.rerank import Reranker
from tests.fakes import FakeEngine

QUESTION = "Where was the treaty signed?"
LINE = Rerank(min_relevance=0.3, window_tokens=24, answer_tokens=24)  # the fake's scale: a cue gives 0.45; tokens: words
FILLER = "The clerk wrote the weather and the tides in the ledger that week. "
PARAGRAPHS = [
    # BM25's favourite: the question's words over and over, and no answer
    "The treaty was signed, people said; the treaty signed was long. " * 3 + FILLER,
    FILLER + "Delegates of the powers met in the Dutch city of Utrecht in 1713, and there the treaty was sealed. " + FILLER,
    "Bananas ripen faster beside apples. " * 4,
    "Copper wires carry current with little loss. " * 4,
]


@pytest.fixture
def index(tmp_path):
    idx = SearchIndex(tmp_path / "index.db", fingerprint=retrieval.CHUNKER)
    yield idx
    idx.close()


def docs_of(paragraphs=PARAGRAPHS) -> list[Doc]:
    return [Doc(f"f{i}.txt", f"sha{i}", "Title line\n\n" + p + "\n") for i, p in enumerate(paragraphs)]


def ask(index, engine, question=QUESTION, options=LINE, **kw) -> RetrievalAnswer:
    return retrieval.answer(engine, index, docs_of(), question, Sampling(max_tokens=16), read=str, rerank=options, **kw)


def test_the_model_reranks_the_passages_and_the_answer_is_written_from_the_best_window(index):
    engine = FakeEngine(n_ctx=2000, reply="Utrecht", cues={QUESTION: ["utrecht"]})
    retrieval.ensure_indexed(index, docs_of(), read=str)
    assert [p.file for p in retrieval.search(index, docs_of(), QUESTION)] == ["f0.txt", "f1.txt"]  # BM25 alone: wrong
    r = ask(index, engine)
    assert [p.file for p in r.reranking.judged][:1] == ["f1.txt"] and r.reranking.judged[0].relevance == pytest.approx(0.45)
    assert [p.file for p in r.passages] == ["f1.txt"]  # the others score far below it: left out of the answer
    answer_prompt = engine.streamed_texts[0]
    assert "Utrecht in 1713" in answer_prompt and "Bananas" not in answer_prompt and "treaty signed was" not in answer_prompt
    assert f"Question: {QUESTION}" in answer_prompt and len(engine.streamed) == 1
    assert r.answer.text == "Utrecht" and not r.not_found
    wide = FakeEngine(n_ctx=2000, reply="Utrecht", cues={QUESTION: ["utrecht"]})
    ask(index, wide, options=Rerank(min_relevance=0.3, window_tokens=24, answer_tokens=60))
    assert "The clerk wrote" in wide.streamed_texts[0].split("Delegates")[0]  # the answer reads a wider window


def test_every_window_is_scored_in_one_short_prompt_that_shares_its_head(index):
    engine = FakeEngine(n_ctx=2000, reply="Utrecht", cues={QUESTION: ["utrecht"]})
    r = ask(index, engine)
    assert len(engine.calls) == len(r.reranking.judged) + 1  # each window, and the question with no text
    shared = 0
    while all(len(c) > shared and c[shared] == engine.calls[0][shared] for c in engine.calls):
        shared += 1
    assert engine.detokenize(engine.calls[0][:shared]).endswith("Text:\n")  # the template's head, once for all
    assert engine.streamed_texts[0].startswith(engine.detokenize(engine.calls[0][:shared]).rstrip())  # the answer's too
    assert max(len(c) for c in engine.calls) <= 2 * LINE.window_tokens  # a window, not a whole chunk
    assert r.reranking.tokens >= sum(len(c) for c in engine.calls) - shared * (len(engine.calls) - 1)


def test_no_window_clears_the_line_so_the_answer_is_not_found_without_asking_the_model(index):
    engine = FakeEngine(n_ctx=2000, reply="Utrecht", cues={QUESTION: ["vienna"]})
    shown: list[str] = []
    r = ask(index, engine, on_text=shown.append)
    assert engine.streamed == [] and r.not_found and r.citations == []
    assert r.answer.text == f"{NOT_FOUND}." and shown == [r.answer.text]
    record = r.as_dict()
    assert record["not_found"] and record["rerank"]["min_relevance"] == 0.3
    assert all(j["relevance"] == 0 for j in record["rerank"]["judged"]) and record["sources"]


def test_the_line_decides_with_the_same_scores(index):
    engine = FakeEngine(n_ctx=2000, reply="Utrecht", cues={QUESTION: ["utrecht"]})
    assert ask(index, engine, options=Rerank(min_relevance=0.5, window_tokens=24)).not_found  # 0.45 is under it
    assert not ask(index, FakeEngine(n_ctx=2000, reply="Utrecht", cues={QUESTION: ["utrecht"]}), options=LINE).not_found


def test_an_answer_in_the_windows_words_is_cited_from_its_sentence(index):
    engine = FakeEngine(n_ctx=2000, reply="Utrecht, in 1713", cues={QUESTION: ["utrecht"]})
    r = ask(index, engine)
    (c,) = r.citations
    assert (c.source, c.file, c.how) == (1, "f1.txt", "inferred") and c.start_line == c.end_line == 3
    assert c.quote.startswith("Delegates of the powers met") and c.quote.endswith("sealed.")
    assert c.line() == f'[1] f1.txt:3-3 "{c.quote}"'
    record = r.as_dict(with_text=True)
    assert record["citations"][0]["quote"] == c.quote and record["sources"][0]["relevance"] == pytest.approx(0.45)
    assert "Utrecht" in record["sources"][0]["window"] and record["sources"][0]["window_lines"] == [3, 3]


def test_an_answer_of_words_no_window_holds_is_withheld_as_not_found(index):
    engine = FakeEngine(n_ctx=2000, reply="somewhere far away", cues={QUESTION: ["utrecht"]})
    shown: list[str] = []
    r = ask(index, engine, on_text=shown.append)
    assert len(engine.streamed) == 1 and r.not_found and r.citations == [] and shown == [f"{NOT_FOUND}."]
    assert r.withheld == "somewhere far away" and r.as_dict()["withheld"] == "somewhere far away"
    kept = ask(index, FakeEngine(n_ctx=2000, reply="yes, the treaty was signed", cues={QUESTION: ["utrecht"]}))
    assert not kept.not_found and kept.citations  # yes/no and the question's own words need no passage


def test_an_answer_that_shares_too_few_words_with_its_passage_is_cited_from_the_best_one_unverified():
    ps = [Passage("a.txt", 1, 1, "Delegates met in Utrecht.", 2.0), Passage("b.txt", 5, 6, "Bananas ripen.\nApples too.", 1.0)]
    assert [(c.source, c.how) for c in cite("A Dutch town, Utrecht, far away", ps, fallback=0)] == [(1, "unverified")]
    assert cite("A Dutch town, Utrecht, far away", ps) == []  # no fallback given: nothing to rest on


def test_the_answer_takes_up_to_three_windows_that_score_close_to_the_best(index):
    q = "What ripens beside apples, and what carries current?"
    engine = FakeEngine(n_ctx=2000, reply="bananas and copper", cues={q: ["bananas", "copper"]})
    r = ask(index, engine, question=q)
    assert sorted(p.file for p in r.passages) == ["f2.txt", "f3.txt"]
    assert {c.file for c in r.citations} <= {"f2.txt", "f3.txt"} and r.citations
    one = ask(index, FakeEngine(n_ctx=2000, reply="x", cues={q: ["bananas", "copper"]}), question=q,
              options=Rerank(min_relevance=0.3, window_tokens=24, passages=1))
    assert len(one.passages) == 1


def test_a_chat_only_engine_answers_from_every_passage_that_fits(index):
    class ChatOnly:  # the core contract and nothing else: no score_continuations
        def __init__(self, engine):
            self._engine = engine

        def __getattr__(self, name):
            if name == "score_continuations":
                raise AttributeError(name)
            return getattr(self._engine, name)

    fake = FakeEngine(n_ctx=2000, reply="Utrecht [2]", cues={QUESTION: ["utrecht"]})
    r = ask(index, ChatOnly(fake))
    assert fake.calls == [] and r.reranking is None and "[1]" in fake.streamed_texts[0] and len(r.passages) > 1
    assert [c.how for c in r.citations] == ["cited"]


def test_a_server_without_log_probabilities_falls_back_with_a_note(index):
    class NoLogprobs(FakeEngine):
        def score_continuations(self, prefix, continuations):
            raise ChatllmError("the server has no /v1/completions", "")

    notes: list[str] = []
    r = ask(index, NoLogprobs(n_ctx=2000, reply="Utrecht [2]"), on_status=notes.append)
    assert r.reranking is None and r.answer.text == "Utrecht [2]"
    assert notes and "every passage that fits" in notes[0] and "/v1/completions" in notes[0]


def test_reranker_prompts_put_the_window_between_a_shared_head_and_the_request():
    engine = FakeEngine(n_ctx=500)
    rr = Reranker(engine, engine, QUESTION)
    a, b = rr.prompt("first window"), rr.prompt("second")
    assert a[: len(rr.head)] == b[: len(rr.head)] and a[-len(rr.tail):] == b[-len(rr.tail):]
    assert "Write one question" in engine.detokenize(rr.tail)
    zh = Reranker(engine, engine, "条约在哪里签订？")
    assert "写出一个" in engine.detokenize(zh.tail)


def test_a_window_is_the_run_of_sentences_with_the_rarer_question_words():
    text = ("The city grew along the river. " * 4 + "Skylab was launched in 1973 on a Saturn V. "
            + "The station fell in 1979. " + "The city launched a fair. " + "The city has many bridges. " * 4)
    weight = windows.weights("When was Skylab launched?", [text])
    assert weight["skylab"] > weight.get("launch", 0) > 0
    w = windows.best_window(text, weight, 24)
    body = w.text_of(text)
    assert "Skylab was launched in 1973" in body and w.tokens <= 24 and len(body) < len(text) / 2
    zh = "北京是中国的首都。" * 3 + "长城始建于春秋战国时期，全长两万多公里。" + "上海是一座港口城市。" * 3
    zw = windows.best_window(zh, windows.weights("长城始建于什么时候？", [zh]), 30)
    assert "长城始建于春秋战国时期" in zw.text_of(zh)


def test_a_sentence_longer_than_the_window_is_cut_to_fit():
    text = "word " * 200 + "Skylab orbit. " + "word " * 200
    w = windows.best_window(text, windows.weights("Skylab orbit?", [text]), 20)
    assert "Skylab" in w.text_of(text) and w.tokens <= 20


def test_support_counts_the_words_an_answer_adds_to_its_question():
    windows_ = ["Skylab was launched in 1973 on a Saturn V."]
    assert support("Skylab was launched in 1973.", "When was Skylab launched?", windows_) == 1.0
    assert support("In 1975, by NASA.", "When was Skylab launched?", windows_) == 0.0
    assert support("Yes.", "Was Skylab launched?", windows_) == 1.0
    assert support("白沙镇由盐商周德海创立。", "白沙镇是谁创立的？", ["白沙镇始建于清朝，由盐商周德海创立。"]) == 1.0
    assert support("白沙镇由李丽创立。", "白沙镇是谁创立的？", ["白沙镇始建于清朝，由盐商周德海创立。"]) == 0.0


def test_citations_narrow_to_the_sentence_and_its_line():
    p = Passage("a.txt", 10, 12, "Intro line.\nThe treaty was signed in Utrecht. It ended a war.\nMore.", 1.0)
    (c,) = cite("Utrecht", [p])
    assert (c.start_line, c.end_line, c.quote, c.how) == (11, 11, "The treaty was signed in Utrecht.", "inferred")
    assert cite("", [p]) == [] and cite("Utrecht", []) == []
