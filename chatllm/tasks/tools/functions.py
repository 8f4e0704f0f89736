"""Python functions as tools (`--functions tools.py`): each public function the file defines, with a type on every
parameter, is a tool. Its docstring is the description (an `Args:` section describes the parameters) and its JSON
Schema comes from the annotations: str, int, float, bool, list[T], dict / dict[str, T], Optional[T] and `T | None`,
Literal[...], with defaults. A function that cannot be a tool (a parameter without a type, a type JSON cannot carry)
is named in a warning and left out; a file that fails to import is an error naming the file and line.

A call runs in a worker thread, so a per-call timeout holds even when the function hangs (it is left to finish in
the background: Python cannot stop a thread); what it prints goes to stderr, never into the answer on stdout."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import re
import sys
import threading
import traceback
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

from chatllm.engines.chat_formats.tool_calls import ToolSpec
from chatllm.errors import UsageError
from chatllm.tasks.tools.sources import CallFailed, ToolResult, result_text

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class Untyped(Exception):
    """Why a function cannot be a tool."""


def load_functions(path: Path, warn: Callable[[str], None]) -> "FunctionsSource":
    """The tools a Python file defines; UsageError when the file cannot be read or imported."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--functions: no such file: {path}", "give a Python file that defines typed functions")
    name = f"chatllm_functions_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{abs(hash(str(path.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--functions: {path} is not a Python file", "give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing.get_type_hints look the module up by name
    try:
        with contextlib.redirect_stdout(sys.stderr):
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{path}:{exc.lineno}: syntax error: {exc.msg}", "fix the file; chatllm imports it as it is")
    except BaseException as exc:  # the file's own code raised: whatever it is, it is the file's fault
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        line = _file_line(exc, path)
        raise UsageError(f"{path}{line}: cannot import: {type(exc).__name__}: {str(exc)[:200]}",
                         "fix the file (run `python FILE` to see the whole error); chatllm imports it as it is")
    functions: dict[str, Callable] = {}
    specs: list[ToolSpec] = []
    for attr, value in vars(module).items():
        if attr.startswith("_") or not inspect.isfunction(value) or value.__module__ != name:
            continue  # private, not a function, or imported from elsewhere: not a tool of this file
        try:
            specs.append(function_spec(value))
        except Untyped as why:
            warn(f"{path.name}: {attr} is not a tool: {why} (type every parameter, or name it _{attr} to keep it private)")
            continue
        functions[attr] = value
    if not specs:
        warn(f"{path.name} defines no typed public function: it offers no tool")
    return FunctionsSource(path.name, functions, specs)


def _file_line(exc: BaseException, path: Path) -> str:
    """`:LINE` of the deepest frame in the file itself, or nothing."""
    line = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = f":{frame.lineno}"
    return line


def function_spec(fn: Callable) -> ToolSpec:
    """The tool a function is: its name, its docstring, and the JSON Schema of its parameters; Untyped if it cannot be."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # an annotation naming something that does not exist
        raise Untyped(f"its annotations cannot be read ({type(exc).__name__}: {str(exc)[:80]})")
    doc = inspect.getdoc(fn) or ""
    summary, described = _docstring(doc)
    properties: dict[str, dict] = {}
    required: list[str] = []
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise Untyped(f"*{pname} cannot be filled from a JSON object")
        if param.kind == param.POSITIONAL_ONLY:
            raise Untyped(f"{pname} is positional-only")
        if pname not in hints:
            raise Untyped(f"the parameter {pname!r} has no type")
        schema = type_schema(hints[pname], pname)
        if pname in described:
            schema["description"] = described[pname]
        if param.default is inspect.Parameter.empty:
            required.append(pname)
        elif _json_plain(param.default):
            schema["default"] = param.default
        properties[pname] = schema
    parameters: dict = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return ToolSpec(fn.__name__, summary or doc, parameters)


def type_schema(hint: Any, where: str) -> dict:
    """The JSON Schema of one annotation; Untyped for what JSON cannot carry."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint is Any:
        return {}
    if hint is type(None):
        return {"type": "null"}
    if hint in (list, tuple, set):
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    if origin is Literal:
        values = list(args)
        if not all(_json_plain(v) for v in values):
            raise Untyped(f"{where}: Literal values must be strings, numbers or booleans")
        return {"enum": values}
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = [type_schema(m, where) for m in members]
        if len(members) < len(args):  # Optional: null is allowed too
            inner.append({"type": "null"})
        return inner[0] if len(inner) == 1 else {"anyOf": inner}
    if origin in (list, set, frozenset, typing.Sequence, typing.Iterable) or origin is tuple and len(args) == 2 \
            and args[1] is Ellipsis:
        return {"type": "array", "items": type_schema(args[0], where)} if args else {"type": "array"}
    if origin is dict or origin is typing.Mapping:
        if args and args[0] is not str:
            raise Untyped(f"{where}: a dict's keys must be str (JSON object keys are strings)")
        return {"type": "object", "additionalProperties": type_schema(args[1], where)} if args else {"type": "object"}
    name = getattr(hint, "__name__", None) or str(hint)
    raise Untyped(f"{where}: the type {name} cannot be given in JSON")


def _json_plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params):\s*$", re.I)
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (the docstring before any Args: section) and each parameter's own line from that section."""
    lines = doc.splitlines()
    described: dict[str, str] = {}
    for i, line in enumerate(lines):
        if _ARGS_HEADER.match(line.strip()):
            for item in lines[i + 1:]:
                if item.strip() and not item.startswith((" ", "\t")):
                    break
                found = _ARG_LINE.match(item)
                if found:
                    described[found.group(1).lstrip("*")] = found.group(2).strip()
            return "\n".join(lines[:i]).strip(), described
    return doc.strip(), described


class FunctionsSource:
    """The typed public functions of one Python file."""

    kind = "functions"

    def __init__(self, name: str, functions: dict[str, Callable], specs: list[ToolSpec]):
        self.name = name
        self.functions = functions
        self.specs = specs

    def tools(self) -> list[ToolSpec]:
        """The file's tools."""
        return list(self.specs)

    def trusted(self, tool: str) -> bool:
        """Functions run with the user's consent: --yes, or an answer at the prompt."""
        return False

    def status(self) -> str:
        """Loaded, with its tool count."""
        return f"loaded ({len(self.specs)} tools)"

    def call(self, name: str, arguments: dict, timeout: float) -> ToolResult:
        """Run the function in a worker thread; its exception is the result (an error), a timeout is CallFailed."""
        fn = self.functions.get(name)
        if fn is None:
            raise CallFailed(f"{self.name} has no function {name!r}", "unavailable")
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = fn(**arguments)
            except BaseException as exc:  # the tool's failure is its result, whatever it raised
                outcome["error"] = exc

        worker = threading.Thread(target=run, name=f"tool {name}", daemon=True)
        with _stdout_to_stderr():
            worker.start()
            worker.join(timeout)
        if worker.is_alive():
            raise CallFailed(f"{name} gave no result within {timeout:g} s (it was left running)", "timeout")
        if "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, KeyboardInterrupt):
                raise exc
            return ToolResult(f"{type(exc).__name__}: {exc}", error=True)
        return ToolResult(result_text(outcome.get("value")))

    def close(self) -> None:
        """Nothing to stop."""


_redirect_lock = threading.Lock()


@contextlib.contextmanager
def _stdout_to_stderr():
    """What a function prints goes to stderr: stdout carries the answer only."""
    with _redirect_lock:
        saved = sys.stdout
        sys.stdout = sys.stderr
        try:
            yield
        finally:
            sys.stdout = saved
