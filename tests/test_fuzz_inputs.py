"""Fuzz the new file and flag formats (issue 20): any input is accepted or refused with a one-line ChatllmError.

Schemas (concise and JSON), template files, glossaries, --examples files and CSV columns, from hypothesis: no
other exception may escape, and a refusal is a single line with a hint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatllm.errors import ChatllmError
from chatllm.inputs import csv_column_items
from chatllm.tasks.ask.prompt_templates import load_template, render_prompt
from chatllm.tasks.ask.structured_output import decode, json_spec
from chatllm.tasks.classify.fewshot import load_examples
from chatllm.tasks.translate.languages import parse_glossary

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                           st.sampled_from(["type", "properties", "items", "required", "enum", "$ref", "anyOf", "pattern",
                                            "format", "minItems", "maxLength", "additionalProperties", "$defs", "x"]),
                           inner, max_size=4), max_leaves=10)


def one_line_refusal(err: ChatllmError) -> None:
    """What every refusal must look like: one line of message, a hint."""
    assert err.message.strip() and "\n" not in err.message and err.hint and "Traceback" not in err.message


@FUZZ
@given(TEXT)
def test_any_schema_string_is_a_spec_or_a_one_line_usage_error(text):
    try:
        spec = json_spec(text)
    except ChatllmError as err:
        one_line_refusal(err)
        assert err.exit_code == 2
    else:
        json.loads(spec.wire_text)


@FUZZ
@given(JSONISH)
def test_any_json_schema_document_is_a_spec_or_a_one_line_usage_error(doc):
    try:
        spec = json_spec(json.dumps(doc))
    except ChatllmError as err:
        one_line_refusal(err)
        assert err.exit_code == 2
    else:
        try:  # and whatever the model then answers is a value or a one-line error
            decode(spec, json.dumps(doc), "stop")
        except ChatllmError as err:
            one_line_refusal(err)


@FUZZ
@given(st.binary(max_size=300) | TEXT.map(lambda t: t.encode("utf-8")))
def test_any_template_file_loads_or_is_refused_naming_the_file(tmp_path, data):
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    (folder / "fuzz.toml").write_bytes(data)
    try:
        tpl = load_template(tmp_path, "fuzz")
        render_prompt(tpl, "input", {name: "v" for name in tpl.variables})
    except ChatllmError as err:
        one_line_refusal(err)
        assert "fuzz" in err.message


TOML_LINES = st.lists(st.sampled_from([
    'prompt = "Summarize: $input"', 'prompt = "$who says $"', 'system = "be $tone"', 'schema = "name, age int"',
    'schema = "{bad"', 'schema_multi = true', 'model = 3', '[sampling]', 'temperature = -1', 'top_p = 0.5', 'stop = "x"',
    'seed = "s"', 'unknown = 1', 'prompt = """a\nb"""', '${unclosed', 'max_tokens = 0',
]), max_size=6)


@FUZZ
@given(TOML_LINES)
def test_template_files_built_from_plausible_lines_load_or_are_refused(tmp_path, lines):
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    (folder / "t.toml").write_text("\n".join(lines), encoding="utf-8")
    try:
        tpl = load_template(tmp_path, "t")
        render_prompt(tpl, "input", {name: "v" for name in tpl.variables})
    except ChatllmError as err:
        one_line_refusal(err)


@FUZZ
@given(TEXT)
def test_any_glossary_text_parses_or_is_refused(text):
    try:
        pairs = parse_glossary(text)
    except ChatllmError as err:
        one_line_refusal(err)
    else:
        assert all(isinstance(a, str) and isinstance(b, str) for a, b in pairs)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([".tsv", ".csv", ".jsonl", ".txt"]))
def test_any_examples_file_loads_or_is_refused(tmp_path, data, suffix):
    path = tmp_path / f"examples{suffix}"
    path.write_bytes(data)
    try:
        load_examples(path)
    except ChatllmError as err:
        one_line_refusal(err)


@FUZZ
@given(st.lists(TEXT, max_size=6), st.sampled_from(["1", "2", "text", "missing", "0", "-1"]), st.sampled_from([".csv", ".tsv", ""]))
def test_any_csv_column_is_read_or_refused(lines, column, suffix):
    try:
        for cell, error in csv_column_items(iter(lines), column, "input", suffix):
            assert isinstance(cell, str) and (error is None or "\n" not in error)
    except ChatllmError as err:
        one_line_refusal(err)


@pytest.mark.parametrize("path", ["", "/", "/nonexistent/x.json"])
def test_odd_schema_paths_are_usage_errors(path):
    with pytest.raises(ChatllmError) as info:
        json_spec(path or None, multi=True)
    one_line_refusal(info.value)


def test_a_schema_file_that_is_a_directory_or_binary_is_refused(tmp_path):
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    for arg in (str(tmp_path / "bin.json"), str(Path(tmp_path))):
        try:
            json_spec(arg)
        except ChatllmError as err:
            one_line_refusal(err)
