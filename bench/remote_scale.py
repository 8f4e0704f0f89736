"""Remote engines: scale-out with --parallel against llama-server -np 4, and remote vs local chat speed on one model.

    python bench/remote_scale.py [--model GGUF] [--lines 300] [--parallel 1,2,4] [--threads 2] [--runs 3]
                                 [--json OUT.json] [--figures FIG.json]

1. Sentiment over the first --lines SST-2 tuning lines (/work/shared/data/sentiment/sst2_tune.tsv), in process,
   exactly as `chatllm sentiment --lines --parallel N` runs it: one RemoteEngine (its own HTTP connection) per
   worker, tasks.parallel.ordered_map, results in input order. Lines/s per N, the speed-up over N=1 and the label
   agreement with N=1. The server is started here: llama-server (built from the vendored llama.cpp, cached), -np 4,
   4 x 2048 tokens, --threads threads.
2. Chat time to first token and generation tokens/s for the same prompt, greedy, --max-tokens 128: the local
   LlamaCppEngine vs the RemoteEngine on that server (HTTP + SSE overhead), same model file and thread count. Best
   of --runs (the least disturbed measurement on a shared machine). Target: remote/local >= 0.9 (speed; for TTFT
   the ratio is local/remote so that higher is better on both rows).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import figures  # noqa: E402

from chatllm.engines.contract import text_stream  # noqa: E402
from chatllm.engines.remote.llama_server_engine import RemoteEngine  # noqa: E402
from chatllm.models.registry import parse_ref  # noqa: E402
from chatllm.settings import Sampling  # noqa: E402
from chatllm.tasks.classify.classifier import Classifier, sentiment_labels  # noqa: E402
from chatllm.tasks.text.parallel_map import ordered_map  # noqa: E402
from tests.llama_server import ALIAS, LlamaServer, server_binary  # noqa: E402

DEFAULT_MODEL = os.environ.get("CHATLLM_BENCH_MODEL", str(Path.home() / ".cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf"))
SST2 = Path("/work/shared/data/sentiment/sst2_tune.tsv")
CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Explain in a few sentences how a lighthouse helps ships at night."}]


def sst2(n: int) -> list[str]:
    """The first n texts of the SST-2 tuning file."""
    with open(SST2, encoding="utf-8", newline="") as fh:
        return [row[0].strip() for row in list(csv.reader(fh, delimiter="\t"))[1:n + 1]]


def sentiment_run(url: str, texts: list[str], workers: int) -> tuple[float, list[str]]:
    """Seconds and labels for classifying texts over `workers` connections (the prefix warmed first, as a CLI run does
    after its first line)."""
    engines = [RemoteEngine.connect(parse_ref(f"openai:{url}#{ALIAS}", {})) for _ in range(workers)]
    try:
        first = Classifier(engines[0], sentiment_labels())
        first.classify("warm up")  # builds the shared prompt and the calibration once; every slot then caches the prefix
        classifiers = [first] + [first.on_engine(e) for e in engines[1:]]
        start = time.perf_counter()
        labels = [r.label or "" for r in ordered_map(lambda c, t: c.classify(t), texts, classifiers)]
        return time.perf_counter() - start, labels
    finally:
        for e in engines:
            e.close()


def summarize_run(url: str, path: str, workers: int) -> dict:
    """`chatllm summarize PATH --parallel N` through the server, as a user runs it: wall seconds and summary size."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="remote-scale-") as home:
        env = dict(os.environ, CHATLLM_HOME=home, NO_COLOR="1", HF_HUB_OFFLINE="1")
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "chatllm", "summarize", path, "-m", f"openai:{url}#{ALIAS}",
                              "--parallel", str(workers)], env=env, capture_output=True, text=True, timeout=7200)
        seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"summarize --parallel {workers} failed: {run.stderr[-500:]}")
    return {"seconds": round(seconds, 1), "summary_words": len(run.stdout.split())}


def chat_speed(engine, runs: int, max_tokens: int) -> tuple[float, float]:
    """Best time to first token and best generation tokens/s over runs, for the same greedy chat reply."""
    prompt = engine.render_chat(CHAT)
    ttfts, rates = [], []
    sampling = Sampling(temperature=0, max_tokens=max_tokens, repeat_penalty=1.0)
    for i in range(runs + 1):
        # a different leading word each run: the prompt is evaluated afresh, not taken from a cache
        text = prompt.replace("You are", f"Run {i}: you are", 1)
        pieces = list(text_stream(engine.stream(text, sampling)))
        s = engine.last_stats
        if i == 0 or not pieces:
            continue  # the first run warms up (page cache, server threads)
        ttfts.append(s.first_token_seconds)
        rates.append((s.completion_tokens - 1) / max(1e-9, s.seconds - s.first_token_seconds))
    return min(ttfts), max(rates)


def main() -> None:
    """Run both measurements and print (and optionally write) the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--parallel", default="1,2,4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json")
    ap.add_argument("--figures")
    ap.add_argument("--summarize", metavar="FILE", help="also `chatllm summarize FILE --parallel N` through the server")
    ap.add_argument("--skip-sentiment", action="store_true")
    args = ap.parse_args()
    ns = [int(x) for x in args.parallel.split(",")]
    texts = sst2(args.lines)
    os.environ["LLAMA_ARG_THREADS"] = str(args.threads)
    srv = LlamaServer(server_binary(), Path(args.model), slots=4, ctx=8192).start()
    report: dict = {"lines": len(texts), "threads": args.threads, "cores": os.cpu_count(), "loadavg": os.getloadavg(),
                    "sentiment": {}}
    try:
        base_labels: list[str] | None = None
        base_seconds = 0.0
        for n in ns if args.summarize else []:
            report.setdefault("summarize", {})[n] = summarize_run(srv.url, args.summarize, n)
            print(f"summarize --parallel {n}: {report['summarize'][n]}", flush=True)
        for n in [] if args.skip_sentiment else ns:
            seconds, labels = sentiment_run(srv.url, texts, n)
            if base_labels is None:
                base_labels, base_seconds = labels, seconds
            agree = sum(a == b for a, b in zip(labels, base_labels)) / len(texts)
            report["sentiment"][n] = {"seconds": round(seconds, 2), "lines_per_s": round(len(texts) / seconds, 2),
                                      "speedup": round(base_seconds / seconds, 2), "agreement": round(agree, 4)}
            print(f"sentiment --parallel {n}: {len(texts)} lines in {seconds:.1f} s, {len(texts) / seconds:.2f} lines/s, "
                  f"x{base_seconds / seconds:.2f}, labels agree with N={ns[0]}: {agree:.1%}", flush=True)
        remote = RemoteEngine.connect(parse_ref(f"openai:{srv.url}#{ALIAS}", {}))
        r_ttft, r_rate = chat_speed(remote, args.runs, args.max_tokens)
        remote.close()
    finally:
        srv.stop()
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    local = LlamaCppEngine(Path(args.model), n_ctx=2048, n_threads=args.threads, flash_attn=False)
    l_ttft, l_rate = chat_speed(local, args.runs, args.max_tokens)
    local.close()
    report["chat"] = {"local_ttft_s": round(l_ttft, 4), "remote_ttft_s": round(r_ttft, 4), "local_tok_s": round(l_rate, 1),
                      "remote_tok_s": round(r_rate, 1), "ttft_ratio_local_over_remote": round(l_ttft / r_ttft, 3),
                      "tok_s_ratio_remote_over_local": round(r_rate / l_rate, 3)}
    print(f"chat TTFT: local {l_ttft * 1000:.0f} ms, remote {r_ttft * 1000:.0f} ms (local/remote {l_ttft / r_ttft:.2f}); "
          f"generation: local {l_rate:.1f} tok/s, remote {r_rate:.1f} tok/s (remote/local {r_rate / l_rate:.2f})")
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    rows = [figures.row("R1", f"sentiment lines/s, --parallel {n} (llama-server -np 4)", v["lines_per_s"], "lines/s",
                        ratio=v["speedup"], note=f"agreement with N=1 {v['agreement']:.1%}")
            for n, v in report["sentiment"].items()]
    c = report["chat"]
    rows.append(figures.row("R2", "chat TTFT remote vs local (local/remote)", c["remote_ttft_s"], "s", reference=c["local_ttft_s"],
                            reference_label="local", ratio=c["ttft_ratio_local_over_remote"], target=">= 0.9",
                            met=c["ttft_ratio_local_over_remote"] >= 0.9))
    rows.append(figures.row("R3", "chat tok/s remote vs local", c["remote_tok_s"], "tok/s", reference=c["local_tok_s"],
                            reference_label="local", target=">= 0.9", met=c["tok_s_ratio_remote_over_local"] >= 0.9))
    figures.write(args.figures, rows)


if __name__ == "__main__":
    main()
