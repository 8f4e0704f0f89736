"""Conversation logic over a fake engine: append-only prompts, trimming, interrupts, retry/undo, save/load."""

from __future__ import annotations

import json

import pytest

from chatllm.errors import ChatllmError, UsageError
from chatllm.settings import Sampling
from chatllm.storage.conversations import Exchange, Store
from chatllm.tasks.chat.conversation import Conversation
from chatllm.tasks.chat.transcripts import parse_json, parse_markdown, transcript_markdown
from tests.fakes import FakeEngine  # its defaults are a chat model's; test_repl imports it from here

SAMPLING = Sampling(max_tokens=8, temperature=0)


def talk(conv: Conversation, text: str, stop_after: int | None = None) -> str:
    with conv.turn(text) as t:
        for i, _ in enumerate(t):
            if stop_after is not None and i + 1 >= stop_after:
                break
    return t.text


def test_a_turn_records_the_exchange_and_the_engine_sees_the_template():
    engine = FakeEngine()
    conv = Conversation(engine, SAMPLING, system="Be brief.")
    assert talk(conv, "hello there") == "reply to hello there"
    assert [(e.user, e.assistant, e.interrupted) for e in conv.exchanges] == [("hello there", "reply to hello there", False)]
    assert engine.prompts[0][:3] == ["<system>", "Be", "brief."]
    assert conv.exchanges[0].completion_tokens == 4 and conv.last_stats.finish_reason == "stop"


def test_prompts_are_append_only_so_each_turn_reuses_the_cache():
    engine = FakeEngine(n_ctx=10_000)
    conv = Conversation(engine, SAMPLING, system="sys")
    for i in range(12):
        talk(conv, f"message number {i}")
        if i:
            previous, current = engine.prompts[-2], engine.prompts[-1]
            assert current[: len(previous)] == previous
            # only the end-of-reply marker and the new message are evaluated
            assert engine.last_stats.prompt_tokens - engine.last_stats.cached_tokens <= 7
    assert engine.full_tokenizations == 1  # later turns tokenize only the new text


def test_a_template_that_rerenders_history_still_gets_append_only_prompts():
    engine = FakeEngine(n_ctx=10_000, unstable=True)
    conv = Conversation(engine, SAMPLING)
    for i in range(5):
        engine.epoch = i  # the date in the template changed since the last turn
        talk(conv, f"question {i}")
    for previous, current in zip(engine.prompts, engine.prompts[1:]):
        assert current[: len(previous)] == previous


def test_history_over_the_window_drops_oldest_exchanges_keeps_system_and_says_so():
    notices = []
    engine = FakeEngine(n_ctx=120)
    conv = Conversation(engine, SAMPLING, system="You are terse.", notice=notices.append, overflow="trim")
    for i in range(30):
        talk(conv, f"turn {i} with a few words")
        assert engine.last_stats.prompt_tokens + conv.reply_reserve <= engine.n_ctx
        assert engine.prompts[-1][:4] == ["<system>", "You", "are", "terse."]
    assert len(conv.exchanges) == 30  # the conversation keeps everything; only the model's view moves
    assert conv.window_start > 0
    assert notices and all(n.startswith("note: dropped the") for n in notices)
    # trimming makes room for a few turns at once rather than re-evaluating the prompt on every turn
    assert len(notices) < 15


def test_a_single_message_too_long_for_the_window_is_refused_and_the_chat_goes_on():
    engine = FakeEngine(n_ctx=60)
    conv = Conversation(engine, SAMPLING, system="sys")
    talk(conv, "short")
    with pytest.raises(ChatllmError) as info:
        talk(conv, "word " * 80)
    assert "too long" in info.value.message and "context window" in info.value.message
    assert "--ctx" in info.value.hint
    assert len(conv.exchanges) == 1
    assert talk(conv, "still here") == "reply to still here"


def test_reply_reserve_is_max_tokens_but_at_most_half_the_window():
    assert Conversation(FakeEngine(n_ctx=100), Sampling(max_tokens=512)).reply_reserve == 50
    assert Conversation(FakeEngine(n_ctx=1000), Sampling(max_tokens=64)).reply_reserve == 64


def test_stopping_mid_reply_keeps_the_partial_reply_marked_interrupted(tmp_path):
    store = Store(tmp_path / "c.db")
    engine = FakeEngine(replies=["one two three four five six"])
    conv = Conversation(engine, SAMPLING, store=store)
    assert talk(conv, "count", stop_after=3) == "one two three"
    ex = conv.exchanges[-1]
    assert ex.interrupted and ex.assistant == "one two three"
    assert engine.last_stats.finish_reason == "interrupted"
    saved = store.load(conv.id).exchanges
    assert saved[0].interrupted and saved[0].assistant == "one two three"
    # the next turn builds on what was shown
    talk(conv, "go on")
    assert "three </end>" in " ".join(engine.prompts[-1])


def test_keyboard_interrupt_inside_the_turn_keeps_the_partial_reply():
    engine = FakeEngine(replies=["a b c d e"])
    conv = Conversation(engine, SAMPLING)

    def press(i):
        if i == 2:
            raise KeyboardInterrupt

    engine.on_piece = press
    with pytest.raises(KeyboardInterrupt):
        talk(conv, "go")
    assert conv.exchanges[-1].assistant == "a b" and conv.exchanges[-1].interrupted


def test_stopping_before_the_first_token_keeps_nothing():
    engine = FakeEngine()
    conv = Conversation(engine, SAMPLING)
    with conv.turn("hi"):
        pass
    assert conv.exchanges == []


def test_an_engine_error_mid_reply_saves_nothing(tmp_path):
    store = Store(tmp_path / "c.db")
    engine = FakeEngine(replies=["a b c d"])
    engine.fail_after = 2
    conv = Conversation(engine, SAMPLING, store=store)
    with pytest.raises(ChatllmError):
        talk(conv, "hi")
    assert conv.exchanges == [] and store.list() == []


def test_retry_replaces_the_last_reply_and_undo_drops_it(tmp_path):
    store = Store(tmp_path / "c.db")
    engine = FakeEngine(replies=["first", "second", "third", "fourth"])
    conv = Conversation(engine, SAMPLING, store=store)
    talk(conv, "q1")
    talk(conv, "q2")
    with conv.retry() as t:
        for _ in t:
            pass
    assert [e.assistant for e in conv.exchanges] == ["first", "third"]
    assert [e.assistant for e in store.load(conv.id).exchanges] == ["first", "third"]
    assert conv.undo().user == "q2"
    assert [e.user for e in store.load(conv.id).exchanges] == ["q1"]
    conv.undo()
    with pytest.raises(UsageError):
        conv.undo()
    with pytest.raises(UsageError):
        with conv.retry():
            pass


def test_retry_interrupted_before_any_token_keeps_the_old_reply():
    engine = FakeEngine(replies=["kept"])
    conv = Conversation(engine, SAMPLING)
    talk(conv, "q")
    with conv.retry():
        pass
    assert [e.assistant for e in conv.exchanges] == ["kept"]


def test_clear_starts_a_new_stored_conversation_and_system_changes_are_saved(tmp_path):
    store = Store(tmp_path / "c.db")
    conv = Conversation(FakeEngine(), SAMPLING, system="old", store=store)
    talk(conv, "a")
    first = conv.id
    conv.set_system("new")
    assert store.load(first).system == "new"
    conv.clear()
    assert conv.id is None and conv.exchanges == [] and conv.system == "new"
    talk(conv, "b")
    assert conv.id != first and len(store.list()) == 2


def test_resume_continues_the_same_stored_conversation(tmp_path):
    store = Store(tmp_path / "c.db")
    conv = Conversation(FakeEngine(), SAMPLING, system="s", store=store)
    talk(conv, "one")
    talk(conv, "two")
    again = Conversation(FakeEngine(), SAMPLING, store=store)
    again.resume(store.load(conv.id))
    assert again.system == "s" and [e.user for e in again.exchanges] == ["one", "two"]
    talk(again, "three")
    assert [e.user for e in store.load(conv.id).exchanges] == ["one", "two", "three"]
    assert "<user> one </end>" in " ".join(again.engine.prompts[-1])


def test_empty_message_is_a_usage_error():
    with pytest.raises(UsageError):
        talk(Conversation(FakeEngine(), SAMPLING), "   ")


def test_switching_engines_continues_the_conversation():
    conv = Conversation(FakeEngine(name="a"), SAMPLING)
    talk(conv, "hello")
    other = FakeEngine(name="b")
    conv.switch_engine(other)
    talk(conv, "again")
    assert conv.exchanges[-1].model == "b"
    assert "<user> hello </end>" in " ".join(other.prompts[0])


def test_markdown_round_trip_with_tricky_content(tmp_path):
    conv = Conversation(FakeEngine(replies=["Here:\n\n```md\n## User\nnot a heading\n```\n\nDone.", "partial"]),
                        SAMPLING, system="Be kind.")
    talk(conv, "show me markdown")
    talk(conv, "more", stop_after=1)
    path = conv.save(tmp_path / "chat.md")
    text = path.read_text()
    assert "## System" in text and "*[interrupted]*" in text
    system, exchanges = parse_markdown(text)
    assert system == "Be kind."
    assert [(e.user, e.assistant, e.interrupted) for e in exchanges] == [
        (e.user, e.assistant, e.interrupted) for e in conv.exchanges]


def test_json_round_trip_and_openai_style_messages(tmp_path, ):
    store = Store(tmp_path / "c.db")
    conv = Conversation(FakeEngine(), SAMPLING, system="S", store=store)
    talk(conv, "x")
    path = conv.save(tmp_path / "chat.json")
    data = json.loads(path.read_text())
    assert data["format"] == "chatllm.conversation" and data["exchanges"][0]["user"] == "x"
    other = Conversation(FakeEngine(), SAMPLING, store=store)
    other.load(path)
    assert other.system == "S" and other.exchanges[0].assistant == "reply to x"
    assert other.id is not None and other.id != conv.id  # a loaded file becomes a new saved conversation
    system, exchanges = parse_json([{"role": "system", "content": "sys"}, {"role": "user", "content": "u"},
                                    {"role": "assistant", "content": "a"}])
    assert system == "sys" and [(e.user, e.assistant) for e in exchanges] == [("u", "a")]


def test_loading_bad_files_gives_usage_errors(tmp_path):
    conv = Conversation(FakeEngine(), SAMPLING)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    not_chat = tmp_path / "notes.md"
    not_chat.write_text("# Just notes\n\nnothing here\n")
    for path in (bad_json, not_chat, tmp_path / "missing.md"):
        with pytest.raises(UsageError):
            conv.load(path)
    with pytest.raises(UsageError):
        conv.save(tmp_path)


def test_transcript_lists_every_exchange_in_order():
    text = transcript_markdown(None, [Exchange("a?", "A."), Exchange("b?", "B.", interrupted=True)], model="m",
                               conv_id=7)
    assert text.startswith("# Conversation 7")
    assert text.index("a?") < text.index("A.") < text.index("b?") < text.index("B.") < text.index("*[interrupted]*")
