"""What evaluating the last prompt token on its own costs (issue 21): time to first token, before and after.

The engine decodes a prompt's last token by itself, after the rest, so that the logits sampling starts from are the
same whether the prompt was cached or not. Before, a fresh prompt's last token was decoded inside the last batch.
This script times both ways on the same engine and the same fresh prompts (the cache cleared before each one),
alternating them, for several prompt sizes.

    python bench/ttft_last_token.py [--model PATH] [--runs 7] [--sizes 16,128,512,1536] [--figures FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import figures  # noqa: E402

from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402

DEFAULT_MODEL = os.environ.get("CHATLLM_BENCH_MODEL", "/root/.cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf")
ONE_TOKEN = Sampling(temperature=0, max_tokens=1, repeat_penalty=1.0)


class BatchedLastEngine(LlamaCppEngine):
    """The engine as it was before issue 21: the last prompt token decoded inside the last batch."""

    def _eval(self, tokens: Sequence[int]) -> int:
        keep = 0
        limit = min(len(self._tokens), len(tokens) - 1)
        while keep < limit and self._tokens[keep] == tokens[keep]:
            keep += 1
        keep = self._rewind(keep)
        for start in range(keep, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._decode(chunk, start, logits_from=len(chunk) - 1)
            self._tokens.extend(chunk)
        return keep


def prompt(engine: LlamaCppEngine, n: int, seed: int) -> list[int]:
    """A fresh n-token prompt (different each run, so nothing but the cache state decides what is evaluated)."""
    words = f"Run {seed}: the history of the bicycle, its makers, riders and roads, told plainly. " * (n // 8 + 2)
    return engine.prompt_tokens(words)[:n]


def first_token_seconds(engine: LlamaCppEngine, tokens: list[int]) -> float:
    """Wall time from a cold cache to the first sampled token."""
    engine._rewind(0)
    start = time.perf_counter()
    for _ in engine.stream(tokens, ONE_TOKEN):
        break
    return time.perf_counter() - start


def main() -> None:
    """Time both ways per size and print best and median of each, and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sizes", default="16,128,512,1536")
    ap.add_argument("--figures", help="write the figure rows to this JSON file (for bench/run_all.py)")
    args = ap.parse_args()
    after = LlamaCppEngine(args.model, n_ctx=2048)
    before = BatchedLastEngine(args.model, n_ctx=2048, n_threads=after.n_threads)
    rows = []
    print(f"model {Path(args.model).name}, {after.n_threads} threads, {args.runs} runs per size (best / median)")
    for n in (int(s) for s in args.sizes.split(",")):
        t_before, t_after = [], []
        for run in range(args.runs + 1):
            b = first_token_seconds(before, prompt(before, n, run))
            a = first_token_seconds(after, prompt(after, n, run))
            if run:  # the first pair warms both up
                t_before.append(b)
                t_after.append(a)
        best_b, best_a = min(t_before), min(t_after)
        med_b, med_a = statistics.median(t_before), statistics.median(t_after)
        print(f"{n:5d} tokens: before {best_b * 1000:7.1f} / {med_b * 1000:7.1f} ms, "
              f"after {best_a * 1000:7.1f} / {med_a * 1000:7.1f} ms, ratio {best_a / best_b:.3f} (best) "
              f"{med_a / med_b:.3f} (median), +{(best_a - best_b) * 1000:.1f} ms")
        rows.append(figures.row("8", f"time to first token, {n}-token fresh prompt: last token alone / in the batch",
                                best_a, "s", reference=best_b, reference_label="last token in the batch",
                                target="-", note=f"medians {med_a * 1000:.1f} / {med_b * 1000:.1f} ms"))
    figures.write(args.figures, rows)
    after.close()
    before.close()


if __name__ == "__main__":
    main()
