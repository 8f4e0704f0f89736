"""Compaction, the in-place trim and branches over a fake engine: what the model sees, what is kept, what is stored."""

from __future__ import annotations

from typing import Sequence

import pytest

from chatllm.engines.contract import ContextShift
from chatllm.errors import ChatllmError, UsageError
from chatllm.settings import Sampling
from chatllm.storage.conversations import Exchange, Store
from chatllm.tasks.chat.branching import edit_turn, fork, parse_resume, resume_at, tree_rows
from chatllm.tasks.chat.compaction import SUMMARY_HEAD, carried, drop_echoes, summary_problem, user_statements
from chatllm.tasks.chat.conversation import Conversation
from chatllm.tasks.chat.window_shift import shift_plan
from tests.fakes import FakeEngine

SAMPLING = Sampling(max_tokens=8, temperature=0)


class ChatFake(FakeEngine):
    """Replies "reply to ..." in chat; a summary request (the summarizer's prompt) gets `summary` (or the next of
    `summaries`); with shift=True it also has ContextShift, over its list of cached ids."""

    def __init__(self, *, summary: str = "The user talked about the weather.", summaries: Sequence[str] = (),
                 shift: bool = False, **kw):
        kw.setdefault("n_ctx", 400)
        super().__init__(**kw)
        self.summary = summary
        self.summaries = list(summaries)
        self.summary_calls = 0
        self.shifts: list[tuple[int, int]] = []
        self.can_shift = shift

    def _next_reply(self, tokens: list[int]) -> str:
        if "Summarize the text above" in self.detokenize(tokens):
            self.summary_calls += 1
            return self.summaries.pop(0) if self.summaries else self.summary
        return super()._next_reply(tokens)

    def __getattr__(self, name: str):
        if name == "shift_out" and self.__dict__.get("can_shift"):
            return self._shift_out
        raise AttributeError(name)

    def _shift_out(self, held: Sequence[int], start: int, end: int) -> bool:
        if self.cache[: len(held)] != list(held):
            return False
        del self.cache[start:end]
        self.shifts.append((start, end))
        return True


def talk(conv: Conversation, text: str) -> str:
    with conv.turn(text) as t:
        for _ in t:
            pass
    return t.text


def system_text(engine: FakeEngine) -> str:
    """The system message of the last prompt the engine got."""
    text = engine.streamed_texts[-1]
    return text.split("<system>", 1)[1].split("</end>", 1)[0] if "<system>" in text else ""


# -- compaction ----------------------------------------------------------------------------------------------------


def test_compaction_keeps_a_summary_after_the_system_prompt_and_the_users_facts_word_for_word(tmp_path):
    store = Store(tmp_path / "c.db")
    notices: list[str] = []
    engine = ChatFake(n_ctx=400, summary="The user asked about the weather and rivers.")
    conv = Conversation(engine, SAMPLING, system="Be brief.", store=store, notice=notices.append)
    talk(conv, "My dog is called Biscuit and I live in Porto.")
    for i in range(40):
        compactions = conv.summary.compactions
        talk(conv, f"Tell me about the weather on day {i} please")
        assert engine.last_stats.prompt_tokens + conv.reply_reserve <= engine.n_ctx
        if conv.summary.compactions > compactions:  # the system prompt's cache survived the summarizer's prompts
            assert engine.last_stats.cached_tokens >= 2  # "<system> Be" (the fake splits at spaces only)
    assert conv.summary.upto > 0 and conv.window_start >= conv.summary.upto
    seen = system_text(engine)
    assert seen.strip().startswith("Be brief.") and SUMMARY_HEAD in seen  # after the system prompt
    assert "asked about the weather" in seen
    assert "My dog is called Biscuit and I live in Porto." in seen  # the summary lacked it: kept in the user's words
    assert any(n.startswith("note: compacted exchanges 1-") for n in notices)
    assert not any("dropped" in n for n in notices)
    assert len(conv.exchanges) == 41  # the saved conversation keeps everything
    stored = store.load(conv.id)
    assert stored.summary is not None and stored.summary.upto == conv.summary.upto
    assert stored.summary.facts == ["My dog is called Biscuit and I live in Porto."]
    assert len(stored.exchanges) == 41


def test_continue_resumes_with_the_summary_and_the_same_window(tmp_path):
    store = Store(tmp_path / "c.db")
    engine = ChatFake(n_ctx=400)
    conv = Conversation(engine, SAMPLING, store=store)
    talk(conv, "I was born in 1987 in Lyon.")
    for i in range(30):
        talk(conv, f"Tell me about rivers number {i}")
    again = Conversation(ChatFake(n_ctx=400), SAMPLING, store=store)
    again.resume(store.load(conv.id))
    assert (again.summary.upto, again.window_start, again.summary.facts) == (
        conv.summary.upto, conv.window_start, conv.summary.facts)
    assert again.messages(again.window_start) == conv.messages(conv.window_start)


def test_a_window_too_small_for_a_summary_trims_and_says_so_once():
    notices: list[str] = []
    engine = ChatFake(n_ctx=120)
    conv = Conversation(engine, SAMPLING, notice=notices.append)
    for i in range(20):
        talk(conv, f"turn {i} with a few words")
    assert conv.window_start > 0 and conv.summary.upto == 0 and engine.summary_calls == 0
    assert sum("could not compact" in n for n in notices) == 1
    assert "only trims from now on" in next(n for n in notices if "could not compact" in n)
    assert any(n.startswith("note: dropped") for n in notices)


def test_an_empty_summary_is_asked_for_again_then_the_chat_trims_and_says_so():
    notices: list[str] = []
    engine = ChatFake(n_ctx=400, summary="")
    conv = Conversation(engine, SAMPLING, notice=notices.append)
    for i in range(30):
        talk(conv, f"Tell me about rivers number {i}")
    first = next(i for i, n in enumerate(notices) if "could not compact" in n)
    assert "came back empty twice" in notices[first] and "asking once more" in notices[first - 1]
    assert notices[first + 1].startswith("note: dropped")
    assert conv.summary.upto == 0 and conv.window_start > 0


def test_a_summary_in_the_wrong_language_is_retried_then_used():
    engine = ChatFake(n_ctx=1000, summaries=["The user likes tea.", "用户喜欢喝茶，也问了河流的事情。"])
    conv = Conversation(engine, SAMPLING)
    for i in range(80):
        talk(conv, f"请 告诉 我 第{i}条 关于 河流 的 知识 谢谢 你 的 帮助")
        if conv.summary.upto:
            break
    assert engine.summary_calls == 2 and "用户喜欢喝茶" in conv.summary.text
    assert summary_problem("- The user likes tea.", "Chinese").startswith("in a Latin-script language")


def test_ctrl_c_while_compacting_leaves_the_conversation_as_it_was(tmp_path):
    store = Store(tmp_path / "c.db")
    engine = ChatFake(n_ctx=400)
    conv = Conversation(engine, SAMPLING, store=store)
    for i in range(30):
        talk(conv, f"Tell me about rivers number {i}")
        if conv.summary.upto:
            break
    before = (conv.summary.text, conv.summary.upto, conv.window_start, len(conv.exchanges))
    stored_before = store.load(conv.id)

    def press(i: int) -> None:
        if engine.summary_calls:  # inside the summarizer
            raise KeyboardInterrupt

    engine.on_piece, engine.summary_calls = press, 0
    with pytest.raises(KeyboardInterrupt):
        for i in range(40):
            talk(conv, f"And tell me about mountains number {i}")
    engine.on_piece = None
    n = len(conv.exchanges)
    assert (conv.summary.text, conv.summary.upto) == before[:2]
    stored = store.load(conv.id)
    assert stored.summary == stored_before.summary and len(stored.exchanges) == n
    talk(conv, "still here?")  # and the chat goes on
    assert conv.exchanges[-1].assistant == "reply to still here?"


def test_compact_on_demand_and_undo_below_the_summary(tmp_path):
    store = Store(tmp_path / "c.db")
    conv = Conversation(ChatFake(n_ctx=2000), SAMPLING, store=store)
    with pytest.raises(UsageError):
        conv.compact()
    for i in range(4):
        talk(conv, f"I have {i + 2} apples in my basket")
    assert conv.compact(keep=1) == 3
    assert (conv.summary.upto, conv.window_start) == (3, 3)
    assert store.load(conv.id).summary.upto == 3
    with pytest.raises(UsageError):
        conv.compact(keep=1)  # nothing left to compact
    conv.undo()
    conv.undo()  # exchange 3 was in the summary: the summary goes, the view starts again at the start
    assert conv.summary.upto == 0 and conv.window_start == 0 and store.load(conv.id).summary is None


# -- the in-place trim ---------------------------------------------------------------------------------------------


def test_a_trim_shifts_the_kv_cache_in_place_and_evaluates_only_the_new_message():
    notices: list[str] = []
    engine = ChatFake(n_ctx=200, shift=True)
    assert isinstance(engine, ContextShift)
    conv = Conversation(engine, SAMPLING, system="You are terse.", notice=notices.append, overflow="trim")
    for i in range(30):
        talk(conv, f"turn {i} with a few words")
        assert engine.prompts[-1][:4] == ["<system>", "You", "are", "terse."]
        if conv.window_start and len(engine.shifts) == 1 and "dropped" in notices[-1]:
            # the turn that trimmed reused everything the cache held but the new message
            assert engine.last_stats.prompt_tokens - engine.last_stats.cached_tokens <= 12
    assert len(engine.shifts) >= 3 and all(start >= 5 for start, _ in engine.shifts)  # the system prompt stays
    assert all("shifted in place" in n for n in notices if "dropped" in n)


def test_exact_window_and_an_engine_without_the_capability_evaluate_the_window_again():
    for engine, exact in ((ChatFake(n_ctx=200, shift=True), True), (ChatFake(n_ctx=200), False)):
        conv = Conversation(engine, SAMPLING, overflow="trim", exact_window=exact)
        for i in range(30):
            talk(conv, f"turn {i} with a few words")
        assert conv.window_start > 0 and not engine.shifts and conv.last_shift_seconds is None


def test_shift_plan_finds_the_one_span_cut_out():
    assert shift_plan([1, 2, 3, 4, 5, 6], [1, 2, 5, 6]) == (2, 4)
    assert shift_plan([1, 2, 3, 4], [1, 2, 3, 4]) is None  # nothing cut
    assert shift_plan([1, 2, 3, 4, 5], [1, 9, 4, 5]) is None  # something else changed
    assert shift_plan([1, 2, 3], [1, 2, 3, 4]) is None


# -- facts and their checks ------------------------------------------------------------------------------------------


def test_user_statements_are_first_person_sentences_not_questions_or_requests():
    exchanges = [Exchange("My sister's name is Ingrid. What is the capital of France?", "Paris."),
                 Exchange("Tell me one fact about rivers.", "..."), Exchange("我住在北京，我的猫叫小白。你知道吗？", "...")]
    assert user_statements(exchanges) == ["My sister's name is Ingrid.", "我住在北京，我的猫叫小白。"]
    assert carried("My sister's name is Ingrid.", "- The user's sister is called Ingrid.")
    assert not carried("My locker code is 4471.", "- The user has a locker.")
    assert carried("我住在北京，我的猫叫小白。", "用户住在北京，猫叫小白。")
    assert drop_echoes("- Each bullet one short sentence that says whose it is\n- The dog is Rex.") == "- The dog is Rex."


# -- branches --------------------------------------------------------------------------------------------------------


def test_branch_and_edit_fork_new_saved_conversations_and_leave_the_old_one(tmp_path):
    store = Store(tmp_path / "c.db")
    engine = ChatFake(n_ctx=2000)
    conv = Conversation(engine, SAMPLING, system="sys", store=store)
    for q in ("one", "two", "three"):
        talk(conv, q)
    root = conv.id
    branch = fork(conv)
    assert branch != root and conv.id == branch and len(conv.exchanges) == 3
    talk(conv, "four on the branch")
    assert [e.user for e in store.load(root).exchanges] == ["one", "two", "three"]
    assert [e.user for e in store.load(branch).exchanges] == ["one", "two", "three", "four on the branch"]
    edited = edit_turn(conv, 2)
    talk(conv, "TWO rewritten")
    assert [e.user for e in store.load(edited).exchanges] == ["one", "TWO rewritten"]
    assert "TWO rewritten" in engine.streamed_texts[-1] and "two" not in engine.prompts[-1]
    assert len(store.load(branch).exchanges) == 4  # the branch it was edited from is untouched
    with pytest.raises(UsageError, match="no message 7"):
        edit_turn(conv, 7)
    nodes = store.tree(edited)
    assert [(n.id, n.parent_id, n.fork_seq) for n in nodes] == [(root, None, None), (branch, root, 3), (edited, branch, 1)]
    assert [lead for lead, _ in tree_rows(nodes)] == ["", "└─ ", "   └─ "]
    # a search finds a shared message once, in the conversation it was first written in
    assert [(h.conversation_id, h.turn, h.role) for h in store.search("three")] == [(root, 3, "assistant"),
                                                                                     (root, 3, "user")]


def test_resume_at_a_turn_branches_there_and_keeps_a_summary_only_when_it_is_older(tmp_path):
    store = Store(tmp_path / "c.db")
    conv = Conversation(ChatFake(n_ctx=2000), SAMPLING, store=store)
    for i in range(5):
        talk(conv, f"I own {i + 2} red bicycles")
    conv.compact(keep=2)
    stored = store.load(conv.id)
    late = Conversation(ChatFake(n_ctx=2000), SAMPLING, store=store)
    new = resume_at(late, stored, 4)
    assert new is not None and late.id == new and len(late.exchanges) == 4 and late.summary.upto == 3
    early = Conversation(ChatFake(n_ctx=2000), SAMPLING, store=store)
    resume_at(early, stored, 2)
    assert early.summary.upto == 0 and early.window_start == 0  # the summary holds exchange 3: not this branch's
    same = Conversation(ChatFake(n_ctx=2000), SAMPLING, store=store)
    assert resume_at(same, stored, 5) is None and same.id == stored.id
    with pytest.raises(UsageError, match="no turn 9"):
        resume_at(Conversation(ChatFake(), SAMPLING, store=store), stored, 9)
    assert parse_resume("12@3") == (12, 3) and parse_resume("7") == (7, None)
    for bad in ("x", "3@", "3@-1", "0"):
        with pytest.raises(UsageError):
            parse_resume(bad)


def test_branching_needs_something_to_branch():
    conv = Conversation(ChatFake(), SAMPLING, store=None)
    with pytest.raises(ChatllmError):
        fork(conv)


def test_two_chats_going_on_with_one_conversation_lose_nothing(tmp_path):
    first = Store(tmp_path / "c.db")
    a = Conversation(ChatFake(n_ctx=2000), SAMPLING, store=first)
    talk(a, "hello")
    second = Store(tmp_path / "c.db")  # another process: its own connection
    notices: list[str] = []
    b = Conversation(ChatFake(n_ctx=2000), SAMPLING, store=second, notice=notices.append)
    b.resume(second.load(a.id))
    talk(a, "from the first chat")
    talk(b, "from the second chat")
    assert [e.user for e in first.load(a.id).exchanges] == ["hello", "from the first chat"]
    assert b.id != a.id and [e.user for e in second.load(b.id).exchanges] == ["hello", "from the second chat"]
    assert "continued by another chatllm" in notices[-1] and second.load(b.id).parent_id == a.id
    with a.retry() as t:  # a /retry replaces its own last exchange, as before
        for _ in t:
            pass
    assert [e.user for e in first.load(a.id).exchanges] == ["hello", "from the first chat"]
    talk(b, "and more")  # the branch goes on normally
    assert len(second.load(b.id).exchanges) == 3
