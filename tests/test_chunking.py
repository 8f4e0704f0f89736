"""Token-budgeted chunking: boundaries, budgets, Chinese text, and bounded memory on streamed blocks."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from chatllm.tasks.text.chunking import (
    MAX_PIECE_CHARS,
    chunk_blocks,
    chunk_text,
    hard_split,
    pieces_from_blocks,
    split_sentences,
)


def count(text: str) -> int:
    """A fake tokenizer: one token per four characters."""
    return (len(text) + 3) // 4


def squash(text: str) -> str:
    return "".join(text.split())


def test_paragraphs_are_kept_whole_when_they_fit():
    text = "First paragraph, short.\n\nSecond paragraph, also short.\n\n\nThird one."
    chunks = chunk_text(text, count, 9)
    assert [c.text for c in chunks] == ["First paragraph, short.", "Second paragraph, also short.", "Third one."]
    assert all(c.tokens == count(c.text) for c in chunks)


def test_small_paragraphs_are_packed_together():
    text = "\n\n".join(f"Para {i}." for i in range(20))
    chunks = chunk_text(text, count, 40)
    assert len(chunks) < 20 and all(c.tokens <= 40 for c in chunks)
    assert "Para 0.\n\nPara 1." in chunks[0].text


def test_units_that_overflow_when_joined_start_the_next_chunk_instead_of_a_tiny_one():
    def joined_costs_more(text: str) -> int:  # like a real tokenizer: a join can cost more than its parts
        return len(text) + 3 * text.rstrip().count("\n\n")

    chunks = chunk_text("aaaa\n\n" * 20, joined_costs_more, 30)
    assert all(c.tokens <= 30 and c.tokens == joined_costs_more(c.text) for c in chunks)
    assert [c.text.count("aaaa") for c in chunks] == [3, 3, 3, 3, 3, 3, 2]
    assert sum(c.text.count("aaaa") for c in chunks) == 20


def test_long_paragraph_splits_at_sentences():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = chunk_text(text, count, 30)
    assert all(c.tokens <= 30 for c in chunks)
    assert all(c.text.endswith(".") for c in chunks)
    assert squash("".join(c.text for c in chunks)) == squash(text)


def test_chinese_splits_on_full_width_marks_without_spaces():
    text = "今天天气很好。我们去公园散步吧！你觉得怎么样？当然可以；就这么定了。" * 40
    chunks = chunk_text(text, count, 16)
    assert all(c.tokens <= 16 for c in chunks)
    assert all(c.text[-1] in "。！？；" for c in chunks)
    assert "".join(c.text for c in chunks) == text
    assert split_sentences("你好。再见！")[0] == "你好。"


def test_quotes_after_sentence_marks_stay_with_the_sentence():
    assert split_sentences('He said "stop." Then left.') == ['He said "stop." ', "Then left."]
    assert split_sentences("他说：“走吧。”我们走了。") == ["他说：“走吧。”", "我们走了。"]
    assert split_sentences("Version 3.14 is out.") == ["Version 3.14 is out."]


def test_text_without_any_boundary_is_cut_by_tokens():
    text = "x" * 1000
    chunks = chunk_text(text, count, 30)
    assert all(c.tokens <= 30 for c in chunks) and "".join(c.text for c in chunks) == text
    assert [c.tokens for c in chunks[:-1]] == [30] * (len(chunks) - 1)  # cut as late as the budget allows


def test_hard_split_with_a_real_looking_tokenizer():
    words = lambda t: len(t.split()) + t.count(",")  # noqa: E731 - a different token rule
    text = ",".join(["alpha beta"] * 50)
    parts = list(hard_split(text, words, 7))
    assert all(n <= 7 for _, n in parts) and "".join(p for p, _ in parts) == text


def test_lines_are_a_boundary_before_sentences():
    text = "\n".join(f"line {i} without a full stop" for i in range(30))
    chunks = chunk_text(text, count, 20)
    assert all(c.tokens <= 20 for c in chunks)
    assert all(c.text.startswith("line") for c in chunks)


def test_blocks_split_mid_paragraph_join_correctly():
    text = "\n\n".join(f"Paragraph {i}: " + "word " * (i % 17) for i in range(300))
    blocks = [text[i:i + 37] for i in range(0, len(text), 37)]
    assert [c.text for c in chunk_blocks(blocks, count, 50)] == [c.text for c in chunk_text(text, count, 50)]


def test_a_huge_paragraph_is_cut_into_bounded_pieces():
    text = "word " * (MAX_PIECE_CHARS // 2)  # one paragraph, ~160 KB, no newline
    pieces = list(pieces_from_blocks([text[i:i + 10000] for i in range(0, len(text), 10000)]))
    assert len(pieces) > 2 and max(len(p) for p in pieces) <= MAX_PIECE_CHARS
    assert "".join(pieces) == text


def test_memory_stays_bounded_for_a_big_stream():
    para = "The quick brown fox jumps over the lazy dog. " * 20 + "\n\n"

    def blocks():
        block = para * ((1 << 20) // len(para))
        for _ in range(20):  # ~20 MB streamed
            yield block

    tracemalloc.start()
    n = 0
    for chunk in chunk_blocks(blocks(), count, 2000):
        n += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n > 2000
    assert peak < 12 * (1 << 20), peak  # a few blocks, never the whole 20 MB


def test_whitespace_only_input_gives_no_chunks():
    assert chunk_text("  \n\n \n", count, 10) == []


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 。.!?\n，、xyz中文")), max_size=600),
       st.integers(min_value=3, max_value=60))
def test_any_text_chunks_within_budget_and_loses_nothing(text, budget):
    chunks = chunk_text(text, count, budget)
    assert all(0 < c.tokens <= budget for c in chunks)
    assert squash("".join(c.text for c in chunks)) == squash(text)


def test_project_gutenberg_header_and_licence_are_dropped():
    from chatllm.tasks.text.chunking import drop_gutenberg_frame

    book = ("The Project Gutenberg eBook of A Tale\n\nRelease date: 2008\n\n"
            "*** START OF THE PROJECT GUTENBERG EBOOK A TALE ***\n\nChapter 1\n\nOnce upon a time.\n\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK A TALE ***\n\nSection 1. General Terms of Use\n")
    kept = "".join(drop_gutenberg_frame(pieces_from_blocks([book])))
    assert kept.strip() == "Chapter 1\n\nOnce upon a time."
    plain = "A text that mentions *** END OF THE PROJECT GUTENBERG EBOOK only in passing.\n\nMore."
    assert "".join(drop_gutenberg_frame(pieces_from_blocks([plain]))) == plain
