"""Tool definitions a user gives in a JSON file (`--tools FILE.json`): the OpenAI form, or bare function objects,
checked before any model loads — the file is JSON, every tool has a name, names are distinct, every schema is a
valid JSON Schema the decoding grammar can hold a call to."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from chatllm.engines.chat_formats.tool_calls import ToolSpec
from chatllm.errors import UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-:]{1,128}$")
EMPTY_PARAMETERS = {"type": "object", "properties": {}}
CHOICES = ("auto", "required", "none")


def load_tool_file(path: Path) -> list[ToolSpec]:
    """The tools a --tools file defines; a UsageError naming the file (and the tool) when one is not usable."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--tools: no such file: {path}", "give a JSON file with a list of tool definitions")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--tools: cannot read {path}: {exc}", "give a UTF-8 JSON file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         'a list of {"type": "function", "function": {"name", "description", "parameters"}}')
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise UsageError(f"{path}: expected a list of tool definitions", 'for example [{"type": "function", "function": '
                                                                         '{"name": "get_weather", "parameters": {...}}}]')
    return check_tools([tool_spec(item, f"{path}: tool {i + 1}") for i, item in enumerate(data)], str(path))


def tool_spec(item: Any, where: str) -> ToolSpec:
    """One definition (OpenAI's {"type": "function", "function": {...}} or the bare function object) as a ToolSpec."""
    if not isinstance(item, dict):
        raise UsageError(f"{where} is not a JSON object", "each tool is {\"name\", \"description\", \"parameters\"}")
    fn: dict = item["function"] if isinstance(item.get("function"), dict) else item
    name = fn.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"{where} has no usable name ({name!r})",
                         "give each tool a name of letters, digits, _ . - or : (at most 128)")
    description = fn.get("description") or ""
    if not isinstance(description, str):
        raise UsageError(f"{where} ({name}): description must be a string", "describe what the tool does in words")
    parameters = fn.get("parameters", EMPTY_PARAMETERS)
    if parameters is None:
        parameters = EMPTY_PARAMETERS
    return ToolSpec(name, description, parameters)


def check_tools(tools: Sequence[ToolSpec], where: str) -> list[ToolSpec]:
    """The tools unchanged, or a UsageError: a duplicate name, a schema that is not a JSON Schema of an object, or one
    the decoding grammar cannot enforce (named with the tool)."""
    import jsonschema

    from chatllm.tasks.ask.structured_output import check_supported

    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise UsageError(f"{where}: the tool name {tool.name!r} is given twice", "give each tool a name of its own")
        seen.add(tool.name)
        schema = tool.parameters
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise UsageError(f"{where}: {tool.name}: parameters must be a JSON Schema of an object",
                             'for example {"type": "object", "properties": {"city": {"type": "string"}}}')
        try:
            jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
        except jsonschema.SchemaError as exc:
            at = "/".join(str(p) for p in exc.absolute_path) or "the top"
            raise UsageError(f"{where}: {tool.name}: not a valid JSON Schema at {at}: {exc.message[:160]}",
                             "fix the tool's parameters schema")
        check_supported(schema, where=f"{where}: {tool.name}")
    return list(tools)


def check_choice(choice: str, tools: Sequence[ToolSpec]) -> str:
    """--tool-choice: auto, required, none, or the name of an offered tool."""
    if choice in CHOICES or any(t.name == choice for t in tools):
        return choice
    names = ", ".join(t.name for t in tools) or "no tools were given"
    raise UsageError(f"--tool-choice {choice!r} is neither auto, required, none nor an offered tool ({names})",
                     "--tool-choice required makes the model call one; --tool-choice NAME that one")
