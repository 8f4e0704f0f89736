"""Structured output without a model: schema forms, what is refused up front, validation, and the task's contract."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatllm.errors import ChatllmError, UsageError
from chatllm.settings import Sampling
from chatllm.tasks.ask import oneshot
from chatllm.tasks.ask.structured_output import ANY_OBJECT, concise_schema, decode, json_spec
from tests.fakes import FakeEngine


def test_concise_form_gives_types_lists_descriptions_and_keeps_field_order():
    schema = concise_schema("name, age int, score float, ok bool, tags str[], bio: a short bio")
    assert list(schema["properties"]) == ["name", "age", "score", "ok", "tags", "bio"]
    assert schema["properties"]["age"] == {"type": "integer"}
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert schema["properties"]["bio"] == {"type": "string", "description": "a short bio"}
    assert schema["required"] == list(schema["properties"]) and schema["additionalProperties"] is False


def test_concise_form_splits_on_newlines_so_descriptions_may_hold_commas():
    schema = concise_schema("title: the title, in full\nyear int: when, roughly")
    assert schema["properties"]["title"]["description"] == "the title, in full"
    assert schema["properties"]["year"] == {"type": "integer", "description": "when, roughly"}


def test_concise_form_takes_chinese_field_names():
    schema = concise_schema("姓名, 年龄 int: 周岁")
    assert schema["properties"]["年龄"] == {"type": "integer", "description": "周岁"}


@pytest.mark.parametrize("bad, named", [("name, age years", "years"), ("first name age int", "first name age int"), (",,", "no fields")])
def test_concise_form_errors_name_the_field(bad, named):
    with pytest.raises(UsageError, match=named):
        concise_schema(bad)


def test_inline_json_and_a_schema_file(tmp_path):
    inline = json_spec('{"type": "object", "properties": {"x": {"type": "integer"}}}')
    assert inline.schema["properties"]["x"] == {"type": "integer"}
    path = tmp_path / "person.json"
    path.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "string"}}}), encoding="utf-8")
    assert json_spec(str(path)).schema["properties"] == {"n": {"type": "string"}}


def test_invalid_json_says_where(tmp_path):
    with pytest.raises(UsageError, match="line 1 column 16"):
        json_spec('{"type": "obj" "x"}')
    path = tmp_path / "bad.json"
    path.write_text('{\n  "type": \n}', encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad\.json: invalid JSON at line 3"):
        json_spec(str(path))
    with pytest.raises(UsageError, match="no such file"):
        json_spec(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("schema, keyword", [
    ({"type": "object", "not": {}}, "'not'"),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, "'minimum'"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "'patternProperties'"),
    ({"type": "object", "properties": {"n": {"type": "strin"}}}, "at properties/n/type: 'strin'"),
    ({"type": "string", "format": "email"}, "format 'email'"),
    ({"type": "string", "pattern": "[a-z]+"}, "anchored"),
    ({"$ref": "https://example.com/s.json"}, "not a local reference"),
    ({"$ref": "#/$defs/missing"}, "points nowhere"),
    ({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}, "refers back"),
])
def test_what_the_grammar_cannot_enforce_is_refused_naming_the_keyword(schema, keyword):
    with pytest.raises(UsageError) as info:
        json_spec(json.dumps(schema))
    assert keyword in info.value.message


def test_an_invalid_schema_is_refused_by_the_validator():
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        json_spec('{"type": "object", "required": "name"}')


def test_supported_schemas_pass_refs_enums_unions_and_nesting():
    spec = json_spec(json.dumps({
        "type": "object", "$defs": {"city": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "properties": {"home": {"$ref": "#/$defs/city"}, "mood": {"enum": ["happy", "sad"]},
                       "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                       "id": {"type": "string", "pattern": "^[a-z]{3}$"}, "when": {"type": "string", "format": "date"},
                       "pairs": {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]},
                                 "minItems": 1, "maxItems": 4}},
        "required": ["home"], "title": "T", "description": "annotations pass"}))
    assert spec.schema["required"] == ["home"]


def test_no_schema_means_any_json_object_and_multi_needs_one():
    assert json_spec(None).schema == ANY_OBJECT
    with pytest.raises(UsageError, match="needs a schema"):
        json_spec(None, multi=True)


def test_decode_validates_and_explains():
    spec = json_spec("name, age int")
    assert decode(spec, '{"name": "Ann", "age": 3}', "stop") == {"name": "Ann", "age": 3}
    with pytest.raises(ChatllmError, match="cut off at --max-tokens"):
        decode(spec, '{"name": "An', "length")
    with pytest.raises(ChatllmError, match="not valid JSON"):
        decode(spec, '{"name": "An', "stop")
    with pytest.raises(ChatllmError, match="at age"):
        decode(spec, '{"name": "Ann", "age": "three"}', "stop")
    with pytest.raises(KeyboardInterrupt):
        decode(spec, "{", "interrupted")


def test_multi_wraps_items_and_unwraps_them():
    spec = json_spec("name, amount float", multi=True)
    assert spec.wire_schema["properties"]["items"]["items"] == spec.schema
    assert decode(spec, '{"items": [{"name": "a", "amount": 1.5}]}', "stop") == [{"name": "a", "amount": 1.5}]


def test_ask_under_a_spec_constrains_the_engine_and_returns_data():
    engine = FakeEngine(reply='{"城市": "北京", "人口": 21893095}')
    spec = json_spec("城市, 人口 int")
    answer = oneshot.ask(engine, "北京", Sampling(max_tokens=50), system="Be brief.", spec=spec)
    assert answer.data == {"城市": "北京", "人口": 21893095}
    assert engine.samplings[-1].json_schema == spec.wire_text
    assert json.loads(spec.wire_text) == spec.wire_schema
    record = answer.as_dict()
    assert record["data"] == answer.data and "Be brief." in engine.streamed_texts[-1] and "JSON Schema" in engine.streamed_texts[-1]


def test_ask_without_a_spec_has_no_data_field_and_no_constraint():
    engine = FakeEngine(reply="plain words")
    answer = oneshot.ask(engine, "hi", Sampling(max_tokens=50))
    assert "data" not in answer.as_dict() and engine.samplings[-1].json_schema is None


def test_a_cut_off_structured_answer_is_an_error_not_a_result():
    engine = FakeEngine(reply='{"name": "a very long name indeed"}')
    with pytest.raises(ChatllmError, match="cut off"):
        oneshot.ask(engine, "hi", Sampling(max_tokens=2), spec=json_spec("name"))


FIELD = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo")), min_size=1, max_size=8)
TYPES = st.sampled_from(["", " int", " float", " bool", " str", " str[]", " int[]"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(FIELD, TYPES, st.text(st.characters(blacklist_characters=",\n\r"), max_size=20)),
                min_size=1, max_size=6, unique_by=lambda f: f[0]))
def test_any_concise_schema_is_a_valid_draft_2020_12_schema(fields):
    text = ", ".join(f"{name}{kind}" + (f": {desc}" if desc.strip() else "") for name, kind, desc in fields)
    spec = json_spec(text)
    jsonschema.Draft202012Validator.check_schema(spec.wire_schema)
    assert list(spec.schema["properties"]) == [name for name, _, _ in fields]


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4))
def test_any_object_round_trips_through_decode(value):
    assert decode(json_spec(None), json.dumps(value, ensure_ascii=False), "stop") == value
