"""What a summary is asked for and what it reports: options, progress, the result, and the prompts of each level.

The prompts carry the scaffolding found without the model (chatllm.tasks.summarize.names.entities): a map note is told which names
occur in its chunk; merges and the final pass are told the document's main names, and the final pass also reads the
key events in order, taken from the notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from chatllm.tasks.summarize.names.name_patterns import CJK_CHAR
from chatllm.tasks.text.chunking import split_sentences_stripped

LENGTHS = {"short": 50, "medium": 150, "long": 300}  # target words
STYLES = ("paragraph", "bullets", "tldr")
TLDR_WORDS = 30
TOKENS_PER_WORD = 1.6  # generous for English; CJK and code run higher, hence the fixed slack below
DEFAULT_CHUNK_TOKENS = 2048  # prompt processing slows with context length; smaller chunks also summarize better
MAIN_ENTITIES = 8  # names given to merges and the final pass
EVENT_WORDS = 30  # a key event is one sentence of a note, cut to this many words


@dataclass(frozen=True)
class SummaryOptions:
    """What kind of summary to write."""

    length: str = "medium"
    words: int | None = None
    style: str = "paragraph"
    lang: str | None = None
    focus: str | None = None
    max_tokens: int | None = None  # hard cap on every generated summary (partial or final)
    chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS  # cap on map chunks; None: as large as the window allows
    # Notes and merges are greedy (with the repeat penalty): measured in docs/BENCHMARKS.md (issue 13), sampled
    # notes made the names in the summary swing from run to run. None: the user's sampling, as before issue 13.
    note_temperature: float | None = 0.0
    keep_notes: bool = False  # keep every level's notes in the result (--notes)
    # Each main name the summary leaves out gets one sentence of its own, starting with the name (--no-cover-names).
    cover_names: bool = True

    def __post_init__(self):
        if self.length not in LENGTHS:
            raise ValueError(f"length must be one of {', '.join(LENGTHS)}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}")

    @property
    def target_words(self) -> int:
        """How many words the final summary should have."""
        if self.words:
            return self.words
        if self.style == "tldr":
            return TLDR_WORDS
        return LENGTHS[self.length]


@dataclass
class Progress:
    """Where a summarization stands, passed to the progress callback after every model call."""

    stage: str  # "read": deciding; "map": chunks; "reduce": combining notes; "final": the summary itself
    done: int = 0  # calls finished in this stage
    total: int | None = None  # calls expected in this stage (an estimate while the input is still being read)
    chunks: int = 0  # map chunks finished so far
    level: int = 0  # reduce level (1 = first combination of chunk notes)
    prompt_tokens: int = 0  # prompt tokens evaluated so far, all calls
    completion_tokens: int = 0  # tokens generated so far, all calls
    seconds: float = 0.0  # wall time since the start
    fraction: float = 0.0  # estimated share of all the work done, 0..1

    @property
    def prompt_rate(self) -> float:
        """Prompt tokens processed per second of wall time so far."""
        return self.prompt_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SummaryResult:
    """The summary and what it cost."""

    text: str
    input_tokens: int = 0  # tokens of the document itself
    prompt_tokens: int = 0  # tokens evaluated over all calls (document + notes + instructions, minus cache hits)
    completion_tokens: int = 0
    chunks: int = 1
    calls: int = 0
    levels: int = 0  # 0: one pass; 1: chunks then the final pass; 2+: notes were combined in between
    seconds: float = 0.0
    map_seconds: float = 0.0  # the map phase's wall time (the notes on every chunk), 0 for one pass
    finish_reason: str = "stop"
    calls_log: list[dict] = field(default_factory=list)
    entities: list[dict] = field(default_factory=list)  # the main names given to the reduce and final prompts
    removed: list[str] = field(default_factory=list)  # names the document never has, kept out of notes and summary
    regenerated: bool = False  # the final pass was run again with a stricter prompt
    added_names: list[str] = field(default_factory=list)  # main names the summary left out, given a sentence each
    dropped: list[dict] = field(default_factory=list)  # such sentences the checks refused: name, sentence, why
    estimated: bool = False  # some token counts are chatllm's estimate (a chat server that has no tokenizer)
    notes: list[list[str]] | None = None  # each level's notes, when asked for

    def as_dict(self) -> dict:
        """The JSON-able fields (no per-call log)."""
        record = {
            "summary": self.text,
            "input_tokens": self.input_tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "token_counts": "estimated" if self.estimated else "exact",
            "chunks": self.chunks,
            "calls": self.calls,
            "levels": self.levels,
            "seconds": round(self.seconds, 3),
            "map_seconds": round(self.map_seconds, 3),
            "finish_reason": self.finish_reason,
            "entities": self.entities,
            "removed_names": self.removed,
            "regenerated": self.regenerated,
            "added_names": self.added_names,
            "dropped_sentences": self.dropped,
        }
        if self.notes is not None:
            record["notes"] = self.notes
        return record


# -- prompts --------------------------------------------------------------------------------------

def _language_clause(opts: SummaryOptions, detected: str | None) -> str:
    lang = opts.lang or detected
    return f" Write in {lang}." if lang else ""


def _focus_clause(opts: SummaryOptions) -> str:
    return f" Focus on {opts.focus.strip()}." if opts.focus and opts.focus.strip() else ""


def names_clause(names: Sequence[str], strict: bool = False) -> str:
    """The sentence that hands the model the names to keep (and, when strict, forbids any other)."""
    if not names:
        return " Use only names from the text." if strict else ""
    listed = ", ".join(names)
    return f" Use only these names: {listed}." if strict else f" Say who did what: {listed}."


def final_instruction(opts: SummaryOptions, whole: str, detected: str | None = None, names: Sequence[str] = (),
                      strict: bool = False) -> str:
    """The instruction for the summary the user sees; `whole` names what is summarized."""
    words = opts.target_words
    if opts.style == "tldr":
        text = f"Summarize {whole} in one sentence of at most {words} words: what it reports and what it concludes."
    elif opts.style == "bullets":
        text = (f"Summarize {whole} as a bulleted list of its key points, one '- ' bullet per line, "
                f"about {words} words in all.")
    else:
        text = f"Summarize {whole} in one paragraph of about {words} words. State the main points plainly."
    return text + names_clause(names, strict) + _focus_clause(opts) + _language_clause(opts, detected)


def notes_instruction(opts: SummaryOptions, words: int, detected: str | None = None, names: Sequence[str] = ()) -> str:
    """The instruction for notes on one part of a longer document (plain: tiny models echo meta-talk)."""
    return (f"Summarize the text above in about {words} words." + names_clause(names) + _focus_clause(opts)
            + _language_clause(opts, detected))


def merge_instruction(opts: SummaryOptions, words: int, detected: str | None = None, names: Sequence[str] = ()) -> str:
    """The instruction for merging notes on consecutive parts into shorter notes, events kept in order."""
    return (f"Summarize the text above in about {words} words, keeping the events in order." + names_clause(names)
            + _focus_clause(opts) + _language_clause(opts, detected))


def cover_questions(opts: SummaryOptions, name: str, detected: str | None, lead: str) -> list[tuple[str, str]]:
    """The questions, with their replies' starts, that get one sentence about a main name the summary left out: the
    second is asked only when the first one's reply fails the checks (summarize_guard.cover_problem)."""
    # "What does X do in the text above?" made a tiny model answer "X does ... in the text above."
    # Asked in Chinese, recall on 阿Q正传 fell (Qwen 70 % -> 50 %; SmolLM2 copied the question: "阿Q是谁或是什么？").
    lang = _language_clause(opts, detected)
    # SmolLM2 went on with the first question after a bare Chinese name ("未庄, and what do they do?"); 是 makes the
    # reply a statement about the name.
    again = lead + "是" if CJK_CHAR.search(name) else lead
    return [(f"In one short sentence: who or what is {name}, and what do they do?" + lang, lead),
            (f"Write one sentence that says what the text above tells about {name}." + lang, again)]


def user_message(body: str, instruction: str) -> str:
    """The document first, the instruction last: small models follow what they read last."""
    return f"{body}\n\n---\n{instruction}"


def join_notes(notes: Sequence[str]) -> str:
    """Notes on consecutive parts, in order, as paragraphs: labels invite small models to copy them."""
    return "\n\n".join(note.strip() for note in notes)


def key_events(notes: Sequence[str], names: Sequence[str], count: Callable[[str], int], budget: int) -> list[str]:
    """One sentence per note, in order, the one naming the most main names: the story's spine, within `budget` tokens."""
    events = []
    for note in notes:
        sentences = split_sentences_stripped(note)
        if not sentences:
            continue
        best = max(sentences, key=lambda s: (sum(n in s for n in names), -sentences.index(s)))
        words = best.split()
        events.append(" ".join(words[:EVENT_WORDS]) if len(words) > 1 else best[: EVENT_WORDS * 2])
    while events and count("\n".join(events)) > budget:
        events = events[::2] if len(events) > 2 else events[:-1]  # thin out evenly: the whole story, less detail
    return events


def events_block(events: Sequence[str]) -> str:
    """The key events as lines before the notes of the final pass."""
    return "\n".join(f"- {e}" for e in events)
