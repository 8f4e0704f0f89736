"""Do book summaries keep the names? Entity recall, invented names and run-to-run spread of `chatllm summarize`.

    python bench/eval_book_summaries.py --max-chars 30000                       # SmolLM2, all 5 books, seeds 1,2,3
    python bench/eval_book_summaries.py -m qwen --books ah_q,alice --max-chars 12000 --seeds 1,2,3
    python bench/eval_book_summaries.py --methods new --seeds 1 --books hound --show

Data: ../shared/data/longdocs/ (4 English books, 1 Chinese) and entities.json, each book's main names as spelled.
Methods, each with the CLI's default sampling (temperature 0.7, ...) and --seed S:
  new      today's summarizer: names found by counting, greedy notes (tidied), the invented-name check, and each
           main name the summary left out given a sentence of its own
  nocover  new without those added sentences (cover_names=False): the same notes, the same final paragraph
  old      the summarizer before issue 13 (`git show 55b0597:chatllm/tasks/summarize/summarizer.py`, imported from a temp dir)
  naive    the first window only: "Summarize:" and the text cut to fit, one call
Notes and merges are greedy, so they are the same for every seed and for new and nocover: after the first run of
a book they are replayed from memory (GreedyReplay) and only the sampled final pass runs again; a replayed run's
seconds are its final pass alone (the table times only full runs). --full-seeds runs every seed in full.
Per book and method: recall (share of the entities.json names in the summary, case-insensitive; "of present" counts
only the names that occur in the prefix at all), invented (capitalised words and years of the summary that occur
nowhere in the document, any position, so an odd sentence-initial word counts too; for Chinese the name-shaped
n-grams of chatllm.tasks.summarize.names.entities), seconds, tokens in/out, calls, and for map-reduce runs the map stage's
achieved prompt rate against the engine's raw rate on a slice of the same document of the same length (cold cache,
measured right after the run). --max-chars takes a prefix of each book (after the Gutenberg frame), cut at a
paragraph end; the Chinese book gets --max-cjk-chars (default a third: a CJK character costs SmolLM2 2-3 tokens).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chatllm.engines.contract import complete  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "longdocs"
CACHE = Path.home() / ".cache" / "chatllm-test"
MODELS = {"smollm": CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf", "qwen": CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
OLD_COMMIT = "55b0597"
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def load_old():
    """The summarizer module as it was before issue 13, imported from a temporary file."""
    src = subprocess.run(["git", "show", f"{OLD_COMMIT}:chatllm/tasks/summarize/summarizer.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "summarize_before_issue13.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("summarize_before_issue13", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def book_text(path: Path, max_chars: int | None) -> str:
    """The book without its Gutenberg frame, cut at the last paragraph end before max_chars."""
    from chatllm.tasks.text.chunking import drop_gutenberg_frame, pieces_from_blocks

    text = "".join(drop_gutenberg_frame(pieces_from_blocks([path.read_text(encoding="utf-8-sig")]))).strip()
    if max_chars and len(text) > max_chars:
        cut = text.rfind("\n\n", 0, max_chars)
        text = text[: cut if cut > max_chars // 2 else max_chars]
    return text


def recall(summary: str, names: list[str]) -> float:
    """Share of the names that appear in the summary (case-insensitive)."""
    low = summary.lower()
    return sum(n.lower() in low for n in names) / len(names) if names else 0.0


def invented(summary: str, doc: str) -> list[str]:
    """Capitalised words and years of the summary that the document never has (CJK: name-shaped n-grams)."""
    from chatllm.tasks.summarize.names.entities import EntityTracker, invented_names

    doc_words = set(re.findall(r"[a-z]+", doc.lower()))
    out = [w for w in re.findall(r"\b[A-Z][a-zA-Z]+", summary) if w.lower() not in doc_words]
    out += [y for y in re.findall(r"(?<!\d)1[0-9]{3}|20[0-9]{2}(?!\d)", summary) if y not in doc]
    if CJK.search(summary):
        tracker = EntityTracker()
        for i in range(0, len(doc), 3000):
            tracker.observe(doc[i:i + 3000])
        out += [n for n in invented_names(summary, tracker) if CJK.search(n)]
    return sorted(set(out))


COPY_RUN = 8  # words (CJK: characters) in a row that count as copied from the document


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W_\u3400-\u4dbf\u4e00-\u9fff]+", text.lower())


def runs_of(doc: str) -> set[tuple[str, ...]]:
    """Every COPY_RUN-token run of the document."""
    toks = _tokens(doc)
    return {tuple(toks[i:i + COPY_RUN]) for i in range(len(toks) - COPY_RUN + 1)}


def copied(text: str, doc_runs: set[tuple[str, ...]]) -> float:
    """Share of the text's tokens inside a run of COPY_RUN that the document has word for word: a note or summary
    that copies its source instead of saying what it is about."""
    toks = _tokens(text)
    hit = [False] * len(toks)
    for i in range(len(toks) - COPY_RUN + 1):
        if tuple(toks[i:i + COPY_RUN]) in doc_runs:
            hit[i:i + COPY_RUN] = [True] * COPY_RUN
    return sum(hit) / len(toks) if toks else 0.0


def naive(engine, text: str, sampling) -> tuple[str, dict]:
    """The first window only: 'Summarize:' and the text cut to fit."""
    room = engine.n_ctx - sampling.max_tokens - 64
    tokens = engine.tokenize(text)
    cut = engine.detokenize(tokens[:room]) if len(tokens) > room else text
    prompt = engine.render_chat([{"role": "user", "content": f"Summarize:\n{cut}"}])
    summary = complete(engine, prompt, sampling).strip()
    s = engine.last_stats
    return summary, {"input_tokens": min(len(tokens), room), "prompt_tokens": s.prompt_tokens - s.cached_tokens,
                     "completion_tokens": s.completion_tokens, "calls": 1, "chunks": 1}


def raw_rate(engine, doc_tokens: list[int], length: int) -> float:
    """Tokens/s of the engine alone evaluating `length` document tokens from a cold cache."""
    from chatllm.settings import Sampling

    prompt = doc_tokens[:length]
    engine._rewind(0)
    complete(engine, prompt, Sampling(max_tokens=1, temperature=0))
    s = engine.last_stats
    return (s.prompt_tokens - s.cached_tokens) / s.first_token_seconds


class GreedyReplay:
    """The engine, with its greedy calls (the notes) kept and replayed: they are the same for every seed.

    Only calls at temperature 0 are kept, keyed by their prompt tokens and sampling, so a later seed's run repeats
    the map and merge stages from memory and runs only its final pass (sampled, seed-dependent) on the model.
    `--replay-notes` turns this on; `--check-replay` runs a second seed in full and compares the notes.
    """

    def __init__(self, engine, path: Path | None = None):
        self.engine = engine
        self.path = path  # kept calls are loaded from here and saved back (--replay-file)
        self.kept: dict[tuple, tuple[list[str], object]] = {}
        if path is not None and path.exists():
            with open(path, "rb") as fh:
                self.kept = pickle.load(fh)
        self.replayed = 0
        self.last_stats = engine.last_stats

    def save(self) -> None:
        """Write the kept calls to the replay file, if there is one."""
        if self.path is not None:
            with open(self.path, "wb") as fh:
                pickle.dump(self.kept, fh)

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def stream(self, prompt, sampling):
        """The engine's stream, or the kept pieces and stats of the same greedy call."""
        key = (tuple(prompt), repr(sampling.replace(seed=0))) if sampling.temperature == 0 else None
        if key is not None and key in self.kept:
            pieces, stats = self.kept[key]
            self.replayed += 1
            self.last_stats = stats
            yield from pieces
            return
        pieces: list[str] = []
        inner = self.engine.stream(prompt, sampling)
        cut = False
        try:
            for piece in inner:
                pieces.append(piece)
                yield piece
        except GeneratorExit:
            cut = True  # the summarizer ended the reply (a loop, its separator, one sentence): a replay ends it alike
            raise
        finally:
            inner.close()
            self.last_stats = self.engine.last_stats
            if key is not None and (cut or self.last_stats.finish_reason != "interrupted"):
                self.kept[key] = (pieces, self.last_stats)


def map_reduce(module, engine, text: str, sampling, **options) -> tuple[str, dict]:
    """One summary by a summarizer module (new or old), with the map stage timed apart."""
    marks: dict[str, float] = {}

    def progress(p) -> None:
        marks.setdefault(p.stage + "_first", time.perf_counter())
        marks[p.stage + "_last"] = time.perf_counter()

    summarizer = module.Summarizer(engine, sampling, module.SummaryOptions(**options), on_progress=progress)
    res = summarizer.summarize([text], size_hint=len(text))
    stats = {k: getattr(res, k) for k in ("input_tokens", "prompt_tokens", "completion_tokens", "calls", "chunks", "levels")}
    stats["entities"] = [e["name"] for e in getattr(res, "entities", [])]
    stats["removed"] = getattr(res, "removed", [])
    stats["added"] = getattr(res, "added_names", [])
    stats["dropped_sentences"] = getattr(res, "dropped", [])
    if getattr(res, "notes", None) is not None:
        stats["notes"] = res.notes
    if res.levels and "map_first" in marks:
        maps = res.calls_log[: res.chunks]
        evaluated = sum(c["prompt_tokens"] - c["cached_tokens"] for c in maps)
        gen = sum(c["seconds"] - c["first_token_seconds"] for c in maps)
        stats["map_rate"] = evaluated / (marks["map_last"] - marks["map_first"] - gen)
        stats["map_prompt_len"] = int(statistics.median(c["prompt_tokens"] for c in maps))
    return res.text, stats


def table(paths: list[Path]) -> None:
    """Print the markdown tables of docs/BENCHMARKS.md from the JSON lines of earlier runs."""
    rows = [json.loads(line) for p in paths for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    print("| model | book (prefix) | method | seeds | recall (min-max) | of present | invented | s | in | evaluated | out "
          "| calls | map rate / raw | load |")
    print("|---|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["book"], row["method"]), []).append(row)
    for (model, book, method), runs in groups.items():
        rec = [r["recall"] for r in runs]
        full = [r for r in runs if not r.get("replayed_calls")] or runs  # replayed seeds timed only their final pass
        pres = [r["recall_present"] for r in runs]
        inv = sorted({n for r in runs for n in r["invented"]})
        rates = [(r["map_rate"], r["raw_rate"]) for r in runs if "raw_rate" in r]
        mean = statistics.mean
        rate = f"{rates[0][0]:.0f} / {rates[0][1]:.0f} = {rates[0][0] / rates[0][1]:.2f}" if rates else "-"
        print(f"| {model.split('-')[0].split('.')[0]} | {book.split('_pg')[0]} ({runs[0]['chars']:,} ch, {runs[0]['present']} names) "
              f"| {method} | {len(runs)} | {mean(rec):.0%} ({min(rec):.0%}-{max(rec):.0%}) | {mean(pres):.0%} "
              f"| {sum(len(r['invented']) for r in runs) / len(runs):.1f} {', '.join(inv[:5])} | {mean(r['seconds'] for r in full):.0f} "
              f"| {runs[0]['input_tokens']:,} | {mean(r['prompt_tokens'] for r in runs):,.0f} "
              f"| {mean(r['completion_tokens'] for r in runs):,.0f} | {mean(r['calls'] for r in runs):.0f} | {rate} "
              f"| {min(r['load'] for r in runs):.1f}-{max(r['load'] for r in runs):.1f} |")


def main(argv: list[str] | None = None) -> None:
    """Run the evaluation and print one row per book, model and method."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--models", default="smollm", help="comma-separated: smollm, qwen or .gguf paths [smollm]")
    parser.add_argument("--books", default="", help="comma-separated file-name prefixes [all]")
    parser.add_argument("--methods", default="new,old,naive")
    parser.add_argument("--seeds", default="1,2,3", help="seeds for the new method [1,2,3]")
    parser.add_argument("--other-seeds", default="1", help="seeds for old and naive [1]")
    parser.add_argument("--max-chars", type=int, default=None, help="a prefix of each English book, in characters")
    parser.add_argument("--max-cjk-chars", type=int, default=None, help="the prefix of a Chinese book [max-chars / 3]")
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--temperature", type=float, default=None, help="override the CLI's default 0.7")
    parser.add_argument("--note-temperature", type=float, default=None, help="new method: sample notes at this temperature")
    parser.add_argument("--full-seeds", action="store_true",
                        help="new method: run every seed in full (default: later seeds replay the greedy notes)")
    parser.add_argument("--replay-file", type=Path, help="keep the greedy calls here across runs (a prompt change misses it)")
    parser.add_argument("--show", action="store_true", help="print each summary")
    parser.add_argument("--json", type=Path, help="append one JSON line per run here")
    parser.add_argument("--table", type=Path, nargs="+", help="only print the tables from these --json files")
    args = parser.parse_args(argv)
    if args.table:
        return table(args.table)

    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.settings import Sampling
    from chatllm.tasks.summarize import summarizer as new

    old = load_old() if "old" in args.methods else None
    entities = json.loads((DATA / "entities.json").read_text(encoding="utf-8"))
    books = [b for p in args.books.split(",") for b in entities if b.startswith(p)] if args.books else list(entities)
    print(f"load at start: {os.getloadavg()[0]:.2f}", flush=True)
    for model in args.models.split(","):
        path = MODELS.get(model, Path(model))
        engine = LlamaCppEngine(str(path), n_ctx=args.ctx)
        for book in books:
            cjk = book.startswith("ah_q")
            limit = (args.max_cjk_chars or (args.max_chars // 3 if args.max_chars else None)) if cjk else args.max_chars
            text = book_text(DATA / book, limit)
            names = entities[book]
            present = [n for n in names if n.lower() in text.lower()]
            doc_tokens = engine.tokenize(text)
            doc_runs = runs_of(text)
            replay_file = args.replay_file and args.replay_file.with_name(f"{args.replay_file.name}.{model}.{book[:8]}")
            replay = GreedyReplay(engine, replay_file)  # per book: the notes of the new method's first seed
            for method in args.methods.split(","):
                seeds = args.seeds if method in ("new", "nocover") else args.other_seeds
                for seed in [int(s) for s in seeds.split(",") if s]:
                    sampling = Sampling(seed=seed).replace(temperature=args.temperature)
                    engine._rewind(0)  # a cold cache: no run reuses another's prompt
                    start, load = time.perf_counter(), os.getloadavg()[0]
                    if method == "naive":
                        summary, stats = naive(engine, text, sampling.replace(max_tokens=360))
                    elif method in ("new", "nocover"):
                        extra = {"note_temperature": args.note_temperature} if args.note_temperature is not None else {}
                        extra["cover_names"] = method == "new"
                        greedy = (args.note_temperature or 0) == 0 and not args.full_seeds
                        before = replay.replayed
                        summary, stats = map_reduce(new, replay if greedy else engine, text, sampling, keep_notes=True,
                                                    **extra)
                        stats["added_names"] = stats.pop("added", [])
                        stats["replayed_calls"] = replay.replayed - before
                        replay.save()
                        if stats["replayed_calls"]:
                            stats.pop("map_rate", None)  # the map stage came from memory
                    else:
                        summary, stats = map_reduce(old, engine, text, sampling)
                    seconds = time.perf_counter() - start
                    if "map_rate" in stats and seed == int(seeds.split(",")[0]):
                        stats["raw_rate"] = raw_rate(engine, doc_tokens, stats["map_prompt_len"])
                    row = {"model": path.name, "book": book, "chars": len(text), "method": method, "seed": seed,
                           "recall": recall(summary, names), "recall_present": recall(summary, present),
                           "present": len(present), "found": [n for n in names if n.lower() in summary.lower()],
                           "invented": invented(summary, text), "seconds": round(seconds, 1), "load": round(load, 2),
                           "summary": summary, **stats}
                    row["summary_copied"] = round(copied(summary, doc_runs), 3)
                    if stats.get("notes"):
                        row["notes_copied"] = round(copied("\n\n".join(stats["notes"][0]), doc_runs), 3)
                    rate = (f" map {stats['map_rate']:.0f} tok/s" + (f" / raw {stats['raw_rate']:.0f} = "
                            f"{stats['map_rate'] / stats['raw_rate']:.2f}" if "raw_rate" in stats else "")
                            if "map_rate" in stats else "")
                    print(f"{model:6} {book[:12]:12} {len(text):>7,}c {method:5} seed {seed}: recall "
                          f"{row['recall']:.0%} (of present {row['recall_present']:.0%}, {len(present)}) invented "
                          f"{len(row['invented'])} {row['invented'][:6]} | {seconds:.0f}s in {stats['input_tokens']:,} "
                          f"eval {stats['prompt_tokens']:,} out {stats['completion_tokens']:,} calls {stats['calls']}"
                          f"{rate} | copied: summary {row['summary_copied']:.0%}"
                          + (f", map notes {row['notes_copied']:.0%}" if "notes_copied" in row else "")
                          + f" | load {load:.2f}", flush=True)
                    if args.show:
                        print("   ", summary.replace("\n", "\n    "), flush=True)
                        for d in stats.get("dropped_sentences", []):
                            print(f"    dropped ({d['why']}): {d['sentence']}", flush=True)
                    if args.json:
                        with open(args.json, "a", encoding="utf-8") as fh:
                            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        engine.close()
    print(f"load at end: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
