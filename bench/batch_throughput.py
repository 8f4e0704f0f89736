"""Rows/s of `chatllm ask --lines` next to llama.cpp evaluating exactly the same tokens, and next to a shell loop of
one-shot `chatllm ask` calls.

Prompts: SST-2 sentences from ../shared/data/sentiment/sst2_tune.tsv (300, cycled to --rows in a shuffled order so
consecutive rows differ), each after one shared instruction, answered greedily with a small fixed --max-tokens.

1. In process, chatllm's batch loop (tasks.batch.run_rows + the CLI's RowSink writing OUT.jsonl) on the Engine as
   the CLI builds it. Right after each row, as the reference, llama.cpp alone evaluates exactly the tokens that row
   cost: the KV cache is cut back to the shared prefix the row reused, its prompt tokens are decoded in a batch (the
   last one alone, as the Engine does) and its generated tokens one by one. Rows/s can be no better than that; the
   ratio is what chatllm adds (sampling, detokenizing, chat template, validation, writing rows). Same process, same
   cache, same load on the machine, interleaved row by row.
2. A shell loop of one-shot `chatllm ask` calls (a model load each) over the first --shell-rows prompts, next to
   `chatllm ask --lines` over the same prompts as one process (its model load included); the answers are compared.

    python bench/batch_throughput.py            # 1,000 rows, 20 in the shell loop (about 10 min on 2 busy cores)
    python bench/batch_throughput.py --quick    # 150 rows, 6 in the shell loop
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

from eval_classify import DEFAULT_MODEL  # noqa: E402
from eval_classify import load as load_dataset  # noqa: E402
from perf_engine import load as load_engine  # noqa: E402

from chatllm.cli.ask_lines import RowSink  # noqa: E402
from chatllm.output import Output  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402
from chatllm.tasks.ask import batch  # noqa: E402

INSTRUCTION = "Is the sentiment of this movie review positive or negative? Answer with one word."


def prompts(n: int, seed: int = 0) -> list[str]:
    """n SST-2 sentences (the 300 of the file, cycled), shuffled so that consecutive rows differ."""
    texts = [text for text, _ in load_dataset("sst2", None)]
    random.Random(seed).shuffle(texts)
    return list(itertools.islice(itertools.cycle(texts), n))


def compose(row: str) -> str:
    """The message of a row exactly as `chatllm ask --lines INSTRUCTION` composes it (instruction first)."""
    return f"{INSTRUCTION}\n\n{row}"


def reference_eval(engine, tokens: list[int], prompt_len: int, cached: int) -> None:
    """llama.cpp alone on one row's own tokens: the prompt after the cached prefix, then each generated token."""
    engine._rewind(cached)
    engine._eval(tokens[:prompt_len])
    for pos in range(prompt_len, len(tokens)):
        engine._decode((tokens[pos],), pos, 0)
        engine._tokens.append(tokens[pos])


def in_process(model: str, rows: list[str], max_tokens: int, threads: int | None, out_path: Path) -> dict:
    """chatllm's batch loop with the reference interleaved row by row; rows/s of each and the tokens a row cost."""
    engine = load_engine(model, n_threads=threads)
    sampling = Sampling(max_tokens=max_tokens, temperature=0)
    sink = RowSink(Output(io.StringIO(), io.StringIO()), out_path, structured=False, append=False)
    reference = evaluated = generated = failed = 0.0
    start = time.perf_counter()
    for result in batch.run_rows(engine, batch.read_rows(rows), sampling, compose=compose):
        sink.write(result)
        s = result.stats
        assert s is not None
        failed += result.error is not None
        evaluated += s.prompt_tokens - s.cached_tokens
        generated += s.completion_tokens
        tokens = list(engine._tokens)  # what the row left in the cache: every token it evaluated
        t = time.perf_counter()
        reference_eval(engine, tokens, s.prompt_tokens, s.cached_tokens)
        reference += time.perf_counter() - t
    ours = time.perf_counter() - start - reference
    sink.close()
    info = {"threads": engine.n_threads}
    engine.close()
    n = len(rows)
    return {"rows": n, "rows_per_s": n / ours, "reference_rows_per_s": n / reference, "ratio": reference / ours,
            "prompt_tokens_per_row": evaluated / n, "completion_tokens_per_row": generated / n, "failed": int(failed),
            "seconds": ours, "reference_seconds": reference, **info}


def chatllm_command() -> list[str]:
    """The installed `chatllm` script next to this Python, else `python -m chatllm`."""
    script = Path(sys.executable).with_name("chatllm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chatllm"]


def shell_loop(rows: list[str], max_tokens: int, threads: int | None, env: dict, tmp: Path) -> dict:
    """`while read line; do chatllm ask ...; done` over the rows (one model load each) next to one `ask --lines`."""
    src = tmp / "sample.txt"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    flags = ["-n", str(max_tokens), "-t", "0"] + (["--threads", str(threads)] if threads else [])
    cmd = " ".join(shlex.quote(w) for w in chatllm_command() + ["ask", *flags])
    loop = f'while IFS= read -r line; do {cmd} "$INSTRUCTION"$\'\\n\\n\'"$line" </dev/null; done < {shlex.quote(str(src))}'
    start = time.perf_counter()
    one_shot = subprocess.run(["bash", "-c", loop], env=dict(env, INSTRUCTION=INSTRUCTION), capture_output=True,
                              text=True, check=True).stdout
    loop_seconds = time.perf_counter() - start
    start = time.perf_counter()
    lines = subprocess.run([*chatllm_command(), "ask", "--lines", *flags, INSTRUCTION, "-f", str(src)], env=env,
                           capture_output=True, text=True, check=True).stdout
    batch_seconds = time.perf_counter() - start
    # one-shot answers end with a newline of their own; the batch writes each on one line, escaped
    answers = [a.strip() for a in one_shot.split("\n") if a.strip()]
    same = sum(a == b for a, b in zip(answers, lines.splitlines()))
    n = len(rows)
    return {"rows": n, "loop_rows_per_s": n / loop_seconds, "batch_cli_rows_per_s": n / batch_seconds,
            "ratio": loop_seconds / batch_seconds, "same_answers": same, "one_shot_answers": len(answers)}


def main() -> None:
    """Run both measurements and print the figures (markdown, or JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="GGUF path (default: the SmolLM2 test model)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--shell-rows", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads [default: chatllm's choice]")
    ap.add_argument("--quick", action="store_true", help="150 rows, 6 in the shell loop")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.shell_rows = 150, 6
    if not Path(args.model).is_file():
        ap.error(f"no model at {args.model}; run the test suite once (it fetches SmolLM2) or pass --model")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLLM_")}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        env.update(CHATLLM_MODEL=args.model, CHATLLM_HOME=str(tmp / "home"), NO_COLOR="1")
        rows = prompts(args.rows)
        print(f"[batch_throughput] {len(rows)} rows in process...", file=sys.stderr, flush=True)
        inproc = in_process(args.model, rows, args.max_tokens, args.threads, tmp / "out.jsonl")
        print(f"[batch_throughput] shell loop over {args.shell_rows} rows...", file=sys.stderr, flush=True)
        shell = shell_loop(rows[: args.shell_rows], args.max_tokens, args.threads, env, tmp)
    result = {"model": Path(args.model).name, "max_tokens": args.max_tokens, "in_process": inproc, "shell": shell,
              "steady_vs_loop": inproc["rows_per_s"] / shell["loop_rows_per_s"],
              "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    if args.json:
        print(json.dumps(result))
        return
    i, s = inproc, shell
    print(f"model {result['model']}, {i['threads']} threads, -n {args.max_tokens} greedy, load average "
          f"{result['load_average'][0]} before / {result['load_average'][1]} after\n")
    print("| figure | chatllm | reference | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(f"| batch rows/s, {i['rows']} rows / llama.cpp alone on the same tokens | {i['rows_per_s']:.2f} | "
          f"{i['reference_rows_per_s']:.2f} | {i['ratio']:.2f} | >= 0.9 |")
    print(f"| `ask --lines` process over {s['rows']} rows (load included) / shell loop of one-shot `ask` | "
          f"{s['batch_cli_rows_per_s']:.2f} | {s['loop_rows_per_s']:.2f} | {s['ratio']:.1f}x | - |")
    print(f"| batch steady rate / shell loop | {i['rows_per_s']:.2f} | {s['loop_rows_per_s']:.2f} | "
          f"{result['steady_vs_loop']:.1f}x | - |")
    print(f"\n{i['prompt_tokens_per_row']:.1f} prompt tokens evaluated per row after the cached prefix, "
          f"{i['completion_tokens_per_row']:.1f} generated; {i['failed']} rows failed; "
          f"{s['same_answers']} of {s['rows']} batch answers identical to the one-shot ones")


if __name__ == "__main__":
    main()
