"""Embedding models, engine-independent: the pooling a GGUF declares, and which commands a model may serve."""

from __future__ import annotations

from chatllm.errors import UsageError

# llama.cpp's enum llama_pooling_type (0 is NONE: token vectors only, as in a chat model).
POOLING_NAMES = {1: "mean", 2: "cls", 3: "last", 4: "rank"}
SENTENCE_POOLINGS = ("mean", "cls", "last")
EMBED_CTX = 2048  # the default window of an embedding model (texts longer than it are cut): memory grows with it


def declared_pooling(metadata: dict) -> str | None:
    """The pooling a GGUF's metadata declares (mean, cls, last, rank), or None for a model that declares none."""
    value = metadata.get(f"{metadata.get('general.architecture', '')}.pooling_type")
    # chatllm's header reader gives ints, llama-cpp-python's metadata() strings
    return POOLING_NAMES.get(int(value)) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def check_model_kind(name: str, kind: str, pooling: str | None, embedding: bool, *, header: bool = True) -> None:
    """Refuse an embedding model for text generation, and a model without sentence pooling for embeddings.

    kind is the registry's ("embedding", "chat" or "" when unsaid); header=False when no GGUF header could be read
    (a server's model): then only the registry's word counts.
    """
    is_embedder = kind == "embedding" or pooling in SENTENCE_POOLINGS
    if embedding and pooling == "rank":
        raise UsageError(f"{name} is a reranker (rank pooling), not an embedding model",
                         "use an embedding model: `chatllm models` marks them (embedding)")
    if embedding and not is_embedder and (header or kind == "chat"):
        raise UsageError(f"{name} is not an embedding model: its GGUF declares no pooling for sentence vectors",
                         "use an embedding model, e.g. -m bge-small-en-v1.5 (`chatllm models` marks them)")
    if not embedding and is_embedder:
        raise UsageError(f"{name} is an embedding model: it turns text into vectors and cannot write text",
                         f"use `chatllm embed -m {name}`, or pick a chat model from `chatllm models`")
