"""Sentiment accuracy and items/s of `chatllm sentiment`'s method next to a naive prompt-and-parse baseline.

Runs on ../shared/data/sentiment/sst2_tune.tsv (English) and chnsenticorp_tune.csv (Chinese) with one model load,
every method on the same engine in the same run, and prints a markdown table (or JSON with --json):

    python bench/eval_classify.py                 # SmolLM2-135M-Instruct (the test model), all rows: ~10 min on 2 cores
    python bench/eval_classify.py --limit 40      # a quick look
    python bench/eval_classify.py --methods chatllm --datasets sst2

Methods: naive (chat prompt "positive or negative?", greedy answer parsed for the label word), zero-shot (label
scoring with an instruction and no examples, uncalibrated), zero-shot+cal (the same, calibrated), chatllm (what the
CLI does: built-in few-shot prefix kept in the KV cache, calibration as the language's preset says).

The label-scoring rows also give the mean tokens an item costs (its text and the answer cue, after the cached prefix)
and, as the reference, the items/s of llama.cpp alone evaluating exactly those tokens, run right after each item in
the same loop: items/s can be no better than that, and the ratio is what chatllm's own work costs on top.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import figures  # noqa: E402

from chatllm.runtime.llamacpp import LlamaCppEngine  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402
from chatllm.tasks.classify import Classifier, clean, detect_language  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sentiment"
DATASETS = {"sst2": "sst2_tune.tsv", "chnsenticorp": "chnsenticorp_tune.csv"}
METHODS = ("naive", "zero-shot", "zero-shot+cal", "chatllm")
GOLD = {"0": "negative", "1": "positive"}
DEFAULT_MODEL = Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ANSWER = re.compile(r"positive|negative|正面|负面|积极|消极")
ANSWER_LABEL = {"正面": "positive", "积极": "positive", "负面": "negative", "消极": "negative"}


def load(name: str, limit: int | None) -> list[tuple[str, str]]:
    """(text, gold label) rows of one dataset, balanced when limited (the files are balanced)."""
    path = DATA / DATASETS[name]
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix == ".tsv":
            rows = [(r[0].strip(), GOLD[r[1].strip()]) for r in list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
        else:
            rows = [(r["review"].strip(), GOLD[r["label"].strip()]) for r in csv.DictReader(fh)]
    if not limit:
        return rows
    pos = [r for r in rows if r[1] == "positive"][: (limit + 1) // 2]
    neg = [r for r in rows if r[1] == "negative"][: limit // 2]
    return [r for r in rows if r in pos or r in neg]


def scoring(engine: LlamaCppEngine, rows, method: str) -> dict:
    """Label scoring through the Classifier; setup (prefix, calibration) is inside the timed span."""
    labels = ["positive", "negative"]
    if method == "chatllm":
        clf = Classifier(engine, labels)
    else:
        clf = Classifier(engine, labels, examples=[], calibrate=method.endswith("+cal"))
    start = time.perf_counter()
    right = raw_seconds = item_tokens = 0
    for text, gold in rows:
        right += clf.classify(text).label == gold
        t = time.perf_counter()
        item_tokens += raw_eval(engine, clf, text)
        raw_seconds += time.perf_counter() - t
    seconds = time.perf_counter() - start - raw_seconds
    return {"accuracy": right / len(rows), "items_per_s": len(rows) / seconds, "unparseable": None,
            "tokens_per_item": item_tokens / len(rows), "raw_items_per_s": len(rows) / raw_seconds}


def raw_eval(engine: LlamaCppEngine, clf: Classifier, text: str) -> int:
    """llama.cpp alone on the item's own tokens after the cached prefix (the ceiling for label scoring); their count."""
    prompt = clf._prompt(detect_language(text))
    tokens, _ = clf._item_tokens(prompt, clean(text))
    engine._rewind(len(prompt.prefix))  # drop the item from the cache, keep the prefix
    engine._eval(prompt.prefix + tokens)
    return len(tokens)


def naive(engine: LlamaCppEngine, rows) -> dict:
    """The baseline: ask for one word through the chat template, greedy, and parse the first label word."""
    sampling = Sampling(temperature=0, max_tokens=8, repeat_penalty=1.0)
    right = unparsed = 0
    start = time.perf_counter()
    for text, gold in rows:
        question = f"Is the sentiment of this review positive or negative? Answer with one word.\n\nReview: {text}"
        answer = engine.complete(engine.render_chat([{"role": "user", "content": question}]), sampling).lower()
        found = ANSWER.findall(answer)
        unparsed += not found
        right += bool(found) and ANSWER_LABEL.get(found[0], found[0]) == gold
    seconds = time.perf_counter() - start
    return {"accuracy": right / len(rows), "items_per_s": len(rows) / seconds, "unparseable": unparsed / len(rows),
            "tokens_per_item": None, "raw_items_per_s": None}


def figure_rows(results: list[dict]) -> list[dict]:
    """For run_all.py: chatllm's accuracy next to the naive baseline's, its items/s next to llama.cpp alone's."""
    rows = []
    for d in DATASETS:
        ours = next((r for r in results if r["dataset"] == d and r["method"] == "chatllm"), None)
        base = next((r for r in results if r["dataset"] == d and r["method"] == "naive"), None)
        if ours is None:
            continue
        sst2 = d == "sst2"
        rows.append(figures.row(
            "7", f"sentiment accuracy, {d} ({ours['n']} rows)", 100 * ours["accuracy"], "%",
            reference=100 * base["accuracy"] if base else None, reference_label="naive prompt-and-parse",
            target=">= 85 %" if sst2 else "-", met=ours["accuracy"] >= 0.85 if sst2 else None,
            note=f"naive: {base['unparseable']:.0%} unparseable at {base['items_per_s']:.1f} items/s" if base else ""))
        rows.append(figures.row(
            "7", f"sentiment items/s, {d}", ours["items_per_s"], "items/s", reference=ours["raw_items_per_s"],
            reference_label="llama.cpp alone, same tokens", target=">= 10 items/s" if sst2 else "-",
            met=ours["items_per_s"] >= 10 if sst2 else None,
            note=f"{ours['tokens_per_item']:.1f} tokens per item after the cached prefix"))
    return rows


def main() -> None:
    """Run the methods on the datasets and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="GGUF path (default: the SmolLM2 test model)")
    ap.add_argument("--limit", type=int, default=None, help="rows per dataset (half positive, half negative)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {','.join(METHODS)}")
    ap.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from {','.join(DATASETS)}")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads [default: physical cores]")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    datasets = [d for d in args.datasets.split(",") if d]
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}")
    for d in datasets:
        if d not in DATASETS:
            ap.error(f"unknown dataset {d!r}")
    if not Path(args.model).is_file():
        ap.error(f"no model at {args.model}; run the test suite once (it fetches SmolLM2) or pass --model")
    load_before = os.getloadavg()[0]
    engine = LlamaCppEngine(args.model, n_ctx=4096, n_threads=args.threads)
    results = []
    for d in datasets:
        rows = load(d, args.limit)
        for m in methods:
            res = naive(engine, rows) if m == "naive" else scoring(engine, rows, m)
            results.append({"dataset": d, "method": m, "n": len(rows), **res})
            print(f"[eval_classify] {d} {m}: {res['accuracy']:.1%} at {res['items_per_s']:.1f} items/s",
                  file=sys.stderr, flush=True)
    info = {"model": Path(args.model).name, "threads": engine.n_threads, "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2)}
    engine.close()
    figures.write(args.figures, figure_rows(results))
    if args.json:
        print(json.dumps({"info": info, "results": results}))
        return
    print(f"model {info['model']}, {info['threads']} threads, load average {info['load_average_before']} before / "
          f"{info['load_average_after']} after\n")
    print("| dataset | method | n | accuracy | unparseable | items/s | tokens/item | llama.cpp alone, items/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        unp = "" if r["unparseable"] is None else f"{r['unparseable']:.1%}"
        raw = r["raw_items_per_s"]
        extra = "| | | |" if raw is None else \
            f"| {r['tokens_per_item']:.1f} | {raw:.1f} | {r['items_per_s'] / raw:.2f} |"
        print(f"| {r['dataset']} | {r['method']} | {r['n']} | {r['accuracy']:.1%} | {unp} | {r['items_per_s']:.1f} {extra}")


if __name__ == "__main__":
    main()
