"""The document's own sentences about a name, kept while it is read, that an added sentence about it is written from."""

from __future__ import annotations

from chatllm.tasks.summarize.names.name_evidence import PER_NAME, SENTENCE_CHARS, NameEvidence, sentence_at


def test_the_sentence_of_a_mention_is_cut_at_its_stops_and_blank_lines_with_wrapped_lines_joined():
    text = "Chapter 1\n\nIt rained. Then Dr. Livesey came late one\nafternoon to see the patient. He left."
    assert sentence_at(text, "Dr. Livesey") == "Then Dr. Livesey came late one afternoon to see the patient."
    zh = "秀才骂他。那是赵太爷的儿子进了秀才的时候，锣声镗镗。阿Q笑了。"
    assert sentence_at(zh, "赵太爷") == "那是赵太爷的儿子进了秀才的时候，锣声镗镗。"
    assert sentence_at("Nobody here.", "Silver") == ""
    long = "word " * 200 + "Silver came. "
    assert "Silver" in sentence_at(long, "Silver") and len(sentence_at(long, "Silver")) <= SENTENCE_CHARS


def test_passages_prefer_the_whole_name_spread_over_the_document_in_order():
    ev = NameEvidence()
    for i in range(20):
        ev.add(f"In part {i}, Long John Silver cooked. Later Silver slept in part {i}.", ["Long John Silver", "Silver"])
    got = ev.passages("Long John Silver", 4)
    assert len(got) == 4 and all("Long John Silver" in s for s in got)
    parts = [int(s.split()[2].rstrip(",")) for s in got]
    assert parts == sorted(parts) and parts[-1] - parts[0] >= 10  # spread, not the first four
    assert len(ev.sentences["Silver"]) <= PER_NAME + 1


def test_a_name_the_text_writes_without_its_title_still_finds_its_sentences():
    ev = NameEvidence()
    ev.add("Livesey rode to the inn. The squire waited.", ["Livesey"])
    assert ev.passages("Dr. Livesey", 4) == ["Livesey rode to the inn."]
    assert ev.passages("Ben Gunn", 4) == []
