"""Every benchmark figure, each next to its llama.cpp reference measured in the same run; writes docs/BENCHMARKS_RUN_ALL.md.

    python bench/run_all.py            # full run: 11 pairs per speed figure (about 20 minutes on 2 cores)
    python bench/run_all.py --quick    # 5 pairs per figure (under 10 minutes once llama.cpp is built)

The first run builds llama-bench and llama-completion from the llama.cpp sources that the installed llama-cpp-python
vendors (bench/llamacpp_ref.py, about 9 minutes with -j2, cached in ~/.cache/chatllm-bench). Shared machines are noisy,
so every figure is a ratio: the reference and chatllm run alternately, pair by pair (the order flips every pair), and
the table shows the median of the per-pair ratios with their range.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import figures as figures_module  # noqa: E402
import llamacpp_ref  # noqa: E402

ASK_PROMPT = "Write a short poem about the sea."
GENERATE_TEXT = "The old lighthouse keeper climbed the stairs every evening, and"
ASK_TOKENS = 32
LONGDOCS = ROOT.parent / "shared" / "data" / "longdocs"
QUICK_DOC_CHARS = 30000  # quick mode summarizes the first chapters of the book, not all of it
# The other issues' scripts: (script, its arguments in a full run, in a quick run). Each writes figure rows with --figures.
SCRIPTS = (
    ("chat_ttft.py", ["--runs", "5"], ["--runs", "2"]),
    ("eval_classify.py", ["--methods", "naive,chatllm"], ["--methods", "naive,chatllm", "--limit", "40"]),
    ("eval_summarize.py", [], ["--limit", "10"]),
    ("bench_summarize.py", [], ["--doc", "{quick_doc}"]),
)


# -- running things -------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished subprocess: wall time, peak RSS, exit code and output."""

    wall: float
    maxrss: int
    rc: int
    out: str
    err: str


# Peak RSS must come from a small parent: Linux carries the parent's RSS high-water mark into a forked child's
# ru_maxrss, and this process holds a loaded model. A tiny launcher spawns the command and reports for it.
_LAUNCHER = (
    "import json, os, subprocess, sys, time\n"
    "t = time.perf_counter(); p = subprocess.Popen(sys.argv[2:])\n"
    "_, st, ru = os.wait4(p.pid, 0); w = time.perf_counter() - t\n"
    "open(sys.argv[1], 'w').write(json.dumps([w, ru.ru_maxrss * 1024, os.waitstatus_to_exitcode(st)]))\n"
)


class TimedOut(Exception):
    """A measured command ran past its time limit (and was killed)."""


def timed_run(cmd: list[str], env: dict | None = None, timeout: float = 600) -> Run:
    """Run cmd with stdin closed: wall time from spawn to exit and its own peak RSS, both taken by a tiny launcher."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, result.name, *cmd],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            raise TimedOut(f"timed out after {timeout:.0f} s: {' '.join(cmd[:4])} ...")
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
        try:
            wall, maxrss, rc = json.loads(Path(result.name).read_text() or "null")
        except (TypeError, ValueError):
            return Run(float("nan"), 0, proc.returncode or 1, text, errors)
        return Run(wall, maxrss, rc, text, errors)


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the launcher and the command it started (by their pids)."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(int(pid), 9)
        except (OSError, ValueError):
            pass
    proc.kill()
    proc.wait()


def checked(run: Run, what: str) -> Run:
    """The run, or an exit with its stderr tail when it failed."""
    if run.rc != 0:
        tail = "\n".join(run.err.strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {run.rc}):\n{tail}")
    return run


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def chatllm_cmd() -> list[str]:
    """The installed `chatllm` console script beside this Python, else `python -m chatllm`."""
    script = Path(sys.executable).parent / "chatllm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "chatllm"]


def hermetic_env(home: Path, model: Path | None = None) -> dict:
    """The environment a user would have, minus their state: CHATLLM_HOME under tmp, offline, no colour."""
    env = dict(os.environ)
    env.update({"CHATLLM_HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"})
    if model is not None:
        env["CHATLLM_MODEL"] = str(model)
    for key in ("CHATLLM_DEBUG", "CHATLLM_DEVICE", "PYTHONDONTWRITEBYTECODE"):  # a user's Python caches bytecode
        env.pop(key, None)
    return env


# -- results --------------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table: chatllm's samples, the reference's, and the per-pair ratios."""

    number: str
    name: str
    model: str
    unit: str
    target: str
    ours: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    ref_label: str = ""
    check: object = None  # callable(ratio_or_value) -> bool
    value_is_target: bool = False  # the target applies to chatllm's own median, not to the ratio
    note: str = ""
    short: str = ""

    def add(self, ours: float, ref: float, ratio: float | None = None) -> None:
        """Record one pair."""
        self.ours.append(ours)
        self.ref.append(ref)
        self.ratios.append(ratio if ratio is not None else (ours / ref if ref else float("nan")))

    @property
    def met(self) -> bool | None:
        """Whether the target holds for the median (None when nothing was measured)."""
        if not self.ratios or self.check is None:
            return None
        return bool(self.check(statistics.median(self.ours) if self.value_is_target else statistics.median(self.ratios)))


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n != 1 else "")


def fmt(value: float, unit: str) -> str:
    """A number with its unit, at a sensible precision (bytes shown in MiB)."""
    return f"{value / 2**20:.0f} MiB" if unit == "MiB" else figures_module.value(value, unit)


# -- figures 1 and 2: decode loop and prompt rate ------------------------------------------------------------------


def repacking() -> bool:
    """Whether the reference tools can repack weights on this CPU (not on AMX CPUs); chatllm's Engine is run the same way."""
    from chatllm.engines.llamacpp.devices import extra_buffers_safe
    from chatllm.engines.llamacpp.llamacpp_engine import build_info

    return extra_buffers_safe(build_info()["system_info"])


def llama_bench(bins: dict, model: Path, threads: int, n_prompt: int, n_gen: int, flash_attn: bool) -> float:
    """One llama-bench repetition (after its own warmup run), configured as chatllm's Engine is: tokens per second."""
    cmd = [str(bins["llama-bench"]), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
           "-r", "1", "-o", "json", "--repack", str(int(repacking())), "-fa", "on" if flash_attn else "off"]
    run = checked(timed_run(cmd, timeout=300), "llama-bench")
    return float(json.loads(run.out)[0]["avg_ts"])


def speed_figures(bins: dict, model: Path, label: str, pairs: int, threads: int | None) -> tuple[list[Figure], dict]:
    """Figures 1 and 2 for one model, alternating llama-bench and the in-process Engine pair by pair."""
    import perf_engine

    engine, kv_bytes = perf_engine.load_measuring_kv(model, n_threads=threads, repack=repacking())
    info = {"threads": engine.n_threads, "n_ctx": engine.n_ctx, "kv_bytes": kv_bytes, "flash_attn": engine.flash_attn,
            "swa": any("iswa" in line for line in perf_engine._KV_LINES),
            "rendered": engine.render_chat([{"role": "user", "content": ASK_PROMPT}]) if engine.has_chat_template else None}
    # What the timed `chatllm ask`/`generate` runs generate, counted in process: `--json` would hold the answer to JSON.
    from chatllm.settings import Sampling

    list(engine.stream(info["rendered"] or GENERATE_TEXT, Sampling(max_tokens=ASK_TOKENS, temperature=0)))
    info["check"] = {"completion_tokens": engine.last_stats.completion_tokens, "finish_reason": engine.last_stats.finish_reason}
    t = engine.n_threads
    tg = Figure("1", f"generation tok/s: Engine decode loop / llama-bench tg128 ({_threads(t)})", label, "tok/s", ">= 0.95",
                check=lambda r: r >= 0.95, short="generation tok/s")
    pp = Figure("2", f"prompt tok/s: Engine, 512-token prompt / llama-bench pp512 ({_threads(t)})", label, "tok/s", ">= 0.95",
                check=lambda r: r >= 0.95, short="prompt tok/s")
    perf_engine.generation_rate(engine, 16)
    perf_engine.prompt_rate(engine, 64, seed=0)
    short = []
    try:
        for i in range(pairs):
            for kind in (("ref", "ours") if i % 2 == 0 else ("ours", "ref")):
                if kind == "ref":
                    ref_tg = llama_bench(bins, model, t, 0, 128, info["flash_attn"])
                    ref_pp = llama_bench(bins, model, t, 512, 0, info["flash_attn"])
                else:
                    g = perf_engine.generation_rate(engine, 128, seed=i + 1)
                    p = perf_engine.prompt_rate(engine, 512, seed=i + 1)
                    if g["tokens"] < 128:
                        short.append(g["tokens"])
            tg.add(g["tokens_per_second"], ref_tg)
            pp.add(p["tokens_per_second"], ref_pp)
            log(f"{label} pair {i + 1}/{pairs}: tg {g['tokens_per_second']:.1f} vs {ref_tg:.1f}, "
                f"pp {p['tokens_per_second']:.1f} vs {ref_pp:.1f}")
    finally:
        engine.close()
    tg.ref_label = pp.ref_label = "llama-bench"
    tg.note = ("default sampling (temperature 0.7, top-k 40, top-p 0.95, min-p 0.05, repeat penalty 1.1), "
               "incremental UTF-8 detokenization; llama-bench only decodes")
    if short:
        tg.note += f"; {len(short)} generations ended early at EOS ({min(short)} tokens at least)"
    return [tg, pp], info


# -- figures 3 and 5: one-shot wall time and peak RSS --------------------------------------------------------------


def oneshot_figures(bins: dict, model: Path, label: str, info: dict, pairs: int, home: Path) -> list[Figure]:
    """`chatllm ask` (or `generate` for a model without a template) against llama-completion, same prompt and tokens."""
    env = hermetic_env(home, model)
    t, n_ctx = str(info["threads"]), str(info["n_ctx"])
    if info["rendered"] is not None:
        ours = [*chatllm_cmd(), "ask", ASK_PROMPT]
        ref_prompt, what = info["rendered"], "ask"
    else:
        ours = [*chatllm_cmd(), "generate", GENERATE_TEXT]
        ref_prompt, what = GENERATE_TEXT, "generate"
    ours += ["-m", str(model), "-n", str(ASK_TOKENS), "--temperature", "0", "--threads", t]
    ref = [str(bins["llama-completion"]), "-m", str(model), "-p", ref_prompt, "-n", str(ASK_TOKENS), "--temp", "0",
           "--repeat-penalty", "1.1", "--repeat-last-n", "64", "--ignore-eos", "-no-cnv", "--no-display-prompt",
           "-t", t, "-c", n_ctx, "-fa", "on" if info["flash_attn"] else "off", *([] if repacking() else ["--no-repack"])]
    check = info["check"]
    checked(timed_run(ours, env), f"chatllm {what}")  # warm the page cache for both
    checked(timed_run(ref), "llama-completion")
    wall = Figure("3", f"`chatllm {what}` wall / `llama-completion` wall ({ASK_TOKENS} tokens, same prompt)", label,
                  "s", "<= 1.5", check=lambda r: r <= 1.5, ref_label="llama-completion", short=f"{what} wall")
    budget = info["kv_bytes"] + model.stat().st_size
    rss = Figure("5", f"peak RSS of `chatllm {what}` / (model file + KV cache = {budget / 2**20:.0f} MiB)", label, "MiB",
                 "<= 1.3", check=lambda r: r <= 1.3, ref_label="llama-completion RSS", short=f"{what} peak RSS")
    for i in range(pairs):
        runs = {}
        for kind in (("ref", "ours") if i % 2 == 0 else ("ours", "ref")):
            runs[kind] = checked(timed_run(ours if kind == "ours" else ref, env), kind)
        wall.add(runs["ours"].wall, runs["ref"].wall)
        rss.add(runs["ours"].maxrss, runs["ref"].maxrss, runs["ours"].maxrss / budget)
        log(f"{label} {what} pair {i + 1}/{pairs}: {runs['ours'].wall:.3f} s vs {runs['ref'].wall:.3f} s, "
            f"RSS {runs['ours'].maxrss / 2**20:.0f} vs {runs['ref'].maxrss / 2**20:.0f} MiB")
    tokens = check.get("completion_tokens")
    wall.note = (f"chatllm generated {tokens} tokens ({check.get('finish_reason')}); llama-completion --ignore-eos "
                 f"generates exactly {ASK_TOKENS}; both with n_ctx {n_ctx}, {_threads(info['threads'])}")
    rss.note = (f"ratio is chatllm's peak RSS over the budget (KV cache {info['kv_bytes'] / 2**20:.0f} MiB at n_ctx "
                f"{n_ctx}); the reference column is llama-completion's own peak RSS")
    if info["swa"]:
        rss.note += ("; this model has sliding-window layers: llama-completion keeps only the window for them "
                     "(swa_full off), chatllm keeps the full cache (llama-cpp-python's default) so rewinding a chat "
                     "prompt to a shared prefix stays exact")
    return [wall, rss]


# -- figure 4: startup ----------------------------------------------------------------------------------------------


def startup_figures(pairs: int, home: Path) -> list[Figure]:
    """`chatllm --version` and `--help` wall time, each against `python -c pass` in the same pair."""
    env = hermetic_env(home)
    base = [sys.executable, "-c", "pass"]
    figs = {}
    for flag in ("--version", "--help"):
        figs[flag] = Figure("4", f"`chatllm {flag}` wall (target on the time; ratio to `python -c pass`)", "-", "s",
                            "<= 0.15 s", check=lambda v: v <= 0.15, value_is_target=True, ref_label="python -c pass",
                            short=f"{flag} wall")
    typer_only = [sys.executable, "-c", "import typer"]
    for cmd in ([*chatllm_cmd(), "--version"], [*chatllm_cmd(), "--help"], base, typer_only):
        timed_run(cmd, env)  # warm caches
    typer_walls = []
    for i in range(pairs):
        for flag, fig in figs.items():
            runs = {}
            for kind in (("ref", "ours") if i % 2 == 0 else ("ours", "ref")):
                runs[kind] = checked(timed_run(base if kind == "ref" else [*chatllm_cmd(), flag], env), flag)
            fig.add(runs["ours"].wall, runs["ref"].wall)
        typer_walls.append(checked(timed_run(typer_only, env), "import typer").wall)
    figs["--version"].note = "answered before Typer is imported"
    figs["--help"].note = (f"{import_profile(env)}; `python -c 'import typer'` alone takes "
                           f"{statistics.median(typer_walls):.3f} s in the same pairs (the floor for a Typer help page)")
    log("startup: " + ", ".join(f"{f} {statistics.median(x.ours):.3f} s" for f, x in figs.items()))
    return list(figs.values())


STARTUP_SUSPECTS = ("typer", "chatllm.cli.app", "chatllm.cli.options", "chatllm.settings", "chatllm.output", "traceback",
                    "tomllib", "rich", "platformdirs", "llama_cpp", "numpy", "huggingface_hub", "prompt_toolkit", "jinja2")


def import_profile(env: dict) -> str:
    """Where `chatllm --help` spends its import time (python -X importtime, cumulative microseconds per module)."""
    code = "import sys; sys.argv = ['chatllm', '--help']; from chatllm.cli import main; main()"
    run = timed_run([sys.executable, "-X", "importtime", "-c", code], env, timeout=60)
    cumulative: dict[str, int] = {}
    total = 0
    for line in run.err.splitlines():
        m = re.match(r"import time:\s*(\d+)\s*\|\s*(\d+)\s*\|(\s*)(\S+)", line)
        if not m:
            continue
        name, cum = m.group(4), int(m.group(2))
        if len(m.group(3)) <= 1:
            total += cum
        if name in STARTUP_SUSPECTS:
            cumulative[name] = max(cumulative.get(name, 0), cum)
    heavy = [n for n in ("llama_cpp", "numpy", "huggingface_hub", "prompt_toolkit") if n in cumulative]
    parts = [f"{n} {us / 1000:.0f} ms" for n, us in sorted(cumulative.items(), key=lambda kv: -kv[1])]
    text = (f"`chatllm --help` spends {total / 1000:.0f} ms on imports in one run here (python -X importtime, "
            f"cumulative, nested): {', '.join(parts)}")
    if heavy:
        text += f"; it imports {', '.join(heavy)} for its help page, which it must not"
    return text


# -- figures 6 and 7: the other issues' scripts ---------------------------------------------------------------------


def script_figures(model: Path, home: Path, quick: bool) -> tuple[list[dict], list[str]]:
    """Run each of SCRIPTS on the test model; the figure rows they wrote, and one line per script on how it went."""
    rows, runs = [], []
    env = hermetic_env(home, model)
    quick_doc = home / f"alice-first-{QUICK_DOC_CHARS}.txt"
    book = LONGDOCS / "alice_in_wonderland_pg11.txt"
    if quick and book.exists():
        quick_doc.write_text(book.read_text(encoding="utf-8")[:QUICK_DOC_CHARS], encoding="utf-8")
    for script, full_args, quick_args in SCRIPTS:
        out = home / f"{script}.figures.json"
        args = [a.format(quick_doc=quick_doc) for a in (quick_args if quick else full_args)]
        cmd = [sys.executable, str(BENCH / script), "--model", str(model), *args, "--figures", str(out)]
        shown = "python " + " ".join([f"bench/{script}", *args]).replace(str(home), "$TMP")
        log(f"running {shown}")
        try:
            run = timed_run(cmd, env, timeout=600 if quick else 3600)
        except TimedOut as exc:
            runs.append(f"`{shown}`: {exc}")
            continue
        status = "ok" if run.rc == 0 else f"exit {run.rc}: {run.err.strip().splitlines()[-1:] or ''}"
        runs.append(f"`{shown}`: {status}, {run.wall:.0f} s")
        rows += figures_module.read(out)
    return rows, runs



# -- the report -----------------------------------------------------------------------------------------------------


def machine_summary() -> str:
    """CPU model, core count and load, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def load_avg() -> str:
    """The 1-minute load average (how busy the shared machine was)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def render(figures: list[Figure], rows: list[dict], runs: list[str], meta: dict) -> str:
    """docs/BENCHMARKS_RUN_ALL.md."""
    lines = [
        "# Benchmarks: the llama.cpp comparison run (`bench/run_all.py`)",
        "",
        f"Measured {meta['date']} by `{meta['command']}` ({meta['mode']}, {meta['minutes']:.1f} minutes).",
        "Every figure is measured next to its reference in the same run, alternating the two pair by pair; the ratio",
        "column is the median of the per-pair ratios (range in brackets). Absolute numbers on this shared machine move",
        "by 30 % or more within an hour, so only the ratios mean anything.",
        "",
        f"- machine: {meta['machine']}; load average {meta['load_start']} at the start, {meta['load_end']} at the end",
        f"- llama-cpp-python {meta['llama_cpp_python']} (chatllm's binding); reference: llama.cpp {meta['llama_commit']} "
        "built from that package's own `vendor/llama.cpp` (Release, native CPU flags) by `bench/llamacpp_ref.py`",
        f"- models: {meta['models']}",
        f"- threads: {meta['threads']}",
        f"- weight repacking: {meta['repack']}",
        "",
        "| # | figure | model | chatllm | reference | ratio | target | met |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for f in figures:
        if not f.ratios:
            continue
        r = statistics.median(f.ratios)
        met = {True: "yes", False: "**no**", None: "-"}[f.met]
        ours, ref = statistics.median(f.ours), statistics.median(f.ref)
        lines.append(
            f"| {f.number} | {f.name} | {f.model} | {fmt(ours, f.unit)} | {fmt(ref, f.unit)} ({f.ref_label}) | "
            f"{r:.2f} [{min(f.ratios):.2f}-{max(f.ratios):.2f}] | {f.target} | {met} |")
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        ref = f"{fmt(r['reference'], r['unit'])} ({r['reference_label']})" if r["reference"] is not None else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(f"| {r['number']} | {r['name']} | SmolLM2-135M Q4_1 | {fmt(r['ours'], r['unit'])} | "
                     f"{ref} | {ratio} | {r['target']} | {met} |")
    lines += ["", "## Notes per figure", ""]
    for f in figures:
        if f.note:
            lines.append(f"- {f.number} ({f.model}): {f.note}")
    for r in rows:
        if r["note"]:
            lines.append(f"- {r['number']} ({r['name']}): {r['note']}")
    lines += ["", "## Pairs", "", "chatllm / reference for each pair, in run order:", ""]
    for f in figures:
        pairs = ", ".join(f"{fmt(a, f.unit)} / {fmt(b, f.unit)}" for a, b in zip(f.ours, f.ref))
        lines.append(f"- {f.number} {f.model} {f.short or f.name}: {pairs}")
    if runs:
        lines += ["", "## The other issues' scripts (figures 6 and 7)", ""] + [f"- {line}" for line in runs]
    lines += ["", "## Rerun", "", "```", "python bench/run_all.py            # full", "python bench/run_all.py --quick    # < 10 min",
              "```", ""]
    return "\n".join(lines)


def main() -> None:
    """Build the reference if needed, run every figure, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 pairs per figure instead of 11 (under 10 minutes)")
    parser.add_argument("--pairs", type=int, help="pairs per speed figure (overrides --quick)")
    parser.add_argument("--threads", type=int, help="threads for both sides [default: chatllm's own default]")
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated figure numbers to run")
    parser.add_argument("--no-second-model", action="store_true", help="skip the Gemma 3 270M checks")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS_RUN_ALL.md"))
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",")}
    pairs = args.pairs or (5 if args.quick else 11)
    started = time.perf_counter()
    load_start = load_avg()
    from chatllm.engines.llamacpp.threads import default_threads, other_busy_cores, physical_cores

    cores, busy = physical_cores(), other_busy_cores()
    threads_note = (f"{args.threads} for both sides (--threads)" if args.threads else
                    f"chatllm's default, passed to the reference too: physical cores ({cores}) minus the cores other "
                    f"processes kept busy when each model was loaded ({busy:.1f} busy at the start, so "
                    f"{_threads(default_threads(cores, busy))}); llama.cpp's spinning threads collapse when there are "
                    "more of them than free cores")
    from tests.model_fetch import GEMMA, SMOLLM, fetch

    bins = llamacpp_ref.ensure_built()
    models = [("SmolLM2-135M Q4_1", fetch(SMOLLM))]
    if not args.no_second_model:
        models.append(("Gemma-3-270M Q4_K_M", fetch(GEMMA)))
    figures: list[Figure] = []
    rows: list[dict] = []
    runs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chatllm-bench-") as tmp:
        home = Path(tmp)
        if "4" in only:
            figures += startup_figures(max(pairs * 2, 10), home)
        for label, model in models:
            if only & {"1", "2", "3", "5"}:
                speed, info = speed_figures(bins, model, label, pairs if only & {"1", "2"} else 0, args.threads)
                figures += [f for f in speed if f.number in only]
                if only & {"3", "5"}:
                    figures += [f for f in oneshot_figures(bins, model, label, info, max(pairs, 5), home) if f.number in only]
        if only & {"6", "7"}:
            rows, runs = script_figures(models[0][1], home, args.quick)
    figures.sort(key=lambda f: f.number)
    version = llamacpp_ref.installed_version()
    commit = _build_commit(bins)
    meta = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/run_all.py" + (" --quick" if args.quick else ""),
        "mode": f"{pairs} pairs per speed figure",
        "minutes": (time.perf_counter() - started) / 60,
        "machine": machine_summary(),
        "load_start": load_start,
        "load_end": load_avg(),
        "llama_cpp_python": version,
        "llama_commit": commit,
        "threads": threads_note,
        "repack": "on for both sides" if repacking() else
                  "off for both sides (`--repack 0` / `--no-repack`): this CPU has AMX, whose llama.cpp kernels segfault",
        "models": ", ".join(f"{label} ({m.name}, {m.stat().st_size / 2**20:.0f} MiB)" for label, m in models),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(figures, rows, runs, meta), encoding="utf-8")
    log(f"wrote {out} in {meta['minutes']:.1f} minutes")
    for f in figures:
        if f.ratios:
            log(f"{f.number} {f.model}: ratio {statistics.median(f.ratios):.2f} "
                f"(chatllm {fmt(statistics.median(f.ours), f.unit)}), target {f.target}: {'met' if f.met else 'NOT met'}")


def _build_commit(bins: dict) -> str:
    """The llama.cpp commit the reference was built from (llama-bench --version)."""
    run = timed_run([str(bins["llama-bench"]), "--version"], timeout=30)
    m = re.search(r"commit\s+(\w+)", run.out + run.err)
    return f"commit {m.group(1)}" if m else "?"


if __name__ == "__main__":
    main()
