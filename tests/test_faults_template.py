"""Chat templates are untrusted model data: a sandbox-escape payload (the CVE-2024-34359 kind) must not run, and a
template that fails is reported with --chat-format as the way out. Real GGUF files, real CLI, real llama.cpp."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from tests.conftest import run_chatllm
from tests.gguf_writer import copy_with_metadata

pytestmark = pytest.mark.model

# Each would create MARKER if the template ran with Python's full powers (checked by the control test below).
PAYLOADS = {
    # The CVE-2024-34359 proof of concept: walk object's subclasses to a class whose module holds builtins.
    "subclasses-walk": "{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
                       "{{ c()._module.__builtins__['__import__']('os').system('touch MARKER') }}{% endif %}{% endfor %}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
    "joiner-globals": "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
    "self-builtins": "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch MARKER') }}",
    "attr-filter": "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].system('touch MARKER') }}",
    # Hidden after a normal-looking ChatML prefix, as a poisoned upload would do it.
    "behind-chatml": "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                     "{% endfor %}{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}"
                     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
}


def template_model(tmp_path: Path, smollm_path: Path, template: str) -> Path:
    """A copy of the real SmolLM2 GGUF whose tokenizer.chat_template is `template`."""
    return copy_with_metadata(smollm_path, tmp_path / "templated.gguf", {"tokenizer.chat_template": template})


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_is_live_outside_a_sandbox(tmp_path, name):
    """Control: rendered by a plain (unsandboxed) Jinja environment, the payload does create the marker."""
    marker = tmp_path / "pwned"
    jinja2.Environment().from_string(PAYLOADS[name].replace("MARKER", str(marker))).render(
        messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert marker.exists()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_sandbox_escape_in_a_gguf_template_does_not_run(tmp_path, smollm_path, cli_env, name):
    marker = tmp_path / "pwned"
    model = template_model(tmp_path, smollm_path, PAYLOADS[name].replace("MARKER", str(marker)))
    r = run_chatllm(["ask", "-m", str(model), "--max-tokens", "2", "--temperature", "0", "--threads", "1", "hi"], cli_env)
    assert not marker.exists(), "the template ran code"
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    error, hint = r.stderr.splitlines()[-2:]
    assert error.startswith("error: the chat template of") and "failed to render" in error
    assert "SecurityError" in error or "UndefinedError" in error  # the sandbox refused the attribute
    assert hint.startswith("hint: ") and "--chat-format" in hint
    model.unlink()


def test_chat_format_override_runs_a_model_whose_template_is_hostile(tmp_path, smollm_path, cli_env):
    marker = tmp_path / "pwned"
    model = template_model(tmp_path, smollm_path, PAYLOADS["subclasses-walk"].replace("MARKER", str(marker)))
    r = run_chatllm(["ask", "-m", str(model), "--chat-format", "chatml", "--max-tokens", "4", "--temperature", "0", "--threads", "1",
                     "Say hello"], cli_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and not marker.exists()


FAILING = {
    "raise_exception": ("{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversations must start with a "
                        "system message') }}{% endif %}", "must start with a system message"),
    "syntax-error": ("{% for m in messages %}{{ m['content'] }", "TemplateSyntaxError"),
    "undefined-attribute": ("{{ messages[0]['content'].nope.deeper }}", "UndefinedError"),
    "runtime-type-error": ("{{ messages[0]['content'] + 1 }}", "TypeError"),
}


@pytest.mark.parametrize("name", sorted(FAILING))
def test_template_that_raises_names_the_chat_format_override(tmp_path, smollm_path, cli_env, name):
    template, phrase = FAILING[name]
    model = template_model(tmp_path, smollm_path, template)
    r = run_chatllm(["ask", "-m", str(model), "--max-tokens", "2", "--threads", "1", "hi"], cli_env)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    error, hint = r.stderr.splitlines()[-2:]
    assert error.startswith("error: ") and "template" in error and phrase in error
    assert hint.startswith("hint: ") and "--chat-format" in hint
    model.unlink()


def test_huge_range_in_a_template_is_capped_by_the_sandbox(tmp_path, smollm_path, cli_env):
    model = template_model(tmp_path, smollm_path, "{% for i in range(10**12) %}x{% endfor %}")
    r = run_chatllm(["ask", "-m", str(model), "--max-tokens", "2", "--threads", "1", "hi"], cli_env, timeout=60)
    assert r.returncode == 1 and "OverflowError" in r.stderr and "--chat-format" in r.stderr
