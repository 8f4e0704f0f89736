"""Entity-faithful map-reduce with the fake engine: names in every prompt, greedy notes, invented names kept out."""

from __future__ import annotations

from chatllm.settings import Sampling
from chatllm.tasks.summarize import Summarizer, SummaryOptions, summarize
from tests.fakes import FakeEngine
from tests.test_entities import chinese_story, harbour_report

SAMPLING = Sampling(temperature=0.7, max_tokens=512, seed=3)


def engine(reply=None, replies=(), n_ctx: int = 2048) -> FakeEngine:
    return FakeEngine(split="4chars", bos=True, template="phi", n_ctx=n_ctx, name="fake.gguf", reply=reply,
                      replies=list(replies))


def long_report(copies: int = 8) -> str:
    return "\n\n".join(harbour_report(6) * copies)  # ~11,000 tokens at four characters a token


def test_each_map_note_is_told_the_names_in_its_chunk_and_the_final_gets_the_main_ones():
    eng = engine(reply="Quill and Berg checked the wall at Port Avel.")
    result = summarize(eng, [long_report()], SAMPLING, SummaryOptions(length="short"))
    assert result.levels >= 1 and result.chunks >= 3
    maps = eng.streamed_texts[: result.chunks]
    assert all("Say who did what:" in p and "Port Avel" in p and "Quill" in p for p in maps)
    final = eng.streamed_texts[-1]
    assert "Say who did what:" in final and "Harbour Board" in final
    assert "- Quill and Berg checked the wall at Port Avel." in final  # the key events, in order, before the notes
    names = [e["name"] for e in result.entities]
    assert "Port Avel" in names and "Harbour Board" in names and result.as_dict()["entities"] == result.entities


def test_notes_are_greedy_with_a_repeat_penalty_and_the_final_keeps_the_users_sampling():
    eng = engine(reply="Quill checked the wall.")
    result = summarize(eng, [long_report()], SAMPLING)
    notes, final = eng.samplings[:-1], eng.samplings[-1]
    assert len(notes) == result.calls - 1
    assert all(s.temperature == 0 and s.repeat_penalty >= 1.1 for s in notes)
    assert final.temperature == 0.7 and final.seed == 3
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
    result = summarize(eng, ["\n\n".join(harbour_report(2))], SAMPLING, on_text=streamed.append)
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
    assert "Darcy" not in eng.streamed_texts[-1] and "Fitzwilliam Darcy" in result.removed
    assert result.notes and all("Darcy" not in note for level in result.notes for note in level)
    assert len(result.notes[0]) == result.chunks and result.as_dict()["notes"] == result.notes


def test_chinese_names_reach_the_prompts():
    eng = engine(reply="王小明和李老师在图书馆说话。", n_ctx=1024)
    text = "\n\n".join(chinese_story(4) * 12)
    result = summarize(eng, [text], SAMPLING, SummaryOptions(length="short"))
    assert result.levels >= 1
    assert all("王小明" in p.split("---")[-1] for p in eng.streamed_texts[: result.chunks])
    assert "李老师" in eng.streamed_texts[-1].split("---")[-1] and "王小明" in result.text


def test_a_small_window_lists_no_names_but_still_works():
    eng = engine(reply="Quill checked the wall.", n_ctx=512)
    s = Summarizer(eng, SAMPLING, SummaryOptions(length="medium"))
    assert s.entity_reserve == 0
    result = s.summarize([long_report(2)])
    assert result.text == "Quill checked the wall." and "Say who did what" not in eng.streamed_texts[0]
