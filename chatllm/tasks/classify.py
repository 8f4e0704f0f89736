"""Zero/few-shot classification by the model's own label probabilities, calibrated, with a KV-cached shared prefix."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol, Sequence

from chatllm.errors import UsageError

CONTENT_FREE = ("N/A", "", "[MASK]")  # inputs that carry no sentiment: they reveal the model's label bias
MAX_ITEM_TOKENS = 384


class ScoringEngine(Protocol):
    """What classification needs from an engine."""

    n_ctx: int

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]: ...

    def score_continuations(self, prefix: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]: ...


@dataclass(frozen=True)
class Template:
    """How one language frames the task: an instruction, the item line, the answer cue."""

    instruction: str
    item: str
    cue: str


TEMPLATES = {
    "en": Template("Classify the {what} of each text as one of: {labels}.{described}\n\n", "Text: {text}\n", "{What}:"),
    "zh": Template("判断每段文字的{what_zh}，从以下类别中选择：{labels}。{described}\n\n", "文字：{text}\n", "{What_zh}："),
}

# Built-in few-shot examples (written for chatllm, not taken from any evaluation set).
SENTIMENT_EXAMPLES = {
    "en": [
        ("a warm, funny and beautifully acted film that stays with you.", "positive"),
        ("a dull, lifeless mess that wastes a talented cast.", "negative"),
        ("the staff were friendly and the food was excellent.", "positive"),
        ("the room was dirty and nobody answered our complaints.", "negative"),
        ("not as bad as I feared, and the ending is genuinely touching.", "positive"),
        ("despite a strong start, it never finds its footing.", "negative"),
        ("smart, tender and often very funny.", "positive"),
        ("tedious, predictable and far too long.", "negative"),
    ],
    "zh": [
        ("房间干净整洁，服务员态度很好，下次还会再来。", "positive"),
        ("房间又小又旧，隔音很差，一晚上没睡好。", "negative"),
        ("位置方便，早餐品种丰富，性价比很高。", "positive"),
        ("前台服务态度恶劣，办理入住等了一个小时。", "negative"),
        ("虽然价格稍贵，但是环境和服务都很满意。", "positive"),
        ("设施陈旧，卫生间有异味，不推荐。", "negative"),
    ],
}
NEUTRAL_EXAMPLES = {
    "en": [("the package arrived on tuesday and contains two cables.", "neutral")],
    "zh": [("酒店位于市中心，距离火车站两公里。", "neutral")],
}
LABEL_WORDS_ZH = {"positive": "正面", "negative": "负面", "neutral": "中性"}


def detect_language(text: str) -> str:
    """'zh' when CJK characters make up a good share of the letters, else 'en'."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    cjk = sum(1 for ch in letters if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")
    return "zh" if cjk / len(letters) >= 0.3 else "en"


@dataclass
class Result:
    """One classified item (or an error for that row)."""

    text: str
    label: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict:
        """The JSON shape: label, scores, text (or error)."""
        if self.error:
            return {"error": self.error, "text": self.text}
        return {"label": self.label, "scores": {k: round(v, 4) for k, v in self.scores.items()}, "text": self.text}


class Classifier:
    """Scores each label as the model's continuation after a shared, cached instruction + examples prefix."""

    def __init__(
        self,
        engine: ScoringEngine,
        labels: Sequence[str],
        *,
        task: str = "sentiment",
        examples: Sequence[tuple[str, str]] | None = None,
        descriptions: dict[str, str] | None = None,
        calibrate: bool = True,
    ):
        labels = [label.strip() for label in labels if label.strip()]
        if len(set(labels)) < 2:
            raise UsageError("classification needs at least two different labels", "for example --labels news,blog,ad")
        self.engine = engine
        self.labels = labels
        self.task = task
        self.custom_examples = list(examples) if examples is not None else None
        self.descriptions = descriptions or {}
        for label in self.descriptions:
            if label not in labels:
                raise UsageError(f"--describe names {label!r}, which is not a label", f"labels: {', '.join(labels)}")
        self.calibrate = calibrate
        self._prefix: dict[str, list[int]] = {}
        self._label_tokens: dict[str, list[list[int]]] = {}
        self._bias: dict[str, list[float]] = {}

    # -- prompt pieces ------------------------------------------------------------------------------

    def _word(self, label: str, lang: str) -> str:
        return LABEL_WORDS_ZH.get(label, label) if lang == "zh" and self.task == "sentiment" else label

    def _examples(self, lang: str) -> list[tuple[str, str]]:
        if self.custom_examples is not None:
            return [(t, lab) for t, lab in self.custom_examples if lab in self.labels]
        if self.task != "sentiment" or not set(self.labels) <= {"positive", "negative", "neutral"}:
            return []
        examples = list(SENTIMENT_EXAMPLES[lang])
        if "neutral" in self.labels:
            examples = examples[:2] + NEUTRAL_EXAMPLES[lang] + examples[2:]
        return [(t, lab) for t, lab in examples if lab in self.labels]

    def _prefix_text(self, lang: str) -> str:
        tpl = TEMPLATES[lang]
        words = [self._word(label, lang) for label in self.labels]
        described = "".join(
            f"\n{self._word(label, lang)}: {text}" for label, text in self.descriptions.items()
        )
        what = "sentiment" if self.task == "sentiment" else "category"
        head = tpl.instruction.format(
            what=what, what_zh="情感" if self.task == "sentiment" else "类别",
            labels=(", " if lang == "en" else "、").join(words), described=described,
        )
        shots = "".join(
            tpl.item.format(text=text) + self._cue(lang) + self._sep(lang) + self._word(label, lang) + "\n\n"
            for text, label in self._examples(lang)
        )
        return head + shots

    def _cue(self, lang: str) -> str:
        what = "Sentiment" if self.task == "sentiment" else "Category"
        return TEMPLATES[lang].cue.format(What=what, What_zh="情感" if self.task == "sentiment" else "类别")

    @staticmethod
    def _sep(lang: str) -> str:
        return "" if lang == "zh" else " "

    def _ready(self, lang: str) -> None:
        if lang in self._prefix:
            return
        eng = self.engine
        self._prefix[lang] = eng.prompt_tokens(self._prefix_text(lang), special=False)
        self._label_tokens[lang] = [eng.tokenize(self._sep(lang) + self._word(label, lang)) for label in self.labels]
        if self.calibrate:
            rows = [self._raw_probs(text, lang) for text in CONTENT_FREE]
            self._bias[lang] = [sum(r[i] for r in rows) / len(rows) for i in range(len(self.labels))]

    def _raw_probs(self, text: str, lang: str) -> list[float]:
        eng = self.engine
        item = eng.tokenize(TEMPLATES[lang].item.format(text=text) + self._cue(lang))
        if len(item) > MAX_ITEM_TOKENS:  # keep the head and the cue: long reviews state their verdict early
            item = item[: MAX_ITEM_TOKENS - 8] + item[-8:]
        logprobs = eng.score_continuations(self._prefix[lang] + item, self._label_tokens[lang])
        # Multi-token labels are compared by mean log-probability per token, so long labels are not penalized.
        per_token = [lp / max(1, len(toks)) for lp, toks in zip(logprobs, self._label_tokens[lang])]
        return _softmax(per_token)

    # -- classification -----------------------------------------------------------------------------

    def classify(self, text: str) -> Result:
        """Label one text; scores are probabilities over the labels that sum to 1."""
        if not text.strip():
            return Result(text=text, error="empty text")
        lang = detect_language(text)
        self._ready(lang)
        probs = self._raw_probs(text.strip(), lang)
        if self.calibrate:
            probs = _normalize([p / max(b, 1e-9) for p, b in zip(probs, self._bias[lang])])
        scores = dict(zip(self.labels, probs))
        return Result(text=text, label=max(scores, key=scores.get), scores=scores)

    def classify_all(self, texts: Iterable[str]) -> Iterator[Result]:
        """Label texts in order, one result as each finishes."""
        for text in texts:
            yield self.classify(text)


def _softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return _normalize(exps)


def _normalize(values: Sequence[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values] if total > 0 else [1 / len(values)] * len(values)
