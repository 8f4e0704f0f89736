"""The KV cache on disk: resuming a long chat, a repeated one-shot, and state load vs re-evaluation.

    python bench/kv_resume.py [--tokens 6000] [--runs 3] [--restore-tokens 2000]

1. Resume: a saved SmolLM2 conversation of about --tokens tokens (built in the store, not generated), continued as
   `chat --continue` does it: a fresh engine, the history restored from the KV cache (warm) or evaluated (cold),
   then one message; time to first token from sending it, the restore itself timed apart. Against it, the turn-2
   time to first token of a fresh chat (bench/chat_ttft.py's conversation). Target: warm <= 2 x turn 2.
2. One-shot: wall time of a second `chatllm sentiment TEXT` process (its prefix and calibration come from the cache)
   vs `chatllm generate -n 1 TEXT` (load + one token), interleaved pairs. Target <= 1.3 x.
3. Restore speed, both test models: loading --restore-tokens tokens of state from disk vs evaluating them, and
   bytes on disk per token.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import figures  # noqa: E402
from chat_ttft import run_once  # noqa: E402

from chatllm.runtime.kv_cache import KVCache  # noqa: E402
from chatllm.runtime.llamacpp import LlamaCppEngine  # noqa: E402
from chatllm.settings import Sampling, load_settings  # noqa: E402
from chatllm.store import Exchange  # noqa: E402
from chatllm.tasks.chat import Conversation  # noqa: E402

MODELS = Path(os.environ.get("CHATLLM_TEST_MODELS", Path.home() / ".cache" / "chatllm-test"))
SMOLLM = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = MODELS / "gemma-3-270m-q4_k_m.gguf"
SAMPLING = Sampling(temperature=0, max_tokens=16)
SENTENCE = "The river bends past the old mill, where the miller keeps a ledger of every sack of grain. "


def long_history(engine: LlamaCppEngine, tokens: int) -> list[Exchange]:
    """Exchanges whose rendering takes about `tokens` tokens."""
    exchanges: list[Exchange] = []
    while True:
        exchanges.append(Exchange(user=f"Tell me more, part {len(exchanges) + 1}.", assistant=SENTENCE * 8))
        rendered = engine.render_chat(_msgs(exchanges), False)
        if len(engine.prompt_tokens(rendered)) >= tokens:
            return exchanges


def _msgs(exchanges: list[Exchange]) -> list[dict]:
    return [m for ex in exchanges for m in ({"role": "user", "content": ex.user}, {"role": "assistant", "content": ex.assistant})]


def first_token(conv: Conversation, text: str) -> float:
    """Seconds from sending text to the first reply piece."""
    start = time.perf_counter()
    with conv.turn(text) as t:
        for _ in t:
            return time.perf_counter() - start
    return float("nan")


def resume(args, kv: KVCache, rows: list) -> None:
    """Cold vs warm `chat --continue` on a long conversation, and turn 2 of a fresh chat."""
    engine = LlamaCppEngine(SMOLLM)
    history = long_history(engine, args.tokens)
    n_history = len(engine.prompt_tokens(engine.render_chat(_msgs(history), False)))
    engine.close()
    message = "Now sum it all up in one sentence."
    cold, warm, restore, turn2 = [], [], [], []
    for run in range(args.runs):
        for mode in (("cold", "warm") if run < args.cold_runs else ("warm",)):
            engine = LlamaCppEngine(SMOLLM)
            conv = Conversation(engine, SAMPLING, kv_cache=kv if mode == "warm" else None)
            conv.adopt(None, history)
            if mode == "warm":
                start = time.perf_counter()
                restored = conv.warm_up()
                restore.append(time.perf_counter() - start)
                assert restored, "no state to restore: the cold run saves one"
                warm.append(first_token(conv, message))
            else:
                cold.append(first_token(conv, message))
                # What `chat` leaves behind after a session: the state of the history (its last reply included).
                engine.score_continuations(engine.prompt_tokens(engine.render_chat(_msgs(history), False)), [])
                kv.save(engine, slot="bench")
            engine.close()
        engine = LlamaCppEngine(SMOLLM)
        turn2.append(run_once(engine, SAMPLING, 2)[2][0])
        engine.close()
    t2 = min(turn2)
    print(f"resume of a {n_history}-token conversation ({len(history)} exchanges), SmolLM2:")
    print(f"  cold: first token {min(cold):.2f} s (best of {len(cold)})")
    print(f"  warm: first token {min(warm):.3f} s, after a restore of {min(restore):.3f} s (best of {len(warm)}; "
          f"median {statistics.median(warm):.3f} + {statistics.median(restore):.3f} s)")
    print(f"  fresh chat turn 2: first token {t2:.3f} s (best of {len(turn2)})")
    ratio = min(warm) / t2
    print(f"  warm / turn 2 = {ratio:.2f} (target <= 2: {'ok' if ratio <= 2 else 'MISSED'}); "
          f"warm incl. restore / turn 2 = {(min(warm) + min(restore)) / t2:.2f}; cold / warm = {min(cold) / min(warm):.0f}x")
    rows.append(figures.row("kv1", f"chat --continue first token, {n_history}-token history, warm KV cache", min(warm), "s",
                            reference=t2, reference_label="turn 2 of a fresh chat", target="<= 2", met=ratio <= 2,
                            note=f"restore {min(restore):.3f} s before it; cold {min(cold):.1f} s"))


def cli(args: list[str], env: dict) -> float:
    """Wall seconds of one chatllm process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "chatllm", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def oneshot(args, home: Path, rows: list) -> None:
    """A second `chatllm sentiment` vs `chatllm generate -n 1`, interleaved."""
    env = dict(os.environ, CHATLLM_HOME=str(home), CHATLLM_MODEL=str(SMOLLM), HF_HUB_OFFLINE="1")
    text = "The service was slow but the food was worth the wait."
    cli(["sentiment", text], env)  # the first call fills the cache
    sent, gen, cold = [], [], []
    for _ in range(args.runs):
        sent.append(cli(["sentiment", text], env))
        gen.append(cli(["generate", "-n", "1", "-t", "0", text], env))
        cold.append(cli(["sentiment", "--no-cache", text], env))
    ratio = min(sent) / min(gen)
    print(f"one-shot, SmolLM2: sentiment (warm) {min(sent):.2f} s, sentiment --no-cache {min(cold):.2f} s, "
          f"generate -n 1 {min(gen):.2f} s (best of {args.runs}); warm / generate = {ratio:.2f} "
          f"(target <= 1.3: {'ok' if ratio <= 1.3 else 'MISSED'}); --no-cache / generate = {min(cold) / min(gen):.2f}")
    rows.append(figures.row("kv2", "second `chatllm sentiment TEXT` wall time", min(sent), "s", reference=min(gen),
                            reference_label="generate -n 1", target="<= 1.3", met=ratio <= 1.3,
                            note=f"--no-cache {min(cold):.2f} s"))


def restore_speed(args, directory: Path, rows: list) -> None:
    """State load vs evaluation, and bytes per token, for each test model."""
    for path in (SMOLLM, GEMMA):
        engine = LlamaCppEngine(path, n_ctx=max(4096, args.restore_tokens + 64))
        tokens = engine.tokenize(SENTENCE * (args.restore_tokens // 10))[: args.restore_tokens]
        start = time.perf_counter()
        engine.score_continuations(tokens, [])
        evaluate = time.perf_counter() - start
        kv = KVCache(directory / path.stem, 10**11)
        start = time.perf_counter()
        kv.save(engine)
        save = time.perf_counter() - start
        size = kv.total_bytes()
        loads = []
        for _ in range(args.runs):
            engine._rewind(0)
            start = time.perf_counter()
            assert kv.restore(engine, tokens) is not None
            loads.append(time.perf_counter() - start)
        engine.close()
        print(f"restore, {path.stem}: {len(tokens)} tokens evaluate {evaluate:.2f} s, load {min(loads):.3f} s "
              f"({evaluate / min(loads):.0f}x faster), save {save:.3f} s, {size / len(tokens):,.0f} bytes/token on disk")
        rows.append(figures.row("kv3", f"KV state load, {len(tokens)} tokens, {path.stem}", min(loads), "s",
                                reference=evaluate, reference_label="evaluating them",
                                note=f"{size / len(tokens):,.0f} bytes/token; save {save:.3f} s"))


def main() -> None:
    """Run the three measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1, help="cold resumes (each re-evaluates the whole history)")
    parser.add_argument("--restore-tokens", type=int, default=2000)
    parser.add_argument("--skip", default="", help="comma-separated: resume,oneshot,restore")
    parser.add_argument("--figures", help="write the figure rows for bench/run_all.py to this JSON file")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    load_settings()  # fails early on a bad config
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp:
        if "restore" not in skip:
            restore_speed(args, Path(tmp) / "restore", rows)
        if "oneshot" not in skip:
            oneshot(args, Path(tmp) / "home", rows)
        if "resume" not in skip:
            resume(args, KVCache(Path(tmp) / "resume", 10**11), rows)
    figures.write(args.figures, rows)


if __name__ == "__main__":
    main()
