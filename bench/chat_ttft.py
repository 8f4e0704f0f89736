"""Time to first token at turn 2 vs turn 20 of one chat, with messages of the same length.

Because the conversation's rendered prompt only grows at the end, llama.cpp reuses the KV cache and each turn
evaluates only the new message, so turn 20 should cost about what turn 2 does (target: ratio <= 1.5).

    python bench/chat_ttft.py [--model PATH_OR_ALIAS] [--runs 5] [--turns 20] [--max-tokens 48]
                              [--flash-attn auto|on|off]

Prints, per measured turn, the wall-clock time from sending the message to the first reply token (rendering,
tokenizing, trimming and prompt evaluation included) as the best and the median of the runs, the prompt size
and how much of it came from the cache; then the ratio turn 20 / turn 2 of the best times (the least
disturbed measurement on a shared machine) and of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import figures  # noqa: E402

from chatllm.output import Output  # noqa: E402
from chatllm.settings import load_settings  # noqa: E402
from chatllm.tasks.chat.conversation import Conversation  # noqa: E402

DEFAULT_MODEL = os.environ.get("CHATLLM_BENCH_MODEL", "/root/.cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf")
TOPICS = ["apples", "rivers", "copper", "tigers", "violins", "glaciers", "pepper", "comets", "ravens", "marble",
          "oceans", "tulips", "engines", "deserts", "candles", "bridges", "forests", "planets", "lemons", "mirrors",
          "castles", "storms", "pianos", "islands"]


def message(turn: int) -> str:
    """The message for a turn: same template, one-word topic, so every message has about the same length."""
    return f"Tell me one short fact about {TOPICS[turn % len(TOPICS)]}."


def run_once(engine, sampling, turns: int) -> dict[int, tuple[float, int, int, int]]:
    """One conversation of `turns` turns: turn -> (seconds to first token, prompt, cached, message tokens)."""
    conv = Conversation(engine, sampling, system="You are a helpful assistant. Answer in one sentence.")
    results = {}
    for turn in range(1, turns + 1):
        text = message(turn)
        start = time.perf_counter()
        first = None
        with conv.turn(text) as t:
            for _ in t:
                if first is None:
                    first = time.perf_counter() - start
        stats = engine.last_stats
        results[turn] = (first if first is not None else float("nan"), stats.prompt_tokens, stats.cached_tokens,
                         engine.count_tokens(text))
    return results


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--ctx", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                        help="auto: what `chatllm chat` uses; on/off: force llama.cpp's flash attention")
    parser.add_argument("--figures", help="write the figure row for bench/run_all.py to this JSON file")
    args = parser.parse_args()

    from chatllm.engines.loader import load_engine

    settings = load_settings(model=args.model, ctx=args.ctx, threads=args.threads, temperature=0.0,
                             max_tokens=args.max_tokens)
    engine = load_engine(settings, Output())
    if args.flash_attn != "auto":
        from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

        path, n_ctx, threads, name = engine.path, engine.n_ctx, engine.n_threads, engine.name
        engine.close()
        engine = LlamaCppEngine(path, n_ctx=n_ctx, n_threads=threads, flash_attn=args.flash_attn == "on", name=name)
    print(f"model {engine.name}, {engine.n_ctx}-token context, {engine.n_threads} threads, flash attention "
          f"{args.flash_attn}, max {args.max_tokens} reply tokens, {args.runs} runs")
    runs = [run_once(engine, settings.sampling, args.turns) for _ in range(args.runs)]
    engine.close()
    best, medians = {}, {}
    for turn in (2, args.turns):
        times = [r[turn][0] for r in runs]
        best[turn], medians[turn] = min(times), statistics.median(times)
        _, prompt, cached, msg = runs[-1][turn]
        print(f"turn {turn:>2}: time to first token {best[turn] * 1000:7.1f} ms best, {medians[turn] * 1000:7.1f} ms "
              f"median; prompt {prompt} tokens, {cached} reused from the cache, {prompt - cached} evaluated; "
              f"message {msg} tokens")
    ratio = best[args.turns] / best[2]
    print(f"ratio turn {args.turns} / turn 2: {ratio:.2f} best, {medians[args.turns] / medians[2]:.2f} median "
          f"(target <= 1.5: {'ok' if ratio <= 1.5 else 'MISSED'})")
    figures.write(args.figures, [figures.row(
        "6", f"chat time to first token, turn {args.turns} / turn 2 (best of {args.runs} runs)", best[args.turns], "s",
        reference=best[2], reference_label="turn 2", target="<= 1.5", met=ratio <= 1.5,
        note=f"medians {medians[args.turns] * 1000:.0f} / {medians[2] * 1000:.0f} ms; {engine.n_threads} threads")])


if __name__ == "__main__":
    main()
