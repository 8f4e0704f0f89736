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
4. Batch: time to the first row of `chatllm ask --lines` with a long shared system prompt, its prefix from the
   cache (warm: a second batch) vs --no-cache (cold), interleaved pairs.
5. One-shot ask: `chatllm ask` wall vs `llama-completion` (bench/run_all.py's figure 3: same prompt, context size,
   threads and flash attention, llama-completion --ignore-eos), and where chatllm's wall time goes: interpreter
   start, imports, model load, first token, the rest of the generation, and what is left (the CLI, exit).

    python bench/kv_resume.py --skip resume,oneshot,restore      # only the batch and the ask figures
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

from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine  # noqa: E402
from chatllm.engines.warm_start import with_warm_start  # noqa: E402
from chatllm.settings import Sampling, load_settings  # noqa: E402
from chatllm.storage.conversations import Exchange  # noqa: E402
from chatllm.storage.kv_cache import KVCache  # noqa: E402
from chatllm.tasks.chat.conversation import Conversation  # noqa: E402

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
            conv = Conversation(with_warm_start(engine, kv) if mode == "warm" else engine, SAMPLING)
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


BATCH_SYSTEM = ("You are a careful translator working for a museum. Translate each phrase the visitor gives you into "
                "French. Keep the punctuation, keep proper names as they are, use the formal register, and answer with "
                "the translation only: no quotes, no notes, no explanation. ")


def first_row(env: dict, *extra: str) -> float:
    """Seconds from spawning an `ask --lines` batch to its first output row (the process is then left to finish)."""
    cmd = [sys.executable, "-m", "chatllm", "ask", "--lines", "-t", "0", "-n", "8", "--system", BATCH_SYSTEM * 6, *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("Good morning.\nWhere is the exit?\nThank you very much.\n")
    proc.stdin.close()
    proc.stdout.readline()
    seconds = time.perf_counter() - start
    proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"chatllm ask --lines failed: {' '.join(cmd[:6])} ...")
    return seconds


def batch_first_row(args, home: Path, rows: list) -> None:
    """The second batch's time to its first row: shared prefix from the KV cache vs evaluated (--no-cache)."""
    env = dict(os.environ, CHATLLM_HOME=str(home), CHATLLM_MODEL=str(SMOLLM), HF_HUB_OFFLINE="1")
    first_row(env)  # the first batch saves the prefix
    engine = LlamaCppEngine(SMOLLM, n_ctx=2048)
    n_prefix = len(engine.prompt_tokens(engine.render_chat([{"role": "system", "content": BATCH_SYSTEM * 6}])))
    engine.close()
    warm, cold = [], []
    for i in range(args.runs):
        for mode in (("warm", "cold") if i % 2 == 0 else ("cold", "warm")):
            (warm if mode == "warm" else cold).append(first_row(env) if mode == "warm" else first_row(env, "--no-cache"))
    ratio = statistics.median(warm) / statistics.median(cold)
    print(f"batch, SmolLM2, ~{n_prefix}-token shared system prompt: first row warm {statistics.median(warm):.2f} s, "
          f"cold {statistics.median(cold):.2f} s (median of {args.runs}; warm / cold = {ratio:.2f}; load {_load()})")
    rows.append(figures.row("kv4", f"`ask --lines` time to first row, ~{n_prefix}-token shared prefix, warm KV cache",
                            statistics.median(warm), "s", reference=statistics.median(cold), reference_label="--no-cache",
                            note=f"load {_load()}"))


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def ask_wall(args, home: Path, rows: list) -> None:
    """`chatllm ask` vs llama-completion (run_all.py's figure 3), then the split of chatllm's wall time."""
    import perf_engine
    import run_all

    from chatllm.engines.llamacpp.flash_attn import choose_flash_attn, one_shot_depth
    from chatllm.engines.llamacpp.threads import default_threads

    bins = run_all.llamacpp_ref.ensure_built()
    threads = args.threads or default_threads()
    # the flash attention `chatllm ask` chooses for this prompt and -n: the reference runs the same kernels
    fa = choose_flash_attn(None, 0, one_shot_depth((run_all.ASK_PROMPT,), run_all.ASK_TOKENS))
    engine, kv_bytes = perf_engine.load_measuring_kv(SMOLLM, n_threads=threads, flash_attn=fa, repack=run_all.repacking())
    info = {"threads": threads, "n_ctx": engine.n_ctx, "kv_bytes": kv_bytes, "flash_attn": fa,
            "swa": any("iswa" in line for line in perf_engine._KV_LINES),
            "rendered": engine.render_chat([{"role": "user", "content": run_all.ASK_PROMPT}])}
    engine.close()
    home.mkdir(parents=True, exist_ok=True)
    before = _load()
    wall, _rss = run_all.oneshot_figures(bins, SMOLLM, "SmolLM2", info, args.runs, home)
    env = run_all.hermetic_env(home, SMOLLM)
    # load, first token and the rest of the generation as the CLI's engine runs them, timed inside one process
    stages = ("import sys, time; from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine; "
              "from chatllm.engines.contract import complete; "
              "from chatllm.settings import Sampling; "
              "t = time.perf_counter(); e = LlamaCppEngine(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]), "
              "flash_attn=sys.argv[4] == 'True'); load = time.perf_counter() - t; "
              "complete(e, e.render_chat([{'role': 'user', 'content': sys.argv[5]}]), Sampling(max_tokens=int(sys.argv[6]), "
              "temperature=0)); s = e.last_stats; print(s.completion_tokens, s.finish_reason, load, s.first_token_seconds, "
              "s.seconds - s.first_token_seconds)")
    ask = [*run_all.chatllm_cmd(), "ask", run_all.ASK_PROMPT, "-n", str(run_all.ASK_TOKENS), "-t", "0", "--threads", str(threads)]
    parts: dict[str, list[float]] = {k: [] for k in ("wall", "interpreter", "imports", "load", "first token", "generation", "rest")}
    generated = set()
    for _ in range(args.runs):  # every part of one split is taken within seconds, so its rest is a difference of neighbours
        parts["wall"].append(run_all.checked(run_all.timed_run(ask, env), "chatllm ask").wall)
        parts["interpreter"].append(run_all.timed_run([sys.executable, "-c", "pass"], env).wall)
        parts["imports"].append(run_all.timed_run([sys.executable, "-c", "import chatllm.cli.app, chatllm.cli.ask, "
                                                   "chatllm.engines.loader, chatllm.engines.llamacpp.llamacpp_engine"], env).wall)
        run = run_all.checked(run_all.timed_run([sys.executable, "-c", stages, str(SMOLLM), str(info["n_ctx"]), str(threads),
                                                 str(fa), run_all.ASK_PROMPT, str(run_all.ASK_TOKENS)], env), "stages")
        words = run.out.split()[-5:]
        generated.add(f"{words[0]} tokens ({words[1]})")
        for key, value in zip(("load", "first token", "generation"), words[2:]):
            parts[key].append(float(value))
        parts["rest"].append(parts["wall"][-1] - parts["imports"][-1] - sum(parts[k][-1] for k in ("load", "first token",
                                                                                                  "generation")))
    # what the timed `chatllm ask` runs generated: the same greedy run on the same kernels, without --json's grammar
    wall.note = (f"chatllm generated {', '.join(sorted(generated))}; llama-completion --ignore-eos exactly "
                 f"{run_all.ASK_TOKENS}; both with n_ctx {info['n_ctx']}, {threads} thread(s), flash attention "
                 f"{'on' if fa else 'off'}")
    ratio = statistics.median(wall.ratios)
    print(f"ask, SmolLM2 ({threads} threads, flash attention {'on' if fa else 'off'}): chatllm {statistics.median(wall.ours):.3f} s "
          f"vs llama-completion {statistics.median(wall.ref):.3f} s, ratio {ratio:.2f} (range {min(wall.ratios):.2f}-"
          f"{max(wall.ratios):.2f}, {len(wall.ratios)} pairs; target <= 1.3: {'ok' if ratio <= 1.3 else 'MISSED'}; "
          f"load {before} -> {_load()}); {wall.note}")
    parts["imports"] = [i - p for i, p in zip(parts["imports"], parts["interpreter"])]
    med = {k: statistics.median(v) for k, v in parts.items()}
    print(f"  where chatllm's ask wall goes (medians of {args.runs} splits): " + ", ".join(
        f"{k} {med[k]:.3f} s" for k in ("wall", "interpreter", "imports", "load", "first token", "generation"))
        + f", the rest (Typer, settings, header check, exit) {med['rest']:.3f} s; load {_load()}")
    rows.append(figures.row("kv5", f"`chatllm ask` wall, {run_all.ASK_TOKENS} tokens", statistics.median(wall.ours), "s",
                            reference=statistics.median(wall.ref), reference_label="llama-completion --ignore-eos",
                            target="<= 1.3", met=ratio <= 1.3, note=wall.note))
    # llama.cpp's own default (-fa auto) turns flash attention on for the CPU: chatllm's choice against that
    before = _load()
    default, _rss = run_all.oneshot_figures(bins, SMOLLM, "SmolLM2", dict(info, flash_attn=True), args.runs, home)
    print(f"ask vs llama.cpp's default: chatllm (flash attention {'on' if fa else 'off'}) {statistics.median(default.ours):.3f} s "
          f"vs llama-completion -fa on {statistics.median(default.ref):.3f} s, ratio {statistics.median(default.ratios):.2f} "
          f"(range {min(default.ratios):.2f}-{max(default.ratios):.2f}, {len(default.ratios)} pairs; load {before} -> {_load()})")
    # and chatllm's own choice against the other one, same process otherwise, interleaved pairs
    forced = [*run_all.chatllm_cmd(), "--flash-attn", "off" if fa else "on", *ask[1:]]
    mine, other = [], []
    for i in range(args.runs):
        for which in (("mine", "other") if i % 2 == 0 else ("other", "mine")):
            run = run_all.checked(run_all.timed_run(ask if which == "mine" else forced, env), "chatllm ask")
            (mine if which == "mine" else other).append(run.wall)
    ratios = [m / o for m, o in zip(mine, other)]
    print(f"ask, flash attention {'on' if fa else 'off'} (auto) / {'off' if fa else 'on'} (forced): {statistics.median(mine):.3f} s"
          f" / {statistics.median(other):.3f} s, ratio {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}, "
          f"{len(ratios)} pairs; load {_load()})")


def main() -> None:
    """Run the three measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=1, help="cold resumes (each re-evaluates the whole history)")
    parser.add_argument("--restore-tokens", type=int, default=2000)
    parser.add_argument("--threads", type=int, help="for the ask figure; default: chatllm's own choice at start")
    parser.add_argument("--skip", default="", help="comma-separated: resume,oneshot,restore,batch,ask")
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
        if "batch" not in skip:
            batch_first_row(args, Path(tmp) / "batch", rows)
        if "ask" not in skip:
            ask_wall(args, Path(tmp) / "ask", rows)
    figures.write(args.figures, rows)


if __name__ == "__main__":
    main()
