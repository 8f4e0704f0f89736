"""Tune the not-found line of `ask -f` (tasks/retrieval/file_answers.Rerank) on the tuning questions.

    python bench/tune_rerank.py                          # Qwen, SQuAD and CMRC, 30 answerable + 20 unanswerable each
    python bench/tune_rerank.py --models smollm --answers 20 --unanswerable 10

For every question of the `tune` split (bench/eval_qa.py: articles at even positions, even hand-written questions),
in one process per model: the passages are searched and reranked exactly as `chatllm ask -f` does, and the model
answers from the best windows with no line at all, so each question gives its best relevance, the answer, whether
it holds the gold answer and its support (the share of the words it adds that its windows hold). The table then
replays the rule for each candidate line: "not found" when the best relevance is under the line or the support
under `Rerank.min_support`; per dataset it prints the answer-found share of answerable questions and the
not-found share of answerable and of unanswerable ones (hand-written and from articles left out of the file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from eval_qa import MODELS, found, question_sets

from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
from chatllm.settings import Sampling
from chatllm.storage.search_index import SearchIndex
from chatllm.tasks.retrieval import file_answers as retrieval
from chatllm.tasks.retrieval.citations import support

LINES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0)


def measure(name: str, model: str, work: Path, n_answer: int, n_unanswerable: int, seed: int) -> list[dict]:
    """Each tuning question's best relevance, answer (no line), support and whether the gold answer is in it."""
    path, questions = question_sets(name, work, "tune", n_answer, n_unanswerable, seed)
    index = SearchIndex(work / f"tune-{name}.db", fingerprint=retrieval.CHUNKER)
    doc = retrieval.Doc(path.name, index.file_sha(path)[0])
    retrieval.ensure_indexed(index, [doc], lambda d: path.read_text(encoding="utf-8"))
    open_line = dataclasses.replace(retrieval.RERANK, min_relevance=-1e9, min_relevance_zh=-1e9, min_support=0.0)
    sampling = Sampling(max_tokens=48, temperature=0.0, seed=0)
    rows = []
    with LlamaCppEngine(str(MODELS[model]), n_ctx=4096) as engine:
        for q in questions:
            r = retrieval.answer(engine, index, [doc], q["question"], sampling, read=lambda d: "", rerank=open_line)
            judged = r.reranking.judged if r.reranking else []
            read = [p.window or p.text for p in r.passages]
            rows.append({"question": q["question"], "answerable": q["line"] is not None, "written": q.get("written", False),
                         "relevance": max((p.relevance or 0.0 for p in judged), default=None), "answer": r.answer.text,
                         "support": support(r.answer.text, q["question"], read) if judged else 0.0,
                         "found": found(r.answer.text, q["answers"], name == "cmrc") if q["line"] is not None else None})
            print(json.dumps({"dataset": name, "model": model, **rows[-1]}, ensure_ascii=False), flush=True)
    index.close()
    return rows


def replay(rows: list[dict], line: float, min_support: float) -> dict:
    """The figures the rule gives with this line."""
    def said_not_found(r: dict) -> bool:
        return r["relevance"] is None or r["relevance"] < line or r["support"] < min_support

    ans = [r for r in rows if r["answerable"]]
    written = [r for r in rows if not r["answerable"] and r["written"]]
    left_out = [r for r in rows if not r["answerable"] and not r["written"]]
    share = lambda xs: round(statistics.mean(xs), 3) if xs else None  # noqa: E731
    return {"line": line, "found": share([r["found"] and not said_not_found(r) for r in ans]),
            "not_found_answerable": share([said_not_found(r) for r in ans]),
            "not_found_written": share([said_not_found(r) for r in written]),
            "not_found_left_out": share([said_not_found(r) for r in left_out])}


def main(argv: list[str] | None = None) -> None:
    """Measure, then print the replayed table per model and dataset (JSON lines)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="squad,cmrc")
    ap.add_argument("--models", default="qwen")
    ap.add_argument("--answers", type=int, default=30)
    ap.add_argument("--unanswerable", type=int, default=20)
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--json", type=Path, help="also write the measured rows to this file")
    args = ap.parse_args(argv)
    measured = {}
    with tempfile.TemporaryDirectory(prefix="tune-rerank-") as tmp:
        for model in args.models.split(","):
            for name in args.datasets.split(","):
                measured[f"{model}/{name}"] = measure(name, model, Path(tmp), args.answers, args.unanswerable, args.seed)
    for key, rows in measured.items():
        for line in LINES:
            print(json.dumps({"model/dataset": key, **replay(rows, line, retrieval.RERANK.min_support)}))
    if args.json:
        args.json.write_text(json.dumps(measured, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
