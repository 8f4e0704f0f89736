"""What folding a reasoning trace costs: the time to the first answer token with the terminal view drawing the trace
(and folding it) against the same reply with nothing drawn, in one process, alternated run by run.

There is no small reasoning model here, so the model is SmolLM2's weights under llama.cpp's DeepSeek-R1 template (the
generation prompt opens `<think>`); --reasoning-budget closes the trace after N tokens, and the answer starts. The view
draws on a terminal stderr (a rich Live region, redrawn at every piece), to an in-memory stream here.

    python bench/reasoning_fold.py [--runs 7] [--budget 48]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import figures  # noqa: E402

SMOLLM = Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def first_answer_seconds(engine, prompt, sampling, view) -> tuple[float, float]:
    """(seconds to the first answer piece, seconds spent inside the view) for one reply."""
    from chatllm.engines.contract import Reasoning, Text

    start = time.perf_counter()
    in_view = 0.0
    first = None
    for event in engine.stream(prompt, sampling):
        if isinstance(event, Reasoning) and view is not None:
            t = time.perf_counter()
            view.reasoning(event.text)
            in_view += time.perf_counter() - t
        elif isinstance(event, Text) and first is None:
            if view is not None:
                t = time.perf_counter()
                view.fold(engine.last_stats.reasoning_tokens)
                in_view += time.perf_counter() - t
            first = time.perf_counter() - start
    return (first if first is not None else float("nan")), in_view


def main() -> None:
    """Alternate drawn and undrawn replies; print the medians and the view's own time."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--budget", type=int, default=48)
    ap.add_argument("--figures")
    args = ap.parse_args()
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.output import Output, ThinkingView
    from chatllm.settings import Sampling
    from tests.gguf_writer import copy_with_metadata

    with tempfile.TemporaryDirectory() as tmp:
        model = copy_with_metadata(SMOLLM, Path(tmp) / "r1.gguf", {"tokenizer.chat_template": (
            ROOT / "tests" / "templates" / "llama-cpp-deepseek-r1.jinja").read_text(encoding="utf-8")})
        engine = LlamaCppEngine(model, n_ctx=1024)
        prompt = engine.prompt_tokens(engine.render_chat([{"role": "user", "content": "Say hi"}]))
        sampling = Sampling(temperature=0, max_tokens=args.budget + 8, reasoning_budget=args.budget)
        drawn, plain, view_time = [], [], []
        for _ in range(args.runs):
            out = Output(io.StringIO(), io.StringIO(), stdout_tty=True, stderr_tty=True, color=True)
            seconds, spent = first_answer_seconds(engine, prompt, sampling, ThinkingView(out))
            drawn.append(seconds)
            view_time.append(spent)
            plain.append(first_answer_seconds(engine, prompt, sampling, None)[0])
    d, p, v = statistics.median(drawn), statistics.median(plain), statistics.median(view_time)
    print(f"first answer token after {args.budget} trace tokens: drawn and folded {d * 1000:.0f} ms, not drawn "
          f"{p * 1000:.0f} ms (ratio {d / p:.3f}); time inside the view {v * 1000:.1f} ms; load {os.getloadavg()[0]:.1f}")
    figures.write(args.figures, [figures.row("reasoning", "first answer token, trace drawn and folded / not drawn", d * 1000,
                                             "ms", reference=p * 1000, reference_label="nothing drawn",
                                             note=f"view's own time {v * 1000:.1f} ms")])


if __name__ == "__main__":
    main()
