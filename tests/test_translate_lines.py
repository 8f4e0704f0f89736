"""Line-oriented translation with the fake engine: --lines, the line-by-line guess, re-wrapping, subtitles, records."""

from __future__ import annotations

import re
import threading

import pytest

from chatllm.settings import Sampling
from chatllm.tasks.translate import doc_structure as ds
from chatllm.tasks.translate import subtitles
from chatllm.tasks.translate.translator import TranslateOptions, translate
from tests.test_translate_task import ZH, Translating, fake_zh

SAMPLING = Sampling(temperature=0)
SENTENCES = """The ferry left at 7 o'clock.
Anna bought 42 apples in Lyon.
Nobody expected 1,500 guests.

Pedro sold the house in 1987.
"""


def run(doc, engine=None, layout=None, **opts):
    engine = engine or Translating()
    notes, warnings, lines = [], [], []
    result = translate(engine, [doc], SAMPLING, TranslateOptions(ZH, **opts), warn=warnings.append, note=notes.append,
                       layout=layout, on_line=lines.append)
    return result, notes, warnings, lines


# -- which runs of lines read line by line ------------------------------------------------------------------


@pytest.mark.parametrize("lines", [
    ["The ferry left at 7 o'clock.", "Anna bought 42 apples.", "Nobody came."],  # one sentence a line
    ["Blue Widget Pro", "Red Gadget", "Green Thing Mini"],  # a list of product names
    ["apple", "banana", "cherry pie"],  # short items, lower case
    ["Ingredients:", "Two eggs and a cup of flour.", "A pinch of salt!"],
    ["今天天气很好。", "我们去公园散步。", "他说：“好啊！”"],  # Chinese sentences
    ["- Where were you?", "- At home."],  # subtitle dialogue
])
def test_runs_that_read_one_sentence_or_item_a_line(lines):
    assert ds.line_oriented(lines)


@pytest.mark.parametrize("lines", [
    ["This paragraph was wrapped by an editor at a fixed width, so", "its lines end wherever the width ran out and the",
     "next line goes on in lower case. Only now and then does a", "sentence end at the end of a line."],
    ["Line 1 of the first paragraph", "continues here."],  # a markdown soft break
    ["We bought apples, pears,", "and plums."],
    ["'Is not that rather a large thing to expect us to begin upon?'", "said Filby, an argumentative person."],
    ["single line only."],
])
def test_runs_that_read_as_one_wrapped_paragraph(lines):
    assert not ds.line_oriented(lines)


# -- alignment ------------------------------------------------------------------------------------------------


def test_a_sentence_a_line_file_comes_back_line_for_line_and_says_so():
    result, notes, warnings, _ = run(SENTENCES)
    out = result.text.split("\n")
    src = SENTENCES.split("\n")
    assert len(out) == len(src) and out[3] == "" and out[-1] == ""
    for a, b in zip(src, out):
        assert b == fake_zh(a)  # line i out is the translation of line i in, nothing moved
    assert result.lines_alone == 3 and result.parts == 4 and result.layout == "text"  # the last paragraph is one line
    assert len(notes) == 1 and "each line on its own" in notes[0] and not warnings


def test_each_line_is_sent_alone_without_the_others():
    engine = Translating()
    run(SENTENCES, engine)
    asked = [engine.asked(t) for t in engine.streamed]
    assert asked == [line for line in SENTENCES.split("\n") if line]


def test_no_lines_joins_the_run_into_one_unit():
    engine = Translating()
    result, notes, _, _ = run(SENTENCES, engine, line_mode=False)
    assert len(engine.streamed) == 2 and not notes and result.lines_alone == 0
    assert "42" in engine.asked(engine.streamed[0]) and "1,500" in engine.asked(engine.streamed[0])


def test_lines_forces_a_wrapped_paragraph_line_by_line_without_a_note():
    doc = "We bought apples, pears,\nand plums at the market.\n\n\n   \nThe end\n"
    result, notes, _, lines = run(doc, line_mode=True)
    assert result.text == "".join(fake_zh(line) + "\n" for line in doc.split("\n")[:-1])
    assert not notes and result.layout == "lines"
    assert [ln.number for ln in lines] == [1, 2, 3, 4, 5, 6]
    assert [ln.status for ln in lines] == ["ok", "ok", "verbatim", "verbatim", "verbatim", "ok"]
    assert lines[4].source == "   " and lines[4].translation == "   "  # a blank line stays as it is


def test_line_records_cover_every_input_line_with_its_own_parts():
    doc = "Call `run()` 3 times.\n\n42\n| Name | Ship |\nPedro sold 7 boats"  # no final newline
    result, _, _, lines = run(doc, line_mode=True)
    assert [ln.source for ln in lines] == doc.split("\n")
    assert [ln.translation for ln in lines] == result.text.rstrip("\n").split("\n")
    assert lines[0].translation == "译译 `run()` 3 译译." and lines[2].status == "verbatim"
    assert len(lines[3].parts) == 2 and lines[3].translation == "| 译译 | 译译 |"  # two cells, one line
    record = lines[0].as_dict()
    assert record["line"] == 1 and record["status"] == "ok" and record["tokens"]["prompt"] > 0
    assert set(record) >= {"line", "source", "translation", "tokens", "retries", "status"}
    assert lines[-1].source == "Pedro sold 7 boats" and "7" in lines[-1].translation


def test_a_failed_line_keeps_its_source_and_its_neighbours_stay_in_place():
    engine = Translating(script=lambda n, text: "Still English words here." if "42" in text else fake_zh(text))
    result, _, warnings, lines = run(SENTENCES, engine)
    out = result.text.split("\n")
    assert out[1] == "Anna bought 42 apples in Lyon." and out[0] == fake_zh(SENTENCES.split("\n")[0])
    assert lines[1].status == "failed" and "line 2" in warnings[0]


def test_units_go_through_several_engines_at_once_in_input_order():
    gate = threading.Barrier(2, timeout=5)

    class Slow(Translating):
        def _next_reply(self, tokens):
            if len(self.streamed) == 1:
                gate.wait()  # both workers hold a line at the same time, or this times out
            return super()._next_reply(tokens)

    first, second = Slow(), Slow()
    doc = "".join(f"Sentence number {i} is here.\n" for i in range(8))
    result = translate(first, [doc], SAMPLING, TranslateOptions(ZH), helpers=[second])
    assert result.text == "".join(fake_zh(line) + "\n" for line in doc.splitlines())
    assert first.streamed and second.streamed and len(first.streamed) + len(second.streamed) == 8


# -- re-wrapping a paragraph's translation --------------------------------------------------------------------


def test_a_soft_break_paragraph_is_one_unit_rewrapped_at_word_boundaries():
    engine = Translating(script=lambda n, text: "第一段的第1行继续在这里。")
    result, notes, _, _ = run("Line 1 of the first paragraph\ncontinues here.\n", engine)
    assert len(engine.streamed) == 1 and not notes
    assert result.text == "第一段的第1行继续在这里。\n"  # no place to break a Chinese word: one line


def test_rewrap_never_cuts_inside_a_word_or_a_number():
    text = "The satellites weighed 1,000 pounds and flew at 17,500 miles per hour, 491 miles up."
    for n in (2, 3, 5):
        lines = ds.rewrap(text, n)
        assert " ".join(lines) == text and len(lines) == n
    assert ds.rewrap("It costs 1 000 dollars", 4)[1:] != ["000 dollars"]
    assert all(" 000" not in line[:4] for line in ds.rewrap("It costs 1 000 dollars", 4))
    assert ds.rewrap("one", 3) == ["one"]  # fewer lines, never an empty one (that would end the paragraph)
    assert ds.rewrap("", 2) == [""]


def test_rewrap_of_chinese_breaks_only_after_punctuation():
    text = "他补充道：“我们现在有4个月大的老鼠，它们曾经得过糖尿病。”他说。"
    lines = ds.rewrap(text, 2)
    assert "".join(lines) == text and len(lines) == 2
    assert lines[0].endswith(("：", "，", "。", "”"))
    assert ds.rewrap("第一段的第1行继续在这里", 2) == ["第一段的第1行继续在这里"]
    assert ds.rewrap("Anna 购买了 42 个苹果，并回家。", 2) == ["Anna 购买了 42 个苹果，", "并回家。"]  # punctuation first
    assert ds.rewrap("Anna 购买了 42 个苹果并回家。", 2) == ["Anna 购买了", "42 个苹果并回家。"]  # else a space


# -- subtitles ---------------------------------------------------------------------------------------------------

SRT = """1
00:00:01,000 --> 00:00:04,000
The ferry left at 7 o'clock.

2
00:00:04,500 --> 00:00:07,250
<i>Anna bought 42 apples</i>
and went home to Lyon.

3
00:00:08,000 --> 00:00:09,000
- Where were you?
- At home, in 1987.
"""

VTT = """WEBVTT - a header

NOTE This note stays as it is.

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:04.000 align:start position:10%
<v Roger>Hello there, my friend.

00:05.000 --> 00:06.000
<c.yellow>Goodbye</c> for now.
"""


def timing_lines(text):
    return [line for line in text.split("\n") if "-->" in line or line.strip().isdigit()]


def test_srt_cues_keep_numbers_timing_and_boundaries():
    engine = Translating()
    result, notes, _, _ = run(SRT, engine, layout="srt")
    assert timing_lines(result.text) == timing_lines(SRT) and result.layout == "srt" and not notes
    out_blocks, src_blocks = result.text.split("\n\n"), SRT.split("\n\n")
    assert len(out_blocks) == len(src_blocks)
    assert "<i>" in result.text and "</i>" in result.text and "42" in out_blocks[1] and "1987" in out_blocks[2]
    assert out_blocks[2].split("\n")[2:4] == [fake_zh("- Where were you?"), fake_zh("- At home, in 1987.")]  # apart
    sent = " ".join(engine.asked(t) for t in engine.streamed)
    assert "-->" not in sent and "00:00" not in sent and "<i>" not in sent


def test_vtt_header_notes_styles_and_cue_settings_stay_verbatim():
    engine = Translating()
    result, _, _, _ = run(VTT, engine)  # recognised from its first line
    assert result.layout == "vtt"
    for kept in ("WEBVTT - a header\n\nNOTE This note stays as it is.\n\nSTYLE\n::cue { color: yellow }\n\nintro\n"
                 "00:01.000 --> 00:04.000 align:start position:10%\n<v Roger>", "\n\n00:05.000 --> 00:06.000\n<c.yellow>",
                 "</c>"):
        assert kept in result.text, kept
    assert "Hello" not in result.text and "Goodbye" not in result.text


def test_subtitles_are_recognised_on_stdin_and_by_name():
    assert subtitles.sniff(["\n", "1\n", "00:00:01,000 --> 00:00:02,000\n"]) == "srt"
    assert subtitles.sniff(["WEBVTT\n"]) == "vtt"
    assert subtitles.sniff(["Hello.\n", "00:00:01,000 --> 00:00:02,000\n"]) is None
    assert subtitles.format_of("talk.SRT") == "srt" and subtitles.format_of("a.vtt") == "vtt"
    assert subtitles.format_of("notes.txt") is None


def test_text_after_a_stray_blank_line_in_a_cue_is_still_translated():
    doc = "1\n00:00:01,000 --> 00:00:02,000\nFirst words here.\n\nMore words follow.\n\n2\n00:00:03,000 --> 00:00:04,000\nEnd.\n"
    result, _, _, _ = run(doc, layout="srt")
    assert "More" not in result.text and result.text.count("\n") == doc.count("\n")
    assert re.findall(r"\d\d:\d\d:\d\d,\d{3}", result.text) == re.findall(r"\d\d:\d\d:\d\d,\d{3}", doc)
