"""Tool definitions and tool calls, whatever the model family writes: the JSON form of a call, how the generic form
asks for one, and reading calls back out of text (strictly in the family's own syntax, and leniently from what small
models write instead: a markdown JSON block, a bare object, a list of calls)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from chatllm.engines.contract import ToolCall


@dataclass(frozen=True)
class ToolSpec:
    """One tool as the model is offered it: a name, what it does, and the JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict

    def openai(self) -> dict:
        """The OpenAI `tools` entry (what chat templates and servers expect)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def tools_to_json(tools: Sequence[ToolSpec]) -> str:
    """The tools as compact JSON (what Sampling.tools carries to the engine)."""
    return json.dumps([{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools],
                      ensure_ascii=False, separators=(",", ":"))


def tools_from_json(text: str | None) -> list[ToolSpec]:
    """The tools Sampling.tools carries (empty when none)."""
    if not text:
        return []
    return [ToolSpec(t["name"], t.get("description", ""), t.get("parameters") or {"type": "object", "properties": {}})
            for t in json.loads(text)]


def generic_instruction(tools: Sequence[ToolSpec], required: bool = False) -> str:
    """The system-prompt text that offers tools to a model whose template has no tool syntax of its own."""
    listed = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                                  ensure_ascii=False) for t in tools)
    how = ('To call tools, reply with only a JSON object: {"tool_calls": [{"name": <tool name>, "arguments": '
           "{<argument>: <value>}}]} (several calls go in the list).")
    when = " You must call a tool." if required else " If no tool fits, answer in plain text."
    return f"You can call these tools:\n{listed}\n\n{how}{when}"


def generic_call_text(calls: Iterable[dict]) -> str:
    """An earlier assistant turn's calls, written as the generic form asks for them."""
    return json.dumps({"tool_calls": [{"name": c["name"], "arguments": c["arguments"]} for c in calls]}, ensure_ascii=False)


def call_schema(tools: Sequence[ToolSpec], *, key: str = "arguments", only: str | None = None) -> dict:
    """The JSON Schema of one call: the name one of the offered tools', the arguments that tool's schema."""
    branches = []
    for tool in tools:
        if only is not None and tool.name != only:
            continue
        params = tool.parameters if tool.parameters.get("type") == "object" or "properties" in tool.parameters \
            else {"type": "object"}
        branches.append({"type": "object", "properties": {"name": {"const": tool.name}, key: params},
                         "required": ["name", key], "additionalProperties": False})
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


# -- reading calls back ----------------------------------------------------------------------------------------------


def calls_from_json(value: Any, key: str = "arguments") -> list[dict] | None:
    """The calls a decoded JSON value holds ({name, arguments}, {"tool_calls": [...]}, a list of calls, OpenAI's
    {"function": {...}}), each as {"name", "arguments"}; None when it holds no call at all."""
    if isinstance(value, list):
        found = [c for item in value for c in (calls_from_json(item, key) or [])]
        return found or None
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("tool_calls"), list):
        return calls_from_json(value["tool_calls"], key)
    if isinstance(value.get("function"), dict):
        inner = dict(value["function"])
        return calls_from_json(inner, key)
    name = value.get("name")
    if not isinstance(name, str):
        return None
    for k in (key, "arguments", "parameters", "args", "input"):
        if k in value:
            return [{"name": name, "arguments": value[k]}]
    return [{"name": name, "arguments": {}}] if set(value) <= {"name", "type", "id"} else None


def make_calls(raw: str, found: list[dict] | None, tools: Sequence[ToolSpec], error: str | None = None) -> list[ToolCall]:
    """ToolCall events for calls read from `raw`: arguments decoded and checked against the offered tools' schemas."""
    if found is None:
        return [ToolCall(name="", arguments={}, raw=raw, error=error or "not a tool call")]
    offered = {t.name: t for t in tools}
    calls = []
    for item in found:
        name, args = item["name"], item["arguments"]
        problem = None
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                problem = "its arguments are not a JSON object"
                args = {}
        if not isinstance(args, dict):
            problem, args = "its arguments are not a JSON object", {}
        if problem is None:
            problem = check_arguments(offered.get(name), name, args, offered)
        calls.append(ToolCall(name=name, arguments=args, raw=raw, error=problem))
    return calls


def check_arguments(tool: ToolSpec | None, name: str, args: dict, offered: dict) -> str | None:
    """Why a call cannot run (a tool not offered, arguments its schema refuses), or None."""
    if tool is None:
        known = ", ".join(sorted(offered)) or "none"
        return f"there is no tool named {name!r} (offered: {known})"
    import jsonschema

    try:
        jsonschema.validate(args, tool.parameters)
    except jsonschema.ValidationError as exc:
        at = "/".join(str(p) for p in exc.absolute_path)
        return f"invalid arguments for {name}{' at ' + at if at else ''}: {exc.message[:200]}"
    except jsonschema.SchemaError:
        return None  # the definition was checked when it was loaded; a schema jsonschema cannot read is not the call's fault
    return None


_FENCE = re.compile(r"```(?:json|JSON|tool_call)?\s*\n?(.*?)```", re.S)


def lenient_calls(text: str, key: str = "arguments") -> list[dict] | None:
    """Calls written the way small models write them instead of the template's syntax: a markdown JSON block, a bare
    JSON object or list, one object per line. None when the text holds none."""
    found: list[dict] = []
    for block in _FENCE.findall(text):
        found += _json_calls(block, key)
    if not found:
        found = _json_calls(text, key)
    return found or None


def _json_calls(text: str, key: str) -> list[dict]:
    """Every call in the JSON values found in a text (decoded from each { or [ that starts a whole value)."""
    decoder = json.JSONDecoder()
    found: list[dict] = []
    i = 0
    while i < len(text):
        start = min((p for p in (text.find("{", i), text.find("[", i)) if p >= 0), default=-1)
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        found += calls_from_json(value, key) or []
        i = end
    return found
