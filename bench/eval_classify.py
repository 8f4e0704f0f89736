"""Sentiment accuracy and items/s on the shared tuning data, next to a naive prompt-and-parse baseline.

Usage: python bench/eval_classify.py [--model PATH] [--limit N] [--json]
Reads ../shared/data/sentiment/{sst2_tune.tsv,chnsenticorp_tune.csv} relative to the repo root.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatllm.engine import Engine  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402
from chatllm.tasks.classify import Classifier  # noqa: E402
from tests.model_fetch import SMOLLM, fetch  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sentiment"
LABELS = ["negative", "positive"]


def load(name: str, limit: int | None) -> list[tuple[str, str]]:
    """(text, label) rows of one dataset."""
    path = DATA / name
    with open(path, encoding="utf-8", newline="") as fh:
        if name.endswith(".tsv"):
            rows = [(r["sentence"].strip(), LABELS[int(r["label"])]) for r in csv.DictReader(fh, delimiter="\t")]
        else:
            rows = [(r["review"].strip(), LABELS[int(r["label"])]) for r in csv.DictReader(fh)]
    return rows[:limit] if limit else rows


def label_scoring(engine: Engine, rows) -> tuple[float, float]:
    """chatllm's method: calibrated label probabilities after a cached few-shot prefix."""
    clf = Classifier(engine, ["positive", "negative"])
    clf.classify("warm-up")  # builds the cached prefix and calibration once, as a batch run does
    start = time.perf_counter()
    right = sum(clf.classify(text).label == gold for text, gold in rows)
    return right / len(rows), len(rows) / (time.perf_counter() - start)


def naive(engine: Engine, rows) -> tuple[float, float, float]:
    """Baseline: ask in chat for one word and parse it (the method peers use)."""
    sampling = Sampling(temperature=0, max_tokens=8, repeat_penalty=1.0)
    right = unparsed = 0
    start = time.perf_counter()
    for text, gold in rows:
        prompt = engine.render_chat([{"role": "user", "content":
                                      f"Is the sentiment of this review positive or negative? Answer with one word.\n\n{text}"}])
        answer = engine.complete(prompt, sampling).lower()
        found = re.findall(r"positive|negative", answer)
        unparsed += not found
        right += bool(found) and found[0] == gold
    return right / len(rows), unparsed / len(rows), len(rows) / (time.perf_counter() - start)


def main() -> None:
    """Run both methods on both datasets and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="GGUF path (default: the SmolLM2 test model)")
    ap.add_argument("--limit", type=int, default=None, help="rows per dataset")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    engine = Engine(args.model or fetch(SMOLLM), n_ctx=4096)
    results = {}
    for name in ("sst2_tune.tsv", "chnsenticorp_tune.csv"):
        rows = load(name, args.limit)
        acc, ips = label_scoring(engine, rows)
        n_acc, n_unparsed, n_ips = naive(engine, rows)
        results[name] = {"n": len(rows), "accuracy": round(acc, 3), "items_per_s": round(ips, 1),
                         "naive_accuracy": round(n_acc, 3), "naive_unparseable": round(n_unparsed, 3),
                         "naive_items_per_s": round(n_ips, 1)}
    if args.json:
        print(json.dumps(results))
        return
    print("| dataset | n | chatllm accuracy | items/s | naive accuracy | naive unparseable | naive items/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['n']} | {r['accuracy']:.1%} | {r['items_per_s']} | {r['naive_accuracy']:.1%} | "
              f"{r['naive_unparseable']:.1%} | {r['naive_items_per_s']} |")


if __name__ == "__main__":
    main()
