"""Broken configuration: models.toml / config.toml with syntax errors, path tricks, unknown keys and wrong types.
Each is one clear error naming the file (and the line and column for syntax), and the file is never rewritten."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import run_chatllm

# Commands that read the registry and the config (none needs the network or loads a model to fail).
COMMANDS = [["models"], ["show", "mine"], ["pull", "mine"], ["ask", "-m", "mine", "hi"], ["rm", "mine", "-y"], ["info"]]


def write(home: Path, name: str, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / name
    path.write_text(text)
    old = path.stat().st_mtime_ns - 10_000_000_000  # ten seconds ago, so a rewrite would show
    os.utime(path, ns=(old, old))
    return path


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def assert_config_error(r, path: Path, *phrases: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"error: {path}: ") and lines[1].startswith("hint: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for phrase in phrases:
        assert phrase in lines[0], r.stderr


@pytest.mark.parametrize("name, text, line, column", [
    ("models.toml", '[mine]\nrepo = "me/x-GGUF"\nfile = "x.Q4_K_M.gguf\n', 3, 22),
    ("models.toml", '[mine\nrepo = "me/x-GGUF"\n', 1, 6),
    ("models.toml", '[mine]\nrepo = "me/x-GGUF"\nrepo = "me/y-GGUF"\n', 3, 19),
    ("config.toml", 'model = "mine"\nctx = 4096\n[sampling\n', 3, 10),
    ("config.toml", 'ctx = 40 96\n', 1, 10),
])
def test_syntax_error_names_file_line_and_column_and_the_file_is_untouched(cli_env, name, text, line, column):
    path = write(Path(cli_env["CHATLLM_HOME"]), name, text)
    before = snapshot(path)
    for args in COMMANDS if name == "config.toml" else COMMANDS[:-1]:  # `info` reports a bad registry inline
        r = run_chatllm(args, cli_env)
        assert_config_error(r, path, "invalid TOML", f"line {line}, column {column}")
        assert "never rewrites" in r.stderr
    assert snapshot(path) == before


@pytest.mark.parametrize("file", ["../../../etc/passwd.gguf", "/etc/passwd.gguf", "sub/../../x.gguf",
                                  "C:/Windows/x.gguf", "..\\..\\x.gguf"])
def test_path_escaping_the_repo_in_file_is_refused(cli_env, file):
    path = write(Path(cli_env["CHATLLM_HOME"]), "models.toml", f'[mine]\nrepo = "me/x-GGUF"\nfile = {file!r}\n'
                 .replace("'", '"').replace("\\\\", "\\\\\\\\"))
    before = snapshot(path)
    for args in (["pull", "mine"], ["models"]):
        assert_config_error(run_chatllm(args, cli_env), path, "[mine]", "must be a relative path inside the repo")
    assert snapshot(path) == before


@pytest.mark.parametrize("name, text, phrase", [
    ("models.toml", '[mine]\nrepo = "me/x-GGUF"\nfile = "x.gguf"\nsha265 = "ab"\n', "unknown key 'sha265'"),
    ("models.toml", 'repo = "me/x-GGUF"\n', "'repo' must be a table"),
    ("config.toml", 'modle = "x"\n', "unknown key 'modle'"),
    ("config.toml", '[sampling]\ntemprature = 0.2\n', "unknown sampling key 'temprature'"),
])
def test_unknown_key_is_named(cli_env, name, text, phrase):
    path = write(Path(cli_env["CHATLLM_HOME"]), name, text)
    before = snapshot(path)
    assert_config_error(run_chatllm(["models"], cli_env), path, phrase)
    assert snapshot(path) == before


@pytest.mark.parametrize("name, text, phrase", [
    ("config.toml", 'ctx = "big"\n', "ctx"),
    ("config.toml", 'threads = "many"\n', "threads"),
    ("config.toml", 'batch = 1.5\n', "batch"),
    ("config.toml", 'model = 7\n', "model"),
    ("config.toml", 'gpu_layers = [1]\n', "gpu_layers"),
    ("config.toml", 'sampling = 3\n', "sampling"),
    ("config.toml", '[sampling]\ntemperature = "hot"\n', "temperature"),
    ("config.toml", '[sampling]\nstop = 5\n', "stop"),
    ("config.toml", '[sampling]\nseed = 1.5\n', "seed"),
    ("models.toml", '[mine]\nrepo = "me/x-GGUF"\nfile = "x.gguf"\ncontext = "8k"\n', "context"),
    ("models.toml", '[mine]\nrepo = "me/x-GGUF"\nfile = "x.gguf"\nsize = "1 GB"\n', "size"),
    ("models.toml", '[mine]\nrepo = "me/x-GGUF"\nfile = "x.gguf"\ndefault = "yes"\n', "default"),
    ("models.toml", '[mine]\nrepo = ["me/x-GGUF"]\nfile = "x.gguf"\n', "repo"),
])
def test_a_value_of_the_wrong_type_is_named_not_a_crash(cli_env, name, text, phrase):
    path = write(Path(cli_env["CHATLLM_HOME"]), name, text)
    r = run_chatllm(["models"], cli_env) if name == "models.toml" else run_chatllm(["ask", "hi"], cli_env)
    assert_config_error(r, path, phrase)
    assert "internal error" not in r.stderr
    assert re.search(r"must be|needs", r.stderr.splitlines()[0]), r.stderr


def test_a_valid_user_registry_still_works_next_to_the_checks(cli_env, smollm_path):
    write(Path(cli_env["CHATLLM_HOME"]), "models.toml",
          '[mine]\nrepo = "me/x-GGUF"\nfile = "sub/x.Q4_K_M.gguf"\ncontext = 2048\nsize = 1000\ndefault = false\n')
    write(Path(cli_env["CHATLLM_HOME"]), "config.toml",
          'ctx = 1024\nthreads = 2\n[sampling]\ntemperature = 0.2\nstop = ["###"]\nseed = 7\ntop_p = 1\n')
    r = run_chatllm(["models", "--json"], cli_env)
    assert r.returncode == 0, r.stderr
    assert '"mine"' in r.stdout
