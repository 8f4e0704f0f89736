"""Questions over files past the window: BM25 recall@k, answer F1 of retrieval vs a first-window baseline, refusals.

    python bench/eval_qa.py                         # recall on every question; answers on a sample, both models
    python bench/eval_qa.py --answers 60 --unanswerable 30 --models smollm --ctx 1024 --json qa.json
    python bench/eval_qa.py --recall-only           # no model: recall@k of both tokenizer schemes
    python bench/eval_qa.py --recall-only --embed-model PATH   # also vectors alone and hybrid (BM25 + vectors)

Data: ../shared/data/qa (SQuAD v1.1 tuning split, 16 articles; CMRC 2018 tuning split, Chinese). All articles of a
dataset are joined into one long file (title, then one paragraph per line, blank lines between) written to a temp
dir, never into the repo. recall@k: one of the k best chunks spans the gold paragraph's line; recall@window: one of
the chunks that fit the prompt does. Answer F1: SQuAD normalisation (lowercase, no punctuation or articles), token
F1 for English, character F1 for Chinese, the best over the gold answers; "[n]" markers are removed first and a
"not found" answer scores 0. The baseline puts the first window's worth of the file in the same prompt as one
source. Unanswerable: questions from articles held out of a second file (the last 2 SQuAD / last 20 CMRC
articles); the figure is how often the model says "not found in the files" rather than inventing an answer.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import string
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "qa"
CACHE = Path.home() / ".cache" / "chatllm-test"
MODELS = {"qwen": CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "smollm": CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"}
DATASETS = {"squad": ("squad_v1.1_dev_tune.json", 2), "cmrc": ("cmrc2018_dev_tune.json", 20)}  # file, articles held out
KS = (1, 3, 5, 10)


def build(name: str, out_dir: Path, hold_out: int = 0) -> tuple[Path, list[dict]]:
    """The joined file of a dataset (minus the last hold_out articles) and its questions with gold lines."""
    file, _ = DATASETS[name]
    articles = json.loads((DATA / file).read_text(encoding="utf-8"))["data"]
    kept = articles[: len(articles) - hold_out]
    lines: list[str] = []
    questions = []
    for a_i, article in enumerate(articles):
        inside = a_i < len(kept)
        if inside:
            lines += [article.get("title", "").replace("_", " "), ""]
        for para in article["paragraphs"]:
            if inside:
                lines += [" ".join(para["context"].split()), ""]
            for qa in para["qas"]:
                questions.append({"id": qa["id"], "question": qa["question"], "answers": [a["text"] for a in qa["answers"]],
                                  "line": len(lines) - 2 if inside else None, "article": a_i})
    path = out_dir / f"{name}{'-heldout' if hold_out else ''}.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, questions


def normalize(text: str, chinese: bool) -> list[str]:
    """SQuAD-style tokens: lowercase, no punctuation, no articles; characters for Chinese."""
    text = re.sub(r"\[\d+(?:\s*,\s*\d+)*\]", " ", text.lower())
    if chinese:
        return [c for c in text if c.strip() and c not in string.punctuation and not re.match(r"[\u3000-\u303f\uff00-\uffef]", c)]
    text = "".join(c for c in text if c not in set(string.punctuation))
    return [w for w in text.split() if w not in ("a", "an", "the")]


def f1(prediction: str, golds: list[str], chinese: bool) -> float:
    """The best token (character) F1 of the prediction against the gold answers."""
    from chatllm.tasks.retrieval.file_answers import is_not_found

    if is_not_found(prediction):
        return 0.0
    pred = normalize(prediction, chinese)
    best = 0.0
    for gold in golds:
        ref = normalize(gold, chinese)
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            p, r = common / len(pred), common / len(ref)
            best = max(best, 2 * p * r / (p + r))
    return best


def open_index(path: Path, scheme: str):
    """A fresh index of the given scheme."""
    from chatllm.storage.search_index import SearchIndex
    from chatllm.tasks.retrieval.file_answers import CHUNKER

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return SearchIndex(path, scheme=scheme, fingerprint=CHUNKER)


def recall(name: str, work: Path, scheme: str, window_tokens: int, embedder=None, mode: str = "bm25") -> dict:
    """recall@k over every question of a dataset (mode bm25, vectors or hybrid), and the index build and search times."""
    from chatllm.tasks.retrieval import file_answers as retrieval

    path, questions = build(name, work)
    index = open_index(work / f"recall-{name}-{scheme}-{mode}.db", scheme)
    started = time.perf_counter()
    doc = retrieval.Doc(path.name, index.file_sha(path)[0])
    retrieval.ensure_indexed(index, [doc], lambda d: path.read_text(encoding="utf-8"))
    if embedder is not None:
        retrieval.ensure_vectors(index, embedder, [doc.sha])
    build_s = time.perf_counter() - started
    hits = dict.fromkeys(KS, 0)
    in_window = 0
    started = time.perf_counter()
    k_max = max(max(KS), retrieval.TOP_K)
    for q in questions:
        if mode == "vectors":
            found = index.nearest(embedder.embed([q["question"]])[0], [doc.sha], embedder.name, k_max)
            ranked = [retrieval.Passage(doc.name, h.start_line, h.end_line, h.text, h.score) for h in found]
        else:
            ranked = retrieval.search(index, [doc], q["question"], k_max, embedder=embedder if mode == "hybrid" else None)
        covers = [p.start_line <= q["line"] + 1 <= p.end_line for p in ranked]
        for k in KS:
            hits[k] += any(covers[:k])
        fitting = retrieval.select(ranked, retrieval.approx_tokens, window_tokens)
        in_window += any(p.start_line <= q["line"] + 1 <= p.end_line for p in fitting)
    search_s = (time.perf_counter() - started) / len(questions)
    n_chunks = len(index.chunks(doc.sha))
    index.close()
    return {"dataset": name, "scheme": scheme, "mode": mode, "questions": len(questions), "chunks": n_chunks,
            **{f"recall@{k}": hits[k] / len(questions) for k in KS}, "recall@window": in_window / len(questions),
            "index_build_s": build_s, "search_s": search_s}


def answers(name: str, work: Path, model: str, n_answer: int, n_unanswerable: int, ctx: int, seed: int) -> dict:
    """Answer F1 of retrieval vs the first-window baseline, and refusals of questions whose article is not indexed."""
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.settings import Sampling
    from chatllm.tasks.retrieval import file_answers as retrieval

    chinese = name == "cmrc"
    path, questions = build(name, work)
    held_path, held_questions = build(name, work, DATASETS[name][1])
    engine = LlamaCppEngine(str(MODELS[model]), n_ctx=ctx)
    sampling = Sampling(max_tokens=48, temperature=0.0, seed=0)
    index = open_index(work / f"answers-{name}.db", "words")
    doc = retrieval.Doc(path.name, index.file_sha(path)[0])
    held = retrieval.Doc(held_path.name, index.file_sha(held_path)[0])
    read = {doc.sha: path, held.sha: held_path}
    started = time.perf_counter()
    retrieval.ensure_indexed(index, [doc, held], lambda d: read[d.sha].read_text(encoding="utf-8"))
    cold = time.perf_counter() - started
    rng = random.Random(seed)
    sample = rng.sample(questions, min(n_answer, len(questions)))
    unanswerable = rng.sample([q for q in held_questions if q["line"] is None], n_unanswerable)
    text = path.read_text(encoding="utf-8")
    rows = {"retrieval": [], "baseline": []}
    seconds = {"retrieval": [], "baseline": []}
    for q in sample:
        t0 = time.perf_counter()
        r = retrieval.answer(engine, index, [doc], q["question"], sampling, read=lambda d: text)
        seconds["retrieval"].append(time.perf_counter() - t0)
        hit = any(p.start_line <= q["line"] + 1 <= p.end_line for p in r.passages)
        rows["retrieval"].append((f1(r.answer.text, q["answers"], chinese), r.not_found, hit, bool(r.citations)))
        t0 = time.perf_counter()
        b = baseline(engine, text, q["question"], sampling)
        seconds["baseline"].append(time.perf_counter() - t0)
        rows["baseline"].append((f1(b, q["answers"], chinese), retrieval.is_not_found(b), False, False))
    refused = []
    for q in unanswerable:
        r = retrieval.answer(engine, index, [held], q["question"], sampling, read=lambda d: "")
        refused.append(r.not_found)
    engine.close()
    index.close()
    out = {"dataset": name, "model": model, "ctx": ctx, "answerable": len(sample), "unanswerable": len(unanswerable),
           "index_cold_s": cold, "unanswerable_not_found": statistics.mean(refused) if refused else None}
    for key, vals in rows.items():
        out[f"{key}_f1"] = statistics.mean(v[0] for v in vals)
        out[f"{key}_not_found"] = statistics.mean(v[1] for v in vals)
        out[f"{key}_s_per_q"] = statistics.mean(seconds[key])
    out["retrieval_gold_in_prompt"] = statistics.mean(v[2] for v in rows["retrieval"])
    out["retrieval_cited"] = statistics.mean(v[3] for v in rows["retrieval"])
    return out


def baseline(engine, text: str, question: str, sampling) -> str:
    """The same prompt with the first window's worth of the file as its one source."""
    from chatllm.tasks.ask import oneshot
    from chatllm.tasks.retrieval import file_answers as retrieval

    budget = engine.n_ctx - retrieval.answer_reserve(engine.n_ctx, sampling.max_tokens) \
        - retrieval.prompt_overhead(engine, question, None) - 14
    head = engine.detokenize(engine.tokenize(text[: budget * 8])[:budget])
    message = retrieval.sources_message(question, [retrieval.Passage("file", 1, 1, head, 0.0)])
    return oneshot.ask(engine, message, sampling, system=retrieval.SYSTEM).text


def cli_timing(work: Path, model: str, ctx: int) -> dict:
    """Wall seconds of `chatllm ask -f squad.txt` cold (fresh CHATLLM_HOME: index built) and warm (index cached)."""
    import os
    import subprocess

    path, questions = build("squad", work)
    env = dict(os.environ, CHATLLM_HOME=str(work / "cli-home"), NO_COLOR="1")
    args = [sys.executable, "-m", "chatllm", "ask", "-m", str(MODELS[model]), "--ctx", str(ctx), "-t", "0", "-n", "24",
            "-f", str(path)]
    times = []
    for q in questions[:3]:
        t0 = time.perf_counter()
        subprocess.run([*args, q["question"]], env=env, capture_output=True, check=True, timeout=600)
        times.append(time.perf_counter() - t0)
    return {"model": model, "ctx": ctx, "cold_s": times[0], "warm_s": statistics.mean(times[1:])}


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print them as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="squad,cmrc")
    ap.add_argument("--models", default="smollm,qwen")
    ap.add_argument("--answers", type=int, default=10, help="answerable questions per dataset and model")
    ap.add_argument("--unanswerable", type=int, default=6, help="unanswerable questions per dataset and model")
    ap.add_argument("--ctx", type=int, default=768, help="the window (small, so the file is far past it)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--recall-only", action="store_true")
    ap.add_argument("--no-recall", action="store_true", help="skip the recall pass")
    ap.add_argument("--json", type=Path, help="also write all results to this file")
    ap.add_argument("--embed-model", type=Path, help="a GGUF embedding model: recall of vectors alone and of hybrid too")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="eval-qa-") as tmp:
        work = Path(tmp)
        for name in args.datasets.split(",") if not args.no_recall else []:
            for scheme in ("words", "trigram"):
                results.append(recall(name, work, scheme, args.ctx - 48 - 180))
                print(json.dumps(results[-1]), flush=True)
            if args.embed_model:
                from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

                with LlamaCppEngine(args.embed_model, n_ctx=512, embedding=True, name=args.embed_model.name) as embedder:
                    for mode in ("vectors", "hybrid"):
                        results.append(recall(name, work, "words", args.ctx - 48 - 180, embedder, mode))
                        print(json.dumps(results[-1]), flush=True)
        if not args.recall_only:
            results.append(cli_timing(work, "smollm", args.ctx))
            print(json.dumps(results[-1]), flush=True)
            for model in args.models.split(","):
                for name in args.datasets.split(","):
                    results.append(answers(name, work, model, args.answers, args.unanswerable, args.ctx, args.seed))
                    print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
