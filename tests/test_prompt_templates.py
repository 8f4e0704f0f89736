"""Saved templates as units: rendering, every error naming the file, and save -> load round trips (fuzzed)."""

from __future__ import annotations

import pytest
import tomllib
from hypothesis import given
from hypothesis import strategies as st

from chatllm.errors import ChatllmError, UsageError
from chatllm.tasks.ask.prompt_templates import (
    list_templates,
    load_template,
    remove_template,
    render_prompt,
    render_system,
    save_template,
    templates_dir,
    to_toml,
)

NO_SAMPLING: dict = {}


def write(home, name: str, text: str):
    folder = templates_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def save(home, name="t", prompt=None, system=None, schema=None, multi=False, model=None, sampling=NO_SAMPLING):
    return save_template(home, name, prompt=prompt, system=system, schema=schema, multi=multi, model=model, sampling=sampling)


# -- rendering ---------------------------------------------------------------------------------


def test_input_and_variables_are_filled(tmp_path):
    save(tmp_path, prompt="Translate to ${lang}: $input ($$5)", system="You are $tone.")
    tpl = load_template(tmp_path, "t")
    assert tpl.variables == ["lang", "tone"]
    assert render_prompt(tpl, "bonjour", {"lang": "English", "tone": "calm"}) == "Translate to English: bonjour ($5)"
    assert render_system(tpl, {"lang": "English", "tone": "calm"}) == "You are calm."


def test_a_prompt_without_input_gets_the_input_after_a_blank_line(tmp_path):
    save(tmp_path, prompt="Summarize this.\n")
    tpl = load_template(tmp_path, "t")
    assert render_prompt(tpl, "some text", {}) == "Summarize this.\n\nsome text"
    assert render_prompt(tpl, "", {}) == "Summarize this.\n"


def test_a_template_without_prompt_uses_the_input(tmp_path):
    save(tmp_path, system="Be terse.")
    tpl = load_template(tmp_path, "t")
    assert tpl.prompt is None and render_prompt(tpl, "why?", {}) == "why?"
    with pytest.raises(UsageError, match="nothing to ask"):
        render_prompt(tpl, "  ", {})


def test_a_missing_variable_names_it_and_the_file(tmp_path):
    path = save(tmp_path, prompt="Write about $topic in $lang: $input")
    tpl = load_template(tmp_path, "t")
    with pytest.raises(UsageError) as err:
        render_prompt(tpl, "x", {"lang": "fr"})
    assert "$topic" in err.value.message and str(path) in err.value.message
    assert "-p topic VALUE" in err.value.hint and err.value.exit_code == 2


def test_a_missing_system_variable_is_refused_too(tmp_path):
    save(tmp_path, prompt="$input", system="You speak $lang.")
    with pytest.raises(UsageError, match=r"needs \$lang \(in its system\)"):
        render_system(load_template(tmp_path, "t"), {})


def test_an_unknown_parameter_is_refused(tmp_path):
    save(tmp_path, prompt="About $topic: $input")
    with pytest.raises(UsageError, match=r"no variable \$topc; its variables: \$topic"):
        render_prompt(load_template(tmp_path, "t"), "x", {"topic": "a", "topc": "b"})


def test_input_in_system_is_refused(tmp_path):
    path = write(tmp_path, "t", 'system = "Context: $input"\n')
    with pytest.raises(ChatllmError, match="input goes in the prompt") as err:
        load_template(tmp_path, "t")
    assert str(path) in err.value.message


# -- errors of a hand-edited file --------------------------------------------------------------


def test_unknown_template_lists_the_known_ones(tmp_path):
    with pytest.raises(UsageError, match="no template named 'x'") as err:
        load_template(tmp_path, "x")
    assert "ask --save NAME" in err.value.hint
    save(tmp_path, "alpha", prompt="a")
    save(tmp_path, "beta", prompt="b")
    with pytest.raises(UsageError) as err:
        load_template(tmp_path, "x")
    assert "alpha, beta" in err.value.hint


@pytest.mark.parametrize("name", ["a/b", "../x", ".hidden", "", "a b", "x\\y"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(UsageError, match="bad template name"):
        save(tmp_path, name, prompt="p")


def test_names_may_hold_dots_dashes_underscores_and_a_toml_suffix(tmp_path):
    path = save(tmp_path, "v1.2_sum-fr", prompt="p")
    assert path.name == "v1.2_sum-fr.toml"
    assert load_template(tmp_path, "v1.2_sum-fr.toml").name == "v1.2_sum-fr"


def test_toml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "t", 'prompt = "ok"\nsystem = "unclosed\n')
    with pytest.raises(ChatllmError) as err:
        load_template(tmp_path, "t")
    assert str(path) in err.value.message and "line 2" in err.value.message and "column" in err.value.message


def test_unknown_key_is_refused_with_the_known_ones(tmp_path):
    write(tmp_path, "t", 'prompt = "p"\nsytem = "typo"\n')
    with pytest.raises(ChatllmError, match="unknown key 'sytem'") as err:
        load_template(tmp_path, "t")
    assert "system" in err.value.hint and "schema_multi" in err.value.hint


@pytest.mark.parametrize("body,match", [
    ("prompt = 3\n", "prompt must be a string"),
    ("schema_multi = \"yes\"\n", "schema_multi must be true or false"),
    ("[sampling]\ntemperature = \"hot\"\n", "sampling.temperature must be a number"),
    ("[sampling]\nmax_tokens = 1.5\n", "sampling.max_tokens must be a whole number"),
    ("[sampling]\nstop = [1]\n", "sampling.stop must be a list of strings"),
    ("[sampling]\ntop_p = 3\n", r"\[sampling\] top_p must be in \(0, 1\]"),
    ("[sampling]\nmin_p = 0.1\n", "unknown sampling key 'min_p'"),
    ("sampling = 3\n", "sampling must be a table"),
])
def test_wrong_types_and_bounds_name_the_file(tmp_path, body, match):
    path = write(tmp_path, "t", body)
    with pytest.raises(ChatllmError, match=match) as err:
        load_template(tmp_path, "t")
    assert err.value.message.startswith(str(path))


def test_a_stop_string_may_be_one_string(tmp_path):
    write(tmp_path, "t", '[sampling]\nstop = "###"\n')
    assert load_template(tmp_path, "t").sampling == {"stop": ["###"]}


def test_an_invalid_placeholder_names_the_file_and_the_line_in_the_prompt(tmp_path):
    path = write(tmp_path, "t", 'prompt = """\nline one\ncosts $5\n"""\n')
    with pytest.raises(UsageError) as err:
        load_template(tmp_path, "t")
    assert str(path) in err.value.message and "prompt line 2, column 7" in err.value.message
    assert "$$" in err.value.hint


def test_a_bad_schema_names_the_file(tmp_path):
    path = write(tmp_path, "t", 'prompt = "p"\nschema = \'{"type": "object", "properties": \'\n')
    with pytest.raises(UsageError) as err:
        load_template(tmp_path, "t")
    assert str(path) in err.value.message and "invalid JSON" in err.value.message


def test_a_schema_file_beside_the_template_is_found(tmp_path):
    write(tmp_path, "t", 'prompt = "p"\nschema = "person.json"\n')
    (templates_dir(tmp_path) / "person.json").write_text('{"type": "object", "properties": {"name": {"type": "string"}}}')
    assert load_template(tmp_path, "t").schema == str(templates_dir(tmp_path) / "person.json")


def test_save_stores_a_relative_schema_file_as_an_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "s.json").write_text('{"type": "object"}')
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "home", schema="s.json")
    assert load_template(tmp_path / "home", "t").schema == str(tmp_path / "s.json")


def test_save_refuses_a_bad_schema_or_placeholder_and_writes_nothing(tmp_path):
    with pytest.raises(UsageError, match="--schema"):
        save(tmp_path, prompt="p", schema="{nope")
    with pytest.raises(UsageError, match="invalid placeholder"):
        save(tmp_path, prompt="costs $5")
    with pytest.raises(UsageError, match="temperature"):
        save(tmp_path, prompt="p", sampling={"temperature": -1})
    assert list_templates(tmp_path) == []


def test_list_skips_a_broken_template_when_asked(tmp_path):
    save(tmp_path, "good", prompt="p")
    write(tmp_path, "bad", "prompt = \n")
    with pytest.raises(ChatllmError):
        list_templates(tmp_path)
    errors: list = []
    assert [t.name for t in list_templates(tmp_path, on_error=errors.append)] == ["good"]
    assert "bad.toml" in errors[0].message


def test_remove(tmp_path):
    path = save(tmp_path, prompt="p")
    assert remove_template(tmp_path, "t") == path and not path.exists()
    with pytest.raises(UsageError, match="no template named"):
        remove_template(tmp_path, "t")


# -- save -> load round trips --------------------------------------------------------------------


def test_round_trip_of_every_field(tmp_path):
    sampling = {"max_tokens": 8, "temperature": 0.0, "top_p": 0.5, "top_k": 3, "seed": 7, "stop": ["###", "\n\n"], "min_p": None}
    save(tmp_path, prompt="总结：$input", system='Say "hi"\\', schema="name, age int", multi=True, model="smol", sampling=sampling)
    tpl = load_template(tmp_path, "t")
    assert (tpl.prompt, tpl.system, tpl.model) == ("总结：$input", 'Say "hi"\\', "smol")
    assert (tpl.schema, tpl.schema_multi) == ("name, age int", True)
    assert tpl.sampling == {k: v for k, v in sampling.items() if v is not None}


def test_save_overwrites_atomically_and_leaves_no_temp_files(tmp_path):
    save(tmp_path, prompt="one")
    save(tmp_path, prompt="two")
    assert load_template(tmp_path, "t").prompt == "two"
    assert [p.name for p in templates_dir(tmp_path).iterdir()] == ["t.toml"]


TEXT = st.text(st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ['"""', 'a"', '""', "\\", "\\n", "\r\n", "\x00\x7f\x1b", "中文 “引号” \\ \"", "'''", "\n",
     '"\n"', 'x\n"', 'x\n""', 'x\n"""y"', '\\\n\\'])


@given(TEXT, TEXT)
def test_fuzz_any_text_survives_save_and_load(tmp_path_factory, prompt, system):
    home = tmp_path_factory.mktemp("home")
    # $ is template syntax; $$ is its escape and comes back unchanged
    prompt, system = prompt.replace("$", "$$"), system.replace("$", "$$")
    save(home, prompt=prompt, system=system, sampling={"stop": [prompt or "x", system or "y"]})
    tpl = load_template(home, "t")
    assert (tpl.prompt, tpl.system, tpl.sampling["stop"]) == (prompt, system, [prompt or "x", system or "y"])


@given(st.dictionaries(st.sampled_from(["prompt", "system", "model", "schema"]), TEXT))
def test_fuzz_to_toml_is_what_tomllib_reads(table):
    assert tomllib.loads(to_toml(table)) == table
