"""Answers a script can trust: a JSON Schema (file, inline JSON or concise form), refused up front if the grammar
cannot enforce it, sent to the engine as the decoding constraint, and validated again before anything is printed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatllm.errors import ChatllmError, UsageError

ANY_OBJECT: dict = {"type": "object"}
CONCISE_TYPES = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
                 "number": "number", "bool": "boolean", "boolean": "boolean"}
# Keywords the grammar enforces (llama.cpp's JSON-Schema converter) or that only annotate.
SUPPORTED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format",
    "minLength", "maxLength",
    "title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated", "readOnly", "writeOnly",
}
# Keywords whose value is a schema or a map/list of schemas: the walk goes into them.
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
_KINDS = {"string", "number", "integer", "boolean", "object", "array", "null"}


@dataclass(frozen=True)
class JsonSpec:
    """What a structured answer must be: one object matching `schema`, or with multi a list of them."""

    schema: dict
    multi: bool = False

    @property
    def wire_schema(self) -> dict:
        """The schema the decoder enforces: the item schema, or {"items": [item, ...]} for multi."""
        if not self.multi:
            return self.schema
        return {"type": "object", "properties": {"items": {"type": "array", "items": self.schema}}, "required": ["items"]}

    @property
    def wire_text(self) -> str:
        """The enforced schema as compact JSON (what Sampling.json_schema carries to the engine)."""
        return json.dumps(self.wire_schema, ensure_ascii=False, separators=(",", ":"))  # key order kept: it is the field order

    def instruction(self) -> str:
        """A line for the prompt, so the model knows what the grammar will hold it to."""
        if self.schema == ANY_OBJECT and not self.multi:
            return "Answer with a JSON object only."
        return "Answer with JSON only, matching this JSON Schema: " + self.wire_text


ANY_OBJECT_WORDS = ("object", "json")  # `--schema object`: any JSON object, no fields required


def json_spec(schema: str | None, multi: bool = False, *, where: str = "--schema") -> JsonSpec:
    """The spec for a --schema value (None or `object`: any JSON object); a UsageError naming what is wrong."""
    if schema is None or not schema.strip() or schema.strip().lower() in ANY_OBJECT_WORDS:
        if multi:
            raise UsageError("--schema-multi needs a schema", "for example --schema-multi 'name, date, amount float'")
        return JsonSpec(dict(ANY_OBJECT))
    parsed = parse_schema(schema, where=where)
    import jsonschema  # imported here: only structured answers pay for it

    try:  # first against the meta-schema, so the walk below only ever sees well-formed keywords
        jsonschema.validators.validator_for(parsed, default=jsonschema.Draft202012Validator).check_schema(parsed)
    except jsonschema.SchemaError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "the top"
        raise UsageError(f"{where}: not a valid JSON Schema at {at}: {exc.message[:200]}",
                         "check the schema (types: string, number, integer, boolean, object, array, null)")
    check_supported(parsed, where=where)
    return JsonSpec(parsed, multi)


def parse_schema(text: str, *, where: str = "--schema") -> dict:
    """A JSON Schema from inline JSON, a file holding one, or the concise form 'name, age int, bio: a short bio'."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return _load_json(stripped, where)
    if "\n" not in stripped and len(stripped) < 4096 and (stripped.endswith(".json") or _is_file(stripped)):
        path = Path(stripped).expanduser()
        try:
            body = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"{where}: no such file: {path}", "give a JSON Schema file, inline JSON, or 'name, age int'")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"{where}: cannot read {path}: {str(exc)[:200]}", "give a UTF-8 JSON Schema file")
        return _load_json(body, str(path))
    return concise_schema(stripped, where=where)


def _is_file(text: str) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a file, so not a path
        return False


def _load_json(text: str, where: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                         "check the schema's JSON syntax (or use the concise form 'name, age int')")
    if not isinstance(value, dict):
        raise UsageError(f"{where}: a JSON Schema is an object, not {type(value).__name__}", 'for example {"type": "object"}')
    return value


_FIELD = re.compile(r"^([^\W\d][\w-]*)(?:\s+([A-Za-z]+)(\[\])?)?$")  # \w is Unicode: 姓名 is a name


def concise_schema(text: str, *, where: str = "--schema") -> dict:
    """simonw/llm's concise syntax: fields split by newlines (or commas), `name [type][[]][: description]`."""
    parts = [p.strip() for p in (text.splitlines() if "\n" in text else text.split(","))]
    properties: dict[str, dict] = {}
    for part in parts:
        if not part:
            continue
        head, _, description = part.partition(":")
        match = _FIELD.match(head.strip())
        if not match:
            raise UsageError(f"{where}: cannot read field {part!r}",
                             "write fields as 'name, age int, tags str[], bio: a short bio' (types: str int float bool)")
        name, kind, is_list = match.groups()
        kind_name = CONCISE_TYPES.get((kind or "str").lower())
        if kind_name is None:
            raise UsageError(f"{where}: unknown type {kind!r} for field {name!r}", "types: str, int, float, bool (add [] for a list)")
        prop: dict[str, Any] = {"type": kind_name}
        if is_list:
            prop = {"type": "array", "items": prop}
        if description.strip():
            prop["description"] = description.strip()
        properties[name] = prop
    if not properties:
        raise UsageError(f"{where}: no fields", "for example 'name, age int, tags str[]'")
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def check_supported(schema: dict, *, where: str = "--schema") -> None:
    """Refuse, naming the keyword, what the decoding grammar cannot enforce (and $ref cycles, remote $refs)."""
    _walk(schema, schema, where, "#", set())


def _walk(node: Any, root: dict, where: str, at: str, resolving: set[str]) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise UsageError(f"{where}: {at} must be a schema object, not {type(node).__name__}", "check the schema")
    for key in node:
        if key not in SUPPORTED:
            raise UsageError(f"{where}: the keyword {key!r} (at {at}) cannot be enforced while decoding",
                             "drop it from the schema and check that rule in your script")
    kinds = node.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in _KINDS:
            raise UsageError(f"{where}: unknown type {kind!r} at {at}", f"types: {', '.join(sorted(_KINDS))}")
    if "format" in node and node["format"] not in _FORMATS and node.get("type") == "string" and "pattern" not in node:
        raise UsageError(f"{where}: the format {node['format']!r} (at {at}) cannot be enforced while decoding",
                         f"supported formats: {', '.join(sorted(_FORMATS))}")
    if "pattern" in node and not (str(node["pattern"]).startswith("^") and str(node["pattern"]).endswith("$")):
        raise UsageError(f"{where}: the pattern at {at} must be anchored with ^ and $", f'for example "^{node["pattern"]}$"')
    ref = node.get("$ref")
    if ref is not None:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise UsageError(f"{where}: the $ref {ref!r} (at {at}) is not a local reference", "inline it or put it under $defs")
        if ref in resolving:
            raise UsageError(f"{where}: the $ref {ref!r} (at {at}) refers back to itself", "recursive schemas cannot be decoded")
        _walk(_resolve(root, ref, where, at), root, where, ref, resolving | {ref})
    for key in _SUBSCHEMA_MAPS:
        subs = node.get(key)
        for name, sub in subs.items() if isinstance(subs, dict) else ():
            _walk(sub, root, where, f"{at}/{key}/{name}", resolving)
    for key in _SUBSCHEMA_LISTS:
        subs = node.get(key)
        for i, sub in enumerate(subs if isinstance(subs, list) else ()):
            _walk(sub, root, where, f"{at}/{key}/{i}", resolving)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _walk(node[key], root, where, f"{at}/{key}", resolving)


def _resolve(root: dict, ref: str, where: str, at: str) -> Any:
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise UsageError(f"{where}: the $ref {ref!r} (at {at}) points nowhere", "check the name under $defs")
        node = node[part]
    return node


def decode(spec: JsonSpec, text: str, finish_reason: str) -> Any:
    """The validated value of a structured answer (the item list for multi); ChatllmError when it is not one."""
    if finish_reason == "length":
        raise ChatllmError("the JSON answer was cut off at --max-tokens", "raise --max-tokens (or ask for less)")
    if finish_reason == "interrupted":
        raise KeyboardInterrupt
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChatllmError(f"the answer is not valid JSON ({exc.msg} at column {exc.colno})",
                           "a --stop string may have cut it; drop --stop or raise --max-tokens")
    import jsonschema

    try:
        jsonschema.validate(value, spec.wire_schema)
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "the answer"
        raise ChatllmError(f"the answer does not match the schema at {path}: {exc.message[:200]}",
                           "the schema may use a rule the grammar could not enforce")
    except jsonschema.SchemaError as exc:
        raise UsageError(f"the schema is not a valid JSON Schema: {exc.message[:200]}", "check the schema")
    return value["items"] if spec.multi else value
