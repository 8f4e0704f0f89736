"""Family ties in generated text, checked against what the document writes (chatllm.tasks.summarize.names.kinship)."""

from __future__ import annotations

from chatllm.settings import Sampling
from chatllm.tasks.summarize.names.kinship import KinshipIndex, claims
from chatllm.tasks.summarize.summarizer import summarize
from tests.fakes import FakeEngine

NOVEL = [
    "Mr. Gardiner, her uncle, met Elizabeth at the inn. Mr. Darcy came in later and bowed to Mr. Gardiner. "
    "Jane, her eldest sister, was in town with Mrs. Gardiner. Elizabeth wrote to her sister that evening.",
    "Darcy walked with Elizabeth and her uncle by the lake. They spoke of Pemberley and of Darcy's sister Georgiana. "
    "Elizabeth told her aunt everything. Then Elizabeth and Jane went home to Longbourn.",
]
CHINESE = ["小D是阿Q的对头。阿Q的哥哥赵四在城里做工。赵太爷的儿子进了学，阿Q很得意。", "后来赵四回到未庄，看见阿Q在土谷祠里睡觉。"]


def index(parts: list[str]) -> KinshipIndex:
    kin = KinshipIndex()
    for part in parts:
        kin.observe(part)
    return kin


def test_the_ties_a_sentence_states_are_found_in_english_and_chinese():
    assert claims("In 1836, Elizabeth made a letter to her uncle Darcy.") == [("uncle", "Darcy")]
    assert claims("Darcy is her uncle. Jane, Elizabeth's eldest sister, married.") == [("uncle", "Darcy"), ("sister", "Jane")]
    assert claims("Darcy meets her uncle at Pemberley. Alice tells her sister about it.") == []
    assert claims("阿Q的哥哥赵四来了。") == [("哥哥", "赵四")]
    assert claims("小D是阿Q的哥哥。") == [("哥哥", "小D")]


def test_a_tie_is_believed_only_when_the_document_writes_it_close():
    kin = index(NOVEL)
    assert kin.unstated("Mr. Gardiner is her uncle. Jane is her sister.") == []
    assert kin.unstated("She wrote to her uncle Darcy and to her sister Darcy.") == ["uncle Darcy"]  # Georgiana is his sister
    chinese = index(CHINESE)
    assert chinese.unstated("阿Q的哥哥赵四回来了。") == []
    assert chinese.unstated("阿Q的哥哥小D回来了。") == ["哥哥 小D"]


def test_a_summary_sentence_with_an_invented_tie_never_reaches_the_user():
    reply = "Elizabeth met Mr. Gardiner at the inn. She wrote to her uncle Darcy about it. Jane, her sister, was in town."
    eng = FakeEngine(split="4chars", bos=True, template="phi", n_ctx=2048, name="fake.gguf", reply=reply)
    streamed: list[str] = []
    result = summarize(eng, ["\n\n".join(NOVEL)], Sampling(temperature=0.7, max_tokens=256, seed=1), on_text=streamed.append)
    assert "uncle Darcy" not in result.text and "".join(streamed) == result.text
    assert result.text.startswith("Elizabeth met Mr. Gardiner at the inn. Jane, her sister, was in town.")
    assert "uncle Darcy" in result.removed
