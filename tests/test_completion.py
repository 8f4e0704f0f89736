"""Shell completion through Typer: the real `chatllm` process answers the shell's completion protocol."""

from __future__ import annotations

import os
import subprocess
import sys


def complete(env: dict, **protocol: str) -> subprocess.CompletedProcess:
    """Run `python -m chatllm` as a shell's completion function would."""
    return subprocess.run([sys.executable, "-m", "chatllm"], capture_output=True, text=True, timeout=60,
                          env={**env, **protocol})


def test_bash_completes_commands_and_flags(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLLM_")} | {"CHATLLM_HOME": str(tmp_path)}
    r = complete(env, _CHATLLM_COMPLETE="complete_bash", COMP_WORDS="chatllm su", COMP_CWORD="1")
    assert r.returncode == 0 and r.stdout.split() == ["summarize"], r.stderr
    r = complete(env, _CHATLLM_COMPLETE="complete_bash", COMP_WORDS="chatllm ask --tempe", COMP_CWORD="2")
    assert r.stdout.split() == ["--temperature"]


def test_show_completion_prints_a_script_for_the_named_shell(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLLM_")} | {"CHATLLM_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "chatllm", "--show-completion", "bash"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0 and "_chatllm_completion" in r.stdout and "complete" in r.stdout
