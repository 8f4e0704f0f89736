"""Entity-faithful map-reduce with the fake engine: names in every prompt, greedy notes, invented names kept out."""

from __future__ import annotations

import math

from chatllm.settings import Sampling
from chatllm.tasks.summarize import SummaryOptions
from chatllm.tasks.summarize.summarizer import COVER_MIN_ROOM, COVER_ROOM, COVER_TOKENS, Summarizer, summarize
from tests.fakes import FakeEngine
from tests.test_entities import chinese_story, harbour_report

SAMPLING = Sampling(temperature=0.7, max_tokens=512, seed=3)


def engine(reply=None, replies=(), n_ctx: int = 2048) -> FakeEngine:
    return FakeEngine(split="4chars", bos=True, template="phi", n_ctx=n_ctx, name="fake.gguf", reply=reply,
                      replies=list(replies))


def final_prompt(eng: FakeEngine) -> str:
    """The final pass's prompt: the last one that is not a question about a name the summary left out."""
    asked = ("In one short sentence: who or what is", "Write one sentence that says what the text above tells about")
    return [p for p in eng.streamed_texts if not any(a in p for a in asked)][-1]


TAILS = [" mended the nets by the water.", " sold fish at the market square.", " rang the bell before the storm.",
         " counted boats in the harbour mouth.", " wrote letters to every captain.", " painted the lighthouse door red."]


def long_report(copies: int = 8) -> str:
    return "\n\n".join(harbour_report(6) * copies)  # ~11,000 tokens at four characters a token


def test_each_map_note_is_told_the_names_in_its_chunk_and_the_final_gets_the_main_ones():
    eng = engine(reply="Quill and Berg checked the wall at Port Avel.")
    result = summarize(eng, [long_report()], SAMPLING, SummaryOptions(length="short"))
    assert result.levels >= 1 and result.chunks >= 3
    maps = eng.streamed_texts[: result.chunks]
    assert all("Say who did what:" in p and "Port Avel" in p and "Quill" in p for p in maps)
    final = final_prompt(eng)
    assert "Say who did what:" in final and "Harbour Board" in final
    assert "- Quill and Berg checked the wall at Port Avel." in final  # the key events, in order, before the notes
    names = [e["name"] for e in result.entities]
    assert "Port Avel" in names and "Harbour Board" in names and result.as_dict()["entities"] == result.entities


def test_notes_are_greedy_with_a_repeat_penalty_and_the_final_keeps_the_users_sampling():
    eng = engine(reply="Quill checked the wall.")
    result = summarize(eng, [long_report()], SAMPLING)
    sampled = [s for s in eng.samplings if s.temperature != 0]  # the final pass; notes and added sentences are greedy
    assert len(eng.samplings) == result.calls and len(sampled) == 1
    assert all(s.repeat_penalty >= 1.1 for s in eng.samplings if s.temperature == 0)
    assert sampled[0].temperature == 0.7 and sampled[0].seed == 3
    eng = engine(reply="Quill checked the wall.")
    summarize(eng, [long_report()], SAMPLING, SummaryOptions(note_temperature=None))  # the behaviour before issue 13
    assert all(s.temperature == 0.7 for s in eng.samplings)


def test_an_invented_sentence_never_reaches_the_user():
    reply = "Quill checked the crane. In 1836 Elizabeth Bennet married Darcy. Berg measured the wall."
    streamed: list[str] = []
    result = summarize(engine(reply=reply), ["\n\n".join(harbour_report(2))], SAMPLING, on_text=streamed.append)
    assert result.text == "Quill checked the crane. Berg measured the wall." == "".join(streamed)
    assert {"Elizabeth Bennet", "1836", "Darcy"} <= set(result.removed) and not result.regenerated


def test_a_final_of_nothing_but_invented_names_is_regenerated_once_with_a_stricter_prompt():
    eng = engine(replies=["Elizabeth Bennet wrote to Darcy."], reply="Quill and Berg checked the wall.")
    streamed: list[str] = []
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING, SummaryOptions(cover_names=False),
                       on_text=streamed.append)
    assert result.regenerated and result.calls == 2
    assert "Use only these names:" in eng.streamed_texts[1] and "Use only these names" not in eng.streamed_texts[0]
    assert result.text == "Quill and Berg checked the wall." == "".join(streamed)


def test_when_the_model_only_invents_the_summary_falls_back_to_checked_text():
    eng = engine(reply="Elizabeth Bennet wrote to Darcy.")
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING, SummaryOptions(words=20))
    assert result.calls == 2 and result.text and "Bennet" not in result.text
    assert result.text.split()[:2] == ["However,", "on"]  # the opening of the document, checked and cut to length


def test_invented_names_in_notes_are_cut_before_the_next_level():
    eng = engine(reply=lambda n: f"Quill checked crane {n}. Mr. Fitzwilliam Darcy danced.")
    result = summarize(eng, [long_report()], SAMPLING, SummaryOptions(keep_notes=True))
    assert "Darcy" not in final_prompt(eng) and "Mr. Fitzwilliam Darcy" in result.removed
    assert result.notes and all("Darcy" not in note for level in result.notes for note in level)
    assert len(result.notes[0]) == result.chunks and result.as_dict()["notes"] == result.notes


def test_chinese_names_reach_the_prompts():
    eng = engine(reply="王小明和李老师在图书馆说话。", n_ctx=1024)
    text = "\n\n".join(chinese_story(4) * 12)
    result = summarize(eng, [text], SAMPLING, SummaryOptions(length="short"))
    assert result.levels >= 1
    assert all("王小明" in p.split("---")[-1] for p in eng.streamed_texts[: result.chunks])
    assert "李老师" in final_prompt(eng).split("---")[-1] and "王小明" in result.text


def test_a_small_window_lists_no_names_but_still_works():
    eng = engine(reply="Quill checked the wall.", n_ctx=512)
    s = Summarizer(eng, SAMPLING, SummaryOptions(length="medium"))
    assert s.entity_reserve == 0
    result = s.summarize([long_report(2)])
    assert result.text == "Quill checked the wall." and "Say who did what" not in eng.streamed_texts[0]


def test_each_main_name_the_summary_left_out_gets_one_greedy_sentence_that_starts_with_it():
    eng = engine(replies=["Quill checked the crane."], reply=lambda n: TAILS[n % len(TAILS)])
    streamed: list[str] = []
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING, on_text=streamed.append)
    assert result.text == "".join(streamed) and result.text.startswith("Quill checked the crane. ")
    assert result.added_names and "Quill" not in " ".join(result.added_names)
    for name in result.added_names:
        assert any(f" {name}{tail}" in result.text for tail in TAILS)
        assert any(p.endswith(f"who or what is {name}, and what do they do?<|end|>\n<|assistant|>\n{name}")
                   for p in eng.streamed_texts[1:])  # asked about the name, the reply started with it
    assert result.calls == 1 + len(result.added_names) and result.as_dict()["added_names"] == result.added_names
    assert all(s.temperature == 0 for s in eng.samplings[1:]) and result.finish_reason == "stop"


def test_an_added_sentence_that_invents_a_name_says_nothing_or_repeats_is_dropped_and_json_says_why():
    cases = {" met Elizabeth Bennet in London.": "invents Elizabeth Bennet, London", ".": "says nothing",
             " checked the crane.": "repeats the summary", " She mended the nets by the water.": "starts afresh",
             " kept to the work at the harbour, day after day and": "cut off"}
    for tail, why in cases.items():
        eng = engine(replies=["Quill checked the crane."], reply=tail)
        result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING)
        assert result.calls > 1 and not result.added_names and result.text == "Quill checked the crane.", tail
        dropped = result.as_dict()["dropped_sentences"]
        assert len(dropped) == result.calls - 1 and {d["why"] for d in dropped} == {why}, (tail, dropped)
        assert all(d["sentence"].startswith(d["name"]) for d in dropped)


def test_a_name_whose_first_reply_fails_the_checks_is_asked_once_more_another_way():
    echo = ", and what do they do?"  # SmolLM2 went on with the question after a bare name
    eng = engine(replies=["Quill checked the crane.", echo, " kept the harbour log."], reply=".")
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING)
    first = result.as_dict()["dropped_sentences"][0]
    assert first["why"] == "echoes the question" and result.added_names == [first["name"]]
    assert f"Quill checked the crane. {first['name']} kept the harbour log." in result.text
    retry = eng.streamed_texts[2]
    assert "Write one sentence that says what the text above tells about" in retry and "who or what is" not in retry
    assert result.calls == 1 + len(result.added_names) + len(result.as_dict()["dropped_sentences"])


def test_a_chinese_name_asked_again_gets_a_reply_that_starts_name_shi():
    eng = engine(replies=["王小明在图书馆。", ", and what do they do? Write in Chinese.", "一个村子。"], reply="。", n_ctx=1024)
    result = summarize(eng, ["\n\n".join(chinese_story(4))], SAMPLING, SummaryOptions(length="short"))
    name = result.added_names[0]
    assert result.text == f"王小明在图书馆。{name}是一个村子。"
    assert eng.streamed_texts[2].endswith(name + "是")


def test_bullets_get_a_bullet_per_name_and_tldr_or_focus_get_none():
    eng = engine(replies=[" Quill checked the crane."], reply=" kept to the work.")
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING, SummaryOptions(style="bullets"))
    lines = result.text.split("\n")
    assert lines[0] == "- Quill checked the crane." and len(lines) == 1 + len(result.added_names) >= 2
    assert all(line.startswith("- ") and line.endswith(" kept to the work.") for line in lines[1:])
    for options in (SummaryOptions(style="tldr"), SummaryOptions(focus="the crane"), SummaryOptions(cover_names=False)):
        eng = engine(replies=["Quill checked the crane at the port."], reply=" kept to the work.")
        result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING, options)
        assert result.calls == 1 and not result.added_names


def test_added_sentences_stop_where_the_reply_room_ends():
    eng = engine(replies=["Quill checked the crane."], reply=" kept to the work at the harbour all through the week.")
    s = Summarizer(eng, SAMPLING, SummaryOptions(words=12))
    result = s.summarize(["\n\n".join(harbour_report(2))])
    assert len(result.added_names) < len(result.entities) - 1
    assert eng.count_tokens(result.text) <= s.final_reserve


def test_chinese_sentences_for_left_out_names_join_without_a_space():
    eng = engine(replies=["王小明在图书馆。"], reply="也在那里读书。", n_ctx=1024)
    result = summarize(eng, ["\n\n".join(chinese_story(4))], SAMPLING, SummaryOptions(length="short"))
    assert result.added_names == [result.added_names[0]]  # the next one would repeat what the first said
    assert result.text == "王小明在图书馆。" + result.added_names[0] + "也在那里读书。"
    asked = [p.split("---")[-1] for p in eng.streamed_texts if "In one short sentence" in p]
    assert asked and all("Write in Chinese." in q for q in asked)


def test_a_reply_that_copies_the_prompts_separator_ends_there():
    eng = engine(replies=["Quill checked the crane.\n\n---\nSummary: Berg said more."], reply=TAILS[0])
    streamed: list[str] = []
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING, SummaryOptions(cover_names=False),
                       on_text=streamed.append)
    assert result.text == "Quill checked the crane." == "".join(streamed) and result.finish_reason == "stop"


def test_an_added_sentence_that_talks_about_the_question_is_dropped():
    eng = engine(replies=["Quill checked the crane."], reply=" does not do anything in the text above.")
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING)
    assert result.calls > 1 and not result.added_names and result.text == "Quill checked the crane."


def test_the_json_record_says_whether_its_token_counts_are_estimated():
    for estimated in (False, True):
        eng = FakeEngine(split="4chars", template="phi", n_ctx=2048, reply="Quill checked the wall.", estimated=estimated)
        record = summarize(eng, [long_report(2)], SAMPLING).as_dict()
        assert record["token_counts"] == ("estimated" if estimated else "exact")


def test_tidy_note_drops_loops_repeats_lists_of_names_and_talk_of_the_summary():
    from chatllm.tasks.summarize.summary_guard import tidy_note

    story = "The story follows Holmes on the moor. Watson writes to him."
    assert tidy_note(f"{story} {story} The story follows Holmes on the moor.") == story
    assert tidy_note("The following is a summary of the text in 190 words: Watson met Holmes.") == "Watson met Holmes."
    assert tidy_note("Summary: Watson met Holmes.") == "Watson met Holmes."
    loop = "Stapleton, Dr. Henry, " * 20
    assert tidy_note(f"Watson met Holmes. {loop}") == "Watson met Holmes."
    assert tidy_note("Sherlock Holmes, Sir Henry, Dr. Mortimer, Times, Watson, London, Baskerville") == ""
    assert tidy_note("阿Q、赵太爷、小D、王胡、吴妈、假洋鬼子。阿Q在未庄做短工。") == "阿Q在未庄做短工。"
    ordinary = "Holmes, who had been ill, went to the moor, and Watson, tired, stayed in London with Sir Henry."
    assert tidy_note(ordinary) == ordinary  # commas in a sentence are not a list
    assert tidy_note("Then the Time Traveller, the Psychologist, the Medical Man, Filby, the Editor.") == ""


def test_a_note_that_only_lists_names_is_replaced_by_its_chunks_opening_and_merges_list_none():
    eng = engine(reply="Quill, Berg, Port Avel, Harbour Board, Varga, Quill, Berg", n_ctx=1024)
    result = summarize(eng, [long_report()], SAMPLING, SummaryOptions(keep_notes=True, chunk_tokens=256))
    assert result.levels >= 2 and result.notes
    assert all(note.startswith("However, on day") for note in result.notes[0])  # the chunk's own text stands in
    merges = [p for p in eng.streamed_texts[result.chunks:] if "keeping the events in order" in p]
    assert merges and not any("Say who did what" in p.split("---")[-1] for p in merges)


def test_an_added_sentence_is_written_from_the_documents_own_sentences_about_the_name():
    eng = engine(replies=["Quill checked the crane."], reply=TAILS[0])
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING)
    asked = [d["name"] for d in result.as_dict()["dropped_sentences"]] + result.added_names
    assert "Tomas Berg" in asked, asked
    prompt = next(p for p in eng.streamed_texts[1:] if p.endswith("\nTomas Berg"))
    assert "Dr. Mara Quill met Tomas Berg at Port Avel, where the Harbour Board keeps its records." in prompt
    assert "Everyone agreed the wall held." not in prompt  # that sentence names nobody: the document is not copied


def test_every_added_sentence_starts_while_the_summary_is_within_its_room():
    eng = engine(replies=["Quill checked the crane."], reply=lambda n: TAILS[n % len(TAILS)])
    s = Summarizer(eng, SAMPLING, SummaryOptions(words=12))
    result = s.summarize(["\n\n".join(harbour_report(2))])
    room = math.ceil(s.final_target * COVER_ROOM) - COVER_TOKENS // 2
    assert result.added_names, result.added_names
    before_last = result.text[: result.text.rindex(" " + result.added_names[-1])]
    assert eng.count_tokens(before_last) <= room < eng.count_tokens(result.text)


def test_a_summary_that_ran_long_still_leaves_room_for_a_left_out_name():
    long = ("Quill checked the old crane at dawn before any ship came in from the northern sea. Rain fell on the "
            "harbour wall all week, and nobody could paint the lighthouse door or mend a single net. The ferry "
            "crew complained loudly about broken ropes, missing lamps, torn sails, rusty anchors, leaking hulls, "
            "cracked oars and the price of diesel at the pier. Gulls "
            "circled above the fish market while traders argued over crates of herring and cod.")
    eng = engine(replies=[long], reply=lambda n: TAILS[n % len(TAILS)])
    s = Summarizer(eng, SAMPLING, SummaryOptions(words=40))
    result = s.summarize(["\n\n".join(harbour_report(2))])
    summary = result.text[: result.text.index(" " + result.added_names[0])]
    assert eng.count_tokens(summary) > math.ceil(s.final_target * COVER_ROOM) - COVER_TOKENS // 2  # the old room: none
    least = eng.count_tokens(summary) + math.ceil(s.final_target * COVER_MIN_ROOM) - COVER_TOKENS // 2
    before_last = result.text[: result.text.rindex(" " + result.added_names[-1])]
    assert eng.count_tokens(before_last) <= least < eng.count_tokens(result.text)
