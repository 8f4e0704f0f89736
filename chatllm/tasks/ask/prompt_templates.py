"""Saved templates: a prompt with $input and $variables, a system prompt, a schema, a model and sampling, kept as
config_dir/templates/NAME.toml. Read, checked (every error names the file), rendered and written atomically here."""

from __future__ import annotations

import os
import re
import string
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from chatllm.errors import ChatllmError, UsageError

KEYS = ("prompt", "system", "schema", "schema_multi", "model", "sampling")
# The sampling keys a template may hold: those `ask` takes as flags (min_p and repeat_penalty live in config.toml).
TEMPLATE_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "draft")
_NAME = re.compile(r"(?!\.)[\w.-]{1,100}")
_STRING_TYPES = {"prompt": "a string", "system": "a string", "schema": "a string", "model": "a string"}
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_CREATE_HINT = "create one with `chatllm ask --save NAME -s SYSTEM 'Summarize: $input'`"


@dataclass
class PromptTemplate:
    """One saved template, checked: its placeholders are valid and its schema parses."""

    name: str
    path: Path
    prompt: str | None
    system: str | None
    schema: str | None  # as the user gave it: concise form, inline JSON or a file path
    schema_multi: bool
    model: str | None
    sampling: dict[str, Any] = field(default_factory=dict)
    variables: list[str] = field(default_factory=list)  # the $names in prompt and system, besides $input

    def as_dict(self) -> dict[str, Any]:
        """The template as a JSON record."""
        return {"name": self.name, "path": str(self.path), "prompt": self.prompt, "system": self.system,
                "schema": self.schema, "schema_multi": self.schema_multi, "model": self.model,
                "sampling": dict(self.sampling), "variables": list(self.variables)}


def templates_dir(config_dir: Path) -> Path:
    """Where templates live: config_dir/templates."""
    return config_dir / "templates"


def check_name(name: str) -> str:
    """The template name without a trailing .toml, or a UsageError for anything but letters, digits, - _ and ."""
    bare = name[:-5] if name.endswith(".toml") and len(name) > 5 else name
    if not _NAME.fullmatch(bare):
        raise UsageError(f"bad template name {name!r}: use letters, digits, '-', '_' and '.' (no slashes, no leading '.')",
                         "for example --save summarize-fr")
    return bare


def template_path(config_dir: Path, name: str) -> Path:
    """The file of template NAME (which may not exist)."""
    return templates_dir(config_dir) / f"{check_name(name)}.toml"


def template_names(config_dir: Path) -> list[str]:
    """The names of the saved templates, sorted."""
    folder = templates_dir(config_dir)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.toml") if p.is_file() and _NAME.fullmatch(p.stem))


def load_template(config_dir: Path, name: str) -> PromptTemplate:
    """Read and check template NAME; an unknown name, bad TOML, key, type, placeholder or schema names the file."""
    path = template_path(config_dir, name)
    if not path.is_file():
        known = template_names(config_dir)
        hint = f"known templates: {', '.join(known)}; or {_CREATE_HINT}" if known else f"there are none yet: {_CREATE_HINT}"
        raise UsageError(f"no template named {check_name(name)!r} (no file {path})", hint)
    from chatllm.settings import read_toml

    return _from_table(check_name(name), path, read_toml(path))


def list_templates(config_dir: Path, on_error: Callable[[ChatllmError], None] | None = None) -> list[PromptTemplate]:
    """Every saved template, by name; a broken one raises, or goes to on_error and is skipped."""
    found = []
    for name in template_names(config_dir):
        try:
            found.append(load_template(config_dir, name))
        except ChatllmError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return found


def render_prompt(tpl: PromptTemplate, input_text: str, params: dict[str, str]) -> str:
    """The user message: the prompt with $input and the -p variables filled (the input appended if it has no $input)."""
    unknown = sorted(set(params) - set(tpl.variables))
    if unknown:
        have = ", ".join(f"${v}" for v in tpl.variables) or "none"
        raise UsageError(f"template {tpl.name!r} ({tpl.path}) has no variable ${unknown[0]}; its variables: {have}",
                         "drop that -p, or add the variable to the template's prompt or system")
    if tpl.prompt is None:
        text = input_text
    else:
        names = placeholders(tpl.prompt)
        values = _values(tpl, names - {"input"}, params, "prompt")
        text = string.Template(tpl.prompt).substitute(values, input=input_text)
        if "input" not in names and input_text.strip():
            text = f"{text.rstrip()}\n\n{input_text}"
    if not text.strip():
        raise UsageError(f"nothing to ask: template {tpl.name!r} has no prompt and no input was given",
                         f"pipe the input in: echo TEXT | chatllm ask --template {tpl.name}")
    return text


def render_system(tpl: PromptTemplate, params: dict[str, str]) -> str | None:
    """The template's system prompt with its -p variables filled (None when it has none)."""
    if tpl.system is None:
        return None
    values = _values(tpl, placeholders(tpl.system), params, "system")
    return string.Template(tpl.system).substitute(values)


def _values(tpl: PromptTemplate, needed: set[str], params: dict[str, str], where: str) -> dict[str, str]:
    missing = sorted(needed - set(params))
    if missing:
        raise UsageError(f"template {tpl.name!r} ({tpl.path}) needs ${missing[0]} (in its {where}), and no -p {missing[0]} was given",
                         f"chatllm ask --template {tpl.name} " + " ".join(f"-p {m} VALUE" for m in missing))
    return {k: params[k] for k in needed}


def placeholders(text: str) -> set[str]:
    """The $names and ${names} in a template text ($$ is a literal $)."""
    return {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(text)
            if m.group("named") or m.group("braced")}


def check_placeholders(text: str, where: str, key: str) -> None:
    """Refuse a `$` that is neither $name, ${name} nor $$, naming the line within the text."""
    for m in string.Template.pattern.finditer(text):
        if m.group("invalid") is not None:
            start = m.start()  # the `$` itself
            line = text.count("\n", 0, start) + 1
            col = start - (text.rfind("\n", 0, start) + 1) + 1
            bad = text[start:start + 2].rstrip("\n") or "$"
            raise UsageError(f"{where}: invalid placeholder {bad!r} in {key} line {line}, column {col}",
                             "write $$ for a literal $, $name or ${name} for a variable, $input for the input")


def _from_table(name: str, path: Path, data: dict[str, Any], where: str = "") -> PromptTemplate:
    """Check a parsed template table (from a file, or about to be saved) and build the template."""
    where = where or str(path)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ChatllmError(f"{where}: unknown key {unknown[0]!r}",
                           f"known keys: {', '.join(KEYS)}; sampling keys go under [sampling]")
    from chatllm.settings import SAMPLING_TYPES, check_types

    for key, what in _STRING_TYPES.items():
        if key in data and not isinstance(data[key], str):
            raise ChatllmError(f"{where}: {key} must be {what}, not {data[key]!r}", f'for example: {key} = "..."')
    multi = data.get("schema_multi", False)
    if not isinstance(multi, bool):
        raise ChatllmError(f"{where}: schema_multi must be true or false, not {multi!r}", "for example: schema_multi = true")
    sampling = _check_sampling(where, data.get("sampling", {}), SAMPLING_TYPES, check_types, path)
    prompt, system = data.get("prompt"), data.get("system")
    for key, text in (("prompt", prompt), ("system", system)):
        if text is not None:
            check_placeholders(text, where, key)
    if system is not None and "input" in placeholders(system):
        raise ChatllmError(f"{where}: $input goes in the prompt, not in system", "move $input to the prompt (write $$input for a literal)")
    schema = _schema_path(data.get("schema"), path.parent)
    if schema is not None:
        from chatllm.tasks.ask.structured_output import json_spec

        json_spec(schema, multi, where=where)
    found = placeholders(prompt or "") | placeholders(system or "")
    variables = [v for v in _ordered(f"{prompt or ''}\n{system or ''}") if v in found and v != "input"]
    return PromptTemplate(name=name, path=path, prompt=prompt, system=system, schema=schema, schema_multi=multi and schema is not None,
                          model=data.get("model"), sampling=sampling, variables=variables)


def _check_sampling(where: str, table: Any, types: dict, check_types: Callable[..., None], path: Path) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ChatllmError(f"{where}: sampling must be a table", "write it as a [sampling] section with keys under it")
    unknown = sorted(set(table) - set(TEMPLATE_SAMPLING))
    if unknown:
        raise ChatllmError(f"{where}: unknown sampling key {unknown[0]!r}", f"known: {', '.join(TEMPLATE_SAMPLING)}")
    sampling = dict(table)
    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    check_types(path, sampling, types, "sampling.")
    from chatllm.settings import Sampling, check_sampling

    bounded = {k: v for k, v in sampling.items() if k != "stop"}
    check_sampling(Sampling().replace(**bounded), name=lambda key: f"{where}: [sampling] {key}",
                   example=lambda label, value: f"{label.split()[-1]} = {value}")
    return sampling


def _ordered(text: str) -> list[str]:
    """Placeholder names in order of first appearance."""
    seen: dict[str, None] = {}
    for m in string.Template.pattern.finditer(text):
        if m.group("named") or m.group("braced"):
            seen.setdefault(m.group("named") or m.group("braced"), None)
    return list(seen)


def _schema_path(schema: str | None, base: Path) -> str | None:
    """A schema file named relative to the templates dir, as an absolute path; any other schema unchanged."""
    if schema is None or not schema.strip():
        return None
    stripped = schema.strip()
    if "\n" not in stripped and not stripped.startswith("{") and not Path(stripped).expanduser().is_absolute():
        beside = base / stripped
        if beside.is_file():
            return str(beside)
    return schema


def save_template(config_dir: Path, name: str, *, prompt: str | None, system: str | None, schema: str | None,
                  multi: bool, model: str | None, sampling: dict[str, Any]) -> Path:
    """Check and write template NAME atomically (None sampling values dropped); the file's path."""
    path = template_path(config_dir, name)
    if schema is not None and schema.strip() and "\n" not in schema and not schema.strip().startswith("{"):
        candidate = Path(schema.strip()).expanduser()
        if candidate.is_file():  # a relative schema file would be looked for in the wrong place later
            schema = str(candidate.resolve())
    table: dict[str, Any] = {"prompt": prompt, "system": system, "schema": schema or None, "model": model}
    table = {k: v for k, v in table.items() if v is not None}
    if multi and schema:
        table["schema_multi"] = True
    kept = {k: (list(v) if k == "stop" else v) for k, v in sampling.items() if v is not None and v != [] and v != ()}
    if kept:
        table["sampling"] = kept
    label = f"template {check_name(name)!r}"
    for key in ("prompt", "system"):
        if key in table:
            check_placeholders(table[key], label, key)
    if schema:
        from chatllm.tasks.ask.structured_output import json_spec

        json_spec(schema, multi, where="--schema-multi" if multi else "--schema")
    text = to_toml(table)
    _from_table(check_name(name), path, _parse(text), label)  # the same checks a load makes, before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path


def _parse(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(text)


def remove_template(config_dir: Path, name: str) -> Path:
    """Delete template NAME; the path it had."""
    path = load_path(config_dir, name)
    try:
        path.unlink()
    except FileNotFoundError:  # another process removed it since: the same answer as if it never existed
        load_template(config_dir, name)
    return path


def load_path(config_dir: Path, name: str) -> Path:
    """The file of an existing template NAME, or the unknown-template error."""
    path = template_path(config_dir, name)
    if not path.is_file():
        load_template(config_dir, name)  # raises the error that lists the known names
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and a rename: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# -- writing TOML: the few keys a template has ---------------------------------------------------


def to_toml(table: dict[str, Any]) -> str:
    """A template table as TOML text: top-level strings and bools, then a [sampling] table."""
    lines = []
    for key, value in table.items():
        if key != "sampling":
            lines.append(f"{key} = {toml_value(value)}")
    if table.get("sampling"):
        lines += ["", "[sampling]"] + [f"{k} = {toml_value(v)}" for k, v in table["sampling"].items()]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """One TOML value: a string (multi-line when it has newlines), bool, int, float or list of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UsageError(f"{value} is not a number a template can hold", "give a finite number")
        return repr(value)
    if isinstance(value, str):
        if "\n" in value:
            # a multi-line basic string reads naturally in an editor; the newline after the quotes is not content
            return '"""\n' + toml_escape(value, keep_newlines=True) + '"""'
        return '"' + toml_escape(value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_escape(text: str, keep_newlines: bool = False) -> str:
    """Escape text for a TOML basic string: quotes, backslashes, control characters (\\uXXXX)."""
    out = []
    for i, ch in enumerate(text):
        code = ord(ch)
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch == '"' and keep_newlines and i + 1 < len(text) and text[i + 1] != '"':
            out.append(ch)  # in a multi-line string a lone quote is fine: no run of three, none before the closing quotes
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise UsageError("the text is not valid Unicode (it holds a lone surrogate, from bytes that are not UTF-8)",
                             "give the template's text as UTF-8")
        else:
            out.append(ch)
    return "".join(out)
