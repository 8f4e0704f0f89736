"""llama.cpp's embedding mode for LlamaCppEngine: the context it needs, and texts to pooled, L2-normalised vectors."""

from __future__ import annotations

import ctypes
import time
from typing import Any, Protocol, Sequence

import llama_cpp

from chatllm.engines.contract import GenerationStats
from chatllm.errors import ChatllmError, UsageError
from chatllm.models.model_kinds import POOLING_NAMES, SENTENCE_POOLINGS


class _Host(Protocol):
    """What embedding needs of the engine it belongs to: its llama.cpp objects and counters."""

    name: str
    embedding: bool
    n_batch: int
    last_stats: GenerationStats
    _ctx: Any
    _model: Any
    _vocab: Any
    _batch: Any

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Text to token ids."""
        ...

MAX_SEQS = 64  # texts evaluated in one llama_decode
PACK_TOKENS = 512  # tokens per llama_decode: a non-causal model attends across the whole packed batch (masked)


class EmbeddingMixin:
    """The Embedder capability of LlamaCppEngine: `embed`."""

    name: str
    metadata: dict
    embedding: bool

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised sentence vectors of the texts, in order, pooled as the GGUF declares (needs embedding=True)."""
        return embed_texts(self, texts)  # type: ignore[arg-type]  # the mixin's host is a LlamaCppEngine


def embedding_params(ctx_params, n_ctx: int, embedding: bool) -> None:
    """Set context params up for pooled vectors of many texts at once (the pooling the GGUF declares); no-op if off."""
    if not embedding:
        return
    ctx_params.embeddings = True
    ctx_params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
    # A non-causal model (BERT) must see each text whole in one micro-batch, so the micro-batch is the window.
    ctx_params.n_batch = ctx_params.n_ubatch = n_ctx
    ctx_params.n_seq_max = MAX_SEQS
    ctx_params.kv_unified = True  # else a causal model's KV cache is split MAX_SEQS ways and each text gets 1/64 of it


def embed_texts(engine: _Host, texts: Sequence[str]) -> list[list[float]]:
    """The texts' pooled vectors in order, L2-normalised; each text cut to the window (its final [SEP]/EOS kept)."""
    import numpy as np

    ctx = engine._ctx.ctx
    if not engine.embedding:
        raise ChatllmError(f"{engine.name} was loaded for text generation, not embeddings", "load it with embedding=True")
    pooling = POOLING_NAMES.get(llama_cpp.llama_pooling_type(ctx))
    if pooling not in SENTENCE_POOLINGS:
        raise UsageError(f"{engine.name} makes no sentence vectors (pooling {pooling or 'none'})",
                         "use an embedding model: `chatllm models` marks them (embedding)")
    limit = engine.n_batch
    keep_last = bool(llama_cpp.llama_vocab_get_add_eos(engine._vocab) or llama_cpp.llama_vocab_get_add_sep(engine._vocab))
    seqs = []
    for text in texts:
        tokens = engine.tokenize(text, add_bos=True)
        if len(tokens) > limit:
            tokens = tokens[: limit - 1] + tokens[-1:] if keep_last else tokens[:limit]
        if not tokens:
            raise UsageError("an empty text has no vector with this model", "drop empty lines from the input")
        seqs.append(tokens)
    n_embd = llama_cpp.llama_model_n_embd_out(engine._model.model)
    out = np.empty((len(seqs), n_embd), dtype=np.float32)
    stats = engine.last_stats = GenerationStats(prompt_tokens=sum(map(len, seqs)))
    start, first, group, used = time.perf_counter(), 0, 0, 0
    for i, tokens in enumerate(seqs):
        if group and (used + len(tokens) > max(PACK_TOKENS, len(tokens)) or used + len(tokens) > limit or group >= MAX_SEQS):
            _decode(engine, seqs[first:i], out[first:i], n_embd)
            first, group, used = i, 0, 0
        group += 1
        used += len(tokens)
    if seqs:
        _decode(engine, seqs[first:], out[first:], n_embd)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.where(norms > 0, norms, 1.0)
    stats.seconds = time.perf_counter() - start
    return out.tolist()


def _decode(engine: _Host, seqs: Sequence[Sequence[int]], out, n_embd: int) -> None:
    """Evaluate a few texts as sequences 0..n-1 of one batch and copy each one's pooled vector into out."""
    import numpy as np

    ctx, batch = engine._ctx.ctx, engine._batch.batch
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)  # a causal model's cache holds the last batch
    n = 0
    for seq, tokens in enumerate(seqs):
        for pos, tok in enumerate(tokens):
            batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = tok, pos, 1, True
            batch.seq_id[n][0] = seq
            n += 1
    batch.n_tokens = n
    rc = llama_cpp.llama_decode(ctx, batch)
    if rc != 0:
        if rc == 2:
            raise KeyboardInterrupt
        raise ChatllmError(f"llama.cpp failed to embed {len(seqs)} texts (code {rc})", "try a smaller --ctx or shorter texts")
    for seq in range(len(seqs)):
        ptr = llama_cpp.llama_get_embeddings_seq(ctx, seq)
        if not ptr:
            raise ChatllmError(f"llama.cpp gave no vector for text {seq + 1} of a batch", "report this with `chatllm --debug`")
        out[seq] = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_embd,))
