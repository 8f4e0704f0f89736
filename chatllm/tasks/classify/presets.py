"""Built-in prompts for `sentiment` and `classify`, per task, language and model family, and how one is chosen.

A preset is everything the classifier asks a model with: the field names, the instruction, the examples, the words
scored for each label (verbalizers) and the content-free inputs calibration uses. The family is what the GGUF says
(`Engine.family`: its pre-tokenizer, else its architecture); a family with no tuned preset gets the default, which
was chosen to do well on every model measured. Tuning: bench/eval_classify.py --cv on ../shared/data (5 folds).
"""

from __future__ import annotations

from dataclasses import dataclass

from chatllm.tasks.classify.fewshot import Example

DEFAULT = "default"


@dataclass(frozen=True)
class Preset:
    """How one task is asked in one language: fields, instruction, examples, label words, calibration inputs."""

    name: str
    text_field: str = "Text"
    answer_field: str = "Sentiment"
    instruction: str = ""  # "{labels}" is replaced by the label words
    separator: str = ", "  # joins the label words inside the instruction
    examples: tuple[Example, ...] = ()
    always_instruct: bool = False  # else the instruction appears only when the examples do not cover every label
    calibrate: bool = True
    item_tokens: int = 384  # a longer item keeps its start and end; the middle rarely changes the label
    colon: str = ": "  # between a field's name and its value ("：" for Chinese field names)
    verbalizers: tuple[tuple[str, str], ...] = ()  # (label, the word the model is scored on); unlisted: the label
    content_free: tuple[str, ...] = ("",)  # calibration averages the label distributions given these texts
    chat: bool = False  # asked in the model's chat template (examples as earlier turns); plain text without one

    def word(self, label: str) -> str:
        """The word shown and scored for a label."""
        return dict(self.verbalizers).get(label, label)

    @property
    def gap(self) -> str:
        """What follows a field's colon before its value (a space after ": ", nothing after "：")."""
        return self.colon[len(self.colon.rstrip()):]

    def marker(self, name: str) -> str:
        """A field's name with its colon, as the prompt ends before a value."""
        return name + self.colon.rstrip()

    def describe(self) -> dict:
        """What --explain shows: the preset's name and the choices it makes."""
        return {"name": self.name, "examples": len(self.examples), "calibrate": self.calibrate, "chat": self.chat,
                "verbalizers": dict(self.verbalizers), "content_free": list(self.content_free)}


def _ex(*pairs: tuple[str, str]) -> tuple[Example, ...]:
    return tuple(Example(text, label) for text, label in pairs)


# The order matters to a small model (recency bias). Neutral examples join only when the label set has neutral.
EN_EXAMPLES = _ex(
    ("not as bad as I feared, and the ending is genuinely touching.", "positive"),
    ("the jokes fall flat and the plot makes no sense.", "negative"),
    ("the film was released in the spring and runs about two hours.", "neutral"),
    ("a warm, funny and beautifully acted film that stays with you long after the credits.", "positive"),
    ("a dull, lifeless mess that wastes a talented cast.", "negative"),
    ("the hotel is next to the train station.", "neutral"),
)
# Written here in the style of hotel reviews (none is from the tuning data); two of them mix praise and complaint.
ZH_EXAMPLES = _ex(
    ("位置有点偏，但是房间很新，床很舒服，服务员态度也好，总体满意。", "positive"),
    ("酒店位置还可以，可是卫生太差，床单有污渍，前台态度冷淡，很失望。", "negative"),
    ("酒店在市中心，离地铁站步行五分钟。", "neutral"),
    ("房间宽敞干净，早餐品种多，前台服务热情周到，下次还会再住。", "positive"),
    ("房间又小又旧，隔音很差，晚上根本睡不好，不会再来了。", "negative"),
    ("入住时间是下午两点，退房是中午十二点。", "neutral"),
)
ZH_WORDS = (("positive", "正面"), ("negative", "负面"), ("neutral", "中性"))

EN_FEWSHOT = Preset("sentiment/en/fewshot", instruction="Classify the sentiment of each text as {labels}.",
                    examples=EN_EXAMPLES, item_tokens=128)
EN_FEWSHOT_GREAT = Preset("sentiment/en/fewshot-great", instruction="Classify the sentiment of each text as {labels}.",
                          examples=EN_EXAMPLES, item_tokens=128,
                          verbalizers=(("positive", "great"), ("negative", "terrible"), ("neutral", "okay")))
ZH_ZERO = Preset("sentiment/zh/zero", instruction="判断每条评论的情感，从以下标签中选一个：{labels}。", separator="、",
                 always_instruct=True, item_tokens=128)
ZH_NATIVE_ZERO = Preset("sentiment/zh/native-zero", text_field="评论", answer_field="情感", colon="：",
                        instruction="判断每条评论的情感是{labels}。", separator="还是", always_instruct=True,
                        item_tokens=128, verbalizers=ZH_WORDS, content_free=("", "无"))
ZH_NATIVE_FEWSHOT = Preset("sentiment/zh/native-fewshot", text_field="评论", answer_field="情感", colon="：",
                           instruction="判断每条评论的情感是{labels}。", separator="还是", always_instruct=True,
                           examples=ZH_EXAMPLES, item_tokens=128, verbalizers=ZH_WORDS, content_free=("", "无"))
# An instruction-tuned model answers best in its own chat turns; the answer is the label word alone.
EN_CHAT_ZERO = Preset("sentiment/en/chat-zero", instruction="Is the sentiment of this text {labels}? Answer with one word.",
                      separator=" or ", always_instruct=True, item_tokens=128, chat=True)
EN_CHAT_FEWSHOT = Preset("sentiment/en/chat-fewshot", instruction="Is the sentiment of this text {labels}? Answer with one word.",
                         separator=" or ", always_instruct=True, examples=EN_EXAMPLES, item_tokens=128, chat=True,
                         calibrate=False)
ZH_CHAT_ZERO = Preset("sentiment/zh/chat-zero", text_field="评论", colon="：", instruction="判断这条评论的情感是{labels}，只回答一个词。",
                      separator="还是", always_instruct=True, item_tokens=128, verbalizers=ZH_WORDS, content_free=("", "无"),
                      chat=True)
ZH_CHAT_FEWSHOT = Preset("sentiment/zh/chat-fewshot", text_field="评论", colon="：",
                         instruction="判断这条评论的情感是{labels}，只回答一个词。", separator="还是", always_instruct=True,
                         examples=ZH_EXAMPLES, item_tokens=128, verbalizers=ZH_WORDS, content_free=("", "无"), chat=True)
# sentiment: {lang: {family: preset}}; the winners of the cross-validated tuning (docs/BENCHMARKS.md, issue 19).
# Chinese field names and label words (native-*) help Qwen (86.9 % vs 76.9 % on rows not tuned on) but break SmolLM2
# (50 %, one label for everything), and chat turns help Qwen in English (86.3 % vs 81.7 %, every fold) but not SmolLM2
# (55 %), so the default for unknown families stays the prompt that worked on both.
SENTIMENT: dict[str, dict[str, Preset]] = {
    "en": {DEFAULT: EN_FEWSHOT, "qwen2": EN_CHAT_FEWSHOT},
    "zh": {DEFAULT: ZH_ZERO, "smollm": ZH_ZERO, "qwen2": ZH_NATIVE_ZERO},
}

CLASSIFY: dict[str, dict[str, Preset]] = {
    "en": {DEFAULT: Preset("classify/en/zero", answer_field="Category",
                           instruction="Classify each text into one of these categories: {labels}.", always_instruct=True)},
    "zh": {DEFAULT: Preset("classify/zh/zero", answer_field="Category", instruction="将每段文本归入以下类别之一：{labels}。",
                           separator="、", always_instruct=True)},
}

PRESETS = {"sentiment": SENTIMENT, "classify": CLASSIFY}
# Every preset the tuning compares, by name (bench/eval_classify.py --cv scores each one once per item).
CANDIDATES = {p.name: p for p in (EN_FEWSHOT, EN_FEWSHOT_GREAT, EN_CHAT_ZERO, EN_CHAT_FEWSHOT, ZH_ZERO, ZH_NATIVE_ZERO,
                                   ZH_NATIVE_FEWSHOT, ZH_CHAT_ZERO, ZH_CHAT_FEWSHOT)}


def choose(task: str, lang: str, family: str | None = None) -> Preset:
    """The built-in preset for a task ("sentiment", "classify"), a language ("en", "zh") and a model family."""
    table = PRESETS[task]
    by_family = table.get(lang, table["en"])
    return by_family.get(family or DEFAULT, by_family[DEFAULT])
