"""chatllm's own side of the speed figures: generation and prompt rates of the Engine, as the CLI configures it.

Each function runs ONE measurement so that run_all.py can alternate it with one llama-bench run.
The Engine is used exactly as `chatllm ask` uses it (its default threads, batch and flash-attention choice, the
native sampler chain with the default sampling settings), so the figures include everything chatllm adds per token:
the Python loop, sampling, incremental detokenization and the stop-string filter.

    python bench/perf_engine.py MODEL.gguf [--reps 3]      # prints tg/pp rates measured alone
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402

import chatllm.engines.llamacpp.llamacpp_engine as engine_module  # noqa: E402
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402

LONG_ASK = "Write a long, detailed essay about the history of the bicycle, from its invention to today."
LONG_TEXT = "The history of the bicycle began in the early nineteenth century, when"


def load(path: str | Path, **kwargs) -> LlamaCppEngine:
    """The Engine with chatllm's defaults (the same ones loader.load_engine passes for a .gguf path)."""
    from chatllm.models.gguf_header import read_header

    info = read_header(Path(path))
    n_ctx = kwargs.pop("n_ctx", None) or min(info.context_length or 8192, 8192)
    return LlamaCppEngine(path, n_ctx=n_ctx, **kwargs)


def long_prompt(engine: LlamaCppEngine) -> list[int]:
    """A prompt whose answer runs long: chat-templated when the model has a template, raw text otherwise."""
    if engine.has_chat_template:
        return engine.prompt_tokens(engine.render_chat([{"role": "user", "content": LONG_ASK}]))
    return engine.prompt_tokens(LONG_TEXT, special=False)


def generation_rate(engine: LlamaCppEngine, n_gen: int = 128, seed: int = 1) -> dict:
    """One generation of up to n_gen tokens with the default sampling; tok/s after the first token."""
    sampling = Sampling(max_tokens=n_gen, seed=seed)
    for _ in engine.stream(long_prompt(engine), sampling):
        pass
    stats = engine.last_stats
    return {"tokens_per_second": stats.tokens_per_second, "tokens": stats.completion_tokens}


def prompt_rate(engine: LlamaCppEngine, n_prompt: int = 512, seed: int = 1) -> dict:
    """Evaluate n_prompt random tokens (as llama-bench pp does) and sample one; evaluated tok/s."""
    rng = random.Random(seed)
    tokens = [rng.randrange(engine.n_vocab) for _ in range(n_prompt)]
    start = time.perf_counter()
    for _ in engine.stream(tokens, Sampling(max_tokens=1, temperature=0)):
        pass
    seconds = time.perf_counter() - start
    stats = engine.last_stats
    evaluated = stats.prompt_tokens - stats.cached_tokens
    return {"tokens_per_second": evaluated / seconds, "tokens": evaluated}


_KV_LINES: list[str] = []


@llama_cpp.llama_log_callback
def _log_tap(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # The engine keeps only its last 400 log lines and graph dumps push the KV cache report out; keep those lines here.
    line = text.decode("utf-8", errors="replace")
    if "kv_cache" in line and "size" in line:
        _KV_LINES.append(line)
    engine_module._LOG.append(line)


def load_measuring_kv(path: str | Path, **kwargs) -> tuple[LlamaCppEngine, int]:
    """load() plus the KV cache size llama.cpp reported for that context (SWA and full caches summed)."""
    _KV_LINES.clear()
    llama_cpp.llama_log_set(_log_tap, ctypes.c_void_p(0))
    try:
        engine = load(path, **kwargs)
    finally:
        llama_cpp.llama_log_set(engine_module._log_callback, ctypes.c_void_p(0))
    mib = sum(float(m.group(1)) for line in _KV_LINES for m in re.finditer(r"kv_cache\w*:\s+size\s*=\s*([\d.]+)\s*MiB", line))
    return engine, int(mib * 1024 * 1024)


def main() -> None:
    """Measure the Engine alone (no reference): a quick check of chatllm's own rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args()
    fa = {"auto": None, "on": True, "off": False}[args.flash_attn]
    engine, kv_bytes = load_measuring_kv(args.model, n_threads=args.threads, flash_attn=fa, n_batch=args.batch)
    generation_rate(engine, 16)
    prompt_rate(engine, 64, seed=0)
    result = {"threads": engine.n_threads, "n_ctx": engine.n_ctx, "kv_cache_bytes": kv_bytes, "tg": [], "pp": []}
    for rep in range(args.reps):
        result["tg"].append(round(generation_rate(engine, seed=rep + 1)["tokens_per_second"], 2))
        result["pp"].append(round(prompt_rate(engine, seed=rep + 1)["tokens_per_second"], 2))
    engine.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
