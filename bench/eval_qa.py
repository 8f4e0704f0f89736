"""Questions over files past the window, as a user asks them: one `chatllm ask -f FILE QUESTION` per question.

    python bench/eval_qa.py --no-recall                 # report split, Qwen then SmolLM2, SQuAD and CMRC
    python bench/eval_qa.py --no-recall --models qwen --answers 15 --unanswerable 10 --methods rerank,today:4:2,first-window:1:1
                                                        # the docs/BENCHMARKS.md rows (~20 min on 2 cores)
    python bench/eval_qa.py --no-recall --split tune --methods rerank --answers 40 --unanswerable 20
    python bench/eval_qa.py --recall-only               # no model: BM25 recall@k of both tokenizer schemes
    python bench/eval_qa.py --recall-only --embed-model PATH   # also vectors alone and hybrid (BM25 + vectors)

Data: ../shared/data/qa (SQuAD v1.1 tuning split, 16 articles; CMRC 2018 tuning split, Chinese), never copied into
the repo. For answers, all articles of a dataset but the last few (2 SQuAD, 20 CMRC) are joined into one long file
(title, then one paragraph per line, blank lines between) in a temp dir. Questions are split by article: `tune`
takes the articles at even positions, `report` those at odd ones (so reported questions were never tuned on).
Unanswerable questions: half hand-written (bench/qa_unanswerable.py: a fact about a subject the file covers, which it
does not hold), half from the articles left out of the file.

Methods, alternating question by question in one run: `rerank` (chatllm's default), `today` (`--no-rerank`: every
passage that fits, numbered, and the model decides) and `first-window` (the file's first window's worth of tokens,
asked whole). Figures: answer found (every word of a gold answer is in the answer; characters for Chinese; SQuAD
normalisation), token F1, answers carrying a citation, citations that name the gold paragraph, "not found" on
answerable and unanswerable questions, and the time to first token: from starting the process to the first byte on
stdout, model load included (the index is built once before, as by a first question). recall@k: one of the k best
chunks spans the gold paragraph's line; recall@window: one of the chunks that fit the prompt does.
"""

from __future__ import annotations

import argparse
import json
import os
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


METHODS = ("rerank", "today", "first-window")  # this change; every passage that fits (--no-rerank); the file's head
CITATION = re.compile(r"^\[(\d+)\] (.+):(\d+)-(\d+)(?: \".*)?$")


def question_sets(name: str, work: Path, split: str, n_answer: int, n_unanswerable: int, seed: int) -> tuple[Path, list[dict]]:
    """The file (every article but the held-out ones) and the questions of one split: answerable ones from the
    articles of that split (tune: even positions, report: odd), unanswerable ones from the held-out articles of that
    split and the hand-written ones of bench/qa_unanswerable.py (tune: even positions, report: odd)."""
    from qa_unanswerable import UNANSWERABLE

    parity = 0 if split == "tune" else 1
    path, questions = build(name, work, DATASETS[name][1])
    rng = random.Random(seed)
    answerable = [q for q in questions if q["line"] is not None and q["article"] % 2 == parity]
    held = [q for q in questions if q["line"] is None and q["article"] % 2 == parity]
    written = [{"id": f"written-{name}-{i}", "question": text, "answers": [], "line": None, "written": True}
               for i, text in enumerate(UNANSWERABLE[name]) if i % 2 == parity]
    n_written = min(len(written), n_unanswerable // 2)
    unanswerable = rng.sample(written, n_written) + rng.sample(held, n_unanswerable - n_written)
    return path, rng.sample(answerable, n_answer) + unanswerable


def found(prediction: str, golds: list[str], chinese: bool) -> bool:
    """The gold answer's words are in the answer: every normalised word (character, for Chinese) of one gold answer."""
    from chatllm.tasks.retrieval.citations import is_not_found

    if is_not_found(prediction):
        return False
    have = set(normalize(prediction, chinese))
    return any(ref and set(ref) <= have for ref in (normalize(g, chinese) for g in golds))


def run_ask(args: list[str], env: dict, timeout: float = 1800) -> dict:
    """One `chatllm ask` as a user runs it: seconds to the first byte on stdout, wall seconds, the process's CPU
    seconds, the 1-minute load average after it, the answer and the citation lines after it."""
    import resource
    import subprocess

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "ask", *args], env=env, stdin=subprocess.DEVNULL, bufsize=0,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    ttft = time.perf_counter() - t0
    rest, err = proc.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    if proc.returncode != 0:
        raise RuntimeError(f"chatllm ask failed ({proc.returncode}): {err.decode(errors='replace')[-400:]}")
    lines = (first + rest).decode("utf-8").rstrip("\n").split("\n")
    cited = []
    while lines and CITATION.match(lines[-1]):
        cited.insert(0, CITATION.match(lines.pop()).groups())
    return {"ttft": ttft, "wall": wall, "cpu": cpu, "load": os.getloadavg()[0], "answer": "\n".join(lines).strip(),
            "citations": [{"source": int(n), "file": f, "start": int(a), "end": int(b)} for n, f, a, b in cited]}


def first_window_file(path: Path, work: Path, model: str, tokens: int) -> Path:
    """The first `tokens` tokens' worth of the file (counted with the model's tokenizer), as a file of its own."""
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    out = work / f"{path.stem}-head-{model}.txt"
    if not out.exists():
        with LlamaCppEngine(str(MODELS[model]), n_ctx=256) as engine:
            text = path.read_text(encoding="utf-8")
            out.write_text(engine.detokenize(engine.tokenize(text[: tokens * 8])[:tokens]), encoding="utf-8")
    return out


def cli_answers(name: str, work: Path, model: str, split: str, n_answer: int, n_unanswerable: int, seed: int,
                methods: dict[str, tuple[int, int]], ctx: int | None, max_tokens: int, log=None) -> dict:
    """Every question of the split through `chatllm ask -f FILE QUESTION`, the methods alternating question by question
    (each method takes its first n questions of the answerable and of the unanswerable ones)."""
    chinese = name == "cmrc"
    path, questions = question_sets(name, work, split, n_answer, n_unanswerable, seed)
    env = dict(os.environ, CHATLLM_HOME=str(work / f"home-{model}"), NO_COLOR="1")
    env.pop("CHATLLM_EMBED_MODEL", None)
    base = ["-m", str(MODELS[model]), "-t", "0", "-n", str(max_tokens), *(["--ctx", str(ctx)] if ctx else [])]
    from chatllm.settings import DEFAULT_CTX

    window = (ctx or DEFAULT_CTX) - max_tokens - 96  # the first window's worth: the window less the answer's room
    head = first_window_file(path, work, model, window) if methods.get("first-window") else None
    t0 = time.perf_counter()
    run_ask([*base, "-n", "1", "-f", str(path), "warm up the index"], env)  # builds the index once, as a first use would
    index_s = time.perf_counter() - t0
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    seen = {"answerable": 0, "unanswerable": 0}
    for q in questions:
        kind = "answerable" if q["line"] is not None else "unanswerable"
        seen[kind] += 1
        for method, (n_ans, n_una) in methods.items():
            if seen[kind] > (n_ans if kind == "answerable" else n_una):
                continue
            extra = {"rerank": ["-f", str(path)], "today": ["--no-rerank", "-f", str(path)],
                     "first-window": ["-f", str(head)]}[method]
            r = run_ask([*base, *extra, q["question"]], env)

            from chatllm.tasks.retrieval.citations import is_not_found

            r.update(id=q["id"], question=q["question"], kind=kind, written=q.get("written", False),
                     not_found=is_not_found(r["answer"]), found=found(r["answer"], q["answers"], chinese) if q["answers"] else None,
                     f1=f1(r["answer"], q["answers"], chinese) if q["answers"] else None,
                     cited_gold=any(c["start"] <= q["line"] + 1 <= c["end"] for c in r["citations"]) if q["line"] is not None else None)
            rows[method].append(r)
            if log is not None:
                log.write(json.dumps({"dataset": name, "model": model, "method": method, **r}, ensure_ascii=False) + "\n")
                log.flush()
    out = {"dataset": name, "model": model, "split": split, "ctx": ctx or "default", "index_s": index_s,
           "load_average": os.getloadavg()[0]}
    for method, rs in rows.items():
        out[method] = summarize(rs)
    return out


def summarize(rows: list[dict]) -> dict:
    """The figures of one method: answer found, cited, not found (answerable, unanswerable), time to first token."""
    ans = [r for r in rows if r["kind"] == "answerable"]
    una = [r for r in rows if r["kind"] == "unanswerable"]
    answered = [r for r in rows if not r["not_found"]]

    def share(xs) -> float | None:
        xs = list(xs)
        return round(statistics.mean(xs), 3) if xs else None

    ttft = sorted(r["ttft"] for r in rows)
    return {"answerable": len(ans), "unanswerable": len(una), "found": share(r["found"] for r in ans),
            "f1": share(r["f1"] for r in ans), "cited": share(bool(r["citations"]) for r in answered),
            "cited_gold": share(r["cited_gold"] for r in ans if not r["not_found"]),
            "not_found_answerable": share(r["not_found"] for r in ans),
            "not_found_unanswerable": share(r["not_found"] for r in una),
            "not_found_written": share(r["not_found"] for r in una if r["written"]),
            "answer_words": share(len(r["answer"].split()) for r in answered),
            "ttft_median": round(statistics.median(ttft), 2) if ttft else None,
            "cpu_median": round(statistics.median(r["cpu"] for r in rows), 2) if rows else None,
            "load_median": round(statistics.median(r["load"] for r in rows), 2) if rows else None,
            "ttft_mean": round(statistics.mean(ttft), 2) if ttft else None,
            "ttft_max": round(max(ttft), 2) if ttft else None}


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print them as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="squad,cmrc")
    ap.add_argument("--models", default="qwen,smollm")
    ap.add_argument("--split", choices=("tune", "report"), default="report",
                    help="tune: questions of the even-numbered articles (and the even hand-written ones); report: odd")
    ap.add_argument("--answers", type=int, default=20, help="answerable questions per dataset and model")
    ap.add_argument("--unanswerable", type=int, default=10, help="unanswerable questions per dataset and model (half "
                                                                 "hand-written, half from articles left out of the file)")
    ap.add_argument("--methods", default="rerank,today:4:2,first-window:4:2",
                    help="methods, each with how many answerable and unanswerable questions it takes (default: all)")
    ap.add_argument("--ctx", type=int, help="--ctx for every `chatllm ask` (default: chatllm's own, as a user runs it)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--recall-ctx", type=int, default=768, help="the prompt window of the recall@window figure")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--recall-only", action="store_true")
    ap.add_argument("--no-recall", action="store_true", help="skip the recall pass")
    ap.add_argument("--json", type=Path, help="also write all results to this file")
    ap.add_argument("--log", type=Path, help="write every `chatllm ask` run (JSON lines) to this file")
    ap.add_argument("--embed-model", type=Path, help="a GGUF embedding model: recall of vectors alone and of hybrid too")
    args = ap.parse_args(argv)
    methods: dict[str, tuple[int, int]] = {}
    for item in args.methods.split(","):
        name, *limits = item.split(":")
        if name not in METHODS:
            ap.error(f"unknown method {name!r}: pick from {', '.join(METHODS)}")
        methods[name] = (int(limits[0]), int(limits[1])) if limits else (args.answers, args.unanswerable)
    results = []
    log = args.log.open("a", encoding="utf-8") if args.log else None
    with tempfile.TemporaryDirectory(prefix="eval-qa-") as tmp:
        work = Path(tmp)
        for name in args.datasets.split(",") if not args.no_recall else []:
            for scheme in ("words", "trigram"):
                results.append(recall(name, work, scheme, args.recall_ctx - 48 - 180))
                print(json.dumps(results[-1]), flush=True)
            if args.embed_model:
                from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

                with LlamaCppEngine(args.embed_model, n_ctx=512, embedding=True, name=args.embed_model.name) as embedder:
                    for mode in ("vectors", "hybrid"):
                        results.append(recall(name, work, "words", args.recall_ctx - 48 - 180, embedder, mode))
                        print(json.dumps(results[-1]), flush=True)
        if not args.recall_only:
            for model in args.models.split(","):
                for name in args.datasets.split(","):
                    results.append(cli_answers(name, work, model, args.split, args.answers, args.unanswerable, args.seed,
                                               methods, args.ctx, args.max_tokens, log))
                    print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
