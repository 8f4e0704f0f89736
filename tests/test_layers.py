"""The architecture as tests: which package may import which, no import circles, `--help` stays light, and
docs/ARCHITECTURE.md names every module there is."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import chatllm
import chatllm.tasks

PACKAGE = Path(chatllm.__file__).parent
ARCHITECTURE = PACKAGE.parent / "docs" / "ARCHITECTURE.md"
# The packages from the top down; each may import itself and the ones after it, never one before it.
LAYERS = ["__main__", "cli", "repl", "tasks", "engines", "models", "storage", "base"]
BASE = {"errors", "settings", "output", "stdio", "inputs", "__init__"}
# What a job sees of the engines: the capability contract, nothing that runs a model.
TASKS_SEE_OF_ENGINES = {"chatllm.engines.contract", "chatllm.engines.chat_formats.tool_calls"}
# ... and of storage: the stores it keeps things in, and the passage index's interface, never the index or the KV cache
TASKS_NEVER_SEE = {"chatllm.storage.kv_cache", "chatllm.storage.search_index"}


def layer_of(module: str) -> str:
    """The layer of a chatllm module name (chatllm.tasks.chat.conversation -> tasks; `python -m chatllm` is the top)."""
    part = module.split(".")[1] if "." in module else "__init__"
    return "base" if part in BASE else part


def chatllm_imports(path: Path, known: set[str]) -> set[str]:
    """Every chatllm module a file imports, at any depth of its code (lazy and TYPE_CHECKING imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "chatllm":
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found.update(subs or {node.module})
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "chatllm")
    return found


def modules() -> list[tuple[str, Path]]:
    """(module name, file) for every module of the package."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out.append((name, path))
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the chatllm modules it imports (a package's own __init__ left out: importing a submodule runs it)."""
    known = {m for m, _ in modules()}
    graph = {}
    for name, path in modules():
        graph[name] = {t for t in chatllm_imports(path, known) if t != "chatllm" and not name.startswith(t + ".")}
    return graph


def test_every_task_module_imports_without_llama_cpp():
    names = [m.name for m in pkgutil.walk_packages(chatllm.tasks.__path__, "chatllm.tasks.")]
    assert {"chatllm.tasks.chat.conversation", "chatllm.tasks.summarize.summarizer", "chatllm.tasks.classify.classifier",
            "chatllm.tasks.ask.oneshot"} <= set(names)
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "sys.stdout.write(repr([m for m in ('llama_cpp', 'huggingface_hub', 'prompt_toolkit', 'typer', 'mcp') "
            "if m in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[]"


@pytest.mark.parametrize("name,path", modules(), ids=[m for m, _ in modules()])
def test_imports_point_down_the_layers(name, path):
    own = LAYERS.index(layer_of(name))
    for target in chatllm_imports(path, {m for m, _ in modules()}):
        if target == "chatllm":
            continue
        assert LAYERS.index(layer_of(target)) >= own, f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"


def test_tasks_see_only_the_engine_capabilities():
    for name, targets in import_graph().items():
        if layer_of(name) in ("tasks", "repl"):
            seen = {t for t in targets if layer_of(t) == "engines"}
            assert seen <= TASKS_SEE_OF_ENGINES, f"{name} imports {sorted(seen - TASKS_SEE_OF_ENGINES)}"
            assert not {t for t in targets if layer_of(t) == "models"}, f"{name} imports the model files' layer"
            assert not targets & TASKS_NEVER_SEE, f"{name} imports {sorted(targets & TASKS_NEVER_SEE)}"


def test_the_tasks_package_holds_only_packages():
    loose = [p.name for p in (PACKAGE / "tasks").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"every job is a package under tasks/: {loose}"


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt in graph and state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node)


def test_only_the_llama_cpp_engine_imports_llama_cpp():
    importers = []
    for name, path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "llama_cpp" or n.startswith("llama_cpp.") for n in names):
                importers.append(name)
    assert importers and all(n.startswith("chatllm.engines.llamacpp.") for n in importers), importers


def test_architecture_names_every_module():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = []
    for name, path in modules():
        if path.name == "__init__.py":
            continue
        if path.relative_to(PACKAGE).as_posix() not in text and path.name not in text:
            missing.append(path.relative_to(PACKAGE).as_posix())
    assert not missing, f"docs/ARCHITECTURE.md does not name: {missing}"


def test_history_does_not_import_prompt_toolkit(tmp_path):
    code = ("import sys; from chatllm.cli import main\n"
            "try:\n    main(['history'])\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write(repr([m for m in ('llama_cpp', 'prompt_toolkit') if m in sys.modules]))")
    env = {"CHATLLM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stderr.strip().splitlines()[-1] == "[]", r.stderr
