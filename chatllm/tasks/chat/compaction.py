"""Compaction: the oldest exchanges of a conversation that outgrows its window become a running summary.

The summary stays in the model's view inside the system message, after the system prompt, so the model still knows
what the user told it once the exchanges themselves have left its window. It is written by the summarizer
(chatllm.tasks.summarize), which counts the names the conversation holds, tells the model to keep them, drops
sentences that name anything the conversation never does and gives a missing main name a sentence of its own; here
it is asked to keep what the user said about themselves and what they asked for, in the conversation's language.

A tiny model's summary still drops facts ("My sister's name is Ingrid" became nothing in Qwen2.5-0.5B's summary of
ten such facts). So, as the summarizer gives a main name it left out a sentence of its own, each statement the user
made about themselves (first person, not a question) that the summary does not carry is kept after it in the user's
own words, while the summary's room lasts; the newest are kept when it runs out.

Each compaction summarizes the previous summary together with the exchanges that leave the view, so one summary
carries the whole past. A summary that comes back empty or in another language is asked for once more; a second
failure, or a window too small for the summarizer, is a CompactionFailed, and the conversation trims instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from chatllm.engines.contract import Engine
from chatllm.errors import ChatllmError
from chatllm.settings import Sampling
from chatllm.storage.conversations import Exchange
from chatllm.tasks.summarize import Summarizer, SummaryOptions
from chatllm.tasks.summarize.summary_prompts import TOKENS_PER_WORD
from chatllm.tasks.text.chunking import split_sentences_stripped
from chatllm.tasks.text.text_rules import CJK_IDEOGRAPH, guess_language

SUMMARY_HEAD = "Summary of the earlier part of this conversation:"
SAID = {None: "The user said:", "Chinese": "用户说："}  # the heading of the statements kept in the user's words
SUMMARY_SHARE = 4  # the summary may take at most 1/SUMMARY_SHARE of the window
MIN_SUMMARY_TOKENS = 48  # a window that cannot spare this much for a summary is only trimmed
MAX_SUMMARY_WORDS = 240
# What the summary must not lose: the user's own facts come first, the topics of the talk after them.
FOCUS = ("what the user told about themselves, each bullet one short sentence that says whose it is (\"The user's ... is "
         "...\"), every name, number, date and place word for word; then what they asked about")


@dataclass
class RunningSummary:
    """The summary of exchanges [0, upto), the user's statements it keeps word for word, how many compactions made it."""

    text: str = ""
    upto: int = 0
    compactions: int = 0
    facts: list[str] = field(default_factory=list)

    def block(self) -> str:
        """The summary and the kept statements, as the model reads them."""
        return join_summary(self.text, self.facts)


class CompactionFailed(ChatllmError):
    """No usable summary: the window is too small for one (lasting), or the model wrote none twice (this time only)."""

    def __init__(self, message: str, hint: str = "", lasting: bool = False):
        super().__init__(message, hint)
        self.lasting = lasting


def join_summary(text: str, facts: Sequence[str]) -> str:
    """A summary, then the user's statements it does not carry under their heading, one line each."""
    lines = [text.strip()] if text.strip() else []
    if facts:
        chinese = sum(bool(CJK_IDEOGRAPH.search(f)) for f in facts) * 2 > len(facts)
        lines.append(SAID["Chinese" if chinese else None])
        lines += [f"- {fact}" for fact in facts]
    return "\n".join(lines)


def system_with_summary(system: str | None, summary: str) -> str | None:
    """The system message the model sees: the system prompt, then the running summary under its heading."""
    if not summary:
        return system
    block = f"{SUMMARY_HEAD}\n{summary.strip()}"
    return f"{system}\n\n{block}" if system else block


def transcript(exchanges: Sequence[Exchange]) -> str:
    """Exchanges as plain `User:` / `Assistant:` paragraphs, what the summarizer reads."""
    parts = []
    for ex in exchanges:
        parts.append(f"User: {ex.user.strip()}")
        if ex.assistant.strip():
            parts.append(f"Assistant: {ex.assistant.strip()}")
    return "\n\n".join(parts)


def conversation_language(previous: str, exchanges: Sequence[Exchange]) -> str | None:
    """The language the user writes in when its script gives it away (None: a Latin-script language)."""
    sample = " ".join(ex.user for ex in exchanges)[:4000] or previous[:4000]
    return guess_language(sample)


def summary_tokens(n_ctx: int) -> int:
    """The most tokens a running summary may take in a window of n_ctx."""
    return n_ctx // SUMMARY_SHARE


_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|my|mine|we|we're|we've|our|ours)\b|\u6211", re.IGNORECASE)
_QUESTION = re.compile(r"[?\uff1f]\s*$|[\u5417\u5462]\s*[\u3002.]?\s*$")
_WORD = re.compile(r"[^\W_]+")
_STOP = frozenset("""a an the and or but of to in on at for with from by as is are was were be been am i i'm my mine me we our
us you your it its this that these those have has had do does did not no so very really just also too can will would
please tell about what which who whom whose when where why how there here they them their he she his her""".split())


def user_statements(exchanges: Sequence[Exchange]) -> list[str]:
    """The sentences in which the user states something about themselves: first person, not a question, not long."""
    found = []
    for ex in exchanges:
        for sentence in split_sentences_stripped(ex.user):
            sentence = " ".join(sentence.split())
            size = len(CJK_IDEOGRAPH.findall(sentence)) or len(sentence.split())
            if 3 <= size <= 40 and _FIRST_PERSON.search(sentence) and not _QUESTION.search(sentence):
                found.append(sentence)
    return list(dict.fromkeys(found))


def carried(statement: str, summary: str) -> bool:
    """Whether the summary keeps what the statement says: its names and numbers, and most of its other words."""
    have = summary.casefold()
    if CJK_IDEOGRAPH.search(statement):
        chars = [c for c in CJK_IDEOGRAPH.findall(statement) if c not in "我的是在有和了也都很"]
        pairs = {a + b for a, b in zip(chars, chars[1:])}
        return not pairs or sum(p in have for p in pairs) >= 0.6 * len(pairs)
    words = _WORD.findall(statement)
    strong = [w for i, w in enumerate(words) if w[0].isdigit() or (i > 0 and w[0].isupper() and w != "I")]
    weak = [w for w in words if w.casefold() not in _STOP and w not in strong]
    if any(w.casefold() not in have for w in strong):
        return False
    return not weak or sum(w.casefold() in have for w in weak) >= 0.6 * len(weak)


class Compactor:
    """Writes the running summary with the conversation's engine (greedy, whatever the chat's sampling)."""

    def __init__(self, engine: Engine, sampling: Sampling, *, on_progress: Callable[[str], None] | None = None):
        self.engine = engine
        self.sampling = sampling.replace(temperature=0.0, stop=())
        self.on_progress = on_progress or (lambda message: None)

    def options(self, language: str | None) -> SummaryOptions:
        """What the summarizer is asked for: bullets of facts, sized to the room a summary has in this window."""
        room = summary_tokens(self.engine.n_ctx)
        if room < MIN_SUMMARY_TOKENS:
            raise CompactionFailed(f"the {self.engine.n_ctx}-token context has no room for a summary",
                                   "start the chat with a larger --ctx to keep a summary", lasting=True)
        # The summarizer lets a summary run up to 1.4 x its target to finish a sentence: the target leaves room for it.
        # The user's own statements the summary leaves out share its room: the summary aims at half of it.
        words = max(16, min(MAX_SUMMARY_WORDS, math.floor(room / 2 / TOKENS_PER_WORD / 1.4)))
        return SummaryOptions(words=words, style="bullets", lang=language, focus=FOCUS, max_tokens=room,
                              chunk_tokens=None)

    def summarize(self, previous: RunningSummary, exchanges: Sequence[Exchange]) -> RunningSummary:
        """The running summary of `previous` and the exchanges leaving the view; CompactionFailed when none comes."""
        language = conversation_language(previous.text, exchanges)
        options = self.options(language)
        document = transcript(exchanges)
        if previous.text:
            document = f"{SUMMARY_HEAD}\n{previous.text.strip()}\n\n{document}"
        problem = ""
        for _ in range(2):
            try:
                result = Summarizer(self.engine, self.sampling, options).summarize([document])
                text = result.text.strip()
                if result.regenerated and " ".join(text.lstrip("-*• ").split()) in " ".join(document.split()):
                    text = ""  # the model wrote nothing usable twice: the summarizer's stand-in is the chat's opening
            except CompactionFailed:
                raise
            except ChatllmError as exc:
                if "does not fit" in exc.message or "too small" in exc.message:
                    raise CompactionFailed(f"{self.engine.name} cannot summarize within its {self.engine.n_ctx}-token "
                                           "context", "start the chat with a larger --ctx to keep a summary",
                                           lasting=True) from None
                raise
            text = drop_echoes(text)
            problem = summary_problem(text, language)
            if not problem:
                break
            self.on_progress(f"the summary came back {problem}; asking once more")
        else:
            raise CompactionFailed(f"the summary came back {problem} twice", "")
        facts = self.keep_facts(text, previous.facts + user_statements(exchanges))
        return RunningSummary(text, previous.upto, previous.compactions, facts)

    def keep_facts(self, text: str, statements: Sequence[str]) -> list[str]:
        """The statements the summary does not carry, the newest first to stay when the summary's room runs out."""
        room = summary_tokens(self.engine.n_ctx)
        kept: list[str] = []
        for fact in reversed(list(dict.fromkeys(statements))):
            if carried(fact, text):
                continue
            if self.engine.count_tokens(join_summary(text, [fact, *kept])) > room:
                break
            kept.insert(0, fact)
        return kept


def drop_echoes(text: str) -> str:
    """The summary without lines that repeat its own instruction (a tiny model copies "each bullet one short ...")."""
    asked = {w.casefold() for w in _WORD.findall(FOCUS)} - _STOP
    kept = []
    for line in text.splitlines():
        words = [w for w in (w.casefold() for w in _WORD.findall(line)) if w not in _STOP]
        if len(words) >= 4 and sum(w in asked for w in words) >= 0.7 * len(words):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def summary_problem(text: str, language: str | None) -> str:
    """Why a summary cannot be used ("empty", "in English"...), or "" when it can."""
    if not text.strip():
        return "empty"
    got = guess_language(text)
    if got != language:
        want = language or "the conversation's language"
        return f"in {got or 'a Latin-script language'} instead of {want}"
    return ""
