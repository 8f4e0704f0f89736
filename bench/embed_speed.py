"""Embedding speed: texts/s of `chatllm embed --lines` (a real process), of the task in-process, and of llama.cpp alone.

The texts are SQuAD's tuning-split questions (short) and paragraphs (long), from ../shared/data/qa. The reference is
llama.cpp evaluating exactly the same tokens in exactly the same packed batches (llama_decode on an embedding context,
then reading each pooled vector): what is left between it and chatllm is tokenization, Python, normalisation, JSON
and, for the CLI, process start and model load (reported apart).

    python bench/embed_speed.py [MODEL.gguf] [--questions 1000] [--paragraphs 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402

from chatllm.engines.llamacpp import embedding_mode as llamacpp_embed  # noqa: E402
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine  # noqa: E402
from chatllm.tasks.retrieval.embeddings import embed_texts  # noqa: E402

SQUAD = ROOT.parent / "shared" / "data" / "qa" / "squad_v1.1_dev_tune.json"


def squad_texts() -> tuple[list[str], list[str]]:
    """(questions, paragraphs) of the SQuAD tuning split, in file order."""
    data = json.loads(SQUAD.read_text(encoding="utf-8"))["data"]
    paragraphs = [p["context"].replace("\n", " ") for art in data for p in art["paragraphs"]]
    questions = [qa["question"].replace("\n", " ") for art in data for p in art["paragraphs"] for qa in p["qas"]]
    return questions, paragraphs


def cli_rate(model: Path, texts: list[str]) -> tuple[float, float]:
    """(seconds for the whole `chatllm embed --lines` process, seconds for the same process with one text)."""
    def run(lines: list[str]) -> float:
        start = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "chatllm", "embed", "--lines", "-m", str(model)], input="\n".join(lines) + "\n",
                           capture_output=True, text=True, check=True)
        assert len(r.stdout.splitlines()) == len(lines)
        return time.perf_counter() - start
    return run(texts), run(texts[:1])


def reference_seconds(engine: LlamaCppEngine, texts: list[str]) -> float:
    """llama.cpp alone on the same tokens and batches: only llama_decode and the pooled-vector reads are timed."""
    seqs = [engine.tokenize(t, add_bos=True)[: engine.n_batch] for t in texts]
    groups, first, used = [], 0, 0
    for i, tokens in enumerate(seqs):  # the same packing as llamacpp_embed.embed_texts
        if i > first and (used + len(tokens) > max(llamacpp_embed.PACK_TOKENS, len(tokens)) or i - first >= llamacpp_embed.MAX_SEQS):
            groups.append(seqs[first:i])
            first, used = i, 0
        used += len(tokens)
    groups.append(seqs[first:])
    ctx, batch = engine._ctx.ctx, engine._batch.batch
    total = 0.0
    for group in groups:
        n = 0
        for seq, tokens in enumerate(group):
            for pos, tok in enumerate(tokens):
                batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = tok, pos, 1, True
                batch.seq_id[n][0] = seq
                n += 1
        batch.n_tokens = n
        start = time.perf_counter()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        for seq in range(len(group)):
            assert llama_cpp.llama_get_embeddings_seq(ctx, seq)
        total += time.perf_counter() - start
    return total


def main() -> None:
    """Measure and print one JSON record per text set."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="an embedding GGUF [default: the converted all-MiniLM-L6-v2 test model]")
    ap.add_argument("--questions", type=int, default=1000)
    ap.add_argument("--paragraphs", type=int, default=200)
    args = ap.parse_args()
    if args.model:
        model = Path(args.model)
    else:
        from tests.embedding_model import fetch

        model = fetch()
    questions, paragraphs = squad_texts()
    engine = LlamaCppEngine(model, n_ctx=512, embedding=True)
    for label, texts in (("questions", questions[: args.questions]), ("paragraphs", paragraphs[: args.paragraphs])):
        tokens = sum(len(engine.tokenize(t, add_bos=True)) for t in texts)
        embed_texts(engine, texts[:64])  # warm-up
        start = time.perf_counter()
        embed_texts(engine, texts)
        task = time.perf_counter() - start
        ref = min(reference_seconds(engine, texts) for _ in range(2))
        cli, startup = cli_rate(model, texts)
        print(json.dumps({
            "texts": label, "n": len(texts), "tokens": tokens, "mean_tokens": round(tokens / len(texts), 1),
            "cli_texts_per_s": round(len(texts) / cli, 1), "cli_seconds": round(cli, 2), "cli_one_text_seconds": round(startup, 2),
            "cli_texts_per_s_after_start": round(len(texts) / max(cli - startup, 1e-9), 1),
            "task_texts_per_s": round(len(texts) / task, 1), "llamacpp_texts_per_s": round(len(texts) / ref, 1),
            "llamacpp_tokens_per_s": round(tokens / ref), "task_vs_llamacpp": round(ref / task, 3),
        }), flush=True)
    engine.close()


if __name__ == "__main__":
    main()
