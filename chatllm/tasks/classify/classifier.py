"""Label scoring for `sentiment` and `classify`: each label's probability as the model's own next tokens.

The instruction and the few-shot examples form a prefix that stays in the engine's KV cache, so an item costs only
its own tokens; an engine that batches (BatchScoring) evaluates many items per decode (`classify_many`). Labels of
several tokens are scored as whole sequences; the model's bias toward some labels is removed by contextual
calibration (the label probabilities given a content-free input divide the item's).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from chatllm.engines.contract import Engine, WarmStart, as_label_scorer, batch_scoring
from chatllm.errors import ContextOverflowError, UsageError
from chatllm.tasks.classify.fewshot import Example
from chatllm.tasks.classify.presets import Preset, choose
from chatllm.tasks.text.text_rules import detect_language

SENTIMENT_LABELS = ("positive", "negative")
NEUTRAL = "neutral"
_SPACE = re.compile(r"\s+")
_MIN_ITEM_TOKENS = 16
_SLOT = "\x00item\x00"  # where the item goes in a rendered chat template; no template or text contains it


@dataclass
class Result:
    """One classified item: the best label, every label's probability (summing to 1), or the error for its row."""

    text: str
    label: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    truncated: bool = False
    preset: dict | None = None  # what Classifier.explain() says about the prompt this item got

    @property
    def probability(self) -> float:
        """The probability of the chosen label."""
        return self.scores.get(self.label, 0.0) if self.label else 0.0

    def to_json(self, explain: bool = False) -> dict:
        """The --json row: {"label", "scores", "text"} (or {"error", "text"}); explain adds the "preset" used."""
        if self.error:
            return {"label": None, "error": self.error, "text": self.text}
        row: dict[str, object] = {"label": self.label, "scores": {k: round(v, 6) for k, v in self.scores.items()}, "text": self.text}
        if self.truncated:
            row["truncated"] = True
        if explain and self.preset is not None:
            row["preset"] = self.preset
        return row


def parse_labels(value: str | Sequence[str]) -> list[str]:
    """Labels from `a,b,c` (or a list of such), stripped; at least two distinct ones, or a UsageError."""
    items = [value] if isinstance(value, str) else list(value)
    labels = [part.strip() for item in items for part in item.split(",")]
    labels = [lab for lab in labels if lab]
    check_labels(labels)
    return labels


def check_labels(labels: Sequence[str]) -> None:
    """Refuse fewer than two labels, duplicates, and labels with line breaks."""
    if len(labels) < 2:
        raise UsageError(f"need at least two labels, got {len(labels)}", "give them comma-separated: --labels news,blog,ad")
    seen = set()
    for lab in labels:
        if "\n" in lab or "\t" in lab:
            raise UsageError(f"label {lab!r} has a tab or a line break", "use single-line labels")
        if lab.lower() in seen:
            raise UsageError(f"label {lab!r} is given twice", "give each label once")
        seen.add(lab.lower())


def check_setup(labels: Sequence[str], descriptions: dict[str, str] | None = None,
                examples: Sequence[Example] | None = None) -> tuple[list[str], dict[str, str], list[Example] | None]:
    """The labels, descriptions and examples checked (no model needed), each name spelled as its label; else UsageError."""
    labels = list(labels)
    check_labels(labels)
    canonical = {lab.lower(): lab for lab in labels}
    described: dict[str, str] = {}
    for key, text in (descriptions or {}).items():
        if key.lower() not in canonical:
            raise UsageError(f"--describe names {key!r}, which is not a label", f"labels are: {', '.join(labels)}")
        described[canonical[key.lower()]] = clean(text)
    shots: list[Example] | None = None
    if examples is not None:
        shots = []
        for ex in examples:
            if ex.label.lower() not in canonical:
                raise UsageError(f"example label {ex.label!r} is not one of the labels",
                                 f"labels are: {', '.join(labels)}; fix the examples file or pass --labels")
            shots.append(Example(ex.text, canonical[ex.label.lower()]))
    return labels, described, shots


def sentiment_labels(neutral: bool = False) -> list[str]:
    """positive, negative (and neutral)."""
    return [*SENTIMENT_LABELS, *([NEUTRAL] if neutral else [])]


def clean(text: str) -> str:
    """One line of text for the prompt: runs of whitespace (line breaks included) become one space."""
    return _SPACE.sub(" ", text).strip()


@dataclass
class _Prompt:
    prefix: list[int]
    suffix: list[int]
    suffix_text: str
    continuations: list[list[int]]
    item_budget: int  # tokens an item and the suffix may take
    gap: str = " "  # what goes between the text field's colon and the item
    bias: list[float] | None = None
    chat: bool = False  # inside the model's chat template: the suffix holds its turn markers


class Classifier:
    """Scores texts against a fixed label set with one engine; build once, call classify() per item."""

    def __init__(
        self,
        engine: Engine,
        labels: Sequence[str],
        *,
        task: str = "sentiment",
        descriptions: dict[str, str] | None = None,
        examples: Sequence[Example] | None = None,
        calibrate: bool | None = None,
        lang: str = "auto",
        preset: Preset | None = None,
    ):
        if task not in ("sentiment", "classify"):
            raise ValueError(f"unknown task {task!r}")
        self.engine = engine
        self.scorer = as_label_scorer(engine, task)
        self.task = task
        self.labels, self.descriptions, self.examples = check_setup(labels, descriptions, examples)
        self.calibrate = calibrate
        self.lang = lang
        self.preset = preset  # one preset for every language (the tuning's candidates); None: chosen per language
        self.family = engine.family
        self._prompts: dict[str, _Prompt] = {}
        self._explanations: dict[str, dict] = {}

    def on_engine(self, engine: Engine) -> "Classifier":
        """The same classifier on another connection to the same model (a --parallel worker), sharing its prompts."""
        import copy

        twin = copy.copy(self)  # shallow: the prompt and calibration cache is shared, each engine's state is not
        twin.engine = engine
        twin.scorer = as_label_scorer(engine, self.task)
        return twin

    # -- prompt building --------------------------------------------------------------------------

    def preset_for(self, lang: str) -> Preset:
        """The preset an item in this language gets: the one given, else the built-in for the task and model family."""
        return self.preset or choose(self.task, lang, self.family)

    def explain(self, lang: str) -> dict:
        """Which preset a language gets and what it does (for --explain): name, family, examples, calibration."""
        p = self.preset_for(lang)
        return {**p.describe(), "lang": lang, "family": self.family,
                "examples": "--examples" if self.examples is not None else len(self._examples_for(p)),
                "calibrate": self._uses_calibration(lang), "chat": self._chat(p),
                "verbalizers": {lab: p.word(lab) for lab in self.labels},
                **({"thinking": "off: a reasoning model, scored on its answer's first tokens"} if self.engine.thinks else {})}

    def prompt_text(self, lang: str) -> tuple[str, str]:
        """The shared prefix (instruction and examples, ending at the text field) and the suffix after an item."""
        p = self.preset_for(lang)
        examples = self._examples_for(p)
        covered = {ex.label for ex in examples}
        header = []
        if p.always_instruct or self.descriptions or not set(self.labels) <= covered:
            header.append(p.instruction.format(labels=p.separator.join(p.word(lab) for lab in self.labels)))
        for lab in self.labels:
            if lab in self.descriptions:
                header.append(f"- {p.word(lab)}: {self.descriptions[lab]}")
        head = "\n".join(header) + "\n\n" if header else ""
        text, answer, gap = p.marker(p.text_field), p.marker(p.answer_field), p.gap
        if self._chat(p):
            return self._chat_text(p, head, text, examples)
        shots = "".join(f"{text}{gap}{clean(ex.text)}\n{answer}{gap}{p.word(ex.label)}\n\n" for ex in examples)
        return head + shots + text, f"\n{answer}"

    def _chat(self, p: Preset) -> bool:
        return p.chat and self.engine.has_chat_template

    def _chat_text(self, p: Preset, head: str, text: str, examples: list[Example]) -> tuple[str, str]:
        """The prompt as the model's own chat turns: examples are earlier turns, the item the last user turn."""
        messages: list[dict] = []
        for ex in examples:
            messages += [{"role": "user", "content": f"{head}{text}{p.gap}{clean(ex.text)}"},
                         {"role": "assistant", "content": p.word(ex.label)}]
            head = ""  # the instruction goes in the first turn only
        messages.append({"role": "user", "content": f"{head}{text}{_SLOT}"})
        # a reasoning model is scored with thinking off: its label must be the answer's first tokens
        prefix, slot, suffix = self.engine.render_chat(messages, add_generation_prompt=True, think=False).partition(_SLOT)
        if not slot:
            raise UsageError(f"the chat template of {self.engine.name} dropped the text", "use a preset without chat turns")
        return prefix, suffix

    def _examples_for(self, p: Preset) -> list[Example]:
        if self.examples is not None:
            return self.examples
        wanted = set(self.labels)
        return [ex for ex in p.examples if ex.label in wanted]

    def _uses_calibration(self, lang: str) -> bool:
        if self.calibrate is not None:
            return self.calibrate
        if self.examples is not None:
            return True
        return self.preset_for(lang).calibrate

    def _prompt(self, lang: str) -> _Prompt:
        prompt = self._prompts.get(lang)
        if prompt is not None:
            return prompt
        e = self.engine
        p = self.preset_for(lang)
        prefix_text, suffix_text = self.prompt_text(lang)
        chat = self._chat(p)
        # In chat turns the template's markers are special tokens and the answer follows the turn marker directly.
        prefix = e.prompt_tokens(prefix_text, special=chat)
        answer_gap = "" if chat else p.gap
        conts = [e.tokenize(answer_gap + p.word(lab)) for lab in self.labels]
        if _ambiguous(conts):
            # One label's tokens begin another's: score each up to the line break that ends an answer.
            conts = [e.tokenize(f"{answer_gap}{p.word(lab)}\n") for lab in self.labels]
        suffix = e.tokenize(suffix_text, special=chat)
        longest = max(len(c) for c in conts)
        if len(prefix) + len(suffix) + longest + _MIN_ITEM_TOKENS > e.n_ctx:
            raise ContextOverflowError(len(prefix) + longest, e.n_ctx, what="the instruction and examples")
        room = min(e.n_ctx - len(prefix) - longest - 1, p.item_tokens + len(suffix))
        prompt = _Prompt(prefix, suffix, suffix_text, conts, room, p.gap, chat=chat)
        # The shared prefix's state and its calibration are saved for the next process (an engine with warm starts).
        warm = e if isinstance(e, WarmStart) else None
        entry = warm.restore_prefix(prefix) if warm is not None else None
        saved = dict(entry.extra.get("calibration") or {}) if entry is not None and entry.tokens == prefix else None
        if self._uses_calibration(lang):
            # The bias depends on exactly these tokens and the preset's content-free inputs (and the model, which the
            # cache entry's identity covers).
            calib = hashlib.sha256(json.dumps([p.name, prefix, suffix, conts, room, p.content_free]).encode()).hexdigest()
            bias = (saved or {}).get(calib)
            if isinstance(bias, list) and len(bias) == len(conts) and all(isinstance(b, float) for b in bias):
                prompt.bias = bias
            else:
                prompt.bias = _mean_logprobs([self._raw_scores(prompt, cf)[0] for cf in p.content_free])
                saved = None if saved is None else {**saved, calib: prompt.bias}
                if warm is not None:
                    warm.save_prefix(n_tokens=len(prefix), extra={"calibration": saved or {calib: prompt.bias}})
        elif saved is None and warm is not None:
            self.scorer.score_continuations(prefix, [])  # evaluates the prefix, so there is a state to save
            warm.save_prefix(n_tokens=len(prefix))
        self._prompts[lang] = prompt
        return prompt

    # -- scoring ----------------------------------------------------------------------------------

    def _item_tokens(self, prompt: _Prompt, text: str) -> tuple[list[int], bool]:
        e = self.engine
        body: list[int] | None = None
        if prompt.chat:  # the item is tokenized on its own: nothing in it parses as a turn marker
            body = e.tokenize(prompt.gap + text)
            tokens = body + prompt.suffix
        else:  # a plain suffix is tokenized with the item, as the model saw such text in training
            tokens = e.tokenize(prompt.gap + text + prompt.suffix_text)
        if len(tokens) <= prompt.item_budget:
            return tokens, False
        if body is None:
            body = e.tokenize(prompt.gap + text)
        marker = e.tokenize(" ...")
        room = prompt.item_budget - len(prompt.suffix) - len(marker)
        head = room // 2
        return body[:head] + marker + body[len(body) - (room - head):] + prompt.suffix, True

    def _raw_scores(self, prompt: _Prompt, text: str) -> tuple[list[float], bool]:
        tokens, truncated = self._item_tokens(prompt, text)
        logps = self.scorer.score_continuations(prompt.prefix + tokens, prompt.continuations)
        return _log_normalize(logps), truncated

    def classify(self, text: str) -> Result:
        """The label probabilities for one text; an empty text gives a Result with an error instead."""
        line = clean(text)
        if not line:
            return Result(text=text, error="empty text")
        lang = detect_language(line) if self.lang == "auto" else self.lang
        prompt = self._prompt(lang)
        logps, truncated = self._raw_scores(prompt, line)
        return self._result(text, lang, prompt, logps, truncated)

    @property
    def batches(self) -> bool:
        """True when the engine scores many items per decode (classify_many pays)."""
        return batch_scoring(self.engine) is not None

    def classify_many(self, texts: Sequence[str]) -> list[Result]:
        """Results for several texts, in order: scored together, many per decode, when the engine batches."""
        scorer = batch_scoring(self.engine)
        if scorer is None:
            return [self.classify(text) for text in texts]
        results: list[Result | None] = [None] * len(texts)
        groups: dict[str, list[tuple[int, str]]] = {}  # by language: the items of one prompt share its prefix
        for i, text in enumerate(texts):
            line = clean(text)
            if not line:
                results[i] = Result(text=text, error="empty text")
                continue
            groups.setdefault(detect_language(line) if self.lang == "auto" else self.lang, []).append((i, line))
        for lang, members in groups.items():
            prompt = self._prompt(lang)
            items = [self._item_tokens(prompt, line) for _, line in members]
            scores = scorer.score_batch([(prompt.prefix + tokens, prompt.continuations) for tokens, _ in items])
            for (i, _), (_, truncated), logps in zip(members, items, scores):
                results[i] = self._result(texts[i], lang, prompt, _log_normalize(logps), truncated)
        return [r for r in results if r is not None]

    def _result(self, text: str, lang: str, prompt: _Prompt, logps: list[float], truncated: bool) -> Result:
        if prompt.bias is not None:
            logps = [lp - b for lp, b in zip(logps, prompt.bias)]
        probs = _softmax(logps)
        scores = dict(zip(self.labels, probs))
        best = max(self.labels, key=scores.__getitem__)
        return Result(text=text, label=best, scores=scores, truncated=truncated, preset=self._explained(lang))

    def _explained(self, lang: str) -> dict:
        if lang not in self._explanations:
            self._explanations[lang] = self.explain(lang)
        return self._explanations[lang]


def _ambiguous(conts: list[list[int]]) -> bool:
    for i, a in enumerate(conts):
        for j, b in enumerate(conts):
            if i != j and len(a) <= len(b) and b[: len(a)] == a:
                return True
    return False


def _log_normalize(logps: Sequence[float]) -> list[float]:
    m = max(logps)
    z = m + math.log(sum(math.exp(x - m) for x in logps))
    return [x - z for x in logps]


def _softmax(xs: Sequence[float]) -> list[float]:
    m = max(xs)
    exps = [math.exp(x - m) for x in xs]
    total = sum(exps)
    return [x / total for x in exps]


def _mean_logprobs(rows: list[list[float]]) -> list[float]:
    """Average several content-free label distributions in probability space, back to log space."""
    probs = [sum(math.exp(r[i]) for r in rows) / len(rows) for i in range(len(rows[0]))]
    return _log_normalize([math.log(max(p, 1e-300)) for p in probs])
