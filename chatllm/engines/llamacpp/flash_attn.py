"""Flash attention on or off for one run: the user's choice, else on for a GPU, else by how deep the context gets.

On the CPU llama.cpp's flash attention is faster near the start of a context and slower deep into it (issue 18;
bench/flash_attn_crossover.py measures the crossover by depth, docs/BENCHMARKS.md has the figures). So a run that
says how deep its context will get at most (a one-shot: its prompt plus max_tokens) gets it on below the crossover,
and every other run (chat, summarize, classify, batches: deep, or of unknown depth) gets it off. The choice never
depends on a conversation's length, so a resumed chat always matches the KV state its last run saved.
"""

from __future__ import annotations

from typing import Iterable

# The deepest context (prompt plus reply, in tokens) at which flash attention is faster on the CPU for both test
# models, in prompt and in generation speed. Measured here (docs/BENCHMARKS.md, issue 18; 2 cores, 1 thread, load
# 8-13): it is never faster. A one-shot's prompt is read at depth 0, where it is slower (pp on/off 0.70 SmolLM2,
# 0.86 gemma); generation is level up to depth 128 (0.94-1.02) and slower from 256 (SmolLM2 0.89, 0.67 at 512,
# 0.51 at 2048). So 0: off for every CPU workload until a rerun shows a depth where it wins.
CPU_FLASH_MAX_DEPTH = 0
# Template markers, a default system prompt and BOS: what a chat template adds to a one-shot's own text, at most.
TEMPLATE_SLACK = 64


def choose_flash_attn(setting: bool | None, gpu_layers: int, depth: int | None, n_ctx: int | None = None) -> bool:
    """On or off: the explicit setting wins; a GPU gets it on; the CPU only when the context stays shallow."""
    if setting is not None:
        return setting
    if gpu_layers != 0:
        return True  # on a GPU it saves memory and time at every depth
    if depth is None:
        return False
    deepest = min(depth, n_ctx) if n_ctx else depth
    return deepest <= CPU_FLASH_MAX_DEPTH


def one_shot_depth(texts: Iterable[str | None], max_tokens: int) -> int:
    """An upper bound on a one-shot's context: its texts' UTF-8 bytes (no token is shorter than a byte), the
    template's slack and the reply's max_tokens; known before any model loads."""
    return sum(len(t.encode("utf-8")) for t in texts if t) + TEMPLATE_SLACK + max_tokens
