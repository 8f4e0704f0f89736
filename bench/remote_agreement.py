"""Sentiment label agreement on one model: the local engine vs each remote path (issue 15: >= 98 % over 200 lines).

    python bench/remote_agreement.py [--lines 200] [--model GGUF] [--threads 1] [--json OUT.json]

The first --lines SST-2 tuning lines (/work/shared/data/sentiment/sst2_tune.tsv) are classified three times with the
same Classifier (few-shot prefix, calibration): by the local LlamaCppEngine, through llama-server (RemoteEngine: exact
forced-token log-probabilities from /completion) and through llama-cpp-python's own server (ChatRemoteEngine, the path
for servers without llama-server's endpoints: /v1/completions logprobs, one request per label token). Both servers
are started here on 127.0.0.1 with the same model file. Reported: agreement of each remote path with the local labels,
accuracy against the gold labels, seconds per path and the load average.
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

from chatllm.models.registry import parse_ref  # noqa: E402
from chatllm.models.serve import PYTHON_SERVER, plan_server  # noqa: E402
from chatllm.tasks.classify.classifier import Classifier, sentiment_labels  # noqa: E402
from tests.llama_server import ALIAS, LlamaServer, free_port, repack_safe, server_binary  # noqa: E402

DEFAULT_MODEL = str(Path.home() / ".cache/chatllm-test/SmolLM2-135M-Instruct.Q4_1.gguf")
SST2 = Path("/work/shared/data/sentiment/sst2_tune.tsv")


def sst2(n: int) -> tuple[list[str], list[str]]:
    """The first n texts of the SST-2 tuning file and their gold labels (positive/negative)."""
    with open(SST2, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))[1:n + 1]
    return [r[0].strip() for r in rows], ["positive" if r[1].strip() == "1" else "negative" for r in rows]


def labels_of(engine, texts: list[str]) -> tuple[list[str], float]:
    """The sentiment label of each text on this engine, and the seconds it took (prefix and calibration included)."""
    start = time.perf_counter()
    classifier = Classifier(engine, sentiment_labels())
    out = [classifier.classify(t).label or "" for t in texts]
    return out, time.perf_counter() - start


def python_server(model: str, threads: int) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's server on a free port; the process and its /v1 url once /v1/models answers."""
    port = free_port()
    plan = plan_server(PYTHON_SERVER, [sys.executable, "-m", "llama_cpp.server"], Path(model), ALIAS, host="127.0.0.1",
                       port=port, parallel=1, ctx=2048, threads=threads, repack=repack_safe())  # as `chatllm serve` runs it
    log = open(tempfile.mkstemp(prefix="llama-cpp-python-server-", suffix=".log")[1], "wb")
    proc = subprocess.Popen(plan.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-cpp-python's server exited with {proc.returncode} (log: {log.name})")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama-cpp-python's server did not answer within 120 s")


def main() -> None:
    """Classify the lines on the three paths and print the agreement figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=1, help="threads of each server and of the local engine")
    ap.add_argument("--json")
    args = ap.parse_args()
    texts, gold = sst2(args.lines)
    report: dict = {"lines": len(texts), "threads": args.threads, "load_before": os.getloadavg()}
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.engines.remote.chat_api_engine import ChatRemoteEngine
    from chatllm.engines.remote.llama_server_engine import RemoteEngine

    with LlamaCppEngine(Path(args.model), n_ctx=2048, n_threads=args.threads) as local:
        base, seconds = labels_of(local, texts)
    report["local"] = {"seconds": round(seconds, 1)}
    os.environ["LLAMA_ARG_THREADS"] = str(args.threads)
    srv = LlamaServer(server_binary(), Path(args.model), slots=1, ctx=2048).start()
    try:
        engine = RemoteEngine.connect(parse_ref(f"openai:{srv.url}#{ALIAS}", {}))
        report["llama-server"] = dict(zip(("labels", "seconds"), labels_of(engine, texts)))
        engine.close()
    finally:
        srv.stop()
    proc, url = python_server(args.model, args.threads)
    try:
        engine = ChatRemoteEngine.connect(parse_ref(f"openai:{url}#{ALIAS}", {}))
        report["chat path"] = dict(zip(("labels", "seconds"), labels_of(engine, texts)))
        engine.close()
    finally:
        proc.terminate()
        proc.wait(20)
    report["load_after"] = os.getloadavg()
    report["local"]["accuracy"] = round(sum(a == g for a, g in zip(base, gold)) / len(texts), 4)
    for path in ("llama-server", "chat path"):
        labels = report[path].pop("labels")
        report[path] = {"seconds": round(report[path]["seconds"], 1),
                        "agreement_with_local": round(sum(a == b for a, b in zip(labels, base)) / len(texts), 4),
                        "accuracy": round(sum(a == g for a, g in zip(labels, gold)) / len(texts), 4)}
        print(f"{path}: agreement with local {report[path]['agreement_with_local']:.1%}, accuracy "
              f"{report[path]['accuracy']:.1%} (local {report['local']['accuracy']:.1%}), {report[path]['seconds']} s", flush=True)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
