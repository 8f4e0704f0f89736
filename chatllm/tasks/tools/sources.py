"""Where tools come from, behind one small interface: a source has a name, offers `tools()`, and runs
`call(name, arguments, timeout)`. MCP servers (mcp_servers.py), Python functions (functions.py) and JSON definitions
(here: no implementation, so a call to one is refused) are sources alike; the loop sees only this interface."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from chatllm.engines.chat_formats.tool_calls import ToolSpec


@dataclass(frozen=True)
class ToolResult:
    """What a call gave back: its text (as the model will read it), and whether the tool reported an error."""

    text: str
    error: bool = False


class CallFailed(Exception):
    """A call that could not give a result (a timeout, a server gone, a tool with no implementation): the message
    goes back to the model as the call's result, marked as an error; `status` says how it ended."""

    def __init__(self, message: str, status: str = "error"):
        super().__init__(message)
        self.message = message
        self.status = status  # error | timeout | unavailable


@runtime_checkable
class ToolSource(Protocol):
    """A set of tools and the way to run them."""

    name: str  # the server's name in mcp.json, a functions file's name, a definitions file's name
    kind: str  # "mcp", "functions" or "definitions"

    def tools(self) -> list[ToolSpec]:
        """The tools it offers (empty while it is not running)."""
        ...

    def call(self, name: str, arguments: dict, timeout: float) -> ToolResult:
        """Run one tool; CallFailed when it gives no result in time or cannot run at all."""
        ...

    def trusted(self, tool: str) -> bool:
        """True when the user marked this tool (or the whole source) as one that runs without asking."""
        ...

    def status(self) -> str:
        """One line: running, failed and why, not started."""
        ...

    def close(self) -> None:
        """Stop what it started (a server process, a connection)."""
        ...


@dataclass
class DefinitionsSource:
    """Tools a --tools JSON file defines: offered to the model, but with no implementation chatllm could run."""

    name: str
    specs: list[ToolSpec] = field(default_factory=list)
    kind: str = "definitions"

    def tools(self) -> list[ToolSpec]:
        """The definitions as they were loaded."""
        return list(self.specs)

    def call(self, name: str, arguments: dict, timeout: float) -> ToolResult:
        """Always refused: a definition says what a tool takes, not how to run it."""
        raise CallFailed(f"{name} has no implementation here (it is only defined in {self.name}); answer without it",
                         "unavailable")

    def trusted(self, tool: str) -> bool:
        """Nothing runs, so nothing needs trust."""
        return True

    def status(self) -> str:
        """Definitions only."""
        return f"definitions only ({len(self.specs)} tools, none can run)"

    def close(self) -> None:
        """Nothing to stop."""


def result_text(value: Any) -> str:
    """A Python value as the text a model reads: strings as they are, everything else as JSON (else repr)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    try:
        return json.dumps(value, ensure_ascii=False, default=_jsonable)
    except (TypeError, ValueError):
        return repr(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# -- schemas the decoding grammar can hold ------------------------------------------------------------------------------

# What the grammar enforces (tasks/ask/structured_output.SUPPORTED, kept in step); a server's schema may say more
# (minimum, maxLength, format: uri...): those keywords are left out of what the model is offered and the grammar
# holds, and checked in full with jsonschema before the call runs.
_GRAMMAR_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format",
    "minLength", "maxLength", "title", "description", "default", "examples",
}
_FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
_KINDS = {"string", "number", "integer", "boolean", "object", "array", "null"}
ANY_OBJECT = {"type": "object"}


def grammar_schema(schema: Any) -> dict:
    """The tool's parameters as the model is offered them: only what the decoding grammar can hold (the full schema
    still checks the arguments before the call runs); any object when nothing usable is left."""
    if not isinstance(schema, dict):
        return dict(ANY_OBJECT)
    cleaned = _clean(schema)
    if not isinstance(cleaned, dict) or cleaned.get("type", "object") != "object":
        return dict(ANY_OBJECT)
    cleaned.setdefault("type", "object")
    from chatllm.errors import UsageError
    from chatllm.tasks.ask.structured_output import check_supported

    try:
        check_supported(cleaned, where="tool")
    except UsageError:
        return dict(ANY_OBJECT)
    return cleaned


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key not in _GRAMMAR_KEYWORDS:
            continue
        if key == "format" and value not in _FORMATS:
            continue
        if key == "pattern" and not (isinstance(value, str) and value.startswith("^") and value.endswith("$")):
            continue
        if key == "type" and isinstance(value, str) and value not in _KINDS:
            continue
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: _clean(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _clean(value)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out[key] = [_clean(v) for v in value]
        else:
            out[key] = value
    return out


def offered_spec(name: str, description: str, schema: Any) -> ToolSpec:
    """A tool as it is offered: its schema cut to what the grammar holds."""
    return ToolSpec(name, description or "", grammar_schema(schema))


def names_of(specs: Sequence[ToolSpec]) -> list[str]:
    """The tools' names."""
    return [s.name for s in specs]
