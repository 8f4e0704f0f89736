"""The model as its own reranker: how likely is the question, written by the model after reading the passage?

Each candidate passage is shown to the model as a short window (windows.py) in its chat template, followed by
"Write one question that this text answers."; the score is the mean log-probability of the user's question as the
model's reply (query likelihood: Sachan et al., "Improving Passage Retrieval with Zero-Shot Question Generation",
EMNLP 2022). It is the label scorer classify uses (`score_continuations`), with the question as the one label: a
prompt evaluation and one step over the question's tokens per window, no generation.

Why not "does this text answer the question? yes or no": measured on the SQuAD and CMRC tuning splits with
Qwen2.5-Coder-0.5B, the yes/no probability put the gold window above the best other window for 56-88 % of questions
(depending on the wording) and its scores for answerable and unanswerable questions overlapped; the question's
likelihood did so for 96 %, and separated them (docs/BENCHMARKS_HISTORY.md, issue 37).

The question's own likelihood without any text (`baseline`) is scored once per question, so a question that is
easy to write anyway (short, generic words) is not taken for one the text answers: the relevance of a window is how
much it raises the question's mean log-probability per token above that.

All windows of a question go through `Reranker.score` in one call, so an engine that decodes several sequences at
once can take them together; today they are scored one after another, and each prompt shares the template's head
with the one before it in the engine's KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from chatllm.engines.contract import Engine, LabelScorer
from chatllm.tasks.text.text_rules import detect_language

_SLOT = "\x00window\x00"  # where the window goes in the rendered template; no template or text contains it


@dataclass(frozen=True)
class QuestionPrompts:
    """The words of the reranking and answering prompts in one language."""

    text_field: str  # opens the user turn; the window follows on its own line
    write: str  # after the window: the model is asked for a question, and the user's question is scored as the reply
    answer: str  # after the windows: "{question}" is replaced


PROMPTS = {
    "en": QuestionPrompts("Text:\n", "\nWrite one question that this text answers.",
                          "\n\nQuestion: {question}\nAnswer the question in a few words, using the text."),
    "zh": QuestionPrompts("文本：\n", "\n写出一个这段文本能回答的问题。",
                          "\n\n问题：{question}\n根据文本，用简短的话回答问题。"),
}


def prompts_for(question: str) -> QuestionPrompts:
    """The prompts for the question's language."""
    return PROMPTS[detect_language(question)]


def answer_message(question: str, windows: Sequence[str]) -> str:
    """The user message of the answer: the windows, then the question and the instruction (the reranking prompt's
    head, so the engine's KV cache can keep what they share)."""
    p = prompts_for(question)
    return p.text_field + "\n\n".join(windows) + p.answer.format(question=" ".join(question.split()))


class Reranker:
    """Scores passage windows for one question with one engine."""

    def __init__(self, engine: Engine, scorer: LabelScorer, question: str, *, system: str | None = None):
        self.engine = engine
        self.scorer = scorer
        p = prompts_for(question)
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": p.text_field + _SLOT + p.write})
        before, slot, after = engine.render_chat(messages).partition(_SLOT)
        if not slot:
            raise ValueError(f"the chat template of {engine.name} dropped the text")
        self.head = engine.prompt_tokens(before)
        self.tail = engine.tokenize(after, special=True)
        self.question = engine.tokenize(" ".join(question.split())) or engine.tokenize("?")
        self.evaluated = 0  # tokens put through the model (what the KV cache already held is not counted)
        self._last: list[int] = []

    def prompt(self, window: str) -> list[int]:
        """The tokens of one window's prompt (the window tokenized on its own: nothing in a file is a turn marker)."""
        return self.head + self.engine.tokenize(window) + self.tail

    def baseline(self) -> float:
        """The question's mean log-probability per token after an empty text."""
        return self._mean_logprob(self.prompt(""))

    def score(self, windows: Sequence[str]) -> list[float]:
        """Each window's mean log-probability of the question per token, in input order (one call for them all)."""
        return [self._mean_logprob(self.prompt(w)) for w in windows]

    def _mean_logprob(self, prompt: list[int]) -> float:
        shared = 0
        while shared < min(len(prompt) - 1, len(self._last)) and prompt[shared] == self._last[shared]:
            shared += 1
        self.evaluated += len(prompt) - shared + len(self.question) - 1
        self._last = prompt
        return self.scorer.score_continuations(prompt, [self.question])[0] / len(self.question)
