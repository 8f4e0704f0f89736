"""How often drafts and batches change an output, against the exact path (`--draft off --parallel 1`), per model.

Both features change how tokens are batched: a drafted token is verified inside a batch of k + 1 tokens instead of a
single-token step, and a batched item shares its decodes (and the KV cache's cells) with other items. llama.cpp's
kernels may round a batch differently, which can flip a near-tie between two tokens; from there the greedy texts
part. For every output that differs, this script finds the first token where they part and reports the gap between
the two tokens' log-probabilities on the exact path (a small gap: a near-tie flipped by rounding; a large one would
be a bug).

Drafts are forced on here (a cost table that makes every draft pay), so the drafting path runs on every prompt
whatever this machine's timings say; `auto` drafts the same way when it drafts at all.

    python bench/reproducibility.py                          # SmolLM2 and Qwen, every feature (~15 min on 2 cores)
    python bench/reproducibility.py --models smollm --n 3    # fewer prompts
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chatllm.engines.contract import complete  # noqa: E402
from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine  # noqa: E402
from chatllm.engines.llamacpp.prompt_lookup import DecodeCosts  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402
from chatllm.tasks.ask.structured_output import json_spec  # noqa: E402
from chatllm.tasks.classify.classifier import Classifier  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODELS = {"smollm": Path.home() / ".cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf",
          "qwen": Path.home() / ".cache/chatllm-test/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
SCHEMA = "title, year int, people str[]"


class CheapCosts(DecodeCosts):
    """A cost table under which every draft pays (so the drafting path always runs), never updated by timings."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = {n: 1.0 + 0.01 * (n - 1) for n in range(1, 18)}

    def add(self, n: int, seconds: float) -> None:
        """Timings are ignored."""


def squad_paragraphs(n: int) -> list[tuple[str, str]]:
    """(paragraph, its first question) for n SQuAD tuning paragraphs, one per article."""
    data = json.loads((DATA / "qa" / "squad_v1.1_dev_tune.json").read_text(encoding="utf-8"))
    return [(a["paragraphs"][0]["context"], a["paragraphs"][0]["qas"][0]["question"]) for a in data["data"][:n]]


def flores(n: int) -> list[str]:
    with open(DATA / "translation" / "flores_en_zh_tune.tsv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    return [r[0] for r in rows[:n]]


def mt_bench(n: int) -> list[str]:
    lines = (DATA / "chat" / "mt_bench_tune.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["turns"][0] for line in lines[:n]]


def sst2(n: int) -> list[str]:
    with open(DATA / "sentiment" / "sst2_tune.tsv", encoding="utf-8") as fh:
        return [line.split("\t")[0] for line in fh.read().splitlines()[:n]]


def book_chunk() -> str:
    text = (DATA / "longdocs" / "alice_in_wonderland_pg11.txt").read_text(encoding="utf-8")
    start = text.index("CHAPTER I.")
    return text[start:start + 2400]


def grounded_prompts(engine: LlamaCppEngine, n: int) -> dict[str, list[tuple[str, Sampling]]]:
    """Prompts per kind (what the issue's grounded tasks ask), with their sampling."""
    chat = lambda text, system=None: engine.render_chat(  # noqa: E731
        ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}])
    greedy = Sampling(temperature=0, max_tokens=96, repeat_penalty=1.0)
    paras = squad_paragraphs(n)
    spec = json_spec(SCHEMA)
    return {
        "verbatim": [(chat(f"{p}\n\nQuote, word for word, the sentence of the text above that answers: {q}"), greedy)
                     for p, q in paras],
        "ask -f": [(chat(f"{p}\n\n---\nAnswer from the text above: {q}"), greedy) for p, q in paras],
        "translate": [(chat(f"Translate into Chinese:\n\n{line}"), greedy) for line in flores(n)],
        "notes": [(chat(f"{book_chunk()}\n---\nWrite notes on the text above: what happens, who is in it."), greedy)],
        "--schema": [(chat(f"{p}\n\nExtract the article's title, a year and the people it names.",
                           spec.instruction()), greedy.replace(json_schema=spec.wire_text)) for p, _ in paras[:2]],
        "chat": [(chat(q), greedy) for q in mt_bench(n)],
        "chat, seeded": [(chat(q), Sampling(temperature=0.8, seed=11, max_tokens=96)) for q in mt_bench(n)],
    }


def first_difference(engine: LlamaCppEngine, prompt: str, a: str, b: str) -> dict:
    """Where two replies to one prompt part (in tokens), and the exact path's log-probability gap there."""
    import numpy as np

    ta, tb = engine.tokenize(a), engine.tokenize(b)
    i = 0
    while i < min(len(ta), len(tb)) and ta[i] == tb[i]:
        i += 1
    if i >= min(len(ta), len(tb)):
        return {"at": i, "gap": None}
    engine._eval(engine.prompt_tokens(prompt) + ta[:i])
    lp = engine._logprobs_at(-1, np)
    return {"at": i, "gap": round(abs(float(lp[ta[i]] - lp[tb[i]])), 3)}


def drafts(engine: LlamaCppEngine, n: int) -> list[dict]:
    rows = []
    for kind, prompts in grounded_prompts(engine, n).items():
        for prompt, sampling in prompts:
            plain = complete(engine, prompt, sampling.replace(draft="off"))
            saved, engine._costs = engine._costs, CheapCosts()
            try:
                drafted = complete(engine, prompt, sampling.replace(draft="auto"))
            finally:
                engine._costs = saved
            stats = engine.last_stats
            row = {"feature": "drafts", "kind": kind, "same": plain == drafted, "drafted": stats.drafted_tokens,
                   "accepted": stats.accepted_tokens}
            if plain != drafted:
                row.update(first_difference(engine, prompt, plain, drafted))
            rows.append(row)
    return rows


def batches(engine: LlamaCppEngine, n: int) -> list[dict]:
    instruction = "Is the sentiment of this movie review positive or negative? Answer with one word, then why."
    prompts = [engine.render_chat([{"role": "user", "content": f"{instruction}\n\n{s}"}]) for s in sst2(n)]
    rows = []
    for sampling in (Sampling(temperature=0, max_tokens=24, repeat_penalty=1.0), Sampling(temperature=0.8, seed=5, max_tokens=24)):
        plain = [complete(engine, p, sampling) for p in prompts]
        batched = {item.index: item.text for item in engine.generate_batch(prompts, sampling)}
        for i, prompt in enumerate(prompts):
            row = {"feature": f"batch x{engine.parallel}", "kind": "greedy" if sampling.temperature == 0 else "seeded",
                   "same": batched[i] == plain[i]}
            if batched[i] != plain[i]:
                row.update(first_difference(engine, prompt, plain[i], batched[i]))
            rows.append(row)
    return rows


def scores(engine: LlamaCppEngine, n: int) -> list[dict]:
    texts = sst2(n)
    clf = Classifier(engine, ["positive", "negative"])
    parallel, engine.parallel = engine.parallel, 1
    plain = [clf.classify(t) for t in texts]
    engine.parallel = parallel
    batched = clf.classify_many(texts)
    rows = []
    for a, b in zip(plain, batched):
        rows.append({"feature": "sentiment batch", "kind": "labels", "same": a.label == b.label,
                     "dp": round(abs(a.scores["positive"] - b.scores["positive"]), 5),
                     "margin": round(abs(a.scores["positive"] - 0.5), 4)})
    return rows


def summary(rows: list[dict]) -> list[str]:
    out = []
    keys = sorted({(r["feature"], r["kind"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for feature, kind in keys:
        mine = [r for r in rows if r["feature"] == feature and r["kind"] == kind]
        differ = [r for r in mine if not r["same"]]
        gaps = [r["gap"] for r in differ if r.get("gap") is not None]
        extra = ""
        if feature == "drafts":
            d, a = sum(r["drafted"] for r in mine), sum(r["accepted"] for r in mine)
            extra = f", {a}/{d} drafted accepted"
        if "dp" in mine[0]:
            extra = f", max |dp| {max(r['dp'] for r in mine):.5f}"
        out.append(f"{feature:16} {kind:13} {len(mine) - len(differ):3}/{len(mine):<3} same"
                   + (f"; where they part, gap {min(gaps):.3f}-{max(gaps):.3f}" if gaps else "") + extra)
    return out


def main() -> None:
    """Run every feature on every model and print the shares of outputs equal to the exact path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm,qwen")
    parser.add_argument("--n", type=int, default=4, help="prompts per kind")
    parser.add_argument("--rows", type=int, default=24, help="batch rows and sentiment lines")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    everything = {}
    for name in args.models.split(","):
        start = time.perf_counter()
        engine = LlamaCppEngine(MODELS[name], n_ctx=4096, parallel=args.parallel)
        rows = drafts(engine, args.n) + batches(engine, args.rows) + scores(engine, args.rows * 4)
        engine.close()
        everything[name] = rows
        print(f"## {name} ({time.perf_counter() - start:.0f} s)")
        print("\n".join(summary(rows)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
