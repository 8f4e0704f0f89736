"""Soak runs of issue 20, each through the real CLI as a subprocess, with its RSS read from /proc/PID/status.

    nice python bench/soak.py chat [--turns 300] [--ctx 2048] [--max-tokens 24]
    nice python bench/soak.py sentiment [--lines 20000] [--minutes M]
    nice python bench/soak.py batch [--rows 100000] [--seed 20]

chat: one piped `chatllm chat --ctx 2048` of --turns short messages, a line written to its stdin per turn. stderr is
  a pseudo-terminal, so chatllm prints its per-turn stats line there ("..., first token 0.21 s"): that line marks
  the end of a turn and gives the engine's own time to first token. The time to first token of the pipe is measured
  here: from writing the line to the first reply byte on stdout. Turns where chatllm trimmed the window (its
  "note: dropped ..." line) are counted. RSS (VmRSS) is sampled every 0.2 s and at the end of each turn.
  Target: RSS at turn 300 within 10 % of turn 50, and the time to first token as flat (medians of 10 turns).
sentiment: `chatllm sentiment --lines` over --lines short distinct lines, RSS sampled every 0.2 s and keyed to the
  number of result lines read so far (1k, 10k, 20k ...); --minutes M stops it after M minutes (the figures then end
  at the lines done).
batch: `chatllm ask --lines -n 1 -o OUT.jsonl` over --rows short prompts (a blank line every 997 lines, so ids, the
  1-based line numbers, skip), interrupted by SIGINT, SIGTERM and SIGKILL at random row counts (seeded), each time
  resumed with --resume; the last run goes to the end. After every run OUT is checked: the ids written must be the
  expected ids in order, each once (a SIGKILL may leave a torn last line, which --resume cuts); a signal must stop its
  run; the run that goes to the end must say it skipped exactly the rows already in OUT (chatllm says so only at the
  end); and at the end every id is there exactly once, in input order.

--figures FILE writes the rows for bench/run_all.py; --json FILE the raw samples.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import random
import re
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import figures  # noqa: E402

MODEL = os.environ.get("CHATLLM_BENCH_MODEL", str(Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
TOPICS = ["apples", "rivers", "copper", "tigers", "violins", "glaciers", "pepper", "comets", "ravens", "marble",
          "oceans", "tulips", "engines", "deserts", "candles", "bridges", "forests", "planets", "lemons", "mirrors"]
MOODS = ["great", "awful", "fine", "boring", "lovely", "terrible", "superb", "dull", "pleasant", "bad"]
FIRST_TOKEN = re.compile(r"first token ([0-9.]+) s")
BLANK_EVERY = 997


def env_for(home: Path) -> dict:
    """chatllm's state under home, SmolLM2 as the model, nothing from the network, plain output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLLM_", "HF_"))}
    env.update(CHATLLM_HOME=str(home), CHATLLM_MODEL=MODEL, HF_HUB_OFFLINE="1", NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


def rss_mb(pid: int) -> float | None:
    """The process's resident set (VmRSS) in MB, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def load() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def window_median(values: dict[int, float], end: int, size: int = 10) -> float:
    """Median of values at keys end-size+1 .. end (NaNs left out)."""
    got = [values[k] for k in range(end - size + 1, end + 1) if k in values and values[k] == values[k]]
    return statistics.median(got) if got else float("nan")


def chatllm(*args: str) -> list[str]:
    """The command line of one chatllm process."""
    return [sys.executable, "-m", "chatllm", *args]


# -- chat ------------------------------------------------------------------------------------------


def message(turn: int) -> str:
    """A short message, about the same length every turn."""
    return f"Tell me one short fact about {TOPICS[turn % len(TOPICS)]} ({turn})."


def soak_chat(args, home: Path) -> tuple[dict, list]:
    """The piped chat: per turn, the pipe's and the engine's time to first token, RSS, and whether it trimmed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(chatllm("chat", "--ctx", str(args.ctx), "-n", str(args.max_tokens), "-t", "0",
                                    "--overflow", args.overflow),
                            env=env_for(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    assert proc.stdin is not None and proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
    sel.register(master, selectors.EVENT_READ, "err")
    err_buf, samples = b"", []
    turns: dict[int, dict] = {}
    started = time.perf_counter()
    try:
        for turn in range(1, args.turns + 1):
            rec: dict[str, Any] = {"turn": turn, "pipe_ttft": float("nan"), "engine_ttft": float("nan"), "trimmed": False,
                   "rss_max": 0.0, "errors": []}
            proc.stdin.write((message(turn) + "\n").encode())
            proc.stdin.flush()
            t0 = time.perf_counter()
            done, deadline = False, t0 + args.turn_timeout
            while not done:
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise SystemExit(f"turn {turn}: no stats line after {args.turn_timeout} s (exit {proc.poll()}); "
                                     f"stderr so far: {err_buf[-500:]!r}")
                for key, _ in sel.select(0.2):
                    if key.data == "out":
                        chunk = os.read(proc.stdout.fileno(), 65536)
                        if chunk and rec["pipe_ttft"] != rec["pipe_ttft"]:
                            rec["pipe_ttft"] = time.perf_counter() - t0
                        continue
                    err_buf += os.read(master, 65536)
                    *lines, err_buf = err_buf.split(b"\n")
                    for raw in lines:
                        text = raw.decode("utf-8", "replace").strip()
                        if text.startswith(("note: dropped", "note: compacted")):
                            rec["trimmed"] = True  # the window moved: trimmed, or compacted (issue 34)
                        elif text.startswith(("error:", "hint:", "warning:")):
                            rec["errors"].append(text)
                        if (m := FIRST_TOKEN.search(text)) is not None:
                            rec["engine_ttft"] = float(m.group(1))
                            done = True
                rss = rss_mb(proc.pid) or 0.0
                rec["rss_max"] = max(rec["rss_max"], rss)
                samples.append((round(time.perf_counter() - started, 2), turn, rss))
            rec["rss"] = rss_mb(proc.pid)
            turns[turn] = rec
            if turn % 25 == 0:
                print(f"  turn {turn}: rss {rec['rss']:.1f} MB, first token {rec['pipe_ttft'] * 1000:.0f} ms (pipe) "
                      f"{rec['engine_ttft'] * 1000:.0f} ms (engine), load {load()}", flush=True)
        proc.stdin.close()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return turns, samples


def report_chat(args, turns: dict, rows: list) -> dict:
    """Print and return the chat figures."""
    a, b = 50, args.turns
    pipe = {t: r["pipe_ttft"] for t, r in turns.items()}
    engine = {t: r["engine_ttft"] for t, r in turns.items()}
    trims = [t for t, r in turns.items() if r["trimmed"]]
    errors = sum(len(r["errors"]) for r in turns.values())
    rss_a, rss_b = turns[a]["rss"], turns[b]["rss"]
    growth = (rss_b - rss_a) / rss_a * 100
    ttft = {t: (window_median(pipe, t), window_median(engine, t)) for t in (a, b)}
    steady = [pipe[t] for t in turns if t >= a and t not in trims]
    limit = 5 if args.overflow == "compact" else 10  # issue 34: <= 5 % with compaction; issue 20: < 10 % trimming
    print(f"chat soak: {b} turns at --ctx {args.ctx}, -n {args.max_tokens}, --overflow {args.overflow}; window moved at "
          f"{len(trims)} turns (first at turn {trims[0] if trims else '-'}), {errors} error lines; load {load()}")
    print(f"  RSS turn {a}: {rss_a:.1f} MB, turn {b}: {rss_b:.1f} MB, growth {growth:+.1f} % (target <= {limit} %: "
          f"{'ok' if growth <= limit else 'MISSED'}); peak {max(r['rss_max'] for r in turns.values()):.1f} MB")
    rss = {t: r["rss"] for t, r in turns.items()}
    med_a, med_b = window_median(rss, a), window_median(rss, b)
    # A turn's RSS holds the KV state being written to disk after it (it grows with the window): medians of 10 turns
    # say more than two single turns.
    print(f"  RSS median of turns {a - 9}-{a}: {med_a:.1f} MB, of turns {b - 9}-{b}: {med_b:.1f} MB, "
          f"growth {(med_b - med_a) / med_a * 100:+.1f} %")
    for t in (a, b):
        print(f"  time to first token, median of turns {t - 9}-{t}: {ttft[t][0] * 1000:.0f} ms pipe, "
              f"{ttft[t][1] * 1000:.0f} ms engine")
    if steady:
        print(f"  turns >= {a} without a trim: pipe first token median {statistics.median(steady) * 1000:.0f} ms; "
              f"trim turns: median {statistics.median([pipe[t] for t in trims if t >= a] or [float('nan')]) * 1000:.0f} ms")
    ratio = ttft[b][0] / ttft[a][0]
    rows.append(figures.row("soak1", f"chat RSS, turn {b} vs turn {a} (--ctx {args.ctx}, --overflow {args.overflow})",
                            rss_b, "MB", reference=rss_a, reference_label=f"turn {a}", target=f"<= 1.{limit:02d}",
                            met=growth <= limit, note=f"{len(trims)} {'compactions' if args.overflow == 'compact' else 'trims'}"))
    rows.append(figures.row("soak2", f"chat time to first token, turns {b - 9}-{b} vs {a - 9}-{a} (medians)", ttft[b][0], "s",
                            reference=ttft[a][0], reference_label=f"turns {a - 9}-{a}", ratio=ratio,
                            note=f"engine's own: {ttft[b][1]:.3f} / {ttft[a][1]:.3f} s"))
    return {"rss": [rss_a, rss_b], "growth_pct": growth, "ttft": ttft, "trims": trims, "errors": errors}


# -- sentiment --------------------------------------------------------------------------------------


def soak_sentiment(args, home: Path) -> tuple[dict, list]:
    """sentiment --lines over args.lines lines: RSS keyed to the number of result lines read so far."""
    src = home.parent / "sentiment.txt"
    with open(src, "w", encoding="utf-8") as fh:
        for i in range(args.lines):
            fh.write(f"The {TOPICS[i % 20]} were {MOODS[(i // 20) % 10]}, visit {i}.\n")
    proc = subprocess.Popen(chatllm("sentiment", "--lines", "-f", str(src)), env=env_for(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
    count, at, samples, started, last_print = 0, {}, [], time.perf_counter(), 0
    checkpoints = sorted({c for c in (100, 1000, 5000, 10000, 15000, 20000, args.lines) if c <= args.lines})
    while True:
        chunk = b""
        if sel.select(0.2):
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
        count += chunk.count(b"\n")
        rss = rss_mb(proc.pid)
        if rss is None:
            break
        samples.append((round(time.perf_counter() - started, 2), count, rss))
        for c in checkpoints:
            if count >= c and c not in at:
                at[c] = (rss, time.perf_counter() - started)
        if args.minutes and time.perf_counter() - started > args.minutes * 60:
            at[count] = (rss, time.perf_counter() - started)  # out of time: the figures stop at the lines done
            proc.send_signal(signal.SIGINT)
            break
        if count - last_print >= 1000:
            last_print = count - count % 1000
            print(f"  {count} lines: rss {rss:.1f} MB, {count / (time.perf_counter() - started):.1f} lines/s, "
                  f"load {load()}", flush=True)
    _, stderr = proc.communicate(timeout=120)
    if not args.minutes and (proc.returncode != 0 or count != args.lines):
        raise SystemExit(f"sentiment: exit {proc.returncode}, {count} of {args.lines} lines; {stderr[-500:]!r}")
    return at, samples


def report_sentiment(args, at: dict, rows: list) -> dict:
    """Print and return the sentiment figures."""
    first = min(c for c in at if c >= 1000) if any(c >= 1000 for c in at) else min(at)
    last = max(at)
    growth = (at[last][0] - at[first][0]) / at[first][0] * 100
    print(f"sentiment soak: {last} of {args.lines} lines in {at[last][1]:.0f} s ({last / at[last][1]:.1f} lines/s, the "
          f"model load included); load {load()}")
    for c in sorted(at):
        print(f"  after {c:>6} lines: rss {at[c][0]:.1f} MB")
    print(f"  growth {first} -> {last} lines: {growth:+.1f} %")
    rows.append(figures.row("soak3", f"sentiment --lines RSS at {last} lines vs {first}", at[last][0], "MB",
                            reference=at[first][0], reference_label=f"{first} lines", target="< 1.10", met=growth < 10,
                            note=f"{last / at[last][1]:.1f} lines/s"))
    return {"rss": {c: v[0] for c, v in at.items()}, "growth_pct": growth, "lines_per_s": last / at[last][1]}


# -- batch ------------------------------------------------------------------------------------------


def batch_input(path: Path, rows: int) -> list[int]:
    """rows short prompts with a blank line every BLANK_EVERY lines; the ids (line numbers) they should get."""
    ids: list[int] = []
    line = 0
    with open(path, "w", encoding="utf-8") as fh:
        while len(ids) < rows:
            line += 1
            if line % BLANK_EVERY == 0:
                fh.write("\n")
                continue
            fh.write(f"w{line}\n")
            ids.append(line)
    return ids


def written(out: Path) -> tuple[list, bool]:
    """The ids of the whole rows in OUT, and whether its last line is torn (no newline)."""
    data = out.read_bytes() if out.exists() else b""
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    ids = []
    for raw in lines[:-1]:
        row = json.loads(raw)
        if row.get("error") is not None or row.get("text") is None:
            raise SystemExit(f"a row failed: {row}")
        ids.append(row["id"])
    return ids, torn


class LineCount:
    """Newlines in OUT so far, reading only what was appended since the last call (OUT grows to megabytes)."""

    def __init__(self, out: Path):
        self.out, self.offset, self.count = out, 0, 0

    def __call__(self) -> int:
        try:
            with open(self.out, "rb") as fh:
                if fh.seek(0, os.SEEK_END) < self.offset:  # cut back (a torn last line dropped): count again
                    self.offset, self.count = 0, 0
                fh.seek(self.offset)
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    self.count += chunk.count(b"\n")
                    self.offset += len(chunk)
        except FileNotFoundError:
            self.offset, self.count = 0, 0
        return self.count


def check(expected: list, ids: list) -> dict:
    """How far ids are from being exactly the first len(ids) expected ids, in order."""
    seen: dict = {}
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
    dup = sum(n - 1 for n in seen.values())
    top = max(seen, default=0)
    lost = sum(1 for i in expected if i <= top and i not in seen)
    return {"rows": len(ids), "unique": len(seen), "duplicated": dup, "lost": lost,
            "in_order": ids == expected[:len(ids)]}


def soak_batch(args, home: Path) -> list[dict]:
    """The batch, interrupted by each signal at a random row and resumed; the checks after every run."""
    src, out = home.parent / "prompts.txt", home.parent / "out.jsonl"
    expected = batch_input(src, args.rows)
    rng = random.Random(args.seed)
    cuts = sorted(rng.sample(range(max(1, args.rows // 20), args.rows - args.rows // 20), 3))
    plan = list(zip(["SIGINT", "SIGTERM", "SIGKILL"], cuts))
    rng.shuffle(plan)  # which signal comes first is random too; the row counts stay increasing
    plan = [(sig, cut) for (sig, _), cut in zip(plan, cuts)]
    steps: list[tuple[str | None, int | None]] = [*plan, (None, None)]
    env = env_for(home)
    runs: list[dict] = []
    for n, (sig, cut) in enumerate(steps):
        cmd = chatllm("ask", "--lines", "-n", "1", "-t", "0", "-f", str(src), "-o", str(out), *(["--resume"] if n else []))
        count_lines = LineCount(out)
        before = count_lines()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        rss, first_row = [], None
        while proc.poll() is None:
            have = count_lines()
            if first_row is None and have > before:
                first_row = (time.perf_counter() - t0, have)
            if first_row is not None and (r := rss_mb(proc.pid)) is not None:
                rss.append((have, r))  # from the first row on: the model is loaded, the batch under way
            if sig is not None and cut is not None and have >= cut:
                # a SIGKILL lands at a random moment inside a row, not just after one is written
                time.sleep(rng.uniform(0, 0.3) if sig == "SIGKILL" else 0)
                proc.send_signal(getattr(signal, sig))
                break
            time.sleep(0.1)
        _, stderr = proc.communicate(timeout=300)
        seconds = time.perf_counter() - t0
        ids, torn = written(out)
        result = check(expected, ids)
        skipped = re.search(r"skipped (\d+) rows", stderr)
        result.update(run=n + 1, signal=sig, at=cut, exit=proc.returncode, torn=torn, seconds=seconds,
                      before=before, skipped=int(skipped.group(1)) if skipped else 0,
                      rate=(len(ids) - before) / (seconds - first_row[0]) if first_row and seconds > first_row[0] else None,
                      rss_first=rss[0][1] if rss else None, rss_peak=max(r for _, r in rss) if rss else None, load=load())
        # chatllm says how many rows it skipped only when a run ends (not when it is interrupted)
        if sig is not None and proc.returncode == 0:
            result["not_interrupted"] = f"{sig} sent, yet the run went to its end"
        if proc.returncode == 0 and result["skipped"] != before:
            result["resume_mismatch"] = f"skipped {result['skipped']} but OUT held {before} rows"
        runs.append(result)
        skip = result["skipped"] if proc.returncode == 0 else "-"
        print(f"  run {n + 1} ({'--resume' if n else 'fresh'}): {sig or 'to the end'} at {cut or '-'} rows -> exit "
              f"{proc.returncode}; OUT {result['rows']} rows ({'a torn last line, ' if torn else ''}{result['lost']} lost, "
              f"{result['duplicated']} duplicated, in order: {result['in_order']}); skipped {skip}; "
              f"{result['rate'] or 0:.2f} rows/s; rss {result['rss_first'] or 0:.0f} MB at its first row, "
              f"peak {result['rss_peak'] or 0:.0f} MB; load {result['load']}", flush=True)
    return runs


def report_batch(args, runs: list[dict], rows: list) -> dict:
    """Print and return the batch figures."""
    final = runs[-1]
    ok = (final["rows"] == args.rows and final["unique"] == args.rows and final["in_order"]
          and not any(r["duplicated"] or r["lost"] or not r["in_order"] or r.get("resume_mismatch") or r.get("not_interrupted")
                        for r in runs))
    rates = [r["rate"] for r in runs if r["rate"]]
    print(f"batch soak: {args.rows} rows, {len(runs) - 1} interruptions, final OUT {final['rows']} rows, "
          f"{final['lost']} lost, {final['duplicated']} duplicated, in order {final['in_order']}: {'ok' if ok else 'FAILED'}; "
          f"{statistics.median(rates) if rates else 0:.2f} rows/s (median of runs); load {load()}")
    rows.append(figures.row("soak4", f"batch of {args.rows} rows, 3 interruptions + resumes: rows lost or duplicated",
                            final["lost"] + final["duplicated"], "rows", target="0", met=ok,
                            note=f"{statistics.median(rates) if rates else 0:.2f} rows/s"))
    return {"ok": ok, "runs": runs}


def main() -> None:
    """Run one soak and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("soak", choices=["chat", "sentiment", "batch"])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=24, help="reply cap of a chat turn")
    parser.add_argument("--overflow", choices=["compact", "trim"], default="compact",
                        help="chat: what happens to the oldest exchanges (chatllm's default: compact)")
    parser.add_argument("--turn-timeout", type=float, default=300)
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--minutes", type=float, default=0, help="sentiment: stop after this long (0: run to the end)")
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    parser.add_argument("--json", help="write the raw samples and results to this JSON file")
    args = parser.parse_args()
    # A shell starts a background job with SIGINT ignored, and the chatllm processes would inherit that: a handler of
    # our own is reset to the default at exec, so they get Python's KeyboardInterrupt as from a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.soak == "chat" and args.turns < 50:
        parser.error("--turns must be at least 50 (turn 50 is the reference)")
    print(f"soak {args.soak}: model {Path(MODEL).name}, load {load()}, {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="chatllm-soak-") as tmp:
        home = Path(tmp) / "home"
        if args.soak == "chat":
            turns, samples = soak_chat(args, home)
            raw = {"summary": report_chat(args, turns, rows), "turns": list(turns.values()), "samples": samples}
        elif args.soak == "sentiment":
            at, samples = soak_sentiment(args, home)
            raw = {"summary": report_sentiment(args, at, rows), "samples": samples}
        else:
            raw = report_batch(args, soak_batch(args, home), rows)
    figures.write(args.figures, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    if args.soak == "batch" and not raw["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
