"""Translation logic with the fake engine: structure kept, spans never sent, parts in order, bad parts repaired."""

from __future__ import annotations

import re

import pytest

from chatllm.errors import UsageError
from chatllm.settings import Sampling
from chatllm.tasks.translate import doc_structure as ds
from chatllm.tasks.translate.translator import (
    TranslateOptions,
    Translator,
    clean_reply,
    parse_glossary,
    problem_of,
    resolve_language,
    translate,
)
from tests.fakes import FakeEngine

ZH = resolve_language("zh")
EN = resolve_language("en")
SAMPLING = Sampling(temperature=0)
HEAD = "Translate into Chinese:\n\n"

DOC = """---
title: Notes
---

# The `main` function

Call `run()` at https://example.com/docs, or write to bob@example.org.
It returns **3** values and fails 4.5% of
the time.

- first item with [a link](http://a.b/c)
- second item
  goes on here

| Name | Value |
|------|------:|
| speed | 12 km |

```python
x = 1

print("not translated")
```

Last words.
"""


def fake_zh(text: str) -> str:
    """A 'translation': every word becomes 译 characters, placeholders and punctuation stay."""
    return re.sub(r"(?<!\[)\b[A-Za-z]+\b(?!\])", lambda m: "译" * max(1, len(m.group(0)) // 2), text)


class Translating(FakeEngine):
    """The fake engine answering each prompt with fake_zh of the text it was asked to translate (or `script`)."""

    def __init__(self, script=None, **kw):
        kw.setdefault("split", "chars")
        kw.setdefault("n_ctx", 4000)
        super().__init__(**kw)
        self.script = script  # function(call number, text to translate) -> reply, or None for fake_zh

    def asked(self, tokens) -> str:
        """The text the last user message asks to translate."""
        user = self._last_user_message(self.detokenize(tokens))
        return user.split(HEAD, 1)[-1].split("\n\n(Use these terms:")[0]

    def _next_reply(self, tokens):
        text = self.asked(tokens)
        return self.script(len(self.streamed), text) if self.script else fake_zh(text)


def run(engine, doc=DOC, **opts):
    pieces, parts, warnings = [], [], []
    options = TranslateOptions(ZH, **opts)
    result = translate(engine, [doc], SAMPLING, options, on_text=pieces.append, on_part=parts.append, warn=warnings.append)
    return result, "".join(pieces), parts, warnings


def test_markdown_structure_and_protected_spans_come_back_byte_for_byte():
    engine = Translating()
    result, text, parts, warnings = run(engine)
    assert text == result.text and not warnings
    src_lines, out_lines = DOC.split("\n"), text.split("\n")
    assert len(out_lines) == len(src_lines)
    for a, b in zip(src_lines, out_lines):
        assert (a.strip() == "") == (b.strip() == "")  # blank lines where they were: same paragraphs
    for kept in ("---\ntitle: Notes\n---\n", "# ", "`main`", "`run()`", "https://example.com/docs", "bob@example.org",
                 "**3**", "4.5%", "](http://a.b/c)", "- ", "  ", "|------|------:|", "| 12 ",
                 '```python\nx = 1\n\nprint("not translated")\n```\n'):
        assert kept in text, kept
    assert "Last words" not in text and "译" in text
    sent = "\n".join(engine.streamed_texts)
    for never in ("https://example.com", "bob@example.org", "`run()`", "print(", "title: Notes", "|---"):
        assert never not in sent, never
    assert [p.index for p in parts] == list(range(1, len(parts) + 1)) and result.parts == len(parts)


def test_plain_identity_round_trip_keeps_every_line():
    engine = Translating(script=lambda n, text: text)
    doc = "one two three\nfour five six\n\n\n  indented line\n> quoted text\n"
    result, text, _, _ = run(engine, doc, source=EN)
    assert text.count("\n") == doc.count("\n") and text.split("\n")[2:] == doc.split("\n")[2:]


def test_a_long_paragraph_goes_in_sentence_parts_that_fit_with_context():
    engine = Translating(n_ctx=600)
    doc = " ".join(f"Sentence number {w} tells of the harbour boats." for w in ("one", "two", "three", "four") * 12) + "\n"
    result, text, parts, _ = run(engine, doc, part_tokens=120)
    assert result.parts >= 4 and text.count("\n") == 1
    assert all(len(p) < 600 for p in engine.streamed)  # the fake fails the test on any overflow, too
    # the second part is sent after the first part and its translation
    assert parts[0].source in engine.streamed_texts[1] and parts[0].translation in engine.streamed_texts[1]


def test_glossary_terms_are_sent_only_with_parts_that_use_them():
    engine = Translating()
    doc = "The harbour master spoke.\n\nNothing else here.\n"
    run(engine, doc, glossary=(("harbour master", "港务长"),))
    assert "harbour master = 港务长" in engine.streamed_texts[0]
    assert "港务长" not in engine.streamed_texts[-1].split("Nothing else")[-1]


def test_an_empty_reply_is_retried_once_with_the_strict_prompt():
    engine = Translating(script=lambda n, text: "" if n == 1 else fake_zh(text))
    result, text, parts, warnings = run(engine, "Hello there, friend.\n")
    assert parts[0].retries == 1 and parts[0].status == "ok" and result.retries == 1 and not warnings
    assert "add nothing" in engine.streamed_texts[1] and "add nothing" not in engine.streamed_texts[0]


def test_a_part_that_fails_twice_is_kept_in_the_source_with_a_warning():
    engine = Translating(script=lambda n, text: "Still English words here, sorry.")
    result, text, parts, warnings = run(engine, "# Title words\n\nHello there, friend.\n")
    assert text == "# Title words\n\nHello there, friend.\n"
    assert result.failed == 2 and parts[0].status == "failed" and parts[0].problem == "wrong language"
    assert len(warnings) == 2 and "line 3" in warnings[1] and "kept the source" in warnings[1]


def test_runaway_and_repetition_are_caught():
    engine = Translating(script=lambda n, text: "很长" * 500 if n == 1 else fake_zh(text))
    _, _, parts, _ = run(engine, "Short one.\n")
    assert parts[0].retries == 1 and parts[0].problem == "runaway" and parts[0].status == "ok"
    assert problem_of("Hello world again", "你好你好你好你好你好你好你好你好你好", ZH, "stop") == "repetition"
    assert problem_of("Hello world again", "你好，世界", ZH, "stop") is None
    assert problem_of("Hello world again", "   ", ZH, "stop") == "empty"
    same = "你好，世界，今天天气很好，我们去公园散步吧。"
    assert problem_of(same, same, EN, "stop") == "wrong language"


def test_lost_placeholders_are_repaired_by_translating_between_them():
    engine = Translating(script=lambda n, text: "译文没有占位符" if n <= 2 else fake_zh(text))
    result, text, parts, warnings = run(engine, "Call `run()` to start the engine.\n")
    assert text.startswith("Call") is False and "`run()`" in text and parts[0].status == "repaired"
    assert result.repaired == 1 and not warnings


def test_a_link_whose_text_moved_out_of_its_brackets_is_repaired():
    engine = Translating(script=lambda n, text: "第一个[1][2]链接" if n <= 2 else fake_zh(text))
    _, text, parts, _ = run(engine, "first item with [a link](http://a.b/c) here\n")
    assert "[译译译](http://a.b/c)" in text and parts[0].status == "repaired"


def test_interrupt_keeps_the_parts_already_written():
    engine = Translating()

    def stop_at_third(i):
        if len(engine.streamed) == 3:
            raise KeyboardInterrupt

    engine.on_piece = stop_at_third
    pieces: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        translate(engine, ["One.\n\nTwo.\n\nThree.\n\nFour.\n"], SAMPLING, TranslateOptions(ZH), on_text=pieces.append)
    assert "".join(pieces) == "译.\n\n译.\n\n"


def test_a_base_model_gets_a_plain_prompt():
    engine = Translating(template=None, script=lambda n, text: " 你好\nEnglish: more")
    result, text, _, _ = run(engine, "Hello.\n", source=EN)
    assert text == "你好\n" and engine.streamed_texts[0].endswith("English: Hello.\nChinese:")


def test_a_window_too_small_is_refused():
    from chatllm.errors import ChatllmError

    with pytest.raises(ChatllmError, match="too small"):
        Translator(Translating(n_ctx=120), SAMPLING, TranslateOptions(ZH))


@pytest.mark.parametrize("value", ["zh", "Chinese", "中文", "zh-CN", "ZH_Hans", "chinese"])
def test_chinese_by_any_name(value):
    assert resolve_language(value).code == "zh"


def test_unknown_language_lists_the_known_ones():
    with pytest.raises(UsageError) as err:
        resolve_language("klingon")
    assert "zh (Chinese)" in err.value.hint and "en (English)" in err.value.hint


def test_glossary_tsv():
    assert parse_glossary("# terms\nharbour\t港口\n\nship\t船\n") == [("harbour", "港口"), ("ship", "船")]
    with pytest.raises(UsageError, match="line 2"):
        parse_glossary("a\tb\nno tab here\n")


def test_clean_reply_drops_what_small_models_add():
    assert clean_reply("Translation: 你好", "Hello") == "你好"
    assert clean_reply('"你好"', "Hello") == "你好"
    assert clean_reply("你好\n世界", "Hello world") == "你好 世界"
    assert clean_reply("```\n你好\n```", "Hello") == "你好"


def test_spans_at_the_ends_are_never_placeholders_and_numbers_travel_as_text():
    unit = ds.make_unit([""], "`x` is 12 km to https://x.org")
    assert isinstance(unit, ds.Unit) and unit.text == "is 12 km to" and unit.lead == "`x` " and unit.trail == " https://x.org"
    assert ds.make_unit([""], "42 | 3.5%") == "42 | 3.5%"  # nothing to translate: verbatim


def test_chinese_text_is_split_at_chinese_punctuation():
    engine = Translating(script=lambda n, text: "Part.")
    doc = "今天天气很好。" * 60 + "\n"
    result, text, parts, _ = translate_en(engine, doc)
    assert result.parts > 1 and all(p.source.endswith("。") for p in parts[:-1])
    assert text == " ".join(["Part."] * result.parts) + "\n"


def translate_en(engine, doc):
    parts: list = []
    options = TranslateOptions(EN, part_tokens=60)
    result = translate(engine, [doc], SAMPLING, options, on_part=parts.append)
    return result, result.text, parts, None


def test_a_plain_sentence_goes_as_one_plain_instruction_and_the_retry_is_different():
    engine = Translating(script=lambda n, text: text if n == 1 else fake_zh(text))
    result, text, parts, warnings = run(engine, "We now have 4-month-old mice, he added.\n")
    first, retry = engine.streamed_texts
    assert "<system>" not in first and "Translate into Chinese:\n\nWe now have 4-month-old mice" in first
    assert "add nothing" in retry and "博物馆" in retry  # a stricter system prompt and a one-shot example
    assert parts[0].problem == "wrong language" and parts[0].status == "ok" and "4-month-old" not in text
    assert "4" in text and not warnings


def test_names_and_code_may_stay_as_they_are():
    assert problem_of("Python SDK", "Python SDK", ZH, "stop") is None
    assert problem_of("Ring CEO Jamie Siminoff", "Ring CEO Jamie Siminoff", ZH, "stop") is None
    assert problem_of("Hello there, my friend.", "Hello there, my friend.", ZH, "stop") == "wrong language"


def test_numbers_are_checked_but_never_rejected():
    from chatllm.tasks.translate.translation_checks import numbers_missing

    assert numbers_missing("In 2013 he had 4 dogs.", "2013年他有四只狗。", ZH) == []
    assert numbers_missing("In 2013 he had 4 dogs.", "他有狗。", ZH) == ["2013", "4"]
    assert numbers_missing("It costs 1,500 dollars.", "It costs 1500 dollars.", EN) == []
    engine = Translating(script=lambda n, text: "他有狗。")
    _, text, parts, warnings = run(engine, "He had 4 dogs in 2013.\n")
    assert text == "他有狗。\n" and parts[0].retries == 0 and parts[0].numbers_missing == ("4", "2013")
    assert parts[0].as_dict()["numbers_missing"] == ["4", "2013"] and not warnings


def test_a_span_the_model_copied_literally_is_taken_as_its_placeholder():
    engine = Translating(script=lambda n, text: "打开 https://example.com/docs 看看")
    _, text, parts, _ = run(engine, "Open https://example.com/docs and look.\n")
    assert text == "打开 https://example.com/docs 看看\n" and parts[0].retries == 0 and parts[0].status == "ok"


def test_a_reply_copied_back_twice_gets_a_last_try_in_the_plainest_wording():
    engine = Translating(script=lambda n, text: text if n <= 2 else fake_zh(text))
    _, text, parts, warnings = run(engine, "The movie received nominations in all major categories.\n")
    assert "Translate to Chinese:\n\nThe movie" in engine.streamed_texts[2] and "<system>" not in engine.streamed_texts[2]
    assert parts[0].retries == 2 and parts[0].status == "ok" and "movie" not in text and not warnings


def test_the_json_record_says_whether_its_token_counts_are_estimated():
    for estimated in (False, True):
        result, _, _, _ = run(Translating(estimated=estimated), "Hello there.\n", source=EN)
        assert result.as_dict()["token_counts"] == ("estimated" if estimated else "exact")
