"""Flash attention per workload (issue 18): the choice, its settings, the real engine and the CLI's wiring."""

from __future__ import annotations

import pytest

from chatllm.engines.llamacpp import flash_attn
from chatllm.engines.llamacpp.flash_attn import CPU_FLASH_MAX_DEPTH, TEMPLATE_SLACK, choose_flash_attn, one_shot_depth
from chatllm.errors import UsageError
from chatllm.settings import load_settings, parse_flash_attn
from tests.conftest import run_chatllm

# The crossover is a measured constant (0 today: never on for the CPU); the logic is tested around a made-up one.
CROSSOVER = 300
SHALLOW = CROSSOVER - 1
DEEP = CROSSOVER + 1


@pytest.fixture
def crossover(monkeypatch):
    monkeypatch.setattr(flash_attn, "CPU_FLASH_MAX_DEPTH", CROSSOVER)


@pytest.mark.parametrize("setting, gpu_layers, depth, n_ctx, expected", [
    (None, 0, SHALLOW, None, True),  # a short one-shot on the CPU
    (None, 0, CROSSOVER, None, True),
    (None, 0, DEEP, None, False),  # past the crossover
    (None, 0, None, None, False),  # chat, summarize, batches: depth unknown, so deep
    (None, 0, 10**6, SHALLOW, True),  # the context itself is shallower than the crossover
    (None, -1, None, None, True),  # a GPU: on at every depth
    (None, 20, DEEP, None, True),
    (False, -1, SHALLOW, None, False),  # the user's choice wins, both ways
    (True, 0, None, None, True),
    (False, 0, SHALLOW, None, False),
])
def test_the_choice(crossover, setting, gpu_layers, depth, n_ctx, expected):
    assert choose_flash_attn(setting, gpu_layers, depth, n_ctx) is expected


def test_the_one_shot_depth_bounds_the_real_prompt_from_above(smollm_path):
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    texts = [("Be brief.", "What is the capital of France?"), (None, "日本語の文章です。絵文字も 🎉🎉 あります。"),
             ("Réponds en français, s'il te plaît.", "Écris un poème sur la mer " * 20)]
    with LlamaCppEngine(smollm_path, n_ctx=2048) as engine:
        for system, user in texts:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
            real = len(engine.prompt_tokens(engine.render_chat(messages)))
            bound = one_shot_depth((system, user), 0)
            assert real <= bound <= len((system or "").encode()) + len(user.encode()) + TEMPLATE_SLACK
    assert one_shot_depth(("abc", None, "é"), 100) == 3 + 2 + TEMPLATE_SLACK + 100


@pytest.mark.parametrize("word, expected", [("auto", None), ("on", True), ("OFF", False), (None, None), (True, True)])
def test_the_setting_words(word, expected):
    assert parse_flash_attn(word) is expected


def test_a_bad_value_is_a_usage_error_naming_where_it_came_from(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATLLM_HOME", str(tmp_path))
    with pytest.raises(UsageError, match="--flash-attn must be auto, on or off"):
        load_settings(flash_attn="yes")
    monkeypatch.setenv("CHATLLM_FLASH_ATTN", "fast")
    with pytest.raises(UsageError, match="CHATLLM_FLASH_ATTN"):
        load_settings()


def test_the_flag_wins_over_the_environment_which_wins_over_the_config(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATLLM_HOME", str(tmp_path))
    monkeypatch.delenv("CHATLLM_FLASH_ATTN", raising=False)
    assert load_settings().flash_attn is None
    (tmp_path / "config.toml").write_text('flash_attn = "on"\n')
    assert load_settings().flash_attn is True
    monkeypatch.setenv("CHATLLM_FLASH_ATTN", "off")
    assert load_settings().flash_attn is False
    assert load_settings(flash_attn="auto").flash_attn is None
    assert load_settings(flash_attn="on").flash_attn is True


def test_the_engine_chooses_by_its_depth_hint_and_keeps_one_state_key_for_deep_runs(crossover, smollm_path):
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    with LlamaCppEngine(smollm_path, n_ctx=1024, device="cpu", depth_hint=SHALLOW) as short:
        assert short.flash_attn is True
    with LlamaCppEngine(smollm_path, n_ctx=1024, device="cpu", depth_hint=SHALLOW, flash_attn=False) as forced:
        assert forced.flash_attn is False
    with LlamaCppEngine(smollm_path, n_ctx=1024, device="cpu") as chat_one, \
            LlamaCppEngine(smollm_path, n_ctx=1024, device="cpu") as chat_two:
        # a chat's engine is the same whatever its conversation's length: its saved KV state always matches
        assert chat_one.flash_attn is False and chat_one.state_key() == chat_two.state_key()


def _fa_logged(env: dict, *args: str, input: str = "") -> str:
    r = run_chatllm(["--verbose", *args], env, input=input)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if "flash_attn" in ln and "=" in ln and "llama_context" in ln]
    assert lines, r.stderr[-2000:]
    return lines[-1].split("=")[-1].strip()


def test_the_measured_crossover_leaves_it_off_where_it_was_not_faster():
    # the figures in docs/BENCHMARKS.md: slower at depth 0 for prompts, from 256 on for generation, for both models
    assert 0 <= CPU_FLASH_MAX_DEPTH < 256


def test_the_cli_decides_a_one_shot_by_its_depth_and_the_rest_off(cli_env):
    short = "enabled" if one_shot_depth(("Hi",), 4) <= CPU_FLASH_MAX_DEPTH else "disabled"
    assert _fa_logged(cli_env, "ask", "-n", "4", "-t", "0", "Hi") == short
    assert _fa_logged(cli_env, "ask", "-n", str(CPU_FLASH_MAX_DEPTH + 1), "-t", "0", "Hi") == "disabled"
    assert _fa_logged(cli_env, "generate", "-n", "4", "-t", "0", "Hi") == short
    assert _fa_logged(cli_env, "chat", "-n", "4", "-t", "0", input="Hi\n") == "disabled"
    assert _fa_logged(dict(cli_env, CHATLLM_FLASH_ATTN="off"), "ask", "-n", "4", "Hi") == "disabled"
    assert _fa_logged(cli_env, "--flash-attn", "on", "chat", "-n", "4", input="Hi\n") == "enabled"
