"""Drafts from the prompt and several sequences per decode, each next to llama.cpp's own tool, in one run.

Every chatllm figure comes from the CLI run the way a user runs it (a subprocess, `--json` for its counts), and
each is measured right next to its reference, pair by pair, so a busy machine moves both; the load average is
printed with every section.

1. Drafts, grounded generation (`--draft auto` vs `--draft off`, tokens/s of `ask --json`) next to `llama-lookup`
   (llama.cpp's prompt-lookup decoding, built from the vendored sources by llamacpp_ref.py) with `--spec-draft-n-max
   8` vs 0 on the very same rendered prompts, greedy, repeat penalty off for both: a verbatim quote of the SQuAD
   sentence that answers a question, a verbatim copy of two SQuAD paragraphs (the issue's own llama-lookup figure),
   `ask -f` answers over SQuAD paragraphs, FLORES lines into Chinese, notes on a book chunk, and `--schema`
   extraction (llama-lookup gets the same JSON Schema).
2. Free chat (MT-bench first turns): `--draft auto` vs `off`; drafting must cost nothing where nothing is copied.
3. `ask --lines` over short-answer rows at `--parallel 4` vs `--parallel 1` (rows/s after the model load), next to
   llama-batched-bench's generation speed-up at 4 sequences vs 1.
4. `sentiment --lines` over the 300 SST-2 tuning lines: the tokens it evaluates per second (item tokens after the
   cached prefix, over the run's time past its one-line setup) next to llama-batched-bench's prompt rate.
5. `summarize` of a tuning book: the map phase's wall time (`map_seconds`) at the default --parallel vs 1.

    python bench/drafts_batches.py                     # everything, both models (about an hour on 2 busy cores)
    python bench/drafts_batches.py --only drafts --models qwen --runs 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

from llamacpp_ref import SPECULATIVE_TARGETS, ensure_built  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODELS = {"smollm": Path.home() / ".cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf",
          "qwen": Path.home() / ".cache/chatllm-test/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
# No arrays: a tiny model under a grammar can fill a list until --max-tokens cuts the JSON (an error, no figure).
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"},
                                           "person": {"type": "string"}},
          "required": ["title", "year", "person"], "additionalProperties": False}
SECTIONS = ("drafts", "chat", "batch", "sentiment", "summarize")


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- data --------------------------------------------------------------------------------------------


def squad(n: int) -> list[tuple[str, str]]:
    """(paragraph, its first question) from n SQuAD tuning articles."""
    data = json.loads((DATA / "qa" / "squad_v1.1_dev_tune.json").read_text(encoding="utf-8"))
    return [(a["paragraphs"][0]["context"], a["paragraphs"][0]["qas"][0]["question"]) for a in data["data"][:n]]


def two_paragraphs() -> str:
    data = json.loads((DATA / "qa" / "squad_v1.1_dev_tune.json").read_text(encoding="utf-8"))
    return "\n\n".join(p["context"] for p in data["data"][0]["paragraphs"][:2])


def flores(n: int) -> list[str]:
    with open(DATA / "translation" / "flores_en_zh_tune.tsv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:]
    return [" ".join(r[0] for r in rows[i * 3:i * 3 + 3]) for i in range(n)]  # three lines a prompt


def book_chunk(i: int) -> str:
    text = (DATA / "longdocs" / "alice_in_wonderland_pg11.txt").read_text(encoding="utf-8")
    start = text.index("CHAPTER I.") + i * 2500
    return text[start:start + 2500]


def mt_bench(n: int) -> list[str]:
    lines = (DATA / "chat" / "mt_bench_tune.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["turns"][0] for line in lines[:n]]


def sst2() -> list[str]:
    with open(DATA / "sentiment" / "sst2_tune.tsv", encoding="utf-8") as fh:
        return [line.split("\t")[0] for line in fh.read().splitlines() if line.strip()]


def tasks(n: int) -> dict[str, list[tuple[str, str | None]]]:
    """Per grounded task: (user message, system prompt or None); --schema gets its instruction as the system."""
    from chatllm.tasks.ask.structured_output import JsonSpec

    paras = squad(n)
    spec_instruction = JsonSpec(SCHEMA).instruction()
    return {
        "verbatim quote": [(f"{p}\n\nQuote, word for word, the sentence of the text above that answers: {q}", None)
                           for p, q in paras],
        "verbatim copy (2 SQuAD paragraphs)": [(f"Copy this text exactly:\n\n{two_paragraphs()}", None)],
        "ask -f (SQuAD)": [(f"{q}\n\n{p}", None) for p, q in paras],  # as ask -f words it when the file fits
        "FLORES into Chinese": [(f"Translate into Chinese:\n\n{text}", None) for text in flores(n)],
        "notes on a book chunk": [(f"{book_chunk(i)}\n---\nWrite notes on the text above: what happens, who is in it.",
                                   None) for i in range(max(1, n // 2))],
        "--schema extraction": [(f"{p}\n\nExtract the article's title, a year it names and a person it names.",
                                 spec_instruction) for p, _ in paras],
    }


# -- running -----------------------------------------------------------------------------------------


class Runner:
    """Runs chatllm and the llama.cpp tools with one thread count, in a private CHATLLM_HOME."""

    def __init__(self, threads: int, home: Path):
        self.threads = threads
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        # llama-lookup samples with no repeat penalty: chatllm's draft runs match it
        (home / "config.toml").write_text("[sampling]\nrepeat_penalty = 1.0\n", encoding="utf-8")
        self.env = {**os.environ, "CHATLLM_HOME": str(home), "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
        self.bins = ensure_built(targets=SPECULATIVE_TARGETS)

    def chatllm(self, args: list[str], stdin: str | None = None, timeout: float = 1800) -> tuple[str, float]:
        start = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "chatllm", *args, "--threads", str(self.threads)], input=stdin or "",
                           capture_output=True, text=True, env=self.env, timeout=timeout)
        wall = time.perf_counter() - start
        if r.returncode != 0:
            raise SystemExit(f"chatllm {' '.join(args[:3])} failed ({r.returncode}): {r.stderr[-600:]}")
        return r.stdout, wall

    def ask(self, model: Path, message: str, system: str | None, draft: str, n: int) -> dict:
        args = ["ask", "--json", "--no-cache", "-m", str(model), "-t", "0", "-n", str(n), "--draft", draft]
        if system is not None:
            args += ["--schema", json.dumps(SCHEMA)]
        out, wall = self.chatllm(args + ["--", message])
        record = json.loads(out)
        gen = record["seconds"] - record["first_token_seconds"]
        return {"tps": (record["completion_tokens"] - 1) / gen if gen > 0 else 0.0, "tokens": record["completion_tokens"],
                "drafted": record["drafted_tokens"], "accepted": record["accepted_tokens"], "text": record["text"]}

    def lookup(self, model: Path, prompt: str, n_draft: int, n: int, schema: bool) -> dict:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
            fh.write(prompt)
        cmd = [str(self.bins["llama-lookup"]), "-m", str(model), "-f", fh.name, "-n", str(n), "--temp", "0",
               "--spec-draft-n-max", str(n_draft), "-t", str(self.threads), "-c", "4096"]
        if schema:
            cmd += ["-j", json.dumps(SCHEMA)]
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=1800)
        os.unlink(fh.name)
        found = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", r.stderr + r.stdout)
        if not found:
            raise SystemExit(f"llama-lookup printed no speed: {r.stderr[-600:]}")
        tokens, seconds = int(found.group(1)), float(found.group(2))
        drafted = re.search(r"n_drafted\s+=\s+(\d+)", r.stderr + r.stdout)
        accepted = re.search(r"n_accept\s+=\s+(\d+)", r.stderr + r.stdout)
        return {"tps": tokens / seconds, "tokens": tokens, "drafted": int(drafted.group(1)) if drafted else 0,
                "accepted": int(accepted.group(1)) if accepted else 0}

    def batched_bench(self, model: Path, npl: str, npp: int = 32, ntg: int = 16) -> list[dict]:
        cmd = [str(self.bins["llama-batched-bench"]), "-m", str(model), "-c", "4096", "-b", "512", "-ub", "512",
               "-npp", str(npp), "-ntg", str(ntg), "-npl", npl, "-t", str(self.threads), "--output-format", "jsonl"]
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=1800)
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        if not rows:
            raise SystemExit(f"llama-batched-bench printed nothing: {r.stderr[-600:]}")
        return rows


def rendered(model: Path, message: str, system: str | None) -> str:
    """The prompt text chatllm's `ask` sends for a message (its chat template), for llama-lookup."""
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    with LlamaCppEngine(model, n_ctx=512) as engine:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": message}]
        return engine.render_chat(messages)


# -- sections ----------------------------------------------------------------------------------------


def drafts_section(run: Runner, models: list[str], n: int, runs: int, max_tokens: int,
                   only: list[str] | None = None) -> list[dict]:
    rows = []
    for name in models:
        model = MODELS[name]
        for task, prompts in tasks(n).items():
            if only and not any(task.startswith(t) for t in only):
                continue
            samples: dict[str, list[dict]] = {"off": [], "auto": [], "lookup0": [], "lookup8": []}
            n_max = max(max_tokens, 256) if task.startswith("--schema") else max_tokens  # a JSON answer is never cut
            for message, system in prompts:
                prompt = rendered(model, message, system)
                for _ in range(runs):  # pair by pair: chatllm off, llama.cpp plain, chatllm auto, llama.cpp drafts
                    samples["off"].append(run.ask(model, message, system, "off", n_max))
                    samples["lookup0"].append(run.lookup(model, prompt, 0, n_max, system is not None))
                    samples["auto"].append(run.ask(model, message, system, "auto", n_max))
                    samples["lookup8"].append(run.lookup(model, prompt, 8, n_max, system is not None))
            rows.append(_draft_row(name, task, samples))
            log(f"[drafts] {name} {task}: {_fmt(rows[-1])}  ({load()})")
    return rows


def _draft_row(model: str, task: str, s: dict[str, list[dict]]) -> dict:
    def rate(key: str) -> float:
        return statistics.median(x["tps"] for x in s[key])

    ratios = [a["tps"] / o["tps"] for a, o in zip(s["auto"], s["off"])]
    ref = [d["tps"] / p["tps"] for d, p in zip(s["lookup8"], s["lookup0"])]
    return {"model": model, "task": task, "off": rate("off"), "auto": rate("auto"), "ratio": statistics.median(ratios),
            "drafted": sum(x["drafted"] for x in s["auto"]), "accepted": sum(x["accepted"] for x in s["auto"]),
            "lookup_plain": rate("lookup0"), "lookup_draft": rate("lookup8"), "lookup_ratio": statistics.median(ref),
            "lookup_drafted": sum(x["drafted"] for x in s["lookup8"]),
            "lookup_accepted": sum(x["accepted"] for x in s["lookup8"]),
            "same_text": sum(a["text"] == o["text"] for a, o in zip(s["auto"], s["off"])), "n": len(ratios)}


def _fmt(r: dict) -> str:
    return (f"chatllm {r['off']:.1f} -> {r['auto']:.1f} tok/s ({r['ratio']:.2f}x, {r['accepted']}/{r['drafted']} "
            f"accepted); llama-lookup {r['lookup_plain']:.1f} -> {r['lookup_draft']:.1f} ({r['lookup_ratio']:.2f}x, "
            f"{r['lookup_accepted']}/{r['lookup_drafted']})")


def chat_section(run: Runner, models: list[str], n: int, runs: int, max_tokens: int) -> list[dict]:
    rows = []
    for name in models:
        ratios, off, auto, drafted = [], [], [], 0
        for question in mt_bench(n):
            for _ in range(runs):
                a = run.ask(MODELS[name], question, None, "off", max_tokens)
                b = run.ask(MODELS[name], question, None, "auto", max_tokens)
                off.append(a["tps"])
                auto.append(b["tps"])
                drafted += b["drafted"]
                ratios.append(b["tps"] / a["tps"])
        rows.append({"model": name, "off": statistics.median(off), "auto": statistics.median(auto),
                     "ratio": statistics.median(ratios), "mean_ratio": statistics.fmean(ratios), "drafted": drafted,
                     "n": len(ratios)})
        log(f"[chat] {name}: {rows[-1]}  ({load()})")
    return rows


def batch_section(run: Runner, models: list[str], rows_n: int, runs: int) -> list[dict]:
    instruction = "Is the sentiment of this movie review positive or negative? Answer with one word."
    lines = "\n".join((sst2() * 2)[:rows_n]) + "\n"
    out = []
    for name in models:
        model = MODELS[name]
        mine, ref = [], []
        for _ in range(runs):
            walls = {}
            for p in ("1", "4"):
                _, setup = run.chatllm(["ask", "--lines", "--no-cache", "-m", str(model), "-n", "8", "-t", "0",
                                        "--parallel", p, instruction], stdin=sst2()[0] + "\n")
                _, wall = run.chatllm(["ask", "--lines", "--no-cache", "-m", str(model), "-n", "8", "-t", "0",
                                       "--parallel", p, instruction], stdin=lines)
                walls[p] = max(wall - setup, 1e-6)
            mine.append(walls["1"] / walls["4"])
            bench = {r["pl"]: r for r in run.batched_bench(model, "1,4", npp=32, ntg=8)}
            ref.append(bench[4]["speed_tg"] / bench[1]["speed_tg"])
        row = {"model": name, "rows": rows_n, "speedup": statistics.median(mine), "ref_speedup": statistics.median(ref),
               "rows_per_s_p1": rows_n / walls["1"], "rows_per_s_p4": rows_n / walls["4"]}
        row["ratio"] = row["speedup"] / row["ref_speedup"]
        out.append(row)
        log(f"[batch] {name}: {row}  ({load()})")
    return out


def sentiment_section(run: Runner, models: list[str], runs: int) -> list[dict]:
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.tasks.classify.classifier import Classifier, clean
    from chatllm.tasks.text.text_rules import detect_language

    texts = sst2()
    out = []
    for name in models:
        model = MODELS[name]
        with LlamaCppEngine(model, n_ctx=2048) as engine:  # the tokens each line costs after the cached prefix
            clf = Classifier(engine, ["positive", "negative"])
            tokens = sum(len(clf._item_tokens(clf._prompt(detect_language(clean(t))), clean(t))[0]) for t in texts)
        for p in ("4", "1"):
            rates, peak = [], []
            for _ in range(runs):
                _, setup = run.chatllm(["sentiment", "--lines", "--no-cache", "-m", str(model), "--parallel", p],
                                       stdin=texts[0] + "\n")
                _, wall = run.chatllm(["sentiment", "--lines", "--no-cache", "-m", str(model), "--parallel", p],
                                      stdin="\n".join(texts) + "\n")
                rates.append(tokens / max(wall - setup, 1e-6))
                bench = run.batched_bench(model, "1,4,8", npp=32, ntg=1)
                peak.append(max(r["speed_pp"] for r in bench))
            row = {"model": name, "parallel": int(p), "lines": len(texts), "item_tokens": tokens,
                   "tokens_per_s": statistics.median(rates), "peak": statistics.median(peak)}
            row["ratio"] = row["tokens_per_s"] / row["peak"]
            out.append(row)
            log(f"[sentiment] {name}: {row}  ({load()})")
    return out


def summarize_section(run: Runner, models: list[str], runs: int, chars: int) -> list[dict]:
    book = (DATA / "longdocs" / "time_machine_pg35.txt").read_text(encoding="utf-8")
    start = book.index("The Time Traveller")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write(book[start:start + chars])
    out = []
    for name in models:
        seconds: dict[str, list[float]] = {"1": [], "default": []}
        chunks = 0
        for _ in range(runs):
            for p in ("1", "default"):
                args = ["summarize", "--json", "-m", str(MODELS[name]), "-t", "0", "--length", "short", fh.name]
                if p == "1":
                    args += ["--parallel", "1"]
                record = json.loads(run.chatllm(args)[0])
                seconds[p].append(record["map_seconds"])
                chunks = record["chunks"]
        row = {"model": name, "chars": chars, "chunks": chunks, "map_p1": statistics.median(seconds["1"]),
               "map_default": statistics.median(seconds["default"])}
        if not row["map_default"]:
            raise SystemExit(f"{chars} characters fit one pass: no map phase to time (raise --book-chars)")
        row["speedup"] = row["map_p1"] / row["map_default"]
        out.append(row)
        log(f"[summarize] {name}: {row}  ({load()})")
    os.unlink(fh.name)
    return out


def main() -> None:
    """Run the chosen sections and print their tables (and a JSON record with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm,qwen")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections: {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=1, help="for chatllm and llama.cpp alike (1 on a shared machine)")
    parser.add_argument("--runs", type=int, default=2, help="pairs per prompt")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per grounded task")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rows", type=int, default=100, help="ask --lines rows")
    parser.add_argument("--book-chars", type=int, default=40000)
    parser.add_argument("--tasks", help="grounded tasks to run (comma-separated names as printed), default: all")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    models = args.models.split(",")
    only = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="chatllm-bench-") as tmp:
        run = Runner(args.threads, Path(tmp) / "home")
        log(f"threads {args.threads}, {load()}")
        result: dict[str, object] = {"threads": args.threads, "load_start": os.getloadavg()}
        if "drafts" in only:
            result["drafts"] = drafts_section(run, models, args.prompts, args.runs, args.max_tokens,
                                              args.tasks.split(",") if args.tasks else None)
        if "chat" in only:
            result["chat"] = chat_section(run, models, max(4, args.prompts * 2), args.runs, args.max_tokens)
        if "batch" in only:
            result["batch"] = batch_section(run, ["smollm"] if "smollm" in models else models, args.rows, args.runs)
        if "sentiment" in only:
            result["sentiment"] = sentiment_section(run, ["smollm"] if "smollm" in models else models, args.runs)
        if "summarize" in only:
            result["summarize"] = summarize_section(run, ["smollm"] if "smollm" in models else models, args.runs,
                                                    args.book_chars)
        result["load_end"] = os.getloadavg()
    print(json.dumps(result, indent=1, default=float))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
