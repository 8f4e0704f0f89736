"""The remote engine against a real llama-server (built from the vendored llama.cpp) serving the real SmolLM2.

Nothing is mocked at the HTTP layer: the engine contract in-process, the CLI as real subprocesses through a
models.toml entry and through `-m openai:URL#ID`, and the failures for real (a stopped server, a wrong key, a port
that never answers, an unknown model id).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from chatllm.engines.contract import Engine, complete, text_stream
from chatllm.engines.remote.llama_server_engine import RemoteEngine
from chatllm.errors import ChatllmError, ContextOverflowError
from chatllm.models.registry import ModelSpec, parse_ref
from chatllm.settings import Sampling
from tests.conftest import run_chatllm
from tests.llama_server import ALIAS, LlamaServer, server_binary
from tests.review_lines import review_lines

pytestmark = [pytest.mark.model, pytest.mark.slow]
GREEDY = Sampling(temperature=0, max_tokens=24)
SECRET = "s3cret-test-key-7f2b9c"
SHORT = ("The city council met on Tuesday to discuss the new budget. The mayor proposed raising taxes by two "
         "percent to pay for road repairs and a new library.\n\nAfter three hours of debate the council approved "
         "a smaller rise of one percent, for road repairs only.\n")


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    return server_binary()


@pytest.fixture(scope="session")
def server(llama_server_bin, smollm_path):
    """llama-server -m SmolLM2 -np 2 -c 4096 on a free port, for the whole session."""
    srv = LlamaServer(llama_server_bin, smollm_path).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def key_server(llama_server_bin, smollm_path):
    """The same with --api-key."""
    srv = LlamaServer(llama_server_bin, smollm_path, api_key=SECRET, slots=1, ctx=2048).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def engine(server):
    eng = RemoteEngine.connect(parse_ref(f"openai:{server.url}#{ALIAS}", {}))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def local(smollm_path):
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    eng = LlamaCppEngine(smollm_path, n_ctx=2048, repack=False)
    yield eng
    eng.close()


def entry(name: str, url: str, **keys) -> str:
    """A models.toml table for a remote model."""
    lines = [f"[{name}]", f'url = "{url}"'] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def remote_env(cli_env, server) -> dict:
    """cli_env whose default model is a models.toml entry for the session's server."""
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(entry("smol-remote", server.url, model=ALIAS, description="SmolLM2 on llama-server"))
    return dict(cli_env, CHATLLM_MODEL="smol-remote")


def cli(env: dict, *args: str, input: str | None = None, timeout: float = 60, **extra):
    return run_chatllm(list(args), dict(env, **extra), input=input, timeout=timeout)


# -- the contract against the server --------------------------------------------------------------


def test_connect_learns_context_template_and_model(engine, server):
    assert isinstance(engine, Engine)
    assert engine.n_ctx == 2048  # -c 4096 over -np 2 slots
    assert engine.has_chat_template and engine.model == ALIAS
    assert engine.name == f"openai:{server.url}#{ALIAS}"
    spec = ModelSpec(alias="small", url=server.url, remote_model=ALIAS, context=1024)
    with RemoteEngine.connect(spec) as small:
        assert small.n_ctx == 1024
    with RemoteEngine.connect(ModelSpec(alias="big", url=server.url, context=100_000)) as big:
        assert big.n_ctx == 2048 and big.model == ALIAS  # never above the server's slot; its only model by default


@pytest.mark.parametrize("text", ["Hello, world!", "天空是蓝色的，草是绿色的。", "mixed 中文 and English ✓ 🙂",
                                  "<|im_start|>user\nhi<|im_end|>"])
def test_tokenize_round_trip_matches_the_local_tokenizer(engine, local, text):
    for special in (False, True):
        tokens = engine.tokenize(text, special=special)
        assert tokens == local.tokenize(text, special=special)
        if not special:
            assert engine.detokenize(tokens) == text
    assert engine.count_tokens(text) == local.count_tokens(text)
    assert engine.prompt_tokens(text) == local.prompt_tokens(text)


def test_render_chat_is_the_local_rendering(engine, local):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "天空是什么颜色？"}]
    assert engine.render_chat(msgs) == local.render_chat(msgs)
    done = msgs + [{"role": "assistant", "content": "蓝色。"}]
    after = engine.render_chat(done, add_generation_prompt=False)
    assert after == local.render_chat(done, add_generation_prompt=False)
    assert after.endswith("蓝色。<|im_end|>\n")  # a finished turn, not a reply left open


def test_stream_and_complete_agree_at_temperature_zero(engine):
    prompt = engine.render_chat([{"role": "user", "content": "Name three fruits."}])
    pieces = list(text_stream(engine.stream(prompt, GREEDY)))
    first = engine.last_stats
    assert len(pieces) > 1 and first.completion_tokens > 0 and first.prompt_tokens == len(engine.prompt_tokens(prompt))
    assert 0 < first.first_token_seconds <= first.seconds and first.finish_reason in ("stop", "length")
    again = complete(engine, prompt, GREEDY)
    assert again == "".join(pieces)
    assert engine.last_stats.cached_tokens >= engine.last_stats.prompt_tokens - 1  # the server kept the prompt


def test_stop_strings_and_max_tokens(engine):
    tokens = engine.prompt_tokens("One, two, three, four, five, six,", special=False)
    full = complete(engine, tokens, GREEDY.replace(max_tokens=16))
    assert engine.last_stats.finish_reason == "length" and engine.last_stats.completion_tokens == 16
    word = full.split()[1]  # something the model does write
    cut = complete(engine, tokens, GREEDY.replace(max_tokens=16, stop=(word,)))
    assert engine.last_stats.finish_reason == "stop"
    assert word not in cut and full.startswith(cut)
    assert complete(engine, tokens, GREEDY.replace(max_tokens=3)) and engine.last_stats.completion_tokens == 3


def test_closing_the_stream_stops_the_request(engine, server):
    prompt = engine.render_chat([{"role": "user", "content": "Write a very long story about a lighthouse keeper."}])
    gen = text_stream(engine.stream(prompt, Sampling(temperature=0, max_tokens=1500)))
    next(gen)
    next(gen)
    gen.close()
    assert engine.last_stats.finish_reason == "interrupted"
    deadline = time.monotonic() + 10
    while any(s.get("is_processing") for s in server.get("/slots")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(s.get("is_processing") for s in server.get("/slots"))


def test_score_continuations_prefers_blue_and_matches_local(engine, local):
    prefix = engine.prompt_tokens("The colour of the clear daytime sky is", special=False)
    conts = [engine.tokenize(" blue"), engine.tokenize(" green"), engine.tokenize(" a pale shade of blue")]
    remote = engine.score_continuations(prefix, conts)
    assert remote[0] > remote[1]
    here = local.score_continuations(prefix, conts)
    assert all(abs(r - q) < 0.01 for r, q in zip(remote, here)), (remote, here)
    assert engine.score_continuations(prefix, conts) == remote  # the prefix now cached: the same numbers


def test_the_family_is_read_from_the_served_file(server, local, gemma_path, tmp_path):
    # llama-server reports no GGUF metadata but names its file: read here, it gives the local engine's family, so
    # sentiment and classify pick the same preset (issue 32: Qwen got a chat prompt locally and a plain one remotely).
    spec = parse_ref(f"openai:{server.url}#{ALIAS}", {})
    with RemoteEngine.connect(spec) as eng:
        assert eng.family == local.family == "smollm"
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    # another model's file at that path (another host's path), no file, something that is not a file: unknown
    for path in (gemma_path, tmp_path / "missing.gguf", fifo, tmp_path):
        with RemoteEngine.connect(spec) as eng:
            eng.props = {**eng.props, "model_path": str(path)}
            assert eng.family is None, path


def test_context_overflow_is_refused_before_sending(engine):
    with pytest.raises(ContextOverflowError):
        list(engine.stream([1] * engine.n_ctx, GREEDY))
    with pytest.raises(ContextOverflowError):
        engine.score_continuations([1] * (engine.n_ctx - 1), [[2, 3]])


# -- the CLI through the remote engine ------------------------------------------------------------


def test_models_lists_the_remote_entry_and_show_asks_the_server(remote_env, server):
    r = cli(remote_env, "models")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("smol-remote"))
    assert "remote" in row and server.url in row
    rows = json.loads(cli(remote_env, "models", "--json").stdout)
    [mine] = [x for x in rows if x["name"] == "smol-remote"]
    assert mine["remote"] is True and mine["downloaded"] is False and mine["model"] == ALIAS
    data = json.loads(cli(remote_env, "show", "smol-remote", "--json").stdout)
    assert data["context_per_slot"] == 2048 and data["chat_template"] is True and data["server_model"] == ALIAS
    assert data["context_length"] == 8192 and ALIAS in data["served_models"]
    r = cli(remote_env, "show", f"openai:{server.url}#{ALIAS}")
    assert r.returncode == 0 and "context_per_slot  2048" in r.stdout, r.stderr


def test_ask_generate_and_chat(remote_env, cli_env, server):
    # Without the repeat penalty (llama-server applies it to the prompt's last tokens too) greedy replies follow the
    # local ones, until a near tie that batched and single-token evaluation round differently.
    (Path(cli_env["CHATLLM_HOME"]) / "config.toml").write_text("[sampling]\nrepeat_penalty = 1.0\n")
    question = ["ask", "-t", "0", "-n", "24", "What colour is the sky on a clear day?"]
    r = cli(remote_env, *question)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stderr == ""
    local = cli(cli_env, *question).stdout
    assert "blue" in r.stdout and r.stdout[:40] == local[:40], (r.stdout, local)
    r = cli(remote_env, "ask", "--json", "--schema", "object", "-t", "0", "-n", "48", "-m", f"openai:{server.url}#{ALIAS}",
            "Say hi.")
    data = json.loads(r.stdout)  # --schema object: the answer is a JSON object, decoded under the server's grammar
    assert r.returncode == 0 and data["finish_reason"] == "stop" and isinstance(data["data"], dict), (data, r.stderr)
    r = cli(remote_env, "generate", "-t", "0", "-n", "12", "Once upon a time")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    r = cli(remote_env, "chat", "-t", "0", "-n", "24", "-s", "Answer briefly.",
            input="What colour is the sky on a clear day?\nAnd the grass?\n/stats\n/exit\n")
    assert r.returncode == 0, r.stderr
    replies, _, stats = r.stdout.partition("model:")
    assert replies.strip() and "reused from the cache" in stats, r.stdout


def test_sentiment_classify_and_summarize(remote_env, server):
    r = cli(remote_env, "sentiment", "I loved this movie, it was wonderful and moving.")
    assert r.returncode == 0, r.stderr
    label, prob = r.stdout.strip().split("\t")
    assert label == "positive" and 0.5 < float(prob) <= 1
    r = cli(remote_env, "classify", "--json", "-m", f"openai:{server.url}#{ALIAS}", "--labels", "sports,cooking",
            "Stir the onions into the pan and let them brown slowly.")
    data = json.loads(r.stdout)
    assert data["label"] == "cooking" and abs(sum(data["scores"].values()) - 1) < 1e-3
    r = cli(remote_env, "summarize", "--temperature", "0", "--max-tokens", "40", input=SHORT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stderr == ""


def test_sentiment_labels_agree_with_the_local_engine(remote_env, cli_env, server):
    text = "".join(line + "\n" for line in review_lines(50))
    # generous: 50 lines take 20 s on an idle machine, over 120 s on a shared and busy one
    local = cli(cli_env, "sentiment", "--lines", "--json", input=text, timeout=400)
    remote = cli(remote_env, "sentiment", "--lines", "--json", input=text, timeout=400)
    assert local.returncode == 0 and remote.returncode == 0, (local.stderr, remote.stderr)
    a = [json.loads(line)["label"] for line in local.stdout.splitlines()]
    b = [json.loads(line)["label"] for line in remote.stdout.splitlines()]
    assert len(a) == len(b) == 50
    agree = sum(x == y for x, y in zip(a, b)) / 50
    print(f"local/remote sentiment label agreement: {agree:.0%}")
    assert agree >= 0.9


# -- failures, for real ---------------------------------------------------------------------------


def assert_one_error(r, *phrases: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[-1].startswith("hint: "), r.stderr
    for phrase in phrases:
        assert phrase in r.stderr, r.stderr


def test_a_stopped_server_is_connection_refused(cli_env, llama_server_bin, smollm_path):
    srv = LlamaServer(llama_server_bin, smollm_path, slots=1, ctx=512).start()
    srv.stop()
    r = cli(cli_env, "ask", "-m", f"openai:{srv.url}#{ALIAS}", "hello")
    assert_one_error(r, "connection refused", "is the server running?")


def test_wrong_or_missing_key_names_the_variable_and_never_shows_the_key(cli_env, key_server):
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(entry("keyed", key_server.url, model=ALIAS, api_key_env="SMOL_KEY"))
    wrong = "wrong-" + SECRET[::-1]
    r = cli(cli_env, "ask", "-m", "keyed", "hello", SMOL_KEY=wrong)
    assert_one_error(r, "refused the API key in $SMOL_KEY (HTTP 401)", "set SMOL_KEY to the key")
    assert wrong not in r.stdout + r.stderr
    r = cli(cli_env, "--debug", "ask", "-m", "keyed", "hello", SMOL_KEY=wrong)
    assert r.returncode == 1 and "Traceback" in r.stderr and "error: " in r.stderr, r.stderr
    assert wrong not in r.stdout + r.stderr
    env = {k: v for k, v in cli_env.items() if k != "SMOL_KEY"}
    assert_one_error(cli(env, "ask", "-m", "keyed", "hello"), "$SMOL_KEY is not set")
    r = cli(cli_env, "ask", "-m", "keyed", "-t", "0", "-n", "4", "hello", SMOL_KEY=SECRET)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert SECRET not in r.stdout + r.stderr
    r = cli(cli_env, "ask", "-m", f"openai:{key_server.url}#{ALIAS}", "-n", "4", "hello", CHATLLM_API_KEY=SECRET)
    assert r.returncode == 0, r.stderr


def test_a_port_that_never_answers_times_out(cli_env):
    held: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def accept_and_hold():
            try:
                while True:
                    held.append(listener.accept()[0])
            except OSError:
                pass

        threading.Thread(target=accept_and_hold, daemon=True).start()
        home = Path(cli_env["CHATLLM_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "models.toml").write_text(entry("silent", f"http://127.0.0.1:{port}/v1", model="x", timeout=2))
        start = time.monotonic()
        r = cli(cli_env, "ask", "-m", "silent", "hello", timeout=30)
        took = time.monotonic() - start
    for conn in held:
        conn.close()
    assert_one_error(r, "sent nothing for 2 s", "timeout")
    assert took < 15


def test_an_unknown_model_id_lists_what_the_server_serves(cli_env, server):
    r = cli(cli_env, "ask", "-m", f"openai:{server.url}#no-such-model", "hello")
    assert_one_error(r, "does not serve the model 'no-such-model'", f"it serves: {ALIAS}")


def test_bad_references_and_entries_are_usage_errors(cli_env):
    r = cli(cli_env, "ask", "-m", "openai:ftp://host/v1#x", "hello")
    assert r.returncode == 2 and "not an http:// or https:// address" in r.stderr, r.stderr
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(entry("r", "http://127.0.0.1:9/v1", model="x", repo="a/b"))
    r = cli(cli_env, "models")
    assert r.returncode == 1 and "unknown key 'repo' for a remote model" in r.stderr, r.stderr
    (home / "models.toml").write_text(entry("r", "http://127.0.0.1:9/v1", api_key_env="sk-abc def"))
    r = cli(cli_env, "models")
    assert r.returncode == 1 and "must name an environment variable" in r.stderr and "sk-abc" not in r.stderr, r.stderr


def test_engine_errors_are_chatllm_errors(server):
    with pytest.raises(ChatllmError, match="does not serve"):
        RemoteEngine.connect(ModelSpec(url=server.url, remote_model="nope"))
    with pytest.raises(ChatllmError, match="chat-format"):
        RemoteEngine.connect(ModelSpec(url=server.url), chat_format="chatml")


@pytest.fixture
def tls_proxy(tmp_path, server):
    """https://127.0.0.1:PORT/v1 in front of the session's server, with a self-signed certificate."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def serve():
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                conn = ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()  # the client refused the certificate
                continue
            upstream = socket.create_connection(("127.0.0.1", server.port))
            threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}/v1"
    listener.close()


def test_tls_is_verified_unless_the_entry_says_not(cli_env, tls_proxy):
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(entry("tls", tls_proxy, model=ALIAS) + entry("trusted", tls_proxy, tls_verify=False))
    assert_one_error(cli(cli_env, "ask", "-m", "tls", "hello"), "TLS error talking to tls", "certificate verify failed",
                     "tls_verify = false")
    r = cli(cli_env, "generate", "-m", "trusted", "-t", "0", "-n", "4", "Once upon a time")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_transport_failures_map_to_one_line_errors():
    import httpx

    from chatllm.engines.remote.http_client import Server

    srv = Server("http://gpu-box:8080/v1", name="box", key_env="BOX_KEY")
    try:
        dns = srv.transport_error(httpx.ConnectError("[Errno -2] Name or service not known"))
        assert dns.message == "cannot resolve the host 'gpu-box' of box (http://gpu-box:8080/v1)"
        cert = srv.transport_error(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))
        assert "certificate verify failed" in cert.message and "tls_verify = false" in cert.hint
        cut = srv.transport_error(httpx.RemoteProtocolError("peer closed connection"), streaming=True)
        assert "closed the connection before the reply was complete" in cut.message
    finally:
        srv.close()


def test_server_side_refusals_keep_the_servers_message(engine):
    with pytest.raises(ContextOverflowError, match="exceed the 2048-token context window"):
        engine.server.post("/completion", {"prompt": [1] * 3000, "n_predict": 1})
    with pytest.raises(ChatllmError, match="refused the request: .*prompt"):
        engine.server.post("/completion", {"n_predict": 1})


class Scripted:
    """A real HTTP server on 127.0.0.1 that answers from a script: (status, headers, body) per request, in order,
    or per path from `paths`."""

    def __init__(self, replies: list[tuple[int, dict, bytes]], paths: dict[str, bytes] | None = None):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.replies, self.seen, self.paths = list(replies), 0, paths or {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path in outer.paths:
                    status, headers, body = 200, {"Content-Type": "application/json"}, outer.paths[self.path]
                else:
                    status, headers, body = outer.replies[min(outer.seen, len(outer.replies) - 1)]
                    outer.seen += 1
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_busy_answers_are_retried_honouring_retry_after():
    from chatllm.engines.remote.http_client import Server

    busy = (503, {"Retry-After": "1"}, b'{"error": {"code": 503, "message": "Loading model"}}')
    ok = (200, {"Content-Type": "application/json"}, b'{"data": [{"id": "m"}]}')
    script = Scripted([busy, (429, {"Retry-After": "0"}, b""), ok])
    srv = Server(script.url, name="s")
    try:
        start = time.monotonic()
        assert srv.model_ids() == ["m"] and script.seen == 3
        assert time.monotonic() - start >= 1.0
        script.replies, script.seen = [(503, {"Retry-After": "0"}, b'{"error": {"message": "Loading model"}}')], 0
        with pytest.raises(ChatllmError, match=r"is busy \(HTTP 503\) after 4 tries: Loading model"):
            srv.model_ids()
        assert script.seen == 4
    finally:
        srv.close()
        script.close()


@pytest.mark.parametrize("body, phrase", [
    (b'data: {"choices": [{"text": "Hi"}]}\n\ndata: {"choices": [{"te\n\n', "malformed JSON in its stream"),
    (b'data: {"choices": [{"text": "Hi", "finish_reason": null}]}\n\n', "ended its stream before the reply was complete"),
])
def test_a_broken_stream_is_one_error(body, phrase):
    probes = {"/props": b'{"default_generation_settings": {"n_ctx": 512}}', "/v1/models": b'{"data": [{"id": "m"}]}',
              "/tokenize": b'{"tokens": [7]}'}
    script = Scripted([(200, {"Content-Type": "text/event-stream"}, body)], paths=probes)
    try:
        with RemoteEngine.connect(ModelSpec(url=script.url)) as eng:
            assert eng.n_ctx == 512
            with pytest.raises(ChatllmError, match=phrase):
                complete(eng, [1, 2, 3], GREEDY)
    finally:
        script.close()


def test_a_schema_reaches_llama_server_and_its_answer_validates(engine):
    from chatllm.tasks.ask import oneshot
    from chatllm.tasks.ask.structured_output import json_spec

    spec = json_spec("name, age int, 城市")
    for seed in range(2):
        answer = oneshot.ask(engine, "Invent a person.", Sampling(max_tokens=120, temperature=1.0, seed=seed), spec=spec)
        assert set(answer.data) == {"name", "age", "城市"} and isinstance(answer.data["age"], int)
