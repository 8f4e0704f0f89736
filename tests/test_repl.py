"""The REPL through prompt_toolkit's pipe input: keys, multi-line input, slash commands, Ctrl-C, piped mode."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chatllm.errors import UsageError
from chatllm.inputs import piped_lines
from chatllm.output import Output
from chatllm.repl.commands import COMMANDS, parse_set
from chatllm.repl.loop import Repl
from chatllm.repl.session import SlashCompleter, make_session
from chatllm.repl.views import LiveMarkdownView, markdown_tail
from chatllm.settings import Sampling, Settings
from chatllm.storage.conversations import Store
from chatllm.tasks.chat.conversation import Conversation
from tests.fakes import FakeEngine

SAMPLING = Sampling(max_tokens=16, temperature=0)


def settings_for(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, config_dir=tmp_path, hub_cache=tmp_path / "hub", hf_endpoint="http://127.0.0.1:9",
                    model="fake", sampling=SAMPLING)


class Harness:
    """A Repl on a fake engine with captured stdout/stderr and a real store."""

    def __init__(self, tmp_path, engine=None, loader=None, interactive=True):
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        self.out = Output(self.stdout, self.stderr, stdout_tty=False, stderr_tty=False, color=False)
        self.store = Store(tmp_path / "chat.db")
        self.engine = engine or FakeEngine()
        self.conv = Conversation(self.engine, SAMPLING, store=self.store, notice=self.out.status, open_engine=loader)
        self.settings = settings_for(tmp_path)
        self.history = tmp_path / "chat_history"
        self.tmp_path = tmp_path
        self.loader = loader
        self.interactive = interactive

    def run(self, keys: str) -> "Harness":
        with create_pipe_input() as pipe:
            session = make_session(self.history, input=pipe, output=DummyOutput(), color=False)
            self.repl = Repl(self.conv, self.out, session=session)
            pipe.send_text(keys)
            pipe.close()
            self.repl.run_interactive()
        return self

    def piped(self, text: str) -> "Harness":
        self.repl = Repl(self.conv, self.out, interactive=False)
        self.repl.run_piped(piped_lines(io.BytesIO(text.encode()), self.out.warn))
        return self

    @property
    def users(self):
        return [e.user for e in self.conv.exchanges]


def test_messages_stream_and_ctrl_d_exits(tmp_path):
    h = Harness(tmp_path).run("hello\rsecond one\r\x04")
    assert h.users == ["hello", "second one"]
    assert "reply to hello\n" in h.stdout.getvalue() and "reply to second one\n" in h.stdout.getvalue()
    assert "/help" in h.stderr.getvalue()  # the banner says how to get help


def test_ctrl_c_at_the_prompt_clears_the_line(tmp_path):
    h = Harness(tmp_path).run("typed by mistake\x03real question\r/exit\r")
    assert h.users == ["real question"]


def test_multi_line_input_alt_enter_backslash_and_triple_quotes(tmp_path):
    keys = 'one\x1b\rtwo\rthree\\\rfour\r"""\rfive\rsix\r"""\r\x04'
    h = Harness(tmp_path).run(keys)
    assert h.users == ["one\ntwo", "three\nfour", "five\nsix"]


def test_history_file_persists_across_sessions(tmp_path):
    Harness(tmp_path).run("remember me\r\x04")
    assert "remember me" in (tmp_path / "chat_history").read_text()
    h = Harness(tmp_path).run("\x1b[A\r\x04")  # up-arrow recalls the last session's message
    assert h.users == ["remember me"]


def test_ctrl_c_mid_reply_keeps_the_partial_reply_and_the_session_goes_on(tmp_path):
    engine = FakeEngine(replies=["w1 w2 w3 w4 w5 w6 w7 w8", "fine"])
    h = Harness(tmp_path, engine)

    def press_ctrl_c(i):
        if i == 3 and len(h.conv.exchanges) == 0:
            h.repl.request_stop()

    engine.on_piece = press_ctrl_c
    h.run("long one\rnext\r\x04")
    first, second = h.conv.exchanges
    assert first.interrupted and first.assistant == "w1 w2 w3 w4"
    assert not second.interrupted and second.assistant == "fine"
    assert h.store.load(h.conv.id).exchanges[0].interrupted
    assert "[interrupted]" in h.stderr.getvalue()


def test_slash_commands(tmp_path):
    h = Harness(tmp_path, FakeEngine(replies=["r1", "r2", "r3"]))
    save_md, save_json = tmp_path / "t.md", tmp_path / "t.json"
    h.run("/help\r/system Be terse.\r/system\rq1\rq2\r/retry\r/undo\r/set temperature 0.3\r/set top_k 5\r/set\r"
          f"/stats\r/save {save_md}\r/save {save_json}\r/history\r/nope\r/exit\rnever sent\r")
    out, err = h.stdout.getvalue(), h.stderr.getvalue()
    for name in COMMANDS:
        assert name in out
    assert "Be terse." in out and h.conv.system == "Be terse."
    assert [(e.user, e.assistant) for e in h.conv.exchanges] == [("q1", "r1")]  # q2 retried to r3, then undone
    assert h.conv.sampling.temperature == 0.3 and h.conv.sampling.top_k == 5
    assert "temperature=0.3" in out and "context:" in out and "last reply:" in out
    assert "## User" in save_md.read_text() and '"exchanges"' in save_json.read_text()
    assert "q1" in out  # /history lists this conversation
    assert "error: unknown command /nope" in err and "hint:" in err
    assert "never sent" not in h.users


def test_bad_slash_command_arguments_are_errors_not_crashes(tmp_path):
    h = Harness(tmp_path).run("/set temperature hot\r/set bogus 1\r/set top_p 2\r/retry\r/undo\r/save\r/load\r"
                              f"/load {tmp_path / 'missing.md'}\r/history x\rstill alive\r\x04")
    assert h.stderr.getvalue().count("error:") == 9
    assert h.users == ["still alive"]


def test_clear_and_load(tmp_path):
    saved = tmp_path / "old.md"
    saved.write_text("## System\n\nOld system.\n\n## User\n\nold q\n\n## Assistant\n\nold a\n")
    h = Harness(tmp_path).run(f"first\r/clear\r/load {saved}\rafter load\r\x04")
    assert h.conv.system == "Old system." and h.users == ["old q", "after load"]
    assert len(h.store.list()) == 2  # the first conversation and the loaded one


def test_model_switch_closes_the_old_engine_and_refuses_models_without_a_template(tmp_path):
    loaded = {}

    def loader(model):
        engine = FakeEngine(name=model)
        engine.has_chat_template = model != "base-model"
        loaded[model] = engine
        return engine

    old = FakeEngine(name="first")
    h = Harness(tmp_path, old, loader=loader).run("hi\r/model other\r/model\r/model base-model\rafter\r\x04")
    assert old.closed and h.conv.engine is loaded["other"] and loaded["base-model"].closed
    assert "no chat template" in h.stderr.getvalue()
    assert h.conv.exchanges[-1].model == "other" and "reply to after" in h.stdout.getvalue()
    assert "<user> hi </end>" in " ".join(loaded["other"].prompts[0])  # the conversation went on


def test_piped_mode_one_message_per_line_with_commands(tmp_path):
    h = Harness(tmp_path, interactive=False).piped("\ufeffhello\r\n\n/system Be nice.\n//slash message\n"
                                                   '"""\nblock a\nblock b\n"""\n/exit\nignored\n')
    assert h.users == ["hello", "/slash message", "block a\nblock b"]
    assert h.stdout.getvalue().splitlines()[0] == "reply to hello"
    assert h.conv.system == "Be nice."


def test_piped_lines_decodes_bad_utf8_with_a_warning():
    warnings = []
    lines = list(piped_lines(io.BytesIO(b"caf\xe9\r\nok\n"), warnings.append))
    assert lines == ["caf\ufffd", "ok"] and len(warnings) == 1


def test_completer_offers_commands_set_keys_and_paths(tmp_path):
    completer = SlashCompleter()

    def complete(text):
        return [c.text for c in completer.get_completions(Document(text, len(text)), None)]

    assert complete("/re") == ["/retry"]
    assert set(complete("/s")) == {"/system", "/save", "/set", "/stats"}
    assert complete("/set te") == ["temperature"]
    assert complete("hello /re") == []
    (tmp_path / "notes.md").write_text("x")
    assert complete(f"/load {tmp_path}/no") == ["tes.md"]


def test_parse_set_validates():
    s = Sampling()
    assert parse_set(s, "temp", "0.2").temperature == 0.2
    assert parse_set(s, "max-tokens", "64").max_tokens == 64
    assert parse_set(s, "seed", "none").seed is None and parse_set(s, "seed", "7").seed == 7
    assert parse_set(s, "stop", "###").stop == ("###",) and parse_set(s, "stop", "none").stop == ()
    for key, value in [("temperature", "-1"), ("top_p", "0"), ("max_tokens", "0"), ("top_k", "1.5"), ("x", "1")]:
        with pytest.raises(UsageError):
            parse_set(s, key, value)


def test_markdown_tail_cuts_at_paragraphs_and_reopens_code_fences():
    text = "\n".join(f"para {i}\n" for i in range(50))
    tail = markdown_tail(text, 10)
    assert tail.startswith("para ") and "para 49" in tail and "para 10" not in tail
    code = "intro\n\n```python\n" + "\n".join(f"x = {i}" for i in range(100)) + "\n```\n\nafter"
    tail = markdown_tail(code, 10)
    assert tail.startswith("```python\n") and "x = 99" in tail and "x = 50" not in tail
    assert markdown_tail("short\ntext", 10) == "short\ntext"


def test_live_view_never_draws_more_than_the_screen_and_prints_the_reply_once():
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=60, height=12, color_system=None)
    view = LiveMarkdownView(console, fps=1e9)
    heights = []
    original = view._draw

    def spy(text):
        original(text)
        heights.append(len(view._live._renderable.lines))

    view._draw = spy
    view.start()
    text = ""
    for i in range(80):
        piece = f"Line number {i} of a long reply.\n\n"
        text += piece
        view.update(text, piece)
    view.finish(text)
    assert heights and max(heights) <= 10
    final = buf.getvalue().rsplit("\x1b[2K", 1)[-1]  # what stays on screen after the live region is erased
    for i in range(80):
        assert final.count(f"Line number {i} of") == 1


def test_real_sigint_mid_reply_stops_at_the_next_token_and_before_the_first_token_keeps_nothing(tmp_path):
    import os
    import signal

    engine = FakeEngine(replies=["never shown", "a b c d e f g h", "ok"])
    h = Harness(tmp_path, engine)
    presses = {0: 0, 1: 3}  # reply number -> piece index at which Ctrl-C is pressed

    def press(i):
        reply = 3 - len(engine.replies) - 1
        if presses.get(reply) == i:
            os.kill(os.getpid(), signal.SIGINT)

    engine.on_piece = press
    h.run("first\rsecond\rthird\r\x04")
    assert [(e.user, e.assistant, e.interrupted) for e in h.conv.exchanges] == [
        ("second", "a b c d", True), ("third", "ok", False)]
    assert "nothing kept" in h.stderr.getvalue()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
