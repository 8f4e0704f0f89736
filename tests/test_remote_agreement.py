"""Label scores through llama-server are the local engine's, to the float32 rounding of the server's softmax (issue 32).

llama.cpp's CPU kernels round differently by batch shape (weights repacked for the 4-row gemm go through a one-row
gemv for a batch's last rows), so a prompt token's KV entries depend on the batch it was evaluated in. The local engine
evaluates what its cache lacks up to the last token in one batch, then the last token alone; the remote engine has
llama-server do the same. The model is Gemma 3 270M (Q4_K_M: repacked on CPUs that allow it), served with --swa-full:
without it llama-server re-evaluates a sliding-window model's prompt from its context checkpoints, in batches no
client can choose (docs/BENCHMARKS_HISTORY.md, "Remote label agreement").
"""

from __future__ import annotations

import pytest

from chatllm.models.registry import parse_ref
from chatllm.tasks.classify.classifier import Classifier, sentiment_labels
from tests.llama_server import ALIAS, LlamaServer, repack_safe, server_binary

pytestmark = [pytest.mark.model, pytest.mark.slow]

# Reviews written for this test; several share their first words, so the server's cache is reused between items.
REVIEWS = [
    "The film is a quiet triumph, funny and sad at once.",
    "The film is a mess from start to finish.",
    "A tired script, flat acting and a running time that never ends.",
    "I laughed, I cried, and I would gladly see it again tomorrow.",
    "The plot makes no sense, but the music is lovely.",
    "The plot is thin and the jokes land with a thud.",
    "An honest, warm story told with great care.",
    "Nothing here works: not the leads, not the script, not the sets.",
    "It is not as bad as the trailer suggests, though not good either.",
    "A must-see for anyone who loves old westerns.",
    "Two hours of my life I will never get back.",
    "Beautifully shot and acted, with a final scene that stays with you.",
]

ITEMS = REVIEWS + REVIEWS[:3]  # again, after the others: each side's cache holds another item by then


@pytest.fixture(scope="module")
def gemma_server(gemma_path):
    """llama-server with Gemma 3 270M, one slot, --swa-full, on a free port."""
    srv = LlamaServer(server_binary(), gemma_path, slots=1, ctx=2048, extra=["--swa-full", "-t", "1"]).start()
    yield srv
    srv.stop()


def test_llama_server_label_scores_are_the_local_engines(gemma_server, gemma_path):
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.engines.remote.llama_server_engine import RemoteEngine

    # the same kernels on both sides: the server repacks unless LlamaServer passes --no-repack
    with LlamaCppEngine(gemma_path, n_ctx=2048, n_threads=1, repack=repack_safe()) as local:
        classifier = Classifier(local, sentiment_labels())
        here = [classifier.classify(t) for t in ITEMS]
    with RemoteEngine.connect(parse_ref(f"openai:{gemma_server.url}#{ALIAS}", {})) as engine:
        assert engine.family == "gemma3"  # read from the served file: the local engine's preset
        classifier = Classifier(engine, sentiment_labels())
        there = [classifier.classify(t) for t in ITEMS]
    assert [r.label for r in there] == [r.label for r in here]
    # Before issue 32 these differed by up to 0.05 (the server evaluated the last token in a batch with the item).
    worst = max(abs(a.scores[k] - b.scores[k]) for a, b in zip(here, there) for k in a.scores)
    assert worst < 1e-5, [(a.scores, b.scores) for a, b in zip(here, there)]
