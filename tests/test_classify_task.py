"""Label scoring logic against a fake engine: probabilities, calibration, languages, shared prefixes."""

from __future__ import annotations

import math

import pytest

from chatllm.errors import UsageError
from chatllm.tasks.classify import Classifier, detect_language


class FakeEngine:
    """Tokens are characters; a label's log-prob is high when the item line contains a cue word for it."""

    n_ctx = 4096

    def __init__(self, bias: float = 0.0):
        self.prefixes: list[list[int]] = []
        self.bias = bias

    def tokenize(self, text, *, add_bos=False, special=False):
        return [ord(c) for c in text]

    def prompt_tokens(self, prompt, special=True):
        return [1] + self.tokenize(prompt)

    def score_continuations(self, prefix, continuations):
        self.prefixes.append(list(prefix))
        text = "".join(chr(t) for t in prefix[1:]).rsplit("\n\n", 1)[-1].lower()
        scores = []
        for cont in continuations:
            word = "".join(chr(t) for t in cont).strip()
            hit = ("good" in text and word in ("positive", "正面")) or ("bad" in text and word in ("negative", "负面"))
            scores.append(len(cont) * ((-0.2 if hit else -2.0) + (self.bias if word == "positive" else 0.0)))
        return scores


def test_scores_are_probabilities_that_sum_to_one():
    clf = Classifier(FakeEngine(), ["positive", "negative"])
    good, bad = clf.classify("a good film"), clf.classify("a bad film")
    assert good.label == "positive" and bad.label == "negative"
    for r in (good, bad):
        assert math.isclose(sum(r.scores.values()), 1.0) and all(0 <= p <= 1 for p in r.scores.values())


def test_calibration_removes_a_label_bias():
    biased = FakeEngine(bias=1.0)  # the model prefers "positive" whatever the text
    raw = Classifier(biased, ["positive", "negative"], calibrate=False).classify("a bad film")
    calibrated = Classifier(biased, ["positive", "negative"]).classify("a bad film")
    assert calibrated.scores["negative"] > raw.scores["negative"]
    assert calibrated.label == "negative"


def test_items_share_one_cached_prefix():
    eng = FakeEngine()
    clf = Classifier(eng, ["positive", "negative"])
    clf.classify("a good film")
    clf.classify("a bad day")
    first, last = eng.prefixes[-2], eng.prefixes[-1]
    shared = len(clf._prefix["en"])
    assert first[:shared] == last[:shared] and shared > 50


def test_chinese_text_gets_a_chinese_prompt():
    eng = FakeEngine()
    clf = Classifier(eng, ["positive", "negative"])
    assert detect_language("这家酒店非常干净，服务很好") == "zh" and detect_language("hello 你") == "en"
    clf.classify("房间很good")
    prompt = "".join(chr(t) for t in eng.prefixes[-1][1:])
    assert "文字：" in prompt and "情感：" in prompt and "正面" in prompt


def test_custom_labels_examples_and_descriptions():
    clf = Classifier(FakeEngine(), ["news", "ad"], task="classify", examples=[("buy now", "ad"), ("x", "other")],
                     descriptions={"ad": "selling something"})
    text = clf._prefix_text("en")
    assert "ad: selling something" in text and "buy now" in text and "other" not in text
    with pytest.raises(UsageError):
        Classifier(FakeEngine(), ["news", "ad"], descriptions={"blog": "x"})


def test_fewer_than_two_labels_and_empty_items():
    with pytest.raises(UsageError):
        Classifier(FakeEngine(), ["only"])
    with pytest.raises(UsageError):
        Classifier(FakeEngine(), ["a", "a", " "])
    result = Classifier(FakeEngine(), ["positive", "negative"]).classify("   ")
    assert result.error and result.as_dict()["error"] == "empty text"
