"""Issue 34's figures, each through the real `chatllm chat` as a piped subprocess, the way a user runs it.

    nice python bench/chat_compaction.py retention [--model qwen|smollm2|PATH] [--fillers 24]
    nice python bench/chat_compaction.py trim [--ctx 2048] [--rounds 2]
    nice python bench/chat_compaction.py ttft [--model qwen|smollm2] [--ctx 1024]

retention: 20 facts the user states one per message, then --fillers requests for facts about other things, at
  --ctx 1024 and -n 64 (the window overflows several times), then one question per fact, each followed by /undo so
  every question sees the same window; a fact is kept when the answer holds its expected word. Run with
  --overflow compact and --overflow trim, alternately, in one call. Target: compact keeps >= 70 % on Qwen2.5-Coder-0.5B.
trim: SmolLM2 at --ctx 2048 with --overflow trim, the in-place shift (default) and --exact-window alternately, each
  through enough short turns to trim several times; stderr is a pty, so chatllm prints each turn's stats line. The cost
  of a trim is the pipe's time to first token of a trimming turn minus the median of the turns before it that did not
  trim (the same run). Target: <= 50 ms with the shift.
ttft: --overflow compact at --ctx 1024: the time to first token of the turn that compacts (the summary included, as
  the user waits for it), of the turn after it, and of the other turns.

--figures FILE writes the rows for bench/run_all.py; --json FILE the raw records. The machine is shared: every
figure is printed with the load averages of its run.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import figures  # noqa: E402

CACHE = Path.home() / ".cache" / "chatllm-test"
MODELS = {"smollm2": CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf",
          "qwen": CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
FIRST_TOKEN = re.compile(r"first token ([0-9.]+) s")
SHIFTED = re.compile(r"shifted in place in ([0-9.]+) ms")

# (what the user says, the question at the end, the words any one of which in the answer means the fact was kept)
FACTS = [
    ("My name is Marta Kowalski.", "What is my name?", ["Marta"]),
    ("I live in Porto.", "Which city do I live in?", ["Porto"]),
    ("My dog is called Biscuit.", "What is my dog called?", ["Biscuit"]),
    ("My favourite colour is teal.", "What is my favourite colour?", ["teal"]),
    ("I work as a marine biologist.", "What is my job?", ["biolog"]),
    ("My sister's name is Ingrid.", "What is my sister's name?", ["Ingrid"]),
    ("I was born in 1987.", "In which year was I born?", ["1987"]),
    ("My car is a green Volvo.", "What car do I drive?", ["Volvo"]),
    ("My favourite food is paella.", "What is my favourite food?", ["paella"]),
    ("I play the cello.", "Which instrument do I play?", ["cello"]),
    ("My locker code is 4471.", "What is my locker code?", ["4471"]),
    ("My best friend is called Tobias.", "What is my best friend called?", ["Tobias"]),
    ("I am allergic to peanuts.", "What am I allergic to?", ["peanut"]),
    ("My favourite book is Dune.", "What is my favourite book?", ["Dune"]),
    ("My cat is named Mango.", "What is my cat's name?", ["Mango"]),
    ("My flight to Oslo leaves on Friday.", "Where does my flight go?", ["Oslo"]),
    ("My wife's name is Priya.", "What is my wife's name?", ["Priya"]),
    ("I support the football club Benfica.", "Which football club do I support?", ["Benfica"]),
    ("My favourite season is autumn.", "What is my favourite season?", ["autumn", "fall"]),
    ("My street is Rua das Flores.", "What street do I live on?", ["Flores"]),
]
TOPICS = ["rivers", "volcanoes", "copper", "tigers", "violins", "glaciers", "pepper", "comets", "ravens", "marble",
          "oceans", "tulips", "engines", "deserts", "candles", "bridges", "forests", "planets", "lemons", "mirrors",
          "owls", "granite", "clouds", "whales", "saffron", "kites", "lighthouses", "honey", "canyons", "telescopes"]


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def env_for(home: Path, model: Path) -> dict:
    """chatllm's state under home, the model given, nothing from the network, plain output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLLM_", "HF_"))}
    env.update(CHATLLM_HOME=str(home), CHATLLM_MODEL=str(model), HF_HUB_OFFLINE="1", NO_COLOR="1",
               PYTHONUNBUFFERED="1")
    return env


def chatllm(*args: str) -> list[str]:
    """The command line of one chatllm process."""
    return [sys.executable, "-m", "chatllm", *args]


def model_path(name: str) -> Path:
    """A model by its short name (smollm2, qwen) or a path."""
    path = MODELS.get(name, Path(name))
    if not path.exists():
        raise SystemExit(f"{path}: no such model file (python tests/model_fetch.py fetches the test models)")
    return path


# -- retention --------------------------------------------------------------------------------------


def retention_run(model: Path, mode: str, fillers: int, ctx: int, max_tokens: int) -> dict:
    """One piped chat: facts, fillers, then each question with /stats (the separator) and /undo; the score."""
    lines = [fact for fact, _, _ in FACTS]
    lines += [f"Tell me two facts about {TOPICS[i % len(TOPICS)]}." for i in range(fillers)]
    lines.append("/stats")  # what /stats prints to stdout separates the answers (it starts with "model:")
    for _, question, _ in FACTS:
        lines += [question + " Answer in a few words.", "/stats", "/undo"]
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        proc = subprocess.run(chatllm("chat", "--ctx", str(ctx), "-n", str(max_tokens), "-t", "0", "--overflow", mode),
                              input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8",
                              env=env_for(Path(tmp), model), timeout=7200)
        seconds = time.perf_counter() - began
        if proc.returncode != 0:
            raise SystemExit(f"chat --overflow {mode} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        doc = json.loads(subprocess.run(chatllm("history", "export", "1", "--format", "json"), capture_output=True,
                                        text=True, encoding="utf-8", env=env_for(Path(tmp), model)).stdout)
    summary = doc.get("summary") or {"text": "", "facts": []}
    # stdout: every reply, and a /stats block ("model: ...") after each answer to a question
    blocks = re.split(r"^model: .*$", proc.stdout, flags=re.M)
    answers = []
    for block in blocks[1: len(FACTS) + 1]:
        kept = [ln for ln in block.splitlines() if ln.strip() and not re.match(
            r"^(conversation|context|compacted|last reply|sampling): ", ln)]
        answers.append(" ".join(kept))
    results = []
    for (fact, question, words), answer in zip(FACTS, answers):
        hit = any(w.lower() in answer.lower() for w in words)
        # where the fact was in the model's view: the summarizer's own text, or the user's words kept beside it
        in_text = any(w.lower() in summary["text"].lower() for w in words)
        in_facts = any(w.lower() in f.lower() for f in summary["facts"] for w in words)
        results.append({"fact": fact, "question": question, "answer": answer.strip(), "kept": hit,
                        "in_summary_text": in_text, "in_kept_statements": in_facts})
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith(("note:", "compacting"))]
    return {"mode": mode, "model": model.name, "kept": sum(r["kept"] for r in results), "of": len(FACTS),
            "compactions": sum("compacted" in n for n in notes), "trims": sum("dropped" in n for n in notes),
            "seconds": seconds, "load": load(), "results": results, "notes": notes, "summary": summary,
            "in_summary_text": sum(r["in_summary_text"] for r in results),
            "in_kept_statements": sum(r["in_kept_statements"] for r in results)}


def retention(args) -> tuple[list[dict], list[dict]]:
    """compact and trim, alternately, on each model asked for."""
    rows, runs = [], []
    for name in args.model or ["qwen", "smollm2"]:
        model = model_path(name)
        for mode in ("compact", "trim"):
            run = retention_run(model, mode, args.fillers, args.ctx, args.max_tokens)
            runs.append(run)
            share = run["kept"] / run["of"] * 100
            print(f"{model.name} --overflow {mode}: {run['kept']}/{run['of']} facts kept ({share:.0f} %), "
                  f"{run['compactions']} compactions, {run['trims']} trims, {run['seconds']:.0f} s; load {run['load']}",
                  flush=True)
            if mode == "compact":
                print(f"  in the final summary: {run['in_summary_text']} facts in the summarizer's text, "
                      f"{run['in_kept_statements']} in the user's statements kept word for word")
            for r in run["results"]:
                print(f"    {'+' if r['kept'] else '-'} {r['question']} -> {r['answer'][:90]}")
        compact, trim = runs[-2], runs[-1]
        is_qwen = "qwen" in model.name.lower()
        rows.append(figures.row(
            "chat34a" if is_qwen else "chat34b", f"facts kept after --ctx {args.ctx} overflowed, {model.name}",
            compact["kept"] / compact["of"] * 100, "%", reference=trim["kept"] / trim["of"] * 100,
            reference_label="--overflow trim", ratio=None, target=">= 70 %" if is_qwen else "-",
            met=(compact["kept"] / compact["of"] >= 0.7) if is_qwen else None,
            note=f"{compact['compactions']} compactions; load {compact['load']}"))
    return rows, runs


# -- per-turn timing ----------------------------------------------------------------------------------


def drive(cmd: list[str], env: dict, messages: list[str], turn_timeout: float = 600) -> list[dict]:
    """A piped chat fed one message at a time (stderr a pty): per turn the pipe's and the engine's time to first
    token, chatllm's notes (trims, compactions, shift times), and the RSS after it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    assert proc.stdin is not None and proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
    sel.register(master, selectors.EVENT_READ, "err")
    err_buf, turns = b"", []
    try:
        for n, text in enumerate(messages, 1):
            rec: dict[str, Any] = {"turn": n, "pipe_ttft": float("nan"), "engine_ttft": float("nan"), "notes": []}
            proc.stdin.write((text + "\n").encode())
            proc.stdin.flush()
            t0 = time.perf_counter()
            done = False
            while not done:
                if time.perf_counter() - t0 > turn_timeout or proc.poll() is not None:
                    raise SystemExit(f"turn {n}: no stats line (exit {proc.poll()}); stderr: {err_buf[-800:]!r}")
                for key, _ in sel.select(0.2):
                    if key.data == "out":
                        chunk = os.read(proc.stdout.fileno(), 65536)
                        if chunk and rec["pipe_ttft"] != rec["pipe_ttft"]:
                            rec["pipe_ttft"] = time.perf_counter() - t0
                        continue
                    err_buf += os.read(master, 65536)
                    *lines, err_buf = err_buf.split(b"\n")
                    for raw in lines:
                        line = raw.decode("utf-8", "replace").strip()
                        if line.startswith(("note:", "error:", "warning:", "compacting")):
                            rec["notes"].append(line)
                        if (m := FIRST_TOKEN.search(line)) is not None:
                            rec["engine_ttft"] = float(m.group(1))
                            done = True
            rec["trimmed"] = any("dropped" in x for x in rec["notes"])
            rec["compacted"] = any(x.startswith("note: compacted") for x in rec["notes"])
            m = next((SHIFTED.search(x) for x in rec["notes"] if SHIFTED.search(x)), None)
            rec["shift_ms"] = float(m.group(1)) if m else None
            turns.append(rec)
        proc.stdin.close()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return turns


def trim_cost(turns: list[dict], before: int = 5) -> list[float]:
    """For each trimming turn: its pipe time to first token minus the median of the `before` plain turns before it."""
    costs = []
    for i, t in enumerate(turns):
        if not t["trimmed"] or i < before:
            continue
        plain = [u["pipe_ttft"] for u in turns[:i] if not u["trimmed"] and not u["compacted"]][-before:]
        if len(plain) == before:
            costs.append(t["pipe_ttft"] - statistics.median(plain))
    return costs


def trim(args) -> tuple[list[dict], list[dict]]:
    """Trim cost with the in-place shift and with --exact-window, alternately, SmolLM2 at --ctx."""
    model = model_path(args.model[0] if args.model else "smollm2")
    messages = [f"Tell me one short fact about {TOPICS[i % len(TOPICS)]} ({i})." for i in range(args.turns)]
    costs: dict[str, list[float]] = {"shift": [], "exact": []}
    shifts: list[float] = []
    runs = []
    for rnd in range(args.rounds):
        for how in ("shift", "exact"):
            with tempfile.TemporaryDirectory() as tmp:
                flags = ["--exact-window"] if how == "exact" else []
                cmd = chatllm("chat", "--ctx", str(args.ctx), "-n", str(args.max_tokens), "-t", "0", "--overflow", "trim",
                              *flags)
                turns = drive(cmd, env_for(Path(tmp), model), messages)
            got = trim_cost(turns)
            costs[how] += got
            shifts += [t["shift_ms"] for t in turns if t["shift_ms"] is not None]
            runs.append({"round": rnd, "how": how, "turns": turns, "costs": got, "load": load()})
            print(f"round {rnd + 1} {how}: {sum(t['trimmed'] for t in turns)} trims, cost per trim "
                  f"{', '.join(f'{c * 1000:.0f}' for c in got)} ms; load {load()}", flush=True)
    med = {k: statistics.median(v) if v else float("nan") for k, v in costs.items()}
    print(f"trim cost at --ctx {args.ctx} on {model.name}: shift in place {med['shift'] * 1000:.0f} ms (median of "
          f"{len(costs['shift'])}), re-evaluation {med['exact'] * 1000:.0f} ms (median of {len(costs['exact'])}); the "
          f"shift itself {statistics.median(shifts) if shifts else float('nan'):.0f} ms median; load {load()}")
    rows = [figures.row("chat34c", f"cost of a trim, {model.name} at --ctx {args.ctx} (pipe, vs the turns before it)",
                        med["shift"] * 1000, "ms", reference=med["exact"] * 1000, reference_label="--exact-window",
                        target="<= 50 ms", met=med["shift"] * 1000 <= 50,
                        note=f"shift alone {statistics.median(shifts) if shifts else float('nan'):.0f} ms; load {load()}")]
    return rows, runs


def ttft(args) -> tuple[list[dict], list[dict]]:
    """Time to first token around compactions (--overflow compact)."""
    model = model_path(args.model[0] if args.model else "qwen")
    messages = [f"Tell me one short fact about {TOPICS[i % len(TOPICS)]} ({i})." for i in range(args.turns)]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = chatllm("chat", "--ctx", str(args.ctx), "-n", str(args.max_tokens), "-t", "0", "--overflow", "compact")
        turns = drive(cmd, env_for(Path(tmp), model), messages)
    at = [i for i, t in enumerate(turns) if t["compacted"]]
    after = [turns[i + 1] for i in at if i + 1 < len(turns) and not turns[i + 1]["compacted"]]
    plain = [t for i, t in enumerate(turns) if not t["compacted"] and i not in {j + 1 for j in at} and i >= 3]
    med = lambda xs, key: statistics.median([x[key] for x in xs]) if xs else float("nan")  # noqa: E731
    print(f"{model.name} at --ctx {args.ctx}: {len(at)} compactions in {len(turns)} turns; time to first token "
          f"(pipe): compacting turn {med([turns[i] for i in at], 'pipe_ttft'):.2f} s (engine's own "
          f"{med([turns[i] for i in at], 'engine_ttft'):.2f} s), the turn after {med(after, 'pipe_ttft'):.2f} s, other "
          f"turns {med(plain, 'pipe_ttft'):.2f} s; load {load()}")
    rows = [figures.row("chat34d", f"time to first token of the compacting turn, {model.name} at --ctx {args.ctx}",
                        med([turns[i] for i in at], "pipe_ttft"), "s", reference=med(plain, "pipe_ttft"),
                        reference_label="turns without compaction",
                        note=f"after the summary is written: {med([turns[i] for i in at], 'engine_ttft'):.2f} s; "
                             f"the next turn {med(after, 'pipe_ttft'):.2f} s; load {load()}")]
    return rows, [{"turns": turns}]


def main() -> None:
    """Run one measurement and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["retention", "trim", "ttft"])
    parser.add_argument("--model", action="append", help="qwen, smollm2 or a .gguf path (repeatable)")
    parser.add_argument("--ctx", type=int)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--fillers", type=int, default=24, help="retention: filler turns after the facts")
    parser.add_argument("--turns", type=int, help="trim/ttft: turns per run")
    parser.add_argument("--rounds", type=int, default=2, help="trim: shift/exact pairs")
    parser.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    parser.add_argument("--json", help="write the raw records to this JSON file")
    args = parser.parse_args()
    defaults = {"retention": (1024, 64, None), "trim": (2048, 32, 120), "ttft": (1024, 48, 40)}[args.what]
    args.ctx = args.ctx or defaults[0]
    args.max_tokens = args.max_tokens or defaults[1]
    args.turns = args.turns or defaults[2]
    print(f"load before: {load()}", flush=True)
    rows, raw = {"retention": retention, "trim": trim, "ttft": ttft}[args.what](args)
    figures.write(args.figures, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, ensure_ascii=False, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
