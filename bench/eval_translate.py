"""chrF of `chatllm translate` against a naive single prompt, on FLORES-200 en<->zh and whole TED talks.

    pip install -e '.[bench]'                                   # sacrebleu
    python bench/eval_translate.py                              # both test models, 100 sentences a direction, 2 talks
    python bench/eval_translate.py --models smollm --sentences 306 --talks 3 --json out.json
    python bench/eval_translate.py --start 50 --sentences 50 --talks 0   # rows 50-99: held out from the prompt tuning

Data (tuning split only, read in place): ../shared/data/translation/flores_en_zh_tune.tsv (306 FLORES-200 devtest
sentence pairs) and ted_iwslt15_tst2010_en_zh_docs_tune.jsonl (3 whole TED talks, aligned segments).
FLORES: each sentence translated on its own by the task (chatllm.tasks.translate.translator, in process, its default greedy
decoding) and by the baseline: "Translate to Chinese:\\n\\n{text}" (or English) in the model's chat template,
greedy, the same reply cap. chrF (sacrebleu corpus_chrf, default settings) over all sentences.
TED (en->zh): the talk as one document, a segment a paragraph; structure kept = as many paragraphs out as in;
chrF over the aligned segments; seconds per 1,000 source words; the prompt rate achieved (prompt tokens evaluated /
(wall - generation time)) against the engine alone on a cold 512-token prompt, measured right after each talk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import figures  # noqa: E402

from chatllm.engines.contract import complete  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "translation"
CACHE = Path.home() / ".cache" / "chatllm-test"
MODELS = {"smollm": ("SmolLM2-135M Q4_1", CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"),
          "qwen": ("Qwen2.5-Coder-0.5B Q4_K_M", CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")}


class Recorder:
    """An engine wrapper that logs every generation's stats (the task sees the same contract)."""

    def __init__(self, engine):
        self._engine = engine
        self.calls: list = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, prompt, sampling):
        """The engine's stream; its stats are logged once it ends."""
        try:
            yield from self._engine.stream(prompt, sampling)
        finally:
            self.calls.append(self._engine.last_stats)


def flores(limit: int, start: int = 0) -> list[tuple[str, str]]:
    """(en, zh) pairs of the tuning split, in order, from row `start` (0-based, after the header)."""
    lines = (DATA / "flores_en_zh_tune.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(line.split("\t")[:2]) for line in lines[start:start + limit]]  # type: ignore[misc]


def naive(engine, text: str, target: str) -> str:
    """The baseline: one plain prompt, greedy, the same reply cap as the task."""
    from chatllm.settings import Sampling
    from chatllm.tasks.translate.translator import REPLY_EXTRA, REPLY_RATIO

    cap = REPLY_RATIO * engine.count_tokens(text) + REPLY_EXTRA
    prompt = engine.render_chat([{"role": "user", "content": f"Translate to {target}:\n\n{text}"}])
    return complete(engine, prompt, Sampling(temperature=0, max_tokens=cap)).strip()


def ours(engine, text: str, target: str, **kw):
    """The translation `chatllm translate --to TARGET` writes (its default sampling)."""
    from chatllm.settings import Sampling
    from chatllm.tasks.translate.translator import DEFAULT_TEMPERATURE, TranslateOptions, Translator, resolve_language

    options = TranslateOptions(resolve_language(target))
    return Translator(engine, Sampling(temperature=DEFAULT_TEMPERATURE), options).translate([text], **kw)


def raw_rate(engine, tokens: list[int], length: int = 512) -> float:
    """Tokens/s of the engine alone evaluating `length` tokens from a cold cache."""
    from chatllm.settings import Sampling

    engine._rewind(0)
    complete(engine, tokens[:length], Sampling(max_tokens=1, temperature=0))
    stats = engine.last_stats
    return (stats.prompt_tokens - stats.cached_tokens) / stats.first_token_seconds


def main(argv: list[str] | None = None) -> None:
    """Run the evaluation and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm,qwen", help="comma-separated: smollm, qwen, or .gguf paths")
    parser.add_argument("--sentences", type=int, default=100, help="FLORES sentences per direction [100]")
    parser.add_argument("--start", type=int, default=0, help="first FLORES row (0-based); rows 0-49 tuned the prompts [0]")
    parser.add_argument("--talks", type=int, default=2, help="TED talks (of 3) [2]")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--show", type=int, default=0, help="print the first N translations of each system")
    parser.add_argument("--json", type=Path, help="write every translation and score here")
    parser.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    args = parser.parse_args(argv)
    try:
        import sacrebleu
    except ImportError:
        sys.exit("sacrebleu is missing: pip install -e '.[bench]' (or pip install sacrebleu)")
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    pairs = flores(args.sentences, args.start)
    talks = [json.loads(line) for line in (DATA / "ted_iwslt15_tst2010_en_zh_docs_tune.jsonl").open(encoding="utf-8")]
    talks = talks[: args.talks]
    rows, details, fig = [], {}, []
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        label, path = MODELS.get(key, (Path(key).name, Path(key)))
        engine = Recorder(LlamaCppEngine(str(path), n_ctx=args.ctx))
        for src, tgt, target in ((0, 1, "Chinese"), (1, 0, "English")) if pairs else ():
            direction = "en->zh" if src == 0 else "zh->en"
            refs = [p[tgt] for p in pairs]
            scores = {}
            for system in ("naive", "chatllm"):
                hyps, start = [], time.perf_counter()
                for i, p in enumerate(pairs):
                    hyp = naive(engine, p[src], target) if system == "naive" else ours(engine, p[src], target).text.strip()
                    hyps.append(hyp)
                    if i < args.show:
                        print(f"[{label} {direction} {system}] {hyp}", file=sys.stderr)
                    print(f"\r{label} {direction} {system}: {i + 1}/{len(pairs)}", end="", file=sys.stderr, flush=True)
                print(file=sys.stderr)
                chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
                scores[system] = (chrf, (time.perf_counter() - start) / len(pairs))
                details[f"{label} {direction} {system}"] = {"chrF": chrf, "hyps": hyps}
            rows.append((label, direction, scores))
            rows_label = f"rows {args.start}-{args.start + len(pairs) - 1}"
            fig.append(figures.row("7", f"translate FLORES {direction} ({rows_label}), {label}: chrF", scores["chatllm"][0],
                                   "", reference=scores["naive"][0], reference_label="naive single prompt",
                                   target="> naive", met=scores["chatllm"][0] > scores["naive"][0]))
        for talk in talks:
            doc = "\n\n".join(talk["en"]) + "\n"
            engine.calls = []
            start = time.perf_counter()
            result = ours(engine, doc, "Chinese")
            wall = time.perf_counter() - start
            out = [p.strip() for p in result.text.strip().split("\n\n")]
            kept = len(out) == len(talk["en"])
            chrf = sacrebleu.corpus_chrf(out if kept else [" ".join(out)], [talk["zh"] if kept else [" ".join(talk["zh"])]]).score
            words = sum(len(s.split()) for s in talk["en"])
            gen = sum(c.seconds - c.first_token_seconds for c in engine.calls)
            evaluated = sum(c.prompt_tokens - c.cached_tokens for c in engine.calls)
            achieved = evaluated / max(1e-9, wall - gen)
            raw = raw_rate(engine._engine, engine.tokenize(doc))
            rows.append((label, f"TED {talk['docid']}", {"talk": (chrf, wall, words, kept, len(out), len(talk["en"]),
                                                                  achieved, raw, result.retries, result.failed)}))
            details[f"{label} TED {talk['docid']}"] = {"chrF": chrf, "text": result.text, "kept": kept}
            fig.append(figures.row("7", f"translate TED talk {talk['docid']} ({words} words) en->zh, {label}: s per 1,000 words",
                                   1000 * wall / words, "s",
                                   note=f"chrF {chrf:.1f}; segments {len(out)}/{len(talk['en'])}; prompt rate {achieved:.0f} "
                                        f"tok/s vs {raw:.0f} raw"))
        engine._engine.close()

    print(f"FLORES-200 tuning split rows {args.start}-{args.start + len(pairs) - 1}, greedy, chrF (higher is better), "
          "seconds per sentence")
    print(f"{'model':<26} {'direction':<10} {'naive':>7} {'chatllm':>8} {'s naive':>8} {'s ours':>7}")
    for label, what, s in rows:
        if "talk" in s:
            continue
        print(f"{label:<26} {what:<10} {s['naive'][0]:7.1f} {s['chatllm'][0]:8.1f} {s['naive'][1]:8.2f} {s['chatllm'][1]:7.2f}")
    print("\nTED talks en->zh (chatllm translate, whole talk as one document)")
    print(f"{'model':<26} {'talk':<9} {'chrF':>5} {'segments':>10} {'s/1k words':>10} {'prompt tok/s':>12} {'raw':>6} "
          f"{'retries':>7} {'failed':>6}")
    for label, what, s in rows:
        if "talk" not in s:
            continue
        chrf, wall, words, kept, n_out, n_in, achieved, raw, retries, failed = s["talk"]
        print(f"{label:<26} {what:<9} {chrf:5.1f} {f'{n_out}/{n_in}':>10} {1000 * wall / words:10.1f} {achieved:12.0f} "
              f"{raw:6.0f} {retries:7d} {failed:6d}")
    if args.json:
        args.json.write_text(json.dumps(details, indent=1, ensure_ascii=False), encoding="utf-8")
    figures.write(args.figures, fig)


if __name__ == "__main__":
    main()
