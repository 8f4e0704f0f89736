"""`chatllm ask -f FILE|DIR... QUESTION` past the window, on the real SmolLM2 and a real SQLite index, as processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_chatllm

pytestmark = pytest.mark.model
FAST = ["--ctx", "1024", "-n", "8", "-t", "0", "--threads", "1"]
FILLER = ("The ledger notes the weather, the tides and the price of grain for that week, as every clerk before "
          "had done, in the same brown ink and the same careful hand. ")
ITEMS = ["zeppelins", "harpsichords", "telescopes", "anchors", "lanterns", "violins", "compasses", "barometers",
         "sextants", "typewriters", "gramophones", "kayaks"]


def ledger(path: Path, items=ITEMS, repeat: int = 3) -> Path:
    """A file far past a 1024-token window: one paragraph per warehouse, each with one unusual item."""
    paras = [f"Warehouse {i + 1} on Dock Street stores the {item}. " + FILLER * repeat for i, item in enumerate(items)]
    path.write_text("Harbour ledger\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8")
    return path


def top_text(data: dict) -> str:
    """The lines of the best source, read from its file."""
    top = data["sources"][0]
    lines = Path(top["file"]).read_text(encoding="utf-8").split("\n")
    return "\n".join(lines[top["start_line"] - 1:top["end_line"]])


def record(r) -> dict:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_file_past_the_window_is_answered_from_retrieved_passages(chatllm, tmp_path):
    f = ledger(tmp_path / "ledger.txt")
    data = record(chatllm("ask", *FAST, "--json", "-f", str(f), "Which warehouse stores the sextants?"))
    assert data["mode"] == "retrieval" and data["indexed_files"] == 1 and isinstance(data["answer"], str)
    lines = f.read_text().split("\n")
    top = data["sources"][0]
    assert top["file"] == str(f) and "sextants" in "\n".join(lines[top["start_line"] - 1:top["end_line"]])
    assert top["score"] > 0 and data["prompt_tokens"] + 8 <= 1024
    for c in data["citations"]:
        assert set(c) >= {"file", "start_line", "end_line", "score"} and 1 <= c["start_line"] <= c["end_line"] <= len(lines)

    again = record(chatllm("ask", *FAST, "--json", "-f", str(f), "Which warehouse stores the kayaks?"))
    assert again["indexed_files"] == 0  # the same content: nothing read or indexed again
    assert "kayaks" in top_text(again)


def test_a_changed_file_is_indexed_again(chatllm, tmp_path):
    f = ledger(tmp_path / "ledger.txt")
    record(chatllm("ask", *FAST, "--json", "-f", str(f), "Which warehouse stores the anchors?"))
    ledger(f, [*ITEMS[:-1], "submarines"])
    data = record(chatllm("ask", *FAST, "--json", "-f", str(f), "Which warehouse stores the submarines?"))
    assert data["indexed_files"] == 1
    assert "submarines" in top_text(data)


def test_a_corrupt_index_is_deleted_and_rebuilt_with_a_warning(chatllm, cli_env, tmp_path):
    f = ledger(tmp_path / "ledger.txt")
    home = Path(cli_env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "index.db").write_bytes(b"garbage, not SQLite " * 500)
    r = chatllm("ask", *FAST, "--json", "-f", str(f), "Which warehouse stores the violins?")
    assert r.returncode == 0, r.stderr
    assert "warning: the search index" in r.stderr and "rebuilding it" in r.stderr
    assert json.loads(r.stdout)["indexed_files"] == 1
    r = chatllm("ask", *FAST, "--json", "-f", str(f), "Which warehouse stores the violins?")
    assert r.returncode == 0 and "warning" not in r.stderr and json.loads(r.stdout)["indexed_files"] == 0


def test_two_processes_query_one_index_at_once(cli_env, tmp_path):
    f = ledger(tmp_path / "ledger.txt")
    args = [sys.executable, "-m", "chatllm", "ask", *FAST, "--json", "-f", str(f)]
    procs = [subprocess.Popen([*args, f"Which warehouse stores the {item}?"], env=cli_env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for item in ("lanterns", "compasses")]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (stdout, stderr), item in zip(procs, outs, ("lanterns", "compasses")):
        assert p.returncode == 0, stderr
        assert item in top_text(json.loads(stdout))
    assert sum(json.loads(o)["indexed_files"] for o, _ in outs) >= 1


def test_a_folder_is_walked_and_a_binary_file_skipped_with_a_note(chatllm, tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    ledger(d / "ledger.txt")
    (d / "notes.md").write_text("The harbour master is called Ingrid Solberg.\n")
    (d / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    r = chatllm("ask", *FAST, "--sources", "-f", str(d), "What is the harbour master called?")
    assert r.returncode == 0, r.stderr
    assert "warning: skipped 1 file" in r.stderr and "logo.png (binary)" in r.stderr
    assert f"[1] {d / 'notes.md'}:1-1 score" in r.stderr and "Ingrid Solberg" in r.stderr  # --sources: the passages
    assert r.stdout.strip()
    assert "logo.png" not in r.stdout


def test_several_files_and_citations_after_the_answer(chatllm, tmp_path):
    a = ledger(tmp_path / "a.txt")
    b = tmp_path / "b.txt"
    b.write_text("The lighthouse on Gull Point was built in 1871.\n")
    r = chatllm("ask", *FAST, "-n", "24", "-f", str(a), "-f", str(b), "When was the lighthouse on Gull Point built?")
    assert r.returncode == 0, r.stderr
    answer, _, cited = r.stdout.rstrip("\n").rpartition("\n\n")
    for line in cited.splitlines() if answer else []:  # a citation block, when there is one, is [n] file:a-b
        assert line.split(" ", 1)[0].strip("[]").isdigit() and ":" in line


def test_chinese_text_past_the_window(chatllm, tmp_path):
    f = tmp_path / "zh.txt"
    filler = "这一段记录了港口每周的天气、潮汐和粮食价格，字迹工整。" * 6
    places = ["北京", "上海", "广州", "成都", "西安", "杭州", "南京", "武汉"]
    items = ["丝绸", "茶叶", "瓷器", "熊猫玩具", "兵马俑模型", "龙井", "云锦", "热干面"]
    f.write_text("\n\n".join(f"{p}的仓库存放着{item}。{filler}" for p, item in zip(places, items)) + "\n", encoding="utf-8")
    data = record(chatllm("ask", *FAST, "--json", "-f", str(f), "哪个城市的仓库存放着瓷器？"))
    assert data["mode"] == "retrieval" and "瓷器" in top_text(data)


def test_a_file_that_fits_is_asked_whole_as_before(chatllm, tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("Action: buy milk.\n")
    r = chatllm("ask", *FAST, "--sources", "-f", str(f), "List the actions.")
    assert r.returncode == 0, r.stderr
    assert f"[1] {f}:1-2 (the whole file: it fits the window)" in r.stderr and r.stdout.strip()


@pytest.mark.parametrize("make, args, message", [
    (lambda t: (t / "empty").mkdir(), ["-f", "{t}/empty", "what?"], "has no text files"),
    (lambda t: None, ["-f", "{t}/missing.txt", "what?"], "no such file"),
    (lambda t: (t / "x.bin").write_bytes(b"\x00\x01"), ["-f", "{t}/x.bin", "what?"], "looks like binary data"),
    (lambda t: (t / "e.txt").write_text(""), ["-f", "{t}/e.txt", "what?"], "e.txt is empty"),
    (lambda t: (t / "d").mkdir(), ["-f", "{t}/d"], "is a directory"),
    (lambda t: (t / "a.txt").write_text("a\n"), ["-f", "{t}/a.txt", "-f", "{t}/a.txt"], "need a question"),
    (lambda t: None, ["--sources", "hi"], "--sources goes with -f"),
    (lambda t: None, ["--no-rerank", "hi"], "--no-rerank goes with -f"),
])
def test_input_errors_are_one_line_with_a_hint(cli_env, tmp_path, make, args, message):
    make(tmp_path)
    r = run_chatllm(["ask", *[a.format(t=tmp_path) for a in args]], cli_env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0] and lines[1].startswith("hint: ")


def test_hybrid_retrieval_with_a_real_embedding_model(chatllm, tmp_path):
    from tests.embedding_model import fetch as fetch_minilm

    f = ledger(tmp_path / "ledger.txt")
    minilm = str(fetch_minilm())
    r = chatllm("ask", *FAST, "--json", "-f", str(f), "-E", minilm, "Which warehouse stores the sextants?")
    data = record(r)
    assert data["retrieval"] == "hybrid" and "sextants" in top_text(data)
    assert "embedding" in r.stderr and "chunks with" in r.stderr  # the chunk vectors are computed once ...
    again = chatllm("ask", *FAST, "--json", "-f", str(f), "-E", minilm, "Which warehouse stores the kayaks?")
    assert "chunks with" not in again.stderr and "kayaks" in top_text(record(again))  # ... and kept in the index
    plain = record(chatllm("ask", *FAST, "--json", "-f", str(f), "Which warehouse stores the kayaks?"))
    assert plain["retrieval"] == "bm25"


def test_a_chat_model_as_embedding_model_is_refused_with_a_hint(chatllm, smollm_path, tmp_path):
    f = ledger(tmp_path / "ledger.txt")
    r = chatllm("ask", *FAST, "-f", str(f), "-E", str(smollm_path), "Which warehouse stores the sextants?")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "is not an embedding model" in r.stderr and "hint: use an embedding model, e.g. --embed-model" in r.stderr


def test_embed_model_without_files_is_a_usage_error(chatllm):
    r = chatllm("ask", "-E", "bge-small-en-v1.5", "hello")
    assert r.returncode == 2 and "--embed-model goes with -f" in r.stderr


# -- reranking with the model: a generated file of several articles, past the window ---------------------------------

TOWNS = [("Varnholm", "1642", "the fisherman Edvard Lund", "herring"), ("Ostrava Nova", "1711", "the miller Karel Basta", "flour"),
         ("Kelbridge", "1583", "the weaver Agnes Thorne", "wool"), ("Mirelle", "1820", "the vintner Paul Segond", "wine"),
         ("Dunmarrow", "1698", "the smith Owen Price", "iron"), ("Saltreach", "1755", "the merchant Ida Falk", "salt")]
TOWN_FILLER = ("The town council meets in the old hall on the first Monday of the month, and the market fills the square "
               "on Saturdays, when farmers bring their carts in from the valley. ")
CITIES = [("青石镇", "明朝万历年间", "铁匠李长顺", "铁器"), ("白沙镇", "清朝乾隆年间", "盐商周德海", "海盐"),
          ("柳溪村", "宋朝绍兴年间", "茶农陈守义", "绿茶"), ("松岭镇", "元朝至正年间", "木匠王福来", "木材"),
          ("云水镇", "唐朝开元年间", "渔夫赵大江", "鲜鱼")]
CITY_FILLER = "镇上的集市每逢初一和十五开放，附近村庄的农民会带着蔬菜和粮食前来交易，街道两旁的店铺一直营业到傍晚。"


def articles(path: Path) -> Path:
    """Six articles, one a town: its founding sentence among filler paragraphs (far past a 1024-token window)."""
    parts = []
    for town, year, founder, goods in TOWNS:
        parts += [town, f"{town} is a small town known for its {goods}. " + TOWN_FILLER * 2,
                  TOWN_FILLER + f"{town} was founded in {year} by {founder}.",
                  f"Today {town} trades mostly in {goods}. " + TOWN_FILLER * 2]
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def chinese_articles(path: Path) -> Path:
    """The same in Chinese: five towns, each founded by someone in some era."""
    parts = []
    for town, era, founder, goods in CITIES:
        parts += [town, f"{town}以出产{goods}闻名。" + CITY_FILLER * 2, f"{town}始建于{era}，由{founder}创立。" + CITY_FILLER,
                  f"如今{town}的主要生意是{goods}。" + CITY_FILLER * 2]
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if needle in line)


def test_the_answer_comes_from_the_reranked_passage_and_is_cited(chatllm, tmp_path):
    f = articles(tmp_path / "towns.txt")
    r = chatllm("ask", *FAST, "-n", "24", "-f", str(f), "When was Mirelle founded?")
    assert r.returncode == 0, r.stderr
    answer, _, cited = r.stdout.rstrip("\n").rpartition("\n\n")
    assert "1820" in answer, r.stdout
    gold = line_of(f, "Mirelle was founded")
    assert cited.startswith(f'[1] {f}:{gold}-{gold} "') and "1820" in cited  # the passage, its line, the sentence
    data = record(chatllm("ask", *FAST, "-n", "24", "--json", "-f", str(f), "When was Mirelle founded?"))
    (first, *_) = data["citations"]
    assert first["start_line"] == gold and first["quote"] == "Mirelle was founded in 1820 by the vintner Paul Segond."
    assert data["rerank"]["passages"] == 3 and data["sources"][0]["relevance"] >= data["rerank"]["min_relevance"]
    assert data["prompt_tokens"] < 250  # the best window or two, not every passage that fits


def test_a_question_the_files_cannot_answer_is_not_found_without_an_answer(chatllm, tmp_path):
    f = articles(tmp_path / "towns.txt")
    for question in ("What is the boiling point of mercury?", "Which river flows through the capital of Peru?"):
        data = record(chatllm("ask", *FAST, "--json", "-f", str(f), question))
        assert data["not_found"] and data["answer"] == "not found in the files." and data["citations"] == [], data
        judged = [j["relevance"] for j in data["rerank"]["judged"]]
        assert data["completion_tokens"] == 0 and max(judged, default=0) < data["rerank"]["min_relevance"]


def test_chinese_articles_are_reranked_answered_and_cited(chatllm, qwen_path, tmp_path):
    f = chinese_articles(tmp_path / "towns-zh.txt")
    data = record(chatllm("ask", *FAST, "-n", "24", "-m", str(qwen_path), "--json", "-f", str(f), "白沙镇是谁创立的？"))
    assert "周德海" in data["answer"], data["answer"]
    gold = line_of(f, "白沙镇始建于")
    assert data["citations"][0]["start_line"] == gold and "周德海" in data["citations"][0]["quote"]
