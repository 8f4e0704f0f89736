"""ROUGE of `chatllm summarize` on SciTLDR abstracts, against a naive "Summarize:" baseline on the same model.

    pip install -e '.[bench]'                                   # rouge-score
    python bench/eval_summarize.py --limit 30                   # SmolLM2 test model, --style tldr vs the baseline
    python bench/eval_summarize.py -m MODEL.gguf --styles tldr,paragraph --json results.json

Data: ../shared/data/summarization/scitldr_tune.jsonl (100 abstracts, each with 1-5 one-sentence references).
The score of a summary is the best F1 over its references (the SciTLDR convention), with stemming; the table
shows the means x 100. The baseline is what a plain tool does: the abstract, truncated to the window, after
"Summarize:" in the model's chat template, greedy decoding, the same token limit.
"""

from __future__ import annotations

import argparse
import json
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

DATA = ROOT.parent / "shared" / "data" / "summarization" / "scitldr_tune.jsonl"
TEST_MODEL = Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf"
METRICS = ("rouge1", "rouge2", "rougeL")


def load_rows(path: Path, limit: int | None) -> list[dict]:
    """Rows with the abstract as one string and the list of reference summaries."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            text = " ".join(" ".join(row["source"]).split())
            rows.append({"id": row.get("paper_id"), "text": text, "refs": list(row["target"])})
            if limit and len(rows) >= limit:
                break
    return rows


def baseline(engine, text: str, sampling) -> str:
    """The naive summary: 'Summarize:' and the text cut to fit the window, nothing else."""
    room = engine.n_ctx - sampling.max_tokens - 64
    tokens = engine.tokenize(text)
    if len(tokens) > room:
        text = engine.detokenize(tokens[:room])
    prompt = engine.render_chat([{"role": "user", "content": f"Summarize:\n{text}"}])
    return complete(engine, prompt, sampling).strip()


def ours(engine, text: str, sampling, style: str, length: str):
    """The summary `chatllm summarize --style STYLE --length LENGTH` writes."""
    from chatllm.tasks.summarize import Summarizer, SummaryOptions

    return Summarizer(engine, sampling, SummaryOptions(style=style, length=length)).summarize([text]).text


def score(scorer, summary: str, refs: list[str]) -> dict:
    """Best F1 over the references, per metric."""
    results = [scorer.score(ref, summary) for ref in refs]
    return {m: max(r[m].fmeasure for r in results) for m in METRICS}


def main(argv: list[str] | None = None) -> None:
    """Run the evaluation and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default=os.environ.get("CHATLLM_MODEL") or str(TEST_MODEL), help=".gguf path")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=None, help="only the first N abstracts")
    parser.add_argument("--styles", default="tldr", help="comma-separated --style values to score [tldr]")
    parser.add_argument("--length", default="short", help="--length for the paragraph and bullets styles [short]")
    parser.add_argument("--max-tokens", type=int, default=128, help="token limit for every system [128]")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--json", type=Path, help="write per-item summaries and scores here")
    parser.add_argument("--show", type=int, default=0, help="print the first N summaries of each system")
    parser.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    args = parser.parse_args(argv)

    try:
        from rouge_score import rouge_scorer
    except ImportError:
        sys.exit("rouge-score is missing: pip install -e '.[bench]' (or pip install rouge-score)")
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.settings import Sampling

    rows = load_rows(args.data, args.limit)
    engine = LlamaCppEngine(args.model, n_ctx=args.ctx)
    sampling = Sampling(temperature=0, max_tokens=args.max_tokens)
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    systems = {"baseline (Summarize:)": lambda t: baseline(engine, t, sampling)}
    for style in [s.strip() for s in args.styles.split(",") if s.strip()]:
        systems[f"chatllm --style {style}"] = (lambda st: lambda t: ours(engine, t, sampling, st, args.length))(style)

    report, details = [], {}
    for name, run in systems.items():
        scores, words, seconds, items = [], [], 0.0, []
        for i, row in enumerate(rows):
            start = time.perf_counter()
            summary = run(row["text"])
            seconds += time.perf_counter() - start
            s = score(scorer, summary, row["refs"])
            scores.append(s)
            words.append(len(summary.split()))
            items.append({"id": row["id"], "summary": summary, **s})
            if i < args.show:
                print(f"[{name}] {summary}\n", file=sys.stderr)
            print(f"\r{name}: {i + 1}/{len(rows)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        means = {m: 100 * statistics.mean(s[m] for s in scores) for m in METRICS}
        report.append((name, means, statistics.mean(words), seconds / len(rows)))
        details[name] = {"means": means, "items": items}

    print(f"SciTLDR ({len(rows)} abstracts), {Path(args.model).name}, greedy, --max-tokens {args.max_tokens}")
    print(f"{'system':<28} {'ROUGE-1':>8} {'ROUGE-2':>8} {'ROUGE-L':>8} {'words':>6} {'s/item':>7}")
    for name, means, avg_words, per_item in report:
        print(f"{name:<28} {means['rouge1']:8.2f} {means['rouge2']:8.2f} {means['rougeL']:8.2f} "
              f"{avg_words:6.1f} {per_item:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(details, indent=1, ensure_ascii=False), encoding="utf-8")
    base = report[0]
    figures.write(args.figures, [figures.row(
        "7", f"summarize SciTLDR ({len(rows)} abstracts): ROUGE-L of `{name}`", means["rougeL"], "",
        reference=base[1]["rougeL"], reference_label="naive `Summarize:` baseline",
        note=f"ROUGE-1/2/L {means['rouge1']:.1f}/{means['rouge2']:.1f}/{means['rougeL']:.1f} at {per_item:.2f} s/item; "
             f"baseline {base[1]['rouge1']:.1f}/{base[1]['rouge2']:.1f}/{base[1]['rougeL']:.1f} at {base[3]:.2f} s/item")
        for name, means, _, per_item in report[1:]])


if __name__ == "__main__":
    main()
