"""Flash attention on the CPU, on and off, by context depth: where does it stop paying? (issue 18)

Runs the reference llama-bench (bench/llamacpp_ref.py builds it from the llama.cpp that llama-cpp-python vendors)
configured as chatllm's engine is: chatllm's thread count, batch and micro-batch 512, repacking only where chatllm
repacks. For each model and depth one llama-bench process measures pp and tg with flash attention off and on
(`-fa 0,1`, the order flipped every other process), so each on/off pair is taken seconds apart; depths and models
are interleaved, and the whole sweep repeated --reps times. The table gives the median of the per-pair ratios
(on / off) with their range, and the crossover: the first depth at which flash attention is no longer faster.

    python bench/flash_attn_crossover.py                      # both test models, 3 sweeps
    python bench/flash_attn_crossover.py --reps 5 --json out.json
    python bench/flash_attn_crossover.py --depths 0,128,256,512 --json more.json --merge out.json   # adds to out.json's
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import llamacpp_ref  # noqa: E402

MODELS = {
    "SmolLM2-135M": Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m": Path.home() / ".cache" / "chatllm-test" / "gemma-3-270m-q4_k_m.gguf",
}
DEPTHS = (0, 256, 512, 1024, 2048, 4096)


def load() -> str:
    """The 1, 5 and 15-minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def repacking() -> bool:
    """Whether chatllm repacks weights on this CPU (not on AMX CPUs); the reference is run the same way."""
    from chatllm.engines.llamacpp.devices import extra_buffers_safe
    from chatllm.engines.llamacpp.llamacpp_engine import build_info

    return extra_buffers_safe(build_info()["system_info"])


def bench_once(binary: Path, model: Path, depth: int, threads: int, n_prompt: int, n_gen: int, fa_order: str,
               repack: bool) -> list[dict]:
    """One llama-bench process: pp n_prompt and tg n_gen at one depth, flash attention in fa_order; its rows."""
    cmd = [str(binary), "-m", str(model), "-t", str(threads), "-fa", fa_order, "-d", str(depth), "-p", str(n_prompt),
           "-n", str(n_gen), "-r", "1", "-b", "512", "-ub", "512", "--repack", str(int(repack)), "-o", "jsonl"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"llama-bench failed ({run.returncode}): {run.stderr[-800:]}")
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip().startswith("{")]


def summarize(samples: dict) -> dict:
    """Per model, test and depth: median tok/s off and on, the median on/off ratio and its range; the crossovers."""
    out: dict = {}
    for (label, test, depth), pairs in sorted(samples.items()):
        ratios = [on / off for off, on in pairs if off > 0]
        row = {"off": statistics.median(p[0] for p in pairs), "on": statistics.median(p[1] for p in pairs),
               "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}
        out.setdefault(label, {}).setdefault(test, {})[depth] = row
    for label, tests in out.items():
        for test, rows in tests.items():
            crossing = next((d for d in sorted(rows) if rows[d]["ratio"] < 1.0), None)
            rows["crossover"] = crossing  # the first depth where flash attention is slower (None: faster everywhere)
    return out


def table(summary: dict) -> str:
    """The markdown table of the summary."""
    lines = ["| model | test | depth | off tok/s | on tok/s | on/off (median, range) |", "|---|---|---:|---:|---:|---|"]
    for label, tests in summary.items():
        for test, rows in tests.items():
            for depth in sorted(d for d in rows if d != "crossover"):
                r = rows[depth]
                lines.append(f"| {label} | {test} | {depth} | {r['off']:.1f} | {r['on']:.1f} | "
                             f"{r['ratio']:.2f} ({r['min']:.2f}-{r['max']:.2f}, n={r['n']}) |")
            lines.append(f"| {label} | {test} | crossover | | | {rows['crossover']} |")
    return "\n".join(lines)


def main() -> None:
    """Sweep depths with flash attention off and on for each model; print the table (and write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="sweeps over all models and depths")
    parser.add_argument("--depths", default=",".join(map(str, DEPTHS)))
    parser.add_argument("--models", default=",".join(MODELS), help=f"labels among {', '.join(MODELS)}, or .gguf paths")
    parser.add_argument("--threads", type=int, help="default: chatllm's own choice at start")
    parser.add_argument("--n-prompt", type=int, default=256)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the samples and the summary here")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="add the samples of earlier --json files")
    args = parser.parse_args()
    from chatllm.engines.llamacpp.threads import default_threads

    threads = args.threads or default_threads()
    binary = llamacpp_ref.ensure_built()["llama-bench"]
    models = {m: MODELS.get(m, Path(m)) for m in args.models.split(",")}
    depths = [int(d) for d in args.depths.split(",")]
    repack = repacking()
    print(f"threads {threads}, repack {repack}, pp{args.n_prompt} tg{args.n_gen}, depths {depths}, load {load()}",
          file=sys.stderr, flush=True)
    samples: dict = {}
    for earlier in args.merge:  # earlier sweeps (another depth grid, an interrupted run) count with this one's pairs
        for key, pairs in json.loads(earlier.read_text())["samples"].items():
            label, test, depth = key.split("|")
            samples.setdefault((label, test, int(depth)), []).extend(tuple(p) for p in pairs)
    loads = [load()]
    flip = 0
    started = time.time()
    for rep in range(args.reps):
        for label, path in models.items():
            for depth in depths if rep % 2 == 0 else reversed(depths):
                order = "0,1" if flip % 2 == 0 else "1,0"
                flip += 1
                rows = bench_once(binary, path, depth, threads, args.n_prompt, args.n_gen, order, repack)
                got: dict = {}
                for r in rows:
                    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
                    got.setdefault(test, {})[bool(r["flash_attn"])] = float(r["avg_ts"])
                for test, by_fa in got.items():
                    samples.setdefault((label, test, depth), []).append((by_fa[False], by_fa[True]))
                print(f"rep {rep + 1} {label} d={depth} fa {order}: "
                      + ", ".join(f"{t} off {v[False]:.1f} on {v[True]:.1f}" for t, v in got.items())
                      + f"  (load {load()}, {time.time() - started:.0f} s)", file=sys.stderr, flush=True)
                loads.append(load())
                if args.json:  # after every process, so an interrupted sweep keeps what it measured
                    write_json(args.json, threads, repack, loads, samples)
    summary = summarize(samples)
    print(table(summary))
    print(f"\nthreads {threads}; load at start {loads[0]}, at end {loads[-1]}")


def write_json(path: Path, threads: int, repack: bool, loads: list[str], samples: dict) -> None:
    """The samples so far and their summary, as JSON."""
    path.write_text(json.dumps({"threads": threads, "repack": repack, "loads": loads,
                                "samples": {"|".join(map(str, k)): v for k, v in samples.items()},
                                "summary": summarize(samples)}, indent=1))


if __name__ == "__main__":
    main()
