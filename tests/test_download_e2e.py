"""pull / models / show / rm against a real HTTP hub on 127.0.0.1, run as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_chatllm
from tests.model_fetch import SMOLLM

pytestmark = pytest.mark.model


def blobs(env) -> list[Path]:
    return [p for p in Path(env["HF_HOME"]).rglob("blobs/*")]


def final_files(env) -> list[Path]:
    return [p for p in Path(env["HF_HOME"]).rglob("snapshots/*/*.gguf")]


def test_pull_verifies_and_is_found_by_models_and_show(hub_env, hub):
    r = run_chatllm(["pull", "smollm2-135m"], hub_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # nothing but answers on stdout; a pipe gets no progress bar
    assert "ready: smollm2-135m" in r.stderr
    [blob] = blobs(hub_env)
    assert blob.name == SMOLLM["sha256"] and blob.stat().st_size == SMOLLM["size"]

    r = run_chatllm(["models", "--json"], hub_env)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["smollm2-135m"]["downloaded"] is True
    assert rows["qwen3-1.7b"]["downloaded"] is False and rows["qwen3-1.7b"]["default"] is True

    r = run_chatllm(["show", "smollm2-135m", "--json"], hub_env)
    info = json.loads(r.stdout)
    assert info["architecture"] == "llama" and info["context_length"] == 8192
    assert info["quantization"] == "Q4_1" and info["chat_template"] is True
    assert info["sha256"] == SMOLLM["sha256"] and info["parameters"] > 100_000_000

    # a second pull re-hashes but does not download again
    gets = hub.count("GET", "/resolve/")
    assert run_chatllm(["pull", "smollm2-135m"], hub_env).returncode == 0
    assert hub.count("GET", "/resolve/") == gets


def test_ask_pulls_a_missing_model_first_then_rm_removes_only_it(hub_env, tmp_path):
    r = run_chatllm(["ask", "-m", "smollm2-135m", "--max-tokens", "5", "--temperature", "0", "Say hi"], hub_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    other = Path(hub_env["HF_HOME"]) / "hub" / "keep.txt"
    other.write_text("not a model")
    r = run_chatllm(["rm", "smollm2-135m", "-y"], hub_env)
    assert r.returncode == 0, r.stderr
    assert not final_files(hub_env) and not blobs(hub_env)
    assert other.exists()
    r = run_chatllm(["rm", "smollm2-135m", "-y"], hub_env)
    assert r.returncode == 0 and "not downloaded" in r.stderr


def test_offline_names_the_pull_to_run(hub_env):
    r = run_chatllm(["--offline", "ask", "-m", "smollm2-135m", "hi"], hub_env)
    assert r.returncode == 1
    assert "error: smollm2-135m is not downloaded and chatllm is offline" in r.stderr
    assert "chatllm pull smollm2-135m" in r.stderr and "Traceback" not in r.stderr
    r = run_chatllm(["ask", "-m", "smollm2-135m", "hi"], dict(hub_env, HF_HUB_OFFLINE="1"))
    assert r.returncode == 1 and "offline" in r.stderr


def test_quant_ref_picks_the_file_and_ambiguity_lists_candidates(hub_env, hub, smollm_path):
    hub.add_file("someone/tiny-GGUF", "tiny.Q4_1.gguf", path=smollm_path)
    hub.add_file("someone/tiny-GGUF", "tiny.Q8_0.gguf", data=b"GGUF-not-really")
    hub.add_file("someone/tiny-GGUF", "other-Q8_0.gguf", data=b"GGUF-not-really")
    r = run_chatllm(["pull", "hf:someone/tiny-GGUF:q4_1"], hub_env)
    assert r.returncode == 0, r.stderr
    assert any(p.name == "tiny.Q4_1.gguf" for p in final_files(hub_env))
    r = run_chatllm(["pull", "hf:someone/tiny-GGUF:Q8_0"], hub_env)
    assert r.returncode == 2
    assert "ambiguous" in r.stderr and "tiny.Q8_0.gguf" in r.stderr and "other-Q8_0.gguf" in r.stderr
    r = run_chatllm(["pull", "hf:someone/tiny-GGUF:Q5_K_M"], hub_env)
    assert r.returncode == 2 and "available quants: Q4_1, Q8_0" in r.stderr
    r = run_chatllm(["show", "hf:someone/tiny-GGUF/tiny.Q4_1.gguf", "--json"], hub_env)
    assert r.returncode == 0 and json.loads(r.stdout)["quantization"] == "Q4_1"


def test_dropped_connection_leaves_nothing_and_next_pull_succeeds(hub_env, hub):
    hub.fault = "drop"
    hub.drop_after = 5_000_000
    r = run_chatllm(["pull", "smollm2-135m"], hub_env, timeout=300)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert not final_files(hub_env) and not [b for b in blobs(hub_env) if not b.name.endswith(".incomplete")]
    hub.fault = None
    r = run_chatllm(["pull", "smollm2-135m"], hub_env)
    assert r.returncode == 0, r.stderr
    assert len(final_files(hub_env)) == 1


def test_wrong_bytes_are_removed_and_both_hashes_reported(hub_env, hub):
    hub.fault = "corrupt"
    r = run_chatllm(["pull", "smollm2-135m"], hub_env)
    assert r.returncode == 1
    assert f"expected {SMOLLM['sha256']}" in r.stderr and "got " in r.stderr
    assert not final_files(hub_env) and not blobs(hub_env)


@pytest.mark.parametrize("status", ["401", "403"])
def test_gated_repo_says_licence_or_token(hub_env, hub, status):
    hub.fault = status
    r = run_chatllm(["pull", "smollm2-135m"], dict(hub_env, HF_TOKEN="hf_SECRETsecretSECRETsecret123"))
    assert r.returncode == 1
    assert "access denied" in r.stderr and "HF_TOKEN" in r.stderr
    assert "hf_SECRETsecretSECRETsecret123" not in r.stderr + r.stdout


def test_token_is_sent_but_never_shown(hub_env, hub):
    token = "hf_SECRETsecretSECRETsecret123"
    r = run_chatllm(["--debug", "pull", "smollm2-135m"], dict(hub_env, HF_TOKEN=token))
    assert r.returncode == 0, r.stderr
    assert hub.count("AUTH") > 0
    assert token not in r.stderr + r.stdout
    r = run_chatllm(["--debug", "info"], dict(hub_env, HF_TOKEN=token))
    assert token not in r.stderr + r.stdout and "hf_token" in r.stdout


def test_no_network_is_one_line_with_a_hint(hub_env):
    env = dict(hub_env, HF_ENDPOINT="http://127.0.0.1:9")
    r = run_chatllm(["pull", "smollm2-135m"], env)
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "hint: " in r.stderr and "Traceback" not in r.stderr


def test_two_pulls_at_once_end_with_one_verified_file(hub_env, hub):
    import subprocess
    import sys

    hub.fault = "slow"
    hub.slow_delay = 0.001
    procs = [subprocess.Popen([sys.executable, "-m", "chatllm", "pull", "smollm2-135m"], env=hub_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    [blob] = [b for b in blobs(hub_env)]
    assert blob.name == SMOLLM["sha256"]
    assert len(final_files(hub_env)) == 1


def test_unknown_alias_suggests_close_matches(hub_env):
    r = run_chatllm(["pull", "smollm2-13m"], hub_env)
    assert r.returncode == 2
    assert "unknown model 'smollm2-13m'" in r.stderr and "smollm2-135m" in r.stderr
