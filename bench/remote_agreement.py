"""Sentiment labels through a server vs the local engine, the way a user runs them (issues 15 and 32: >= 98 %).

    python bench/remote_agreement.py [--data sst2|chnsenticorp] [--offset 0] [--lines 200] [--models smollm2,gemma,qwen]
        [--paths llama-server,swa-full,chat] [--baseline TREE] [--labels A,B] [--threads 1] [--json OUT.json]

Each model classifies the same lines once locally and once per remote path, each a whole file piped through one
`chatllm sentiment --lines --json` call (`classify --labels` with --labels): locally with `-m FILE.gguf --no-cache`
(no KV state from an earlier run), remotely with `-m openai:URL#MODEL` against a fresh server on 127.0.0.1 serving the
same file. The paths: `llama-server` (RemoteEngine: forced-token log-probabilities from /completion), `swa-full` (the
same server started with --swa-full, run for sliding-window models only: Gemma 3 ...) and `chat` (llama-cpp-python's
server: the chat path's /v1/completions logprobs). With --baseline TREE each remote path runs a second time with the
chatllm of another source tree (say, an export of main before a change), on its own fresh server too: a server's
prompt cache would otherwise carry one run's evaluation into the next.

Reported per path: label agreement with the local run, the lines that flip (with both probabilities), the mean and
largest absolute difference of the first label's probability, accuracy against the gold labels, seconds, and the
load average (the machine is shared: the seconds are only comparable within one run).

Data: the SST-2 tuning lines (/work/shared/data/sentiment/sst2_tune.tsv, `sentence<TAB>label`) or the ChnSentiCorp
ones (chnsenticorp_tune.csv, `label,review`), --lines of them from --offset.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chatllm.models.gguf_header import read_header  # noqa: E402
from chatllm.models.serve import PYTHON_SERVER, plan_server  # noqa: E402
from tests.llama_server import ALIAS, LlamaServer, free_port, repack_safe, server_binary  # noqa: E402

MODELS = Path.home() / ".cache/chatllm-test"
KNOWN = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma": "gemma-3-270m-q4_k_m.gguf",
         "qwen": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
DATA = Path("/work/shared/data/sentiment")
CTX = 2048


def items(data: str, offset: int, n: int) -> tuple[list[str], list[str]]:
    """The texts (one line each) and gold labels of lines offset..offset+n of a sentiment tuning file."""
    if data == "sst2":
        with open(DATA / "sst2_tune.tsv", encoding="utf-8", newline="") as fh:
            rows = [(r[0], r[1]) for r in list(csv.reader(fh, delimiter="\t"))[1:]]
    else:
        with open(DATA / "chnsenticorp_tune.csv", encoding="utf-8", newline="") as fh:
            rows = [(r[1], r[0]) for r in list(csv.reader(fh))[1:]]
    rows = rows[offset:offset + n]
    return [" ".join(t.split()) for t, _ in rows], ["positive" if g.strip() == "1" else "negative" for _, g in rows]


def model_file(name: str) -> Path:
    """A model by short name (smollm2, gemma, qwen) or path."""
    path = MODELS / KNOWN[name] if name in KNOWN else Path(name).expanduser()
    if not path.is_file():
        raise SystemExit(f"no model file {path}")
    return path


def sliding_window(path: Path) -> bool:
    """Whether the GGUF's architecture uses sliding-window attention (llama-server checkpoints it)."""
    info = read_header(path, check_data=False)
    return bool(info.metadata.get(f"{info.architecture}.attention.sliding_window"))


def run_cli(tree: Path, model: str, texts: list[str], threads: int, labels: str | None, local: bool) -> tuple[list[dict], float]:
    """One `chatllm sentiment --lines --json` (or classify) over the texts, with the chatllm of `tree`; rows and seconds."""
    with tempfile.TemporaryDirectory(prefix="chatllm-agree-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLLM_", "HF_"))}
        env.update(PYTHONPATH=str(tree), CHATLLM_HOME=home, HF_HUB_OFFLINE="1")
        args = [sys.executable, "-m", "chatllm", *(["classify", "--labels", labels] if labels else ["sentiment"]),
                "--lines", "--json", "-m", model]
        if local:
            args += ["--threads", str(threads), "--ctx", str(CTX), "--no-cache"]
        start = time.perf_counter()
        r = subprocess.run(args, input="".join(t + "\n" for t in texts), capture_output=True, text=True, env=env, cwd=tree)
        seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {r.stderr[-2000:]}")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    if len(rows) != len(texts):
        raise RuntimeError(f"{len(rows)} rows for {len(texts)} lines")
    return rows, seconds


def python_server(model: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's server on a free port, as `chatllm serve` runs it; the process and its /v1 url."""
    port = free_port()
    plan = plan_server(PYTHON_SERVER, [sys.executable, "-m", "llama_cpp.server"], model, ALIAS, host="127.0.0.1",
                       port=port, parallel=1, ctx=CTX, threads=threads, repack=repack_safe())
    log = open(tempfile.mkstemp(prefix="llama-cpp-python-server-", suffix=".log")[1], "wb")
    proc = subprocess.Popen(plan.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-cpp-python's server exited with {proc.returncode} (log: {log.name})")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama-cpp-python's server did not answer within 180 s")


def remote_run(path: str, model: Path, tree: Path, texts: list[str], threads: int, labels: str | None):
    """The rows and seconds of one remote path on a fresh server."""
    if path == "chat":
        proc, url = python_server(model, threads)
        try:
            return run_cli(tree, f"openai:{url}#{ALIAS}", texts, threads, labels, local=False)
        finally:
            proc.terminate()
            proc.wait(20)
    extra = ["-t", str(threads)] + (["--swa-full"] if path == "swa-full" else [])
    srv = LlamaServer(server_binary(), model, slots=1, ctx=CTX, extra=extra).start(timeout=180)
    try:
        return run_cli(tree, f"openai:{srv.url}#{ALIAS}", texts, threads, labels, local=False)
    finally:
        srv.stop()


def compare(base: list[dict], rows: list[dict], gold: list[str], texts: list[str], seconds: float) -> dict:
    """Agreement, flips, probability differences and accuracy of one path against the local rows."""
    first = next(iter(base[0]["scores"]))
    diffs = [abs(a["scores"][first] - b["scores"][first]) for a, b in zip(base, rows)]
    flips = [{"line": i, "local": round(a["scores"][first], 4), "remote": round(b["scores"][first], 4),
              "text": texts[i][:60]} for i, (a, b) in enumerate(zip(base, rows)) if a["label"] != b["label"]]
    n = len(rows)
    return {"agreement": round(1 - len(flips) / n, 4), "flips": flips, "mean_abs_dp": sum(diffs) / n,
            "max_abs_dp": max(diffs), "accuracy": round(sum(r["label"] == g for r, g in zip(rows, gold)) / n, 4),
            "seconds": round(seconds, 1)}


def main() -> None:
    """Run every model on every path and print the figures (JSON at the end)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("sst2", "chnsenticorp"), default="sst2")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--models", default="smollm2", help="comma-separated: smollm2, gemma, qwen or GGUF paths")
    ap.add_argument("--paths", default="llama-server,swa-full,chat", help="llama-server, swa-full, chat")
    ap.add_argument("--baseline", type=Path, help="another source tree whose chatllm runs each remote path too")
    ap.add_argument("--labels", help="classify with these labels instead of sentiment")
    ap.add_argument("--threads", type=int, default=1, help="threads of each server and of the local engine")
    ap.add_argument("--json")
    args = ap.parse_args()
    texts, gold = items(args.data, args.offset, args.lines)
    if args.labels:
        gold = [""] * len(texts)  # no gold for made-up labels
    trees = [("", REPO)] + ([(" (baseline)", args.baseline.resolve())] if args.baseline else [])
    report: dict = {"data": args.data, "offset": args.offset, "lines": len(texts), "threads": args.threads,
                    "labels": args.labels, "load_before": os.getloadavg(), "models": {}}
    for name in args.models.split(","):
        model = model_file(name)
        base, seconds = run_cli(REPO, str(model), texts, args.threads, args.labels, local=True)
        out: dict = {"local": {"accuracy": round(sum(r["label"] == g for r, g in zip(base, gold)) / len(texts), 4),
                               "seconds": round(seconds, 1)}}
        print(f"{name} local: accuracy {out['local']['accuracy']:.1%}, {seconds:.1f} s", flush=True)
        for path in args.paths.split(","):
            if path == "swa-full" and not sliding_window(model):
                continue
            for tag, tree in trees if path != "swa-full" else trees[:1]:
                rows, seconds = remote_run(path, model, tree, texts, args.threads, args.labels)
                row = out[path + tag] = compare(base, rows, gold, texts, seconds)
                print(f"{name} {path}{tag}: agreement {row['agreement']:.1%} ({len(row['flips'])} flips), mean |dp| "
                      f"{row['mean_abs_dp']:.2e}, max {row['max_abs_dp']:.2e}, accuracy {row['accuracy']:.1%}, "
                      f"{row['seconds']} s, load {os.getloadavg()[0]:.1f}", flush=True)
        report["models"][name] = out
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
