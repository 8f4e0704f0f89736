"""The architecture as tests: tasks never import llama_cpp, imports point down the layers, `--help` stays light."""

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
# Each layer may import itself and the layers listed after it, never one before it (docs/ARCHITECTURE.md).
LAYERS = ["__main__", "cli", "repl", "tasks", "runtime", "base"]
BASE = {"errors", "settings", "output", "stdio", "inputs", "store", "collections_store", "__init__"}


def layer_of(module: str) -> str:
    """The layer of a chatllm module name (chatllm.tasks.chat -> tasks; `python -m chatllm` is the top)."""
    part = module.split(".")[1] if "." in module else "__init__"
    return "base" if part in BASE else part


def chatllm_imports(path: Path, known: set[str]) -> set[str]:
    """Every chatllm module a file imports, at any depth of its code (lazy imports included)."""
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


def test_every_task_module_imports_without_llama_cpp():
    names = [f"chatllm.tasks.{m.name}" for m in pkgutil.iter_modules(chatllm.tasks.__path__)]
    assert {"chatllm.tasks.chat", "chatllm.tasks.summarize", "chatllm.tasks.classify", "chatllm.tasks.oneshot"} <= set(names)
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "sys.stdout.write(repr([m for m in ('llama_cpp', 'huggingface_hub', 'prompt_toolkit', 'typer') if m in sys.modules]))")
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


def test_only_the_llama_cpp_engine_imports_llama_cpp():
    importers = []
    for name, path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "llama_cpp" or n.startswith("llama_cpp.") for n in names):
                importers.append(name)
    assert set(importers) <= {"chatllm.runtime.llamacpp", "chatllm.runtime.llamacpp_grammar",
                                "chatllm.runtime.llamacpp_embed"}, importers


def test_no_module_is_much_over_400_lines():
    long = {name: n for name, path in modules() if (n := len(path.read_text(encoding="utf-8").splitlines())) > 450}
    assert not long, long


def test_history_does_not_import_prompt_toolkit(tmp_path):
    code = ("import sys; from chatllm.cli import main\n"
            "try:\n    main(['history'])\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write(repr([m for m in ('llama_cpp', 'prompt_toolkit') if m in sys.modules]))")
    env = {"CHATLLM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.stderr.strip().splitlines()[-1] == "[]", r.stderr
