"""The remote engine against a misbehaving server (tests/fault_server.py, in front of a real llama-server).

Each fault is run through the real CLI (ask, piped chat, generate, sentiment, ask --schema): a clean `error:` and
`hint:` (or, for an endless stream, the answer --max-tokens allows), exit code 1, no traceback, no API key anywhere
in the output (the server echoes it in its faulted answers), nothing on stdout beyond what the server really sent,
a bounded wall time and, for the 10 MB token, a bounded peak RSS. test_remote_engine.py has the faults already
covered there: a cut stream, malformed JSON mid-stream, 429/503 retried, a socket that never answers.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import pytest

from chatllm.engines.contract import text_stream
from chatllm.engines.remote.chat_api_engine import connect_remote
from chatllm.engines.remote.http_client import SPARE_EVENTS
from chatllm.engines.remote.llama_server_engine import RemoteEngine
from chatllm.errors import ChatllmError
from chatllm.models.registry import ModelSpec
from chatllm.settings import Sampling
from tests.fault_server import HUGE, FaultServer
from tests.llama_server import ALIAS, LlamaServer, server_binary
from tests.test_remote_engine import entry

pytestmark = [pytest.mark.model, pytest.mark.slow]
KEY = "fk-" + secrets.token_hex(16)  # in FAULT_KEY, a name errors.redact does not know: only the engine's own scrub hides it
FAST = 2  # the `timeout` of the entry the faults go through
PATIENT = 15  # the entry for answers the real llama-server behind the proxy computes, on a shared, loaded machine
WALL = FAST + 12  # what a faulted command may take at most: the timeout, the CLI's start and the model discovery
COMMANDS = {
    "ask": (["ask", "-n", "8", "Say hi."], ""),
    "chat": (["chat", "-n", "8"], "Say hi.\n"),
    "generate": (["generate", "-n", "8", "Once upon a time"], ""),
    "sentiment": (["sentiment", "I loved this film."], ""),
    "schema": (["ask", "-n", "8", "--schema", "name, age int", "Invent a person."], ""),
}


@pytest.fixture(scope="module")
def fault(smollm_path):
    """A FaultServer in front of llama-server -m SmolLM2 (one slot, 2048 tokens)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAMA_ARG_THREADS", "1")  # steadier than two spinning threads on a shared, loaded machine
        upstream = LlamaServer(server_binary(), smollm_path, slots=1, ctx=2048).start()
    srv = FaultServer(upstream.root, KEY).start()
    yield srv
    srv.stop()
    upstream.stop()


@pytest.fixture
def env(cli_env, fault) -> dict:
    """cli_env whose default model is the fault server's `faulty` entry (timeout FAST), with the key in FAULT_KEY."""
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(entry("faulty", fault.url, model=ALIAS, api_key_env="FAULT_KEY", timeout=FAST)
                                      + entry("patient", fault.url, model=ALIAS, api_key_env="FAULT_KEY", timeout=PATIENT)
                                      + entry("chatty", fault.url, model=ALIAS, api_key_env="FAULT_KEY", timeout=FAST, api="chat"))
    return dict(cli_env, CHATLLM_MODEL="faulty", FAULT_KEY=KEY)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float


# `python -m chatllm` that writes its peak RSS (VmHWM: this program's own, since its exec) to $PEAK_FILE at exit.
# Not ru_maxrss: Linux carries the forking parent's (here the test process, fault server and all) across exec.
PEAK_SHIM = """
import atexit, os, runpy, sys
def peak():
    with open("/proc/self/status") as status, open(os.environ["PEAK_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(peak)
sys.argv[0] = "chatllm"
runpy.run_module("chatllm", run_name="__main__", alter_sys=True)
"""


def run(env: dict, args: list[str], input: str = "", limit: float = 60) -> Run:
    """The CLI as a real process, with its wall time and its own peak RSS."""
    start = time.monotonic()
    peak = Path(env["CHATLLM_HOME"]) / "peak_rss_kb"
    peak.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", PEAK_SHIM, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(env, PEAK_FILE=str(peak)))
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, s=s: out.__setitem__(n, s.read()), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    assert proc.stdin is not None
    proc.stdin.write(input.encode())
    proc.stdin.close()
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"chatllm {' '.join(args)} still ran after {limit:.0f} s")
    seconds = time.monotonic() - start
    for t in readers:
        t.join(10)
    return Run(proc.returncode, out["out"].decode("utf-8", "replace"), out["err"].decode("utf-8", "replace"), seconds,
               int(peak.read_text()) / 1024 if peak.exists() else 0.0)


def command(env: dict, name: str, *extra: str, model: str | None = None) -> Run:
    args, stdin = COMMANDS[name]
    return run(env, [*extra, *args, *(["-m", model] if model else [])], input=stdin)


def assert_clean(r: Run, *phrases: str, stdout: str = "", within: float = WALL) -> None:
    """Exit 1, one error: and one hint: line naming the phrases, no traceback, no key, nothing made up on stdout."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, (r.returncode, r.stdout[:300], r.stderr)
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), r.stderr
    for phrase in phrases:
        assert phrase in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert_no_key(r)
    assert r.stdout.strip() == stdout, r.stdout[:300]
    assert r.seconds < within, r.seconds


def assert_no_key(r: Run) -> None:
    assert KEY not in r.stdout and KEY not in r.stderr
    assert KEY[3:] not in r.stdout + r.stderr  # nor the key without its prefix


def test_the_proxy_alone_answers(env, fault):
    fault.reset("proxy")
    r = run(env, ["ask", "-n", "2", "-m", "patient", "Hi."])
    assert r.returncode == 0 and r.stdout.strip() and r.stderr == "", r.stderr
    assert fault.counts["/v1/completions"] == 1 and fault.unauthorized == 0  # the key went with every request
    r = run(dict(env, FAULT_KEY="wrong-key"), ["ask", "hi"])
    assert_clean(r, "refused the API key in $FAULT_KEY (HTTP 401)")
    assert fault.unauthorized == 1


@pytest.mark.parametrize("mode, name, phrase, stdout", [
    ("malformed_sse", "ask", "sent a malformed event stream", ""),
    ("malformed_sse", "chat", "sent a malformed event stream", ""),
    ("malformed_sse_late", "ask", "sent malformed JSON in its stream", "Hello"),  # what came before the fault, no more
    ("truncated_json", "generate", "sent malformed JSON in its stream", ""),
    ("truncated_json", "sentiment", "sent a malformed reply (not JSON) to /completion", ""),
    ("html", "ask", "answered /v1/completions with an HTML page ('Sign in')", ""),
    ("html", "sentiment", "answered /completion with an HTML page ('Sign in')", ""),
    ("html", "schema", "answered /v1/completions with an HTML page", ""),
    ("endless", "sentiment", f"did not complete its reply within {FAST} s", ""),  # a JSON body without end
    ("drip", "ask", f"did not complete its reply within {FAST} s", ""),  # the status line itself trickles
    ("drip_body", "generate", f"sent no complete stream event for {FAST} s", ""),
    ("drip_body", "sentiment", f"did not complete its reply within {FAST} s", ""),
])
def test_a_fault_is_one_clean_error(env, fault, mode, name, phrase, stdout):
    fault.reset(mode)
    r = command(env, name)
    assert_clean(r, phrase, stdout=stdout)
    assert fault.generation_requests() == 1 and fault.unauthorized == 0  # nothing retried


def test_a_sign_in_page_everywhere_fails_at_connect(env, fault):
    fault.reset("html", everywhere=True)
    r = run(dict(env, CHATLLM_API_KEY=KEY), ["ask", "-m", f"openai:{fault.url}#{ALIAS}", "hi"])
    assert_clean(r, "answered /props with an HTML page ('Sign in')", "a proxy or sign-in page")
    assert fault.generation_requests() == 0


def test_debug_tracebacks_keep_the_key_out(env, fault):
    for mode in ("malformed_sse_late", "storm"):
        fault.reset(mode, retry_after="0")
        r = command(env, "ask", "--debug")
        assert r.returncode == 1 and "Traceback" in r.stderr and "\nerror: " in r.stderr, r.stderr
        assert_no_key(r)


def test_an_endless_stream_ends_at_max_tokens(env, fault):
    for name in ("ask", "generate", "chat"):
        fault.reset("endless")
        r = command(env, name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["la"] * 8 and r.stderr == "" and r.seconds < WALL, (r.stdout, r.stderr)
        assert fault.generation_requests() == 1
    fault.reset("endless")
    r = command(env, "schema")  # eight tokens of "la" are no JSON object: an error, not a made-up answer
    assert r.returncode == 1 and r.stdout == "" and "error: " in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert_no_key(r)


def test_an_endless_stream_is_hung_up_on(fault, monkeypatch):
    monkeypatch.setenv("FAULT_KEY", KEY)
    spec = ModelSpec(alias="faulty", url=fault.url, remote_model=ALIAS, api_key_env="FAULT_KEY", timeout=FAST)
    with RemoteEngine.connect(spec) as engine:
        for text in (" la", ""):  # text past max_tokens; events that never carry any text
            fault.reset("endless", endless_text=text)
            start = time.monotonic()
            if text:
                assert len(list(text_stream(engine.stream([1, 2, 3], Sampling(max_tokens=8))))) == 8
                assert engine.last_stats.finish_reason == "length"
            else:
                with pytest.raises(ChatllmError, match=f"streamed over {8 + SPARE_EVENTS} events"):
                    list(engine.stream([1, 2, 3], Sampling(max_tokens=8)))
            while not fault.disconnects and time.monotonic() - start < 5:
                time.sleep(0.05)
            assert fault.disconnects, "the connection stayed open"  # the engine is still open: the stream alone was closed
            assert fault.events_sent < 1000  # 5 s of streaming: it was not read on and on


def test_a_10_mb_token_is_refused_in_bounded_memory(env, fault):
    mb = HUGE / 2**20
    fault.reset("html")
    base = command(env, "ask")  # the same imports and discovery, and no token at all
    assert base.returncode == 1 and base.peak_rss_mb > 20, base
    fault.reset("huge_token")
    streamed = command(env, "ask")
    assert_clean(streamed, "sent a stream event over 1 MiB")
    assert streamed.peak_rss_mb < base.peak_rss_mb + 0.5 * mb, (streamed.peak_rss_mb, base.peak_rss_mb)  # not even read whole
    fault.reset("huge_token")  # in a /completion reply, within MAX_REPLY_BYTES: read, and the scores used as usual
    scored = command(env, "sentiment")
    label, prob = scored.stdout.split("\t")
    assert scored.returncode == 0 and label in ("positive", "negative") and scored.stderr == "", scored.stderr
    assert scored.peak_rss_mb < base.peak_rss_mb + 10 * mb, (scored.peak_rss_mb, base.peak_rss_mb)
    assert_no_key(scored)
    print(f"peak RSS: no token {base.peak_rss_mb:.0f} MB, a 10 MB stream token {streamed.peak_rss_mb:.0f} MB, "
          f"a 10 MB token in /completion replies {scored.peak_rss_mb:.0f} MB")


def test_a_429_storm_is_a_bounded_retry(env, fault):
    fault.reset("storm", retry_after="1")
    r = command(env, "ask")
    assert_clean(r, "is busy (HTTP 429) after 4 tries: rate limit exceeded for key ***")
    assert fault.generation_requests() == 4 and r.seconds >= 3  # three waits of Retry-After: 1
    fault.reset("storm", retry_after=None)  # no Retry-After: 0.5 + 1 + 2 s of backoff
    r = command(env, "sentiment")
    assert_clean(r, "is busy (HTTP 429) after 4 tries")
    assert fault.generation_requests() == 4 and r.seconds >= 3.5


@pytest.mark.parametrize("after", ["3600", formatdate(time.time() + 86400, usegmt=True)], ids=["seconds", "date"])
def test_a_huge_retry_after_is_refused_not_slept(env, fault, after):
    fault.reset("storm", retry_after=after)
    r = command(env, "generate")
    assert_clean(r, "is busy (HTTP 429) and asks to wait", "try again later", within=FAST + 10)
    assert fault.generation_requests() == 1


@pytest.mark.parametrize("mode, phrase", [
    ("malformed_sse", "sent a malformed event stream"),
    ("html", "answered /v1/chat/completions with an HTML page ('Sign in')"),
    ("huge_token", "sent a stream event over 1 MiB"),
    ("drip_body", f"sent no complete stream event for {FAST} s"),
    ("storm", "asks to wait 3600 s"),
])
def test_the_chat_completions_engine_gets_the_same_guards(env, fault, mode, phrase):
    fault.reset(mode, retry_after="3600")
    r = command(env, "ask", model="chatty")
    assert_clean(r, phrase)
    assert fault.counts["/v1/chat/completions"] == 1


def test_llama_servers_tokenize_is_not_taken_for_vllms(fault, monkeypatch):
    """Its /tokenize answers vLLM's body with no tokens: the chat engine must fall back to the estimate, not count 0."""
    fault.reset("proxy")
    monkeypatch.setenv("FAULT_KEY", KEY)
    spec = ModelSpec(alias="chatty", url=fault.url, remote_model=ALIAS, api_key_env="FAULT_KEY", api="chat")
    engine = connect_remote(spec)
    try:
        assert not engine.tokenizer.exact and engine.token_counts.startswith("estimated")
        assert len(engine.tokenize("I loved this film.")) >= 4
        assert engine.detokenize(engine.tokenize("I loved this film.")) == "I loved this film."
    finally:
        engine.close()


def test_a_server_that_sends_no_logprobs_refuses_labels_in_one_line(env, fault):
    fault.reset("no_logprobs")
    r = run(env, ["sentiment", "-m", "chatty", "I loved this film."])
    assert_clean(r, "sends no token log-probabilities, so chatllm cannot score labels", "returns logprobs on /v1/completions")
    assert fault.counts["/v1/completions"] == 2  # the probe for the endpoint, then the first label's: refused, not retried


def test_an_endless_chat_completions_stream_is_bounded(env, fault):
    fault.reset("endless")
    r = command(env, "ask", model="chatty")
    words = r.stdout.split()
    assert set(words) <= {"la"} and "Traceback" not in r.stderr and r.seconds < WALL, (r.stdout, r.stderr)
    assert_no_key(r)
    assert r.returncode == 0 and len(words) == 8 and r.stderr == "", r.stderr  # cut at --max-tokens, as on llama-server
    assert fault.counts["/v1/chat/completions"] == 1


def test_stream_lines_end_at_any_line_break_and_are_bounded():
    from chatllm.engines.remote.http_client import MAX_EVENT_BYTES, Server

    srv = Server("http://127.0.0.1:9/v1", name="x")
    try:
        chunks = [b"data: a\r", b"\ndata: b\rdata: c\n", b"\n", "data: \u00e9".encode()[:-1], b"\xa9"]  # CRLF and é split
        assert [line for line in srv._lines(chunks) if line] == ["data: a", "data: b", "data: c", "data: \u00e9"]
        with pytest.raises(ChatllmError, match="sent a stream event over 1 MiB"):
            list(srv._lines([b"x" * (MAX_EVENT_BYTES // 2 + 1), b"y" * (MAX_EVENT_BYTES // 2 + 1)]))
        with pytest.raises(ChatllmError, match="sent a stream event over 1 MiB"):
            list(srv._lines([b"data: ok\n" + b"z" * (MAX_EVENT_BYTES + 1) + b"\n"]))
    finally:
        srv.close()
