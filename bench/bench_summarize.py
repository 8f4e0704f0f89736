"""Speed of `chatllm summarize` on a whole novel, against the engine's raw prompt rate measured in the same run.

    python bench/bench_summarize.py                        # Alice in Wonderland, SmolLM2 test model, 8k window
    python bench/bench_summarize.py -m MODEL.gguf --ctx 4096 --chunk-tokens 0 --show

Reports total seconds, tokens in (the document), tokens out (all generated text) and the prompt-processing
rate achieved: prompt tokens / (wall time - time spent generating), so chunking, tokenizing and prompt
building count against it. The reference is the engine alone evaluating a slice of the same document, as
long as the prompt just run, from a cold cache, and the engine's one-batch rate (512 tokens): both measured right
after every few calls of the run (the machine is shared, so only interleaved pairs compare like with like; their
time is taken out of the run's).
Figures: the prompt rate over all prompts (document + instructions + notes being merged), and the rate in
document tokens, which also pays for the notes that map-reduce must read again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import figures  # noqa: E402

from chatllm.engines.contract import complete  # noqa: E402

DOC = ROOT.parent / "shared" / "data" / "longdocs" / "alice_in_wonderland_pg11.txt"
TEST_MODEL = Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def raw_rate(engine, tokens: list[int], length: int, repeats: int = 2) -> float:
    """Tokens/s of evaluating `length` document tokens as one fresh prompt (the engine alone, no chatllm logic)."""
    from chatllm.settings import Sampling

    rates = []
    for r in range(repeats):
        start = (r * 7919) % max(1, len(tokens) - length)
        prompt = tokens[start:start + length]
        engine._rewind(0)  # a cold cache: nothing of this slice may be reused from an earlier measurement
        complete(engine, prompt, Sampling(max_tokens=1, temperature=0))
        stats = engine.last_stats
        rates.append((stats.prompt_tokens - stats.cached_tokens) / stats.first_token_seconds)
    return statistics.mean(rates)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default=os.environ.get("CHATLLM_MODEL") or str(TEST_MODEL), help=".gguf path")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--ctx", type=int, default=None, help="context window [the model's, at most 8192]")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="as `chatllm summarize --chunk-tokens`")
    parser.add_argument("--length", default="medium")
    parser.add_argument("--show", action="store_true", help="print the summary")
    parser.add_argument("--every", type=int, default=3, help="measure a raw pair after every N-th call [3]")
    parser.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    args = parser.parse_args(argv)

    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.inputs import iter_text, open_binary
    from chatllm.models.gguf_header import read_header
    from chatllm.settings import Sampling
    from chatllm.tasks.summarize import Summarizer, SummaryOptions

    info = read_header(Path(args.model))
    engine = LlamaCppEngine(args.model, n_ctx=args.ctx or min(info.context_length or 8192, 8192))
    with open(args.doc, encoding="utf-8-sig", newline=None) as fh:
        doc_tokens = engine.tokenize(fh.read())
    options = SummaryOptions(length=args.length, **({} if args.chunk_tokens is None
                                                    else {"chunk_tokens": args.chunk_tokens or None}))
    sampling = Sampling(temperature=0)

    pairs: list[tuple[float, float, float]] = []  # the run's rate, the raw rate at the same length, at one batch
    raw_seconds = [0.0]
    log_seen = [0]

    def pair(call: dict) -> None:
        run_rate = (call["prompt_tokens"] - call["cached_tokens"]) / call["first_token_seconds"]
        t = time.perf_counter()
        same = raw_rate(engine, doc_tokens, call["prompt_tokens"], repeats=1)
        pairs.append((run_rate, same, raw_rate(engine, doc_tokens, engine.n_batch, repeats=1)))
        raw_seconds[0] += time.perf_counter() - t

    def interleave(progress) -> None:
        log = summarizer._result.calls_log
        if len(log) != log_seen[0] and len(log) % args.every == 0:
            log_seen[0] = len(log)
            pair(log[-1])

    stream = open_binary(args.doc)
    size = args.doc.stat().st_size
    start = time.perf_counter()
    summarizer = Summarizer(engine, sampling, options, on_progress=interleave)
    result = summarizer.summarize(iter_text(stream, args.doc.name), size_hint=size)
    wall = time.perf_counter() - start - raw_seconds[0]
    stream.close()
    if not pairs:  # a document of fewer calls than --every: pair the last call after the run
        pair(result.calls_log[-1])

    calls = result.calls_log
    gen_seconds = sum(c["seconds"] - c["first_token_seconds"] for c in calls)
    eval_seconds = sum(c["first_token_seconds"] for c in calls)
    evaluated = sum(c["prompt_tokens"] - c["cached_tokens"] for c in calls)
    prompt_wall = wall - gen_seconds
    achieved = evaluated / prompt_wall
    achieved_doc = result.input_tokens / prompt_wall
    raw_in_run = statistics.median(same for _, same, _ in pairs)
    batch = statistics.median(one for _, _, one in pairs)
    pair_ratio = statistics.median(run / same for run, same, _ in pairs)
    own_work = wall - eval_seconds - gen_seconds

    print(f"document             {args.doc.name} ({size:,} bytes)")
    print(f"model                {Path(args.model).name}, n_ctx {engine.n_ctx}, n_batch {engine.n_batch}, "
          f"{engine.n_threads} threads")
    print(f"total seconds        {wall:.1f}")
    print(f"tokens in            {result.input_tokens:,} (document), {result.prompt_tokens:,} evaluated in all prompts")
    print(f"tokens out           {result.completion_tokens:,} in {result.calls} calls "
          f"({result.chunks} chunks, {result.levels} level{'s' if result.levels != 1 else ''})")
    print(f"seconds              prompts {eval_seconds:.1f} in llama.cpp, generation {gen_seconds:.1f}, "
          f"chatllm's own work {own_work:.1f}")
    print(f"prompt rate achieved {achieved:,.1f} tok/s over all prompts; {achieved_doc:,.1f} tok/s in document tokens")
    print(f"raw rate, same size  {raw_in_run:,.1f} tok/s (median of {len(pairs)} interleaved pairs, "
          f"per call in llama.cpp {pair_ratio:.2f}x raw)  -> {100 * achieved / raw_in_run:.0f}% (document: "
          f"{100 * achieved_doc / raw_in_run:.0f}%)")
    print(f"raw rate, one batch  {batch:,.1f} tok/s ({engine.n_batch}-token prompts, the same pairs) "
          f"-> {100 * achieved / batch:.0f}% (document: {100 * achieved_doc / batch:.0f}%)")
    if args.show:
        print("\n" + result.text)
    what = f"summarize {args.doc.name}: prompt rate achieved over the whole run"
    figures.write(args.figures, [
        figures.row("7", what, achieved, "tok/s", reference=batch, reference_label=f"engine alone, {engine.n_batch}-token prompts",
                    target=">= 0.90", met=achieved / batch >= 0.9,
                    note=f"{wall:.0f} s in all; {result.input_tokens:,} document tokens in, {result.completion_tokens:,} "
                         f"out; {result.chunks} chunks, {result.calls} calls; {achieved_doc:,.1f} tok/s counted in "
                         f"document tokens"),
        figures.row("7", what, achieved, "tok/s", reference=raw_in_run, reference_label="engine alone, same prompt sizes",
                    note=f"per call, llama.cpp ran at {pair_ratio:.2f}x the raw rate of the same size"),
    ])


if __name__ == "__main__":
    main()
