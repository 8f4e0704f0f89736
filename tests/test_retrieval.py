"""Retrieval over files past the window: chunk line spans, the FTS5 index, passage choice, prompts and citations."""

from __future__ import annotations

import sqlite3

import pytest

from chatllm.errors import UsageError
from chatllm.inputs import gather_files
from chatllm.settings import Sampling
from chatllm.storage.search_index import SearchIndex, index_text, match_expression, query_terms
from chatllm.tasks.retrieval import file_answers as retrieval
from chatllm.tasks.retrieval.citations import NOT_FOUND, cite, is_not_found
from chatllm.tasks.retrieval.file_answers import line_chunks, select
from chatllm.tasks.retrieval.passages import Doc, Passage, approx_tokens
from tests.fakes import FakeEngine

PARAGRAPHS = [
    "The lighthouse keeper lit the lamp every evening at dusk.",
    "Bananas ripen faster when stored beside apples in a paper bag.",
    "The treaty was signed in Utrecht in 1713 by the delegates.",
    "Copper wires carry current with little loss over short runs.",
]


def text_of(paragraphs=PARAGRAPHS, repeat: int = 1) -> str:
    return "\n\n".join(" ".join([p] * repeat) for p in paragraphs) + "\n"


@pytest.fixture
def index(tmp_path):
    idx = SearchIndex(tmp_path / "index.db", fingerprint=retrieval.CHUNKER)
    yield idx
    idx.close()


def test_line_chunks_keep_each_chunks_line_span():
    text = "\n".join(f"line {i} " + "word " * 30 for i in range(1, 41))
    chunks = line_chunks(text, budget=64)
    assert len(chunks) > 3
    lines = text.split("\n")
    for start, end, body in chunks:
        assert body == "\n".join(lines[start - 1:end]).strip()
    assert chunks[0][0] == 1 and chunks[-1][1] == 40


def test_line_chunks_count_blank_lines_and_fit_the_budget():
    chunks = line_chunks(text_of(), budget=16)
    assert [c[0] for c in chunks] == [1, 3, 5, 7]
    assert all(approx_tokens(c[2]) <= 16 for c in chunks)


def test_approx_tokens_counts_chinese_by_character():
    assert approx_tokens("长城很长。") == 5
    assert approx_tokens("the cat sat") == 3


def test_cjk_is_indexed_as_characters_and_bigrams_so_short_queries_match():
    assert index_text("我爱北京", "words").split() == ["我", "爱", "北", "京", "我爱", "爱北", "北京"]
    assert query_terms("北京在哪里？", "words") == ["北京", "京在", "在哪", "哪里"]
    assert query_terms("猫", "words") == ["猫"]
    assert query_terms("What is the capital?", "words") == ["capital"]
    assert match_expression(['say "hi"', "OR"]) == '"say ""hi""" OR "OR"'


def test_search_ranks_the_matching_chunk_first_with_scores(index):
    doc = Doc("notes.txt", "sha-a", text_of(repeat=12))  # each paragraph a chunk of its own
    assert retrieval.ensure_indexed(index, [doc], read=lambda d: pytest.fail("the text was given")) == 1
    hits = retrieval.search(index, [doc], "Where was the treaty signed?")
    assert hits[0].text.startswith("The treaty") and hits[0].span == "notes.txt:5-5"
    assert hits[0].score > 0 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert retrieval.ensure_indexed(index, [doc], read=lambda d: pytest.fail("indexed again")) == 0


def test_chinese_search_finds_the_paragraph(index):
    doc = Doc("zh.txt", "sha-zh", "长城是中国古代的军事防御工程。" * 15 + "\n\n" + "熊猫主要生活在四川的山区。" * 15 + "\n")
    retrieval.ensure_indexed(index, [doc], read=str)
    for question in ("熊猫生活在哪里？", "猫"):  # a one-character question matches too
        best = retrieval.search(index, [doc], question)[0]
        assert best.end_line == 3 and best.text.count("熊猫") > 3
    assert retrieval.search(index, [doc], "长城是什么工程")[0].span == "zh.txt:1-1"


def test_trigram_scheme_scans_for_terms_under_three_characters(tmp_path):
    idx = SearchIndex(tmp_path / "tri.db", scheme="trigram")
    idx.add("s", 10, [(1, 1, "熊猫在四川"), (3, 3, "长城很长")])
    assert [h.start_line for h in idx.search("猫", ["s"], 5)] == [1]
    assert [h.start_line for h in idx.search("长城很长吗", ["s"], 5)] == [3]
    idx.close()


def test_a_changed_file_gets_a_new_hash_and_the_old_chunks_go(index, tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first version about otters\n")
    sha1, known = index.file_sha(f)
    assert not known and index.file_sha(f) == (sha1, True)
    index.add(sha1, 10, [(1, 1, "first version about otters")])
    f.write_text("second version about beavers\n")
    sha2, known = index.file_sha(f)
    assert sha2 != sha1 and not known and not index.is_indexed(sha1)


def test_a_corrupt_index_is_rebuilt_with_a_warning(tmp_path):
    path = tmp_path / "index.db"
    path.write_bytes(b"this is not a database" * 200)
    warnings: list[str] = []
    idx = SearchIndex(path, warn=warnings.append)
    assert len(warnings) == 1 and "rebuilding" in warnings[0]
    idx.add("s", 3, [(1, 1, "otters")])
    assert idx.search("otters", ["s"], 3)
    idx.close()


def test_another_chunker_means_a_fresh_index(tmp_path):
    idx = SearchIndex(tmp_path / "i.db", fingerprint="v1")
    idx.add("s", 3, [(1, 1, "otters")])
    idx.close()
    idx = SearchIndex(tmp_path / "i.db", fingerprint="v2")
    assert not idx.is_indexed("s")
    idx.close()


def test_two_connections_share_the_index(tmp_path):
    a = SearchIndex(tmp_path / "i.db")
    b = SearchIndex(tmp_path / "i.db")
    a.add("s", 3, [(1, 1, "otters swim")])
    assert b.add("s", 3, [(1, 1, "otters swim")]) == 0  # the second writer finds it done
    assert len(b.search("otters", ["s"], 5)) == 1
    assert sqlite3.connect(tmp_path / "i.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a.close()
    b.close()


def test_select_keeps_the_best_passages_that_fit_and_cuts_one_when_none_does():
    ps = [Passage("f", i, i, "word " * n, 1.0 / i) for i, n in ((1, 30), (2, 50), (3, 10))]
    count = FakeEngine().count_tokens
    assert [p.start_line for p in select(ps, count, 60)] == [1, 3]
    cut = select([Passage("f", 1, 3, "a b c d\ne f g h\ni j k l", 1.0)], count, 10)
    assert cut[0].text.startswith("a b c") and cut[0].tokens <= 4 and cut[0].end_line == 1 + cut[0].text.count("\n") < 3


def test_citations_map_numbers_to_spans_and_drop_invented_ones():
    ps = [Passage("a.txt", 10, 12, "The treaty was signed in Utrecht.\nOther line.\nMore.", 5.0),
          Passage("b.txt", 1, 1, "Bananas ripen fast.", 2.0)]
    cs = cite("In Utrecht [1] [7]", ps)
    assert [(c.source, c.span, c.how) for c in cs] == [(1, "a.txt:10-10", "cited")]
    assert cite("not found in the files.", ps) == []
    inferred = cite("Bananas ripen fast", ps)
    assert [(c.source, c.how) for c in inferred] == [(2, "inferred")]
    unverified = cite("Utrecht [2]", ps)
    assert [(c.source, c.how) for c in unverified] == [(2, "unverified"), (1, "inferred")]


def test_without_reranking_numbered_sources_go_before_the_question_and_fit_the_window(index):
    docs = [Doc(f"f{i}.txt", f"sha{i}", text_of([p] * 8)) for i, p in enumerate(PARAGRAPHS)]
    engine = FakeEngine(n_ctx=300, reply="Utrecht [1]")
    r = retrieval.answer(engine, index, docs, "Where was the treaty signed?", Sampling(max_tokens=20), read=str,
                         rerank=None)
    assert engine.calls == []  # nothing scored
    prompt = engine.streamed_texts[0]
    assert "[1]" in prompt and "Question: Where was the treaty signed?" in prompt and NOT_FOUND in prompt
    assert r.passages[0].file == "f2.txt" and len(engine.streamed[0]) + 20 <= 300
    assert r.citations[0].file == "f2.txt" and r.citations[0].how == "cited"
    record = r.as_dict()
    assert record["mode"] == "retrieval" and record["answer"] == "Utrecht [1]" and record["citations"][0]["score"] > 0
    assert record["sources"][0]["file"] == "f2.txt" and not record["not_found"] and r.indexed == 4
    assert "rerank" not in record


def test_not_found_is_recognised():
    assert is_not_found("Not found in the\nfiles.") and not is_not_found("Utrecht")


def test_gather_files_walks_a_folder_and_skips_binary_with_a_note(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("alpha\n")
    (tmp_path / "d" / "sub" / "b.md").write_text("beta\n")
    (tmp_path / "d" / "img.bin").write_bytes(b"\x89PNG\x00\x00")
    (tmp_path / "d" / ".hidden").write_text("secret\n")
    notes: list[str] = []
    found = gather_files([tmp_path / "d"], notes.append)
    assert [p.name for p in found] == ["a.txt", "b.md"]
    assert len(notes) == 1 and "img.bin (binary)" in notes[0]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.bin").write_bytes(b"\x00")
    with pytest.raises(UsageError, match="has no text files"):
        gather_files([tmp_path / "e"])
    with pytest.raises(UsageError, match="no such file"):
        gather_files([tmp_path / "missing.txt"])


# -- hybrid retrieval: BM25 fused with vectors ----------------------------------------------------------------


def test_fusion_ranks_by_reciprocal_rank_across_both_lists():
    from chatllm.storage.passage_index import Hit

    a, b, c = (Hit("s", i, i, i, t, 0.0) for i, t in enumerate("abc"))
    fused = retrieval.fuse([[a, b], [b, c]], k=3)
    assert [h.text for h in fused] == ["b", "a", "c"]  # b is in both lists; a outranks c by its better rank
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert len(retrieval.fuse([[a, b], [b, c]], k=1)) == 1
    weighted = retrieval.fuse([[a], [c, b]], k=3, weights=(1.0, 0.5))
    assert [h.text for h in weighted] == ["a", "c", "b"] and weighted[1].score == pytest.approx(0.5 / 61)


def test_chunk_vectors_are_embedded_once_and_the_nearest_found(index):
    docs = [Doc(f"f{i}.txt", f"sha{i}", text_of([p] * 3)) for i, p in enumerate(PARAGRAPHS)]
    retrieval.ensure_indexed(index, docs, read=str)
    embedder = FakeEngine(name="emb", pooling="mean", dim=64)
    shas = [d.sha for d in docs]
    statuses: list[str] = []
    assert retrieval.ensure_vectors(index, embedder, shas, statuses.append) == len(index.vector_gaps(shas, "other"))
    assert "embedding" in statuses[0] and retrieval.ensure_vectors(index, embedder, shas) == 0  # kept in the index
    near = index.nearest(embedder.embed(["bananas apples paper bag"])[0], shas, "emb", 2)
    assert near[0].sha == "sha1" and near[0].score > near[1].score
    assert index.nearest(embedder.embed(["x"])[0], shas, "another-model", 2) == []  # another model's vectors: none


def test_hybrid_search_finds_a_paraphrase_bm25_misses(index):
    docs = [Doc(f"f{i}.txt", f"sha{i}", text_of([p] * 3)) for i, p in enumerate(PARAGRAPHS)]
    retrieval.ensure_indexed(index, docs, read=str)
    embedder = FakeEngine(name="emb", pooling="mean", dim=64)
    question = "lamp dusk"  # the fake embedder matches words, so BM25 and vectors agree here: both rank f0 first
    assert retrieval.search(index, docs, question)[0].file == "f0.txt"
    hybrid = retrieval.search(index, docs, question, embedder=embedder)
    assert hybrid[0].file == "f0.txt" and hybrid[0].score == pytest.approx(1.5 / 61)


def test_vectors_of_a_changed_file_go_with_its_chunks(index, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(text_of())
    sha, _ = index.file_sha(path)
    retrieval.ensure_indexed(index, [Doc("a.txt", sha, path.read_text())], read=str)
    embedder = FakeEngine(name="emb", pooling="mean", dim=16)
    assert retrieval.ensure_vectors(index, embedder, [sha]) > 0
    path.write_text("something else entirely\n")
    index.file_sha(path)
    assert index.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 0


def test_hybrid_answer_says_so_in_json(index):
    docs = [Doc(f"f{i}.txt", f"sha{i}", text_of([p] * 8)) for i, p in enumerate(PARAGRAPHS)]
    engine = FakeEngine(n_ctx=300, reply="Utrecht [1]")
    embedder = FakeEngine(name="emb", pooling="mean", dim=32)
    r = retrieval.answer(engine, index, docs, "Where was the treaty signed?", Sampling(max_tokens=20), read=str,
                         embedder=embedder, rerank=None)
    assert r.passages[0].file == "f2.txt" and r.as_dict()["retrieval"] == "hybrid"
    assert embedder.embedded[-1] == ["Where was the treaty signed?"]
