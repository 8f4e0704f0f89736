"""The names a document is about, found without a model; the invented-name check; the stream filter of the final."""

from __future__ import annotations

from chatllm.tasks.summarize.names.entities import EntityTracker, invented_names
from chatllm.tasks.summarize.names.name_patterns import capitalised_runs, cjk_ngrams, core, name_candidates
from chatllm.tasks.summarize.summary_guard import NameGuard, clean_note, cover_problem, is_heading


def harbour_report(parts: int = 6) -> list[str]:
    """A made-up incident report in segments: recurring people, places and an organisation, sentence-initial noise."""
    segs = []
    for i in range(parts):
        segs.append(
            f"However, on day {i + 1} the inspection went on. Dr. Mara Quill met Tomas Berg at Port Avel, where the "
            f"Harbour Board keeps its records. The report says Quill checked the crane while Berg measured the wall. "
            f"They wrote to the Harbour Board in March. It was cold, and the crane was old. Then Mr. Berg went home. "
            f"Quill stayed at Port Avel with Ines Varga, and Varga logged the tides. Everyone agreed the wall held. "
            f"When the ferry came, Tomas Berg and Mara Quill spoke to the crew. This is how it went for a week."
        )
    return segs


def tracked(segments: list[str]) -> EntityTracker:
    tracker = EntityTracker()
    for seg in segments:
        tracker.observe(seg)
    return tracker


def test_english_names_are_capitalised_runs_ranked_by_count_and_spread():
    tracker = tracked(harbour_report())
    names = [e.name for e in tracker.top(6)]
    assert {"Port Avel", "Harbour Board"} <= set(names), names
    assert any("Quill" in n for n in names) and any("Berg" in n for n in names) and any("Varga" in n for n in names)
    # Sentence-initial common words, pronouns, months and lone titles are never entities.
    for noise in ("However", "They", "It", "March", "Then", "Everyone", "When", "This", "Mr.", "Dr."):
        assert noise not in names, names
    assert all(e.spread >= 2 and e.count >= 3 for e in tracker.top(6))


def test_title_variants_are_one_entity_shown_as_the_text_writes_it_most():
    tracker = tracked(["Dr. Mortimer came. Later Dr. Mortimer left, and Mortimer wrote. Then Dr. Mortimer slept."] * 3)
    (ent,) = [e for e in tracker.top(5) if "Mortimer" in e.name]
    assert ent.name == "Dr. Mortimer" and ent.count == 12
    assert core("Dr. Mortimer") == core("Mortimer") == "mortimer"


def test_a_word_written_lowercase_as_often_is_not_a_name():
    text = "The Queen spoke. The queen of the hive slept. A queen is a bee. The Rabbit ran, and the Rabbit hid."
    tracker = tracked([text] * 3)
    names = [e.name for e in tracker.top(5)]
    assert "Rabbit" in names and "Queen" not in names, names


def test_runs_keep_of_inside_and_drop_stop_words_at_the_ends():
    runs = dict(capitalised_runs("They walked to the Palace of Green Porcelain. The Time Traveller smiled at Weena's hat."))
    assert "Palace of Green Porcelain" in runs and "Time Traveller" in runs and "Weena" in runs
    assert "They" not in runs and "The" not in runs


def test_a_compound_that_starts_with_a_stop_word_is_not_a_name():
    runs = dict(capitalised_runs("Project Gutenberg-tm is free. A Well-known tale. Antoine de Saint-Exupery wrote it."))
    assert not any("Gutenberg" in r for r in runs) and not any("Well" in r for r in runs), runs
    assert "Antoine de Saint-Exupery" in runs


def test_two_names_the_text_also_writes_as_one_become_the_full_name():
    seg = ("Jim ran to the inn. Later Jim hid, and Hawkins was his name, Jim Hawkins. The squire called for Hawkins. "
           "Silver laughed. Then Silver limped off, and Jim watched Hawkins' mother. The boy met Ben Gunn on the hill.")
    tracker = tracked([seg] * 4)
    names = [e.name for e in tracker.top(4)]
    assert "Jim Hawkins" in names and "Jim" not in names and "Hawkins" not in names, names
    assert "Silver" in names and "Ben Gunn" in names, names  # the slot the merge freed goes to the next name
    (jim,) = [e for e in tracker.top(4) if e.name == "Jim Hawkins"]
    apart = sum(tracker.mid[k] + tracker.initial[k] for k in ("jim", "hawkins"))
    assert jim.count == apart  # the occurrences of both (the full run is counted apart, not in these)


def test_overlapping_parts_of_a_name_join_into_it_and_distinct_names_stay_apart():
    seg = ("Long John Silver smiled. The men feared Long John, and the cook, John Silver, knew it. Long John Silver "
           "sat down. Later Long John laughed while John Silver ate. The Time Traveller built the Time Machine, and "
           "the Time Traveller's Time Machine stood still. The Time Machine shone; the Time Traveller smiled.")
    names = [e.name for e in tracked([seg] * 3).top(5)]
    assert "Long John Silver" in names and "Long John" not in names and "John Silver" not in names, names
    assert "Time Traveller" in names and "Time Machine" in names, names  # two names side by side are not one


def test_each_segment_is_told_the_names_in_it():
    tracker = EntityTracker()
    segs = harbour_report(3)
    first = tracker.observe(segs[0])
    assert any("Quill" in n for n in first) and "Port Avel" in first
    other = tracker.observe("The tide was high. Nobody came to the quay, and the gulls sat still all day long.")
    assert other == []


def chinese_story(parts: int = 4) -> list[str]:
    segs = []
    for i in range(parts):
        segs.append(
            f"第{i + 1}天，王小明在北京大学门口等李老师。李老师来了以后，王小明把信交给了她。"
            f"他们一起去了图书馆，王小明说他想学历史。李老师笑了，说北京大学的历史系很好。"
            f"后来赵大夫也来了，赵大夫和李老师是老朋友。大家在图书馆里说了很久的话。"
        )
    return segs


def test_chinese_names_are_frequent_spread_ngrams_without_function_characters():
    tracker = tracked(chinese_story())
    names = [e.name for e in tracker.top(6)]
    assert {"王小明", "李老师", "北京大学", "赵大夫"} <= set(names), names
    assert "王小" not in names and "小明" not in names  # parts of a longer name give way to it
    assert not any(ch in name for name in names for ch in "的了是在他们说")
    assert "他们" not in cjk_ngrams("他们他们他们")


def test_a_letter_inside_a_chinese_name_is_kept():
    tracker = tracked(["阿Q说，阿Q很得意。小D不服，小D打了阿Q。未庄的人都笑阿Q。"] * 3)
    names = [e.name for e in tracker.top(5)]
    assert "阿Q" in names and "小D" in names, names


def test_a_title_with_a_function_character_is_a_name_and_a_noun_in_zi_is_not():
    # 才 and 人 are function characters alone, but 秀才 and 举人老爷 name people; 辫子 is a queue, not a person.
    story = ["秀才骂他，举人老爷也来了。他摸着辫子走到街上，秀才又骂，举人老爷笑，辫子垂着，秀才走了，举人老爷坐下，辫子乱了。"] * 4
    names = [e.name for e in tracked(story).top(3)]
    assert names[:2] == ["秀才", "举人老爷"] or names[:2] == ["举人老爷", "秀才"], names
    assert "辫子" not in names[:2]
    assert "才" not in "".join(cjk_ngrams("他才来，他才来，他才来"))


def test_invented_names_and_years_are_found_and_real_ones_pass():
    tracker = tracked(harbour_report())
    bad = invented_names("In 1836, Elizabeth Bennet wrote to Mara Quill about Port Avel.", tracker)
    assert "Elizabeth Bennet" in bad and "1836" in bad
    assert not any("Quill" in b or "Avel" in b for b in bad)
    assert invented_names("Overall, the Harbour Board kept the records of Port Avel.", tracker) == []
    assert invented_names("Summary: Quill and Berg checked the wall.", tracker) == []


def test_invented_chinese_names_are_found():
    tracker = tracked(chinese_story())
    assert invented_names("王小明和李老师去了图书馆。", tracker) == []
    assert "张伟" in invented_names("张伟说王小明去了图书馆。", tracker)
    assert "张伟" in name_candidates("后来张伟说了话。")


def test_the_guard_streams_whole_checked_sentences_and_never_takes_text_back():
    tracker = tracked(harbour_report())
    out: list[str] = []
    guard = NameGuard(tracker, out.append)
    reply = "Mara Quill checked the crane. Then Elizabeth Bennet arrived. Berg measured the wall. It held"
    for ch in reply:  # one character at a time, as a model streams
        guard.feed(ch)
        assert "".join(out) == guard.text  # what went out is never changed afterwards
    text = guard.finish()
    assert text == "Mara Quill checked the crane. Berg measured the wall. It held" == "".join(out)
    assert guard.removed == ["Elizabeth Bennet"]


def test_the_guard_drops_a_bullet_line_with_its_newline():
    tracker = tracked(harbour_report())
    out: list[str] = []
    guard = NameGuard(tracker, out.append)
    for piece in ["- Quill checked", " the crane\n- Darcy Fitz", "william came\n- Berg left\n"]:
        guard.feed(piece)
    assert guard.finish() == "- Quill checked the crane\n- Berg left" == "".join(out)


def test_clean_note_keeps_only_true_sentences():
    tracker = tracked(chinese_story())
    note, removed = clean_note("王小明去了图书馆。张伟说他很好。李老师笑了。", tracker)
    assert note == "王小明去了图书馆。李老师笑了。" and removed == ["张伟"]


def test_a_prose_guard_drops_headings_and_name_lists_but_keeps_sentences_and_bullets():
    tracker = tracked(harbour_report())
    out: list[str] = []
    guard = NameGuard(tracker, out.append, prose=True)
    reply = ("Summary of the report:\nQuill\nBerg, Quill, the crane\nMara Quill checked the crane.\n"
             "- Berg measured the wall\nBerg left")
    for ch in reply:
        guard.feed(ch)
    assert guard.finish() == "Mara Quill checked the crane.\n- Berg measured the wall\nBerg left" == "".join(out)


def test_a_bullets_guard_keeps_short_lines():
    tracker = tracked(harbour_report())
    guard = NameGuard(tracker, None)
    guard.feed("Quill\nBerg left\n")
    assert guard.finish() == "Quill\nBerg left"


def test_a_line_is_a_heading_only_when_short_and_unended():
    assert is_heading("Summary of the report:") and is_heading("主要人物") and is_heading("Frogs, Hatter, Gryphon")
    assert not is_heading("Quill checked the crane on the wall at dawn")  # a sentence missing its full stop
    assert not is_heading("Quill checked.") and not is_heading("- Quill") and not is_heading("王小明在图书馆里读了一整天的书")


def test_a_prose_guard_drops_a_sentence_that_holds_the_name_list_copied():
    tracker = tracked(harbour_report())
    guard = NameGuard(tracker, None, prose=True)
    guard.feed("Mara Quill, Tomas Berg, Port Avel, Harbour Board, Ines Varga are silent men. Quill, Berg and Varga logged the tides. "
               "The story then moves on to Quill, Tomas Berg, Port Avel, Harbour Board, Ines Varga.")
    assert guard.finish() == "Quill, Berg and Varga logged the tides."


def test_a_guard_drops_a_sentence_that_says_again_what_went_out():
    guard = NameGuard(tracked(harbour_report()), None, prose=True)
    guard.feed("Quill checked the crane on the harbour wall. Berg logged the tides. Quill checked the crane on the wall again.")
    assert guard.finish() == "Quill checked the crane on the harbour wall. Berg logged the tides."


def test_an_added_sentence_may_not_make_one_main_name_another():
    tracker, names = tracked(harbour_report()), ["Mara Quill", "Tomas Berg", "Port Avel"]
    assert cover_problem("Tomas Berg is Mara Quill, and he logs the tides.", "Tomas Berg", "", tracker, "", names) == \
        "makes Tomas Berg Mara Quill"
    assert cover_problem("Tomas Berg is the harbour master of Port Avel.", "Tomas Berg", "", tracker, "", names) == ""
    assert cover_problem("Tomas Berg Mara Quill's verdict was that the wall held.", "Tomas Berg", "", tracker, "", names) == \
        "starts afresh"  # the reply left the name it was started with
    chinese = tracked(["小D和赵太爷在未庄。小D说话，赵太爷笑了。"] * 3)
    assert cover_problem("小D是赵太爷，他还有秀才。", "小D", "", chinese, "", ["小D", "赵太爷"]) == "makes 小D 赵太爷"
