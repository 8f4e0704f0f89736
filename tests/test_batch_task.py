"""Batches of prompts on the fake engine: reading rows, the loop, resume bookkeeping, and run_batch's output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from chatllm.cli.context import CommandContext
from chatllm.errors import ChatllmError, NoChatTemplateError, UsageError
from chatllm.output import Output
from chatllm.settings import Sampling, Settings
from chatllm.tasks.ask import batch
from chatllm.tasks.ask.structured_output import json_spec
from tests.fakes import FakeEngine

SAMPLING = Sampling(max_tokens=16, temperature=0)


def compose(row: str) -> str:
    return f"Translate this phrase into French please:\n\n{row}"


# -- rows -----------------------------------------------------------------------------------------


def test_plain_lines_skip_blanks_and_take_their_line_number_as_id():
    rows = list(batch.read_rows(["  hello  ", "", "   ", "world"]))
    assert [(r.id, r.line, r.prompt, r.error) for r in rows] == [(1, 1, "hello", None), (4, 4, "world", None)]


def test_json_lines_are_detected_from_the_first_row_and_a_later_bad_line_is_a_bad_row():
    lines = ["", '{"id": "a", "prompt": "one", "system": "be brief"}', '{"prompt": "two"}', "plain text", "[1]",
             '{"id": "b"}', '{"id": [1], "prompt": "x"}', '{"prompt": "y", "system": 3}']
    rows = list(batch.read_rows(lines))
    assert (rows[0].id, rows[0].prompt, rows[0].system, rows[0].error) == ("a", "one", "be brief", None)
    assert (rows[1].id, rows[1].prompt, rows[1].system) == (3, "two", None)  # no id: its line number
    assert rows[2].id == 4 and "not a JSON row" in rows[2].error
    assert rows[3].id == 5 and "not a JSON object" in rows[3].error
    assert rows[4].id == "b" and '"prompt"' in rows[4].error
    assert rows[5].id == 7 and '"id"' in rows[5].error
    assert rows[6].error == '"system" must be a string'


def test_plain_text_stays_plain_when_the_first_line_is_not_a_prompt_row():
    rows = list(batch.read_rows(['{"text": "not a prompt row"}', '{"prompt": "x"}']))
    assert [r.prompt for r in rows] == ['{"text": "not a prompt row"}', '{"prompt": "x"}'] and not any(r.error for r in rows)


def test_jsonl_forced_makes_a_first_bad_line_a_bad_row():
    rows = list(batch.read_rows(["oops", '{"prompt": "x"}'], jsonl=True))
    assert rows[0].error and rows[1].prompt == "x"


def test_input_with_no_prompt_is_a_usage_error():
    with pytest.raises(UsageError, match="has no prompts"):
        batch.nonempty_rows(batch.read_rows(["", "  ", ""]), "stdin")
    assert [r.prompt for r in batch.nonempty_rows(batch.read_rows(["", "a"]), "stdin")] == ["a"]


def test_one_line_escapes_reversibly():
    text = "a\nb\\nc\r\nd"
    escaped = batch.one_line(text)
    assert "\n" not in escaped and "\r" not in escaped
    assert escaped.encode().decode("unicode_escape") == text


# -- the loop -------------------------------------------------------------------------------------


def test_rows_are_answered_in_order_with_the_shared_prefix_cached():
    engine = FakeEngine(reply=lambda n: f"answer {n}")
    rows = batch.read_rows(["bonjour", "merci beaucoup", "au revoir"])
    results = list(batch.run_rows(engine, rows, SAMPLING, compose=compose, system="You translate."))
    assert [r.answer.text for r in results] == ["answer 1", "answer 2", "answer 3"]
    instruction = len(engine.tokenize(engine.render_chat([{"role": "system", "content": "You translate."}], add_generation_prompt=False)
                                      + "<user> Translate this phrase into French"))
    assert results[0].stats.cached_tokens == 0
    assert all(r.stats.cached_tokens >= instruction for r in results[1:])
    assert [r.record(False)["id"] for r in results] == [1, 2, 3]


def test_a_row_system_prompt_overrides_the_shared_one():
    engine = FakeEngine()
    rows = batch.read_rows(['{"prompt": "a"}', '{"prompt": "b", "system": "Row system."}'])
    list(batch.run_rows(engine, rows, SAMPLING, compose=compose, system="Shared."))
    assert "Shared." in engine.streamed_texts[0] and "Row system." in engine.streamed_texts[1]
    assert "Shared." not in engine.streamed_texts[1]


def test_a_bad_row_in_the_middle_does_not_stop_the_batch():
    engine = FakeEngine(replies=['{"name": "Ann", "age": 3}', '{"name": "Bo"', '{"name": "Cy", "age": 5}'])
    spec = json_spec("name, age int")
    rows = batch.read_rows(["one", "two", "three", "four"])
    results = list(batch.run_rows(engine, rows, SAMPLING, compose=compose, spec=spec))
    assert [r.error is None for r in results] == [True, False, True, False]
    assert results[0].record(True)["data"] == {"name": "Ann", "age": 3}
    bad = results[1].record(True)
    assert bad["data"] is None and "not valid JSON" in bad["error"] and bad["completion_tokens"] > 0
    assert results[1].line(True) == "" and results[2].line(True) == '{"name": "Cy", "age": 5}'
    assert results[3].error and "not valid JSON" in results[3].error  # the fake's default reply is not JSON


def test_a_row_cut_off_at_max_tokens_under_a_schema_is_an_error_row():
    engine = FakeEngine(replies=['{"name": "a very long name indeed", "age": 3}'])
    results = list(batch.run_rows(engine, batch.read_rows(["x"]), Sampling(max_tokens=3), compose=compose,
                                  spec=json_spec("name, age int")))
    assert "cut off" in results[0].error and results[0].record(True)["finish_reason"] == "length"


def test_an_input_error_row_reports_no_stale_counts():
    engine = FakeEngine()
    results = list(batch.run_rows(engine, batch.read_rows(['{"prompt": "a"}', "bad"]), SAMPLING, compose=compose))
    record = results[1].record(False)
    assert record["prompt_tokens"] == 0 and record["finish_reason"] is None and record["text"] is None


def test_a_model_without_a_chat_template_fails_once_up_front():
    engine = FakeEngine(template=None)
    with pytest.raises(NoChatTemplateError):
        list(batch.run_rows(engine, batch.read_rows(["a", "b"]), SAMPLING, compose=compose))
    assert engine.streamed == []


def test_ctrl_c_in_a_row_propagates():
    def press(i: int) -> None:
        raise KeyboardInterrupt

    engine = FakeEngine(on_piece=press)
    with pytest.raises(KeyboardInterrupt):
        list(batch.run_rows(engine, batch.read_rows(["a"]), SAMPLING, compose=compose))


# -- resume ---------------------------------------------------------------------------------------


def test_finished_ids_drop_a_row_cut_short_by_a_kill(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": 1, "text": "a"}\n{"id": "x", "text": "b"}\n\n{"id": 3, "te')
    assert batch.finished_ids(out) == {"1", '"x"'}
    assert out.read_bytes() == b'{"id": 1, "text": "a"}\n{"id": "x", "text": "b"}\n\n'


def test_finished_ids_end_a_whole_last_row_that_lost_its_newline(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": 1}\n{"id": 2}')
    assert batch.finished_ids(out) == {"1", "2"}
    assert out.read_bytes() == b'{"id": 1}\n{"id": 2}\n'


def test_finished_ids_refuse_a_file_that_is_not_a_batch_output(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1}\nhello\n{"id": 2}\n')
    with pytest.raises(UsageError, match="line 2 is not a row"):
        batch.finished_ids(out)


# -- run_batch on the fake engine -----------------------------------------------------------------


def fake_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, config_dir=tmp_path, hub_cache=tmp_path, hf_endpoint="http://127.0.0.1:9", sampling=SAMPLING)


def run(tmp_path: Path, monkeypatch, lines: str, *, as_json=False, output=None, resume=False, spec=None,
        engine: FakeEngine | None = None, suffix=".txt"):
    from chatllm.cli.ask_lines import run_batch
    engine = engine or FakeEngine(reply=lambda n: f"line one\nline {n}")
    monkeypatch.setattr("chatllm.engines.loader.load_engine", lambda settings, out, **kw: engine)
    src = tmp_path / f"in{suffix}"
    src.write_text(lines, encoding="utf-8")
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(stdout, stderr, stdout_tty=False, stderr_tty=False, as_json=as_json)
    settings = fake_settings(tmp_path)
    error = None
    try:
        run_batch(CommandContext(settings, out), compose=compose, system=None, spec=spec, file=src, output=output, resume=resume)
    except ChatllmError as exc:
        error = exc
    return stdout.getvalue(), stderr.getvalue(), error


def test_plain_output_is_one_escaped_line_per_row(tmp_path, monkeypatch):
    stdout, stderr, error = run(tmp_path, monkeypatch, "a\n\nb\n")
    assert error is None and stdout == "line one\\nline 1\nline one\\nline 2\n" and stderr == ""


def test_a_failed_row_keeps_its_line_and_warns_and_the_batch_exits_1(tmp_path, monkeypatch):
    stdout, stderr, error = run(tmp_path, monkeypatch, '{"prompt": "a"}\nnot json\n{"id": "c", "prompt": "c"}\n')
    assert stdout.splitlines() == ["line one\\nline 1", "", "line one\\nline 2"]
    assert "warning: row 2: line 2 is not a JSON row" in stderr
    assert error is not None and error.exit_code == 1 and "1 of 3 rows failed" in error.message


def test_json_rows_on_stdout(tmp_path, monkeypatch):
    stdout, _, error = run(tmp_path, monkeypatch, '{"id": "x", "prompt": "a"}\n', as_json=True, suffix=".jsonl")
    row = json.loads(stdout)
    assert error is None
    assert set(row) == {"id", "text", "prompt_tokens", "cached_tokens", "completion_tokens", "finish_reason", "error"}
    assert row["id"] == "x" and row["text"] == "line one\nline 1" and row["error"] is None


def test_output_file_then_resume_appends_only_the_missing_rows(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "text": "old"}\n{"id": 3, "text": "old"}\n{"id": 4, "te')
    stdout, stderr, error = run(tmp_path, monkeypatch, "a\nb\nc\nd\ne\n", output=out, resume=True)
    assert error is None and stdout == "" and "skipped 2 rows" in stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [1, 3, 2, 4, 5]


def test_output_file_without_resume_is_replaced(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text("anything\n")
    run(tmp_path, monkeypatch, "a\n", output=out)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1]


def test_resume_without_output_and_output_onto_the_input_are_usage_errors(tmp_path, monkeypatch):
    for kw, message in (({"resume": True}, "--resume needs -o"), ({"output": tmp_path / "in.txt"}, "is the input file")):
        stdout, _, error = run(tmp_path, monkeypatch, "a\n", **kw)
        assert isinstance(error, UsageError) and message in error.message and stdout == ""


def test_empty_input_fails_before_the_model_loads(tmp_path, monkeypatch):
    def no_load(settings, out, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("chatllm.engines.loader.load_engine", no_load)
    from chatllm.cli.ask_lines import run_batch
    src = tmp_path / "empty.txt"
    src.write_text("\n  \n")
    with pytest.raises(UsageError, match="has no prompts"):
        run_batch(CommandContext(fake_settings(tmp_path), Output(io.StringIO(), io.StringIO())), compose=compose, system=None, spec=None,
                  file=src, output=None, resume=False)


def test_a_terminal_stderr_gets_a_bar_and_a_summary_and_a_pipe_gets_neither(tmp_path, monkeypatch):
    from chatllm.cli.ask_lines import run_batch

    monkeypatch.setattr("chatllm.engines.loader.load_engine", lambda settings, out, **kw: FakeEngine())
    src, dest = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("a\nb\nc\n")
    for tty in (True, False):
        stdout, stderr = io.StringIO(), io.StringIO()
        out = Output(stdout, stderr, stdout_tty=False, stderr_tty=tty, color=False)
        run_batch(CommandContext(fake_settings(tmp_path), out), compose=compose, system=None, spec=None, file=src, output=dest,
                  resume=False)
        assert stdout.getvalue() == "" and len(dest.read_text().splitlines()) == 3
        assert ("3 rows in" in stderr.getvalue()) is tty and ("rows/s" in stderr.getvalue()) is tty
