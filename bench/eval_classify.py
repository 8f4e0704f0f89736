"""Sentiment accuracy and items/s of `chatllm sentiment`'s method next to a naive prompt-and-parse baseline.

Runs on ../shared/data/sentiment/sst2_tune.tsv (English) and chnsenticorp_tune.csv (Chinese) with one model load,
every method on the same engine in the same run, and prints a markdown table (or JSON with --json):

    python bench/eval_classify.py                 # SmolLM2-135M-Instruct (the test model), all rows: ~10 min on 2 cores
    python bench/eval_classify.py --limit 40      # a quick look
    python bench/eval_classify.py --methods chatllm --datasets sst2

Methods: naive (chat prompt "positive or negative?", greedy answer parsed for the label word), zero-shot (label
scoring with an instruction and no examples, uncalibrated), zero-shot+cal (the same, calibrated), chatllm (what the
CLI does: the preset for the model's family and the item's language, prefix kept in the KV cache, calibration as the
preset says).

Datasets: sst2 and chnsenticorp (two labels), topics (four: a multi-class check made here from SQuAD paragraphs,
each labelled by its article's title, see TOPICS; scored with `classify`'s machinery, not sentiment's).

--cv tunes the presets: every candidate in chatllm.tasks.classify.presets.CANDIDATES is scored once per item (raw label
log-probabilities, and those of each content-free input, cached on disk by model, preset and text), then for each of
5 folds the best (preset, calibration) pair on the other 4 folds is scored on the held-out one. The cross-validated
accuracy is what a new user should expect; the gap to the chosen pairs' accuracy on their own tuning folds shows
the overfitting.

    python bench/eval_classify.py --cv --datasets sst2,chnsenticorp
    python bench/eval_classify.py --cv --model ~/.cache/chatllm-test/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --limit 80

The label-scoring rows also give the mean tokens an item costs (its text and the answer cue, after the cached prefix)
and, as the reference, the items/s of llama.cpp alone evaluating exactly those tokens, run right after each item in
the same loop: items/s can be no better than that, and the ratio is what chatllm's own work costs on top.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import figures  # noqa: E402

from chatllm.engines.contract import complete  # noqa: E402
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402
from chatllm.tasks.classify.classifier import Classifier, _log_normalize, _mean_logprobs, clean, detect_language  # noqa: E402
from chatllm.tasks.classify.presets import CANDIDATES  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sentiment"
SQUAD = ROOT.parent / "shared" / "data" / "qa" / "squad_v1.1_dev_tune.json"
DATASETS = {"sst2": "sst2_tune.tsv", "chnsenticorp": "chnsenticorp_tune.csv", "topics": "squad"}
METHODS = ("naive", "zero-shot", "zero-shot+cal", "chatllm")
GOLD = {"0": "negative", "1": "positive"}
DEFAULT_MODEL = Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SCORE_CACHE = Path.home() / ".cache" / "chatllm-test" / "eval_classify_scores.json"
ANSWER_LABEL = {"正面": "positive", "积极": "positive", "负面": "negative", "消极": "negative"}
# The multi-class check: each SQuAD article's paragraphs take the topic of its title (assigned here by hand).
TOPICS = {
    "history": ("Normans", "Martin_Luther", "Yuan_dynasty", "French_and_Indian_War"),
    "science": ("Geology", "Immune_system", "Chloroplast", "Pharmacy"),
    "geography": ("Southern_California", "Victoria_(Australia)", "Rhine"),
    "business": ("American_Broadcasting_Company", "Construction", "Economic_inequality"),
}
TOPIC_ROWS = 12  # paragraphs per topic, spread evenly over its articles
FOLDS = 5


def labels_of(name: str) -> list[str]:
    """The label set of a dataset."""
    return list(TOPICS) if name == "topics" else ["positive", "negative"]


def load_topics(limit: int | None) -> list[tuple[str, str]]:
    """(paragraph, topic) rows, topics interleaved, so a limit keeps them balanced."""
    articles = {a["title"]: [p["context"] for p in a["paragraphs"]] for a in json.loads(SQUAD.read_text("utf-8"))["data"]}
    per_topic = []
    for topic, titles in TOPICS.items():
        take = -(-TOPIC_ROWS // len(titles))
        picked = [paras[i * len(paras) // take] for t in titles for paras in [articles[t]] for i in range(take)]
        per_topic.append([(text, topic) for text in picked[:TOPIC_ROWS]])
    rows = [row for group in zip(*per_topic) for row in group]
    return rows[:limit] if limit else rows


def load(name: str, limit: int | None) -> list[tuple[str, str]]:
    """(text, gold label) rows of one dataset, balanced when limited (the files are balanced)."""
    if name == "topics":
        return load_topics(limit)
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


def scoring(engine: LlamaCppEngine, rows, method: str, name: str = "sst2") -> dict:
    """Label scoring through the Classifier; setup (prefix, calibration) is inside the timed span."""
    labels, task = labels_of(name), "classify" if name == "topics" else "sentiment"
    if method == "chatllm":
        clf = Classifier(engine, labels, task=task)
    else:
        clf = Classifier(engine, labels, task=task, examples=[], calibrate=method.endswith("+cal"))
    start = time.perf_counter()
    right = raw_seconds = item_tokens = 0
    for text, gold in rows:
        right += clf.classify(text).label == gold
        t = time.perf_counter()
        item_tokens += raw_eval(engine, clf, text)
        raw_seconds += time.perf_counter() - t
    seconds = time.perf_counter() - start - raw_seconds
    return {"accuracy": right / len(rows), "items_per_s": len(rows) / seconds, "unparseable": None,
            "tokens_per_item": item_tokens / len(rows), "raw_items_per_s": len(rows) / raw_seconds,
            "preset": sorted({clf.preset_for(detect_language(clean(t))).name for t, _ in rows})}


def raw_eval(engine: LlamaCppEngine, clf: Classifier, text: str) -> int:
    """llama.cpp alone on the item's own tokens after the cached prefix (the ceiling for label scoring); their count."""
    prompt = clf._prompt(detect_language(text))
    tokens, _ = clf._item_tokens(prompt, clean(text))
    engine._rewind(len(prompt.prefix))  # drop the item from the cache, keep the prefix
    engine._eval(prompt.prefix + tokens)
    return len(tokens)


def naive(engine: LlamaCppEngine, rows, name: str = "sst2") -> dict:
    """The baseline: ask for one word through the chat template, greedy, and parse the first label word."""
    sampling = Sampling(temperature=0, max_tokens=8, repeat_penalty=1.0)
    labels = labels_of(name)
    answer_re = re.compile("|".join([*labels, *([] if name == "topics" else ANSWER_LABEL)]))
    right = unparsed = 0
    start = time.perf_counter()
    for text, gold in rows:
        if name == "topics":
            question = (f"Which topic is this text about: {', '.join(labels[:-1])} or {labels[-1]}? Answer with one word."
                        f"\n\nText: {text}")
        else:
            question = f"Is the sentiment of this review positive or negative? Answer with one word.\n\nReview: {text}"
        answer = complete(engine, engine.render_chat([{"role": "user", "content": question}]), sampling).lower()
        found = answer_re.findall(answer)
        unparsed += not found
        right += bool(found) and ANSWER_LABEL.get(found[0], found[0]) == gold
    seconds = time.perf_counter() - start
    return {"accuracy": right / len(rows), "items_per_s": len(rows) / seconds, "unparseable": unparsed / len(rows),
            "tokens_per_item": None, "raw_items_per_s": None}


def candidate_scores(engine: LlamaCppEngine, name: str, rows, cache: dict) -> dict[str, tuple[list, list]]:
    """Per candidate preset of the dataset's language: each item's raw label log-probs and each content-free input's."""
    lang = "zh" if name == "chnsenticorp" else "en"
    labels, model = labels_of(name), engine.name
    out = {}
    for preset in (p for p in CANDIDATES.values() if p.name.startswith(f"sentiment/{lang}/")):
        clf = Classifier(engine, labels, preset=preset, calibrate=False)
        prompt = clf._prompt(lang)
        pkey = hashlib.sha256(repr((model, preset, labels)).encode()).hexdigest()[:16]
        start, fresh = time.perf_counter(), 0

        def raw(text: str) -> list[float]:
            nonlocal fresh
            key = f"{pkey}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
            if key not in cache:
                cache[key], fresh = clf._raw_scores(prompt, text)[0], fresh + 1
            return cache[key]

        out[preset.name] = ([raw(clean(t)) for t, _ in rows], [raw(cf) for cf in preset.content_free])
        print(f"[eval_classify] {name} scored {preset.name}: {fresh} new items in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
    return out


def cross_validate(name: str, rows, scores: dict[str, tuple[list, list]], folds: int = FOLDS) -> dict:
    """Choose the best (preset, calibration) on folds-1 folds, score it on the held-out fold; every fold in turn."""
    labels, gold = labels_of(name), [labels_of(name).index(g) for _, g in rows]
    right: dict[str, list[bool]] = {}
    for preset, (items, cfs) in scores.items():
        variants = {"off": [0.0] * len(labels), "on": _mean_logprobs(cfs)}
        if len(cfs) > 1:
            variants["on-empty-only"] = _log_normalize(cfs[0])
        for cal, bias in variants.items():
            preds = [max(range(len(labels)), key=lambda k: item[k] - bias[k]) for item in items]
            right[f"{preset} calibrate={cal}"] = [p == g for p, g in zip(preds, gold)]
    order = list(right)
    fold_of = list(range(len(rows)))
    random.Random(19).shuffle(fold_of)
    held_right, chosen, tuned = 0, [], []
    for k in range(folds):
        train = [i for i in range(len(rows)) if fold_of[i] % folds != k]
        test = [i for i in range(len(rows)) if fold_of[i] % folds == k]
        best = max(order, key=lambda c: (sum(right[c][i] for i in train), -order.index(c)))
        chosen.append(best)
        tuned.append(sum(right[best][i] for i in train) / len(train))
        held_right += sum(right[best][i] for i in test)
    whole = {c: sum(v) / len(v) for c, v in right.items()}
    return {"dataset": name, "n": len(rows), "folds": folds, "cv_accuracy": held_right / len(rows),
            "tuned_accuracy": sum(tuned) / folds, "chosen": chosen, "all_rows": whole,
            "best_on_all_rows": max(order, key=lambda c: (whole[c], -order.index(c)))}


def run_cv(engine: LlamaCppEngine, datasets: list[str], limit: int | None, cache_path: Path) -> list[dict]:
    """Score every candidate once per item (cached on disk), then cross-validate the choice per dataset."""
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    out = []
    for d in (d for d in datasets if d != "topics"):
        rows = load(d, limit)
        scores = candidate_scores(engine, d, rows, cache)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache))
        out.append(cross_validate(d, rows, scores))
    return out


def print_cv(info: dict, results: list[dict]) -> None:
    """The cross-validation as markdown: per dataset the held-out accuracy, then every candidate on all rows."""
    print(f"model {info['model']} (family {info['family']}), {FOLDS}-fold cross-validation\n")
    for r in results:
        print(f"{r['dataset']} ({r['n']} rows): cross-validated {r['cv_accuracy']:.1%}, the chosen pairs on their own "
              f"tuning folds {r['tuned_accuracy']:.1%}; chosen per fold: {', '.join(r['chosen'])}\n")
        print("| preset, calibration | accuracy on all rows (tuned on) |\n|---|---|")
        for c, acc in sorted(r["all_rows"].items(), key=lambda kv: -kv[1]):
            print(f"| {c} | {acc:.1%} |")
        print()


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
    ap.add_argument("--cv", action="store_true", help="tune: cross-validate the candidate presets instead of the methods")
    ap.add_argument("--score-cache", default=str(SCORE_CACHE), help="where --cv keeps each item's raw scores")
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
    if args.cv:
        cv = run_cv(engine, datasets, args.limit, Path(args.score_cache))
        cv_info = {"model": Path(args.model).name, "family": engine.family}
        engine.close()
        print(json.dumps({"info": cv_info, "cv": cv}) if args.json else "", end="\n" if args.json else "")
        if not args.json:
            print_cv(cv_info, cv)
        return
    results = []
    for d in datasets:
        rows = load(d, args.limit)
        for m in methods:
            res = naive(engine, rows, d) if m == "naive" else scoring(engine, rows, m, d)
            results.append({"dataset": d, "method": m, "n": len(rows), **res})
            print(f"[eval_classify] {d} {m}: {res['accuracy']:.1%} at {res['items_per_s']:.1f} items/s",
                  file=sys.stderr, flush=True)
    info = {"model": Path(args.model).name, "family": engine.family, "threads": engine.n_threads,
            "load_average_before": round(load_before, 2),
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
