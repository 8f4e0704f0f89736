"""sentiment / classify through the real CLI and the real model."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.model


def test_single_text_prints_label_and_probability(chatllm):
    r = chatllm("sentiment", "I loved this movie, it was wonderful and moving.")
    assert r.returncode == 0, r.stderr
    label, prob = r.stdout.strip().split("\t")
    assert label == "positive" and 0.5 < float(prob) <= 1


def test_json_scores_sum_to_one(chatllm):
    r = chatllm("sentiment", "--json", "--neutral", "The food was cold and the waiter was rude.")
    data = json.loads(r.stdout)
    assert set(data["scores"]) == {"positive", "negative", "neutral"}
    assert abs(sum(data["scores"].values()) - 1) < 1e-3 and data["label"] == "negative"


def test_piped_text_is_echoed_without_its_final_newline(chatllm):
    r = chatllm("sentiment", "--json", input="这家酒店的服务非常好，房间干净，下次还会再来。\n")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["text"] == "这家酒店的服务非常好，房间干净，下次还会再来。" and data["label"] == "positive"


def test_lines_keep_order_and_report_empty_rows(chatllm):
    text = "great product, works perfectly\n\nterrible, it broke in a day and support never answered\n这家酒店非常干净\n"
    r = chatllm("sentiment", "--lines", "--json", input=text)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 4
    assert rows[0]["label"] == "positive" and rows[0]["text"].startswith("great")
    assert rows[1] == {"line": 2, "label": None, "error": "empty line", "text": ""}
    assert rows[2]["label"] == "negative" and rows[3]["text"] == "这家酒店非常干净"


def test_csv_column_by_name(chatllm, tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("id,review\n1,\"Wonderful, I loved it\"\n2,\"Awful, a waste of money\"\n")
    r = chatllm("sentiment", "--lines", "--column", "review", "-f", str(data))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split("\t")[2] for ln in lines] == ["Wonderful, I loved it", "Awful, a waste of money"]
    r = chatllm("sentiment", "--lines", "--column", "nope", "-f", str(data))
    assert r.returncode == 2 and "its header row has: id, review" in r.stderr


def test_classify_with_custom_labels(chatllm):
    r = chatllm("classify", "--labels", "news,blog,ad", "--describe", "ad=selling something",
                "--json", "Buy one, get one free this weekend only!")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["scores"]) == {"news", "blog", "ad"} and data["label"] == "ad"


@pytest.mark.parametrize("args, stdin, message", [
    (["sentiment"], "", "stdin is empty"),
    (["sentiment", "--labels", "pos", "x"], "", "need at least two labels, got 1"),
    (["classify", "--labels", "a,b", "--describe", "nolabel", "x"], "", "is not LABEL=TEXT"),
    (["sentiment", "-f", "/nonexistent.txt"], "", "no such file"),
])
def test_usage_errors_exit_2(chatllm, args, stdin, message):
    r = chatllm(*args, input=stdin)
    assert r.returncode == 2 and message in r.stderr and "hint: " in r.stderr


def test_binary_input_is_refused(chatllm):
    r = chatllm("sentiment", "--lines", input=b"abc\x00\x01def\n")
    assert r.returncode == 2 and b"binary" in r.stderr


def test_explain_names_the_preset_each_language_got(chatllm):
    r = chatllm("sentiment", "--lines", "--explain", input="a wonderful, moving film\n房间很脏，服务员态度很差，不会再来了。\n")
    assert r.returncode == 0, r.stderr
    assert "preset sentiment/en/" in r.stderr and "preset sentiment/zh/" in r.stderr and "family smollm" in r.stderr
    assert r.stderr.count("as plain text") == 2 and "in chat turns" not in r.stderr  # SmolLM2's presets are plain text
    assert len(r.stdout.splitlines()) == 2 and r.stdout.startswith("positive\t")
    r = chatllm("sentiment", "--json", "--explain", "房间很脏，服务员态度很差，不会再来了。")
    data = json.loads(r.stdout)  # the 135M model's Chinese labels are measured in bench/eval_classify.py, not here
    assert data["preset"]["lang"] == "zh" and data["preset"]["family"] == "smollm" and data["preset"]["name"].startswith("sentiment/zh/")
    assert "preset" not in json.loads(chatllm("sentiment", "--json", "fine").stdout)


def test_examples_file_overrides_the_built_in_preset(chatllm, tmp_path):
    shots = tmp_path / "shots.tsv"
    shots.write_text("the soup was delicious\tyum\nthe soup was cold and bland\tyuck\n", encoding="utf-8")
    r = chatllm("classify", "--examples", str(shots), "--json", "--explain", "what a delicious soup")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["scores"]) == {"yum", "yuck"} and data["preset"]["examples"] == "--examples"


def test_lines_through_qwen_get_the_qwen_presets_chinese_and_english_in_chat_turns(chatllm, qwen_path):
    r = chatllm("sentiment", "-m", str(qwen_path), "--json", "--explain", "--lines",
                input="房间干净整洁，早餐丰富，前台服务很热情。\n设施陈旧，卫生间有霉味，隔音太差了。\n"
                      "An absolute delight from start to finish.\nDull, tedious and far too long.\n", timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["label"] for row in rows] == ["positive", "negative", "positive", "negative"]
    assert rows[0]["preset"]["family"] == "qwen2" and rows[0]["preset"]["lang"] == "zh"
    assert rows[0]["preset"]["name"] == "sentiment/zh/native-zero" and rows[0]["preset"]["chat"] is False
    assert rows[2]["preset"]["name"] == "sentiment/en/chat-fewshot" and rows[2]["preset"]["chat"] is True
    assert rows[2]["preset"]["calibrate"] is False and rows[2]["preset"]["lang"] == "en"
