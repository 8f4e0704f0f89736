"""chrF of a whole one-sentence-a-line file through ONE `chatllm translate` call, against a naive per-line prompt.

    pip install -e '.[bench]'                                        # sacrebleu
    python bench/eval_translate_file.py                              # both test models, rows 100-199, both directions
    python bench/eval_translate_file.py --models qwen --start 100 --rows 206 --json out.json
    python bench/eval_translate_file.py --models qwen --systems naive,auto,lines,joined --start 0 --rows 40  # tuning

Data (tuning split, read in place): ../shared/data/translation/flores_en_zh_tune.tsv (306 FLORES-200 devtest pairs).
Rows 0-99 are the tuning rows of issue 35; the default rows 100-199 were not looked at while tuning.
The source column of the rows is written to a file, one sentence a line, and translated the way a user does it:
`python -m chatllm translate -m MODEL --to LANG --ctx 4096 FILE` in a subprocess (system `auto`: the line-oriented
file is recognised; `lines`: with --lines; `joined`: with --no-lines, the lines of the paragraph joined, as before
issue 35). Output line i is scored against reference line i (missing lines count as empty), chrF = sacrebleu
corpus_chrf. The baseline `naive` runs "Translate to Chinese:\\n\\n{line}" (or English) line by line through the same
engine class in this process (the model's chat template, greedy, the task's reply cap). Systems run in the order
given, direction by direction, so each pair shares the machine's load; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import figures  # noqa: E402
from eval_translate import MODELS, flores, naive  # noqa: E402

SYSTEMS = ("naive", "auto")
FLAGS = {"auto": [], "lines": ["--lines"], "joined": ["--no-lines"]}


def run_cli(model: Path, target: str, path: Path, flags: list[str], ctx: int, home: Path) -> tuple[list[str], str, float]:
    """(output lines, stderr, wall seconds) of one `chatllm translate` call on the whole file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLLM_", "HF_"))}
    env.update(PYTHONPATH=str(ROOT), CHATLLM_HOME=str(home), NO_COLOR="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "chatllm", "translate", "-m", str(model), "--to", target, "--ctx", str(ctx), *flags,
           str(path)]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout.rstrip("\n").split("\n"), r.stderr, wall


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm,qwen", help="comma-separated: smollm, qwen, or .gguf paths")
    parser.add_argument("--start", type=int, default=100, help="first FLORES row (0-based); rows 0-99 were for tuning [100]")
    parser.add_argument("--rows", type=int, default=100, help="rows per direction [100]")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="naive, auto, lines, joined [naive,auto]")
    parser.add_argument("--directions", default="en-zh,zh-en")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--json", type=Path, help="write every output and score here")
    parser.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    args = parser.parse_args(argv)
    try:
        import sacrebleu
    except ImportError:
        sys.exit("sacrebleu is missing: pip install -e '.[bench]' (or pip install sacrebleu)")
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    pairs = flores(args.rows, args.start)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    rows_label = f"rows {args.start}-{args.start + len(pairs) - 1}"
    load_before = os.getloadavg()
    results, details, fig = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        for key in [m.strip() for m in args.models.split(",") if m.strip()]:
            label, path = MODELS.get(key, (Path(key).name, Path(key)))
            engine = LlamaCppEngine(str(path), n_ctx=args.ctx) if "naive" in systems else None
            for direction in args.directions.split(","):
                src, tgt, target = (0, 1, "Chinese") if direction == "en-zh" else (1, 0, "English")
                refs = [p[tgt] for p in pairs]
                file = Path(tmp) / f"source.{direction}.txt"
                file.write_text("".join(p[src] + "\n" for p in pairs), encoding="utf-8")
                scores: dict[str, tuple[float, float, int, str]] = {}
                for system in systems:
                    print(f"{label} {direction} {system} ...", file=sys.stderr, flush=True)
                    if system == "naive":
                        assert engine is not None
                        start = time.perf_counter()
                        hyps = [naive(engine, p[src], target).replace("\n", " ") for p in pairs]
                        wall, err = time.perf_counter() - start, ""
                    else:
                        hyps, err, wall = run_cli(path, "zh" if target == "Chinese" else "en", file, FLAGS[system],
                                                  args.ctx, home)
                        err = err.replace(str(file), file.name)
                    n_out = len(hyps)
                    hyps = (hyps + [""] * len(refs))[: len(refs)]
                    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
                    scores[system] = (chrf, wall / len(pairs), n_out, err.strip().splitlines()[0] if err.strip() else "")
                    details[f"{label} {direction} {system}"] = {"chrF": chrf, "lines_out": n_out, "stderr": err, "hyps": hyps}
                results.append((label, direction, scores))
                if "naive" in scores and "auto" in scores:
                    ours, ref = scores["auto"][0], scores["naive"][0]
                    fig.append(figures.row("7", f"translate a one-sentence-a-line file, FLORES {direction} ({rows_label}), "
                                                f"{label}: chrF", ours, "", reference=ref,
                                           reference_label="naive prompt line by line", target="> naive", met=ours > ref))
            if engine is not None:
                engine.close()
    load_after = os.getloadavg()
    print(f"\nFLORES-200 tuning split {rows_label} as one file per direction, greedy, chrF (higher is better); "
          f"seconds per line; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"(1-min), {load_after[1]:.2f} (5-min)")
    print(f"{'model':<26} {'direction':<9} " + " ".join(f"{s:>8} {'s/line':>6} {'lines':>5}" for s in systems))
    for label, direction, scores in results:
        cells = " ".join(f"{scores[s][0]:8.1f} {scores[s][1]:6.2f} {scores[s][2]:5d}" for s in systems)
        print(f"{label:<26} {direction:<9} {cells}")
    notes = {s[3] for _, _, scores in results for s in scores.values() if s[3]}
    for note in sorted(notes):
        print(f"stderr: {note}")
    if args.json:
        args.json.write_text(json.dumps(details, indent=1, ensure_ascii=False), encoding="utf-8")
    figures.write(args.figures, fig)


if __name__ == "__main__":
    main()
