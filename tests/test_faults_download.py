"""Download faults beyond test_download_e2e.py: 404s, Ctrl-C mid-pull, a disk that fills up, and the HF token
never appearing anywhere. A real HTTP hub on 127.0.0.1, real subprocesses, a real (small) filesystem."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SMOLLM_REPO, run_chatllm
from tests.model_fetch import SMOLLM

pytestmark = pytest.mark.model

TOKEN = "hf_FaultSuiteSecretToken0123456789"


def final_files(env) -> list[Path]:
    return list(Path(env["HF_HOME"]).rglob("snapshots/*/*.gguf"))


def complete_blobs(env) -> list[Path]:
    return [p for p in Path(env["HF_HOME"]).rglob("blobs/*") if not p.name.endswith(".incomplete")]


def partial_blobs(env) -> list[Path]:
    return list(Path(env["HF_HOME"]).rglob("blobs/*.incomplete"))


def assert_clean_error(r, *phrases: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert lines and lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), r.stderr
    assert len([ln for ln in lines if ln.startswith("error: ")]) == 1
    assert "Traceback" not in r.stderr
    for phrase in phrases:
        assert phrase in r.stderr, r.stderr


# -- 404 -----------------------------------------------------------------------------------------------


def test_no_such_repo(hub_env):
    r = run_chatllm(["pull", "hf:nobody/no-such-model-GGUF:Q4_K_M"], hub_env)
    assert_clean_error(r, "no such repository on the Hub", "nobody/no-such-model-GGUF", "spelling")
    assert "access denied" not in r.stderr  # the Hub's 401 for a missing repo is not a licence problem


def test_no_such_file(hub_env):
    r = run_chatllm(["pull", f"hf:{SMOLLM_REPO}/SmolLM2-135M-Instruct.Q8_0.gguf"], hub_env)
    assert_clean_error(r, "no such file on the Hub", "SmolLM2-135M-Instruct.Q8_0.gguf")
    assert not final_files(hub_env) and not complete_blobs(hub_env)


def test_no_such_revision(hub_env):
    r = run_chatllm(["pull", f"hf:{SMOLLM_REPO}/{SMOLLM['file']}@0123456789abcdef0123456789abcdef01234567"], hub_env)
    assert_clean_error(r, "no such revision")


def test_no_such_quant_lists_the_ones_there(hub_env):
    r = run_chatllm(["pull", f"hf:{SMOLLM_REPO}:Q5_K_M"], hub_env)
    assert r.returncode == 2 and "no Q5_K_M file" in r.stderr and "Q4_1" in r.stderr and "Traceback" not in r.stderr


# -- Ctrl-C --------------------------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_ctrl_c_during_pull_exits_130_and_leaves_no_file_at_the_final_path(hub_env, hub):
    hub.fault, hub.slow_delay = "slow", 0.05  # about 20 s for the whole file: plenty of time to interrupt
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "pull", "smollm2-135m"], env=hub_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(p.stat().st_size > 1_000_000 for p in partial_blobs(hub_env)), what="the download to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "error" not in err and out == ""
    assert err.startswith("interrupted: ") and len(err.splitlines()) == 1, err
    assert not final_files(hub_env) and not complete_blobs(hub_env)
    [part] = partial_blobs(hub_env)  # kept for the next pull
    kept = part.stat().st_size

    hub.fault = None  # nothing lost: the next pull continues from there, completes and verifies
    r = run_chatllm(["pull", "smollm2-135m"], hub_env)
    assert r.returncode == 0, r.stderr
    assert hub.ranges[-1] == f"bytes={kept}-"
    [blob] = complete_blobs(hub_env)
    assert blob.name == SMOLLM["sha256"] and not partial_blobs(hub_env)


# -- a disk that fills up ------------------------------------------------------------------------------


def on_small_disk(env: dict, size_mb: int, script: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace where $HF_HOME is a fresh tmpfs of size_mb MiB.

    The namespace (and the tmpfs) vanish with the script, so nothing stays mounted if a test fails.
    """
    Path(env["HF_HOME"]).mkdir(parents=True, exist_ok=True)
    unshare = ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    setup = f'mount -t tmpfs -o size={size_mb}m chatllm-test "$HF_HOME" || exit 99\n'
    r = subprocess.run([*unshare, "sh", "-c", setup + script], env=dict(env, PY=sys.executable),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode != 99, f"could not mount a tmpfs: {r.stderr}"
    return r


def test_too_little_space_is_refused_before_downloading(hub_env, hub):
    r = on_small_disk(hub_env, 50, '"$PY" -m chatllm pull smollm2-135m\n')
    assert_clean_error(r, "not enough disk space", f"needs {SMOLLM['size']:,} bytes, has ")
    free = int(re.search(r"has ([\d,]+)", r.stderr).group(1).replace(",", ""))
    assert 40_000_000 < free <= 50 * 2**20
    assert hub.count("GET", "/resolve/") == 0


def test_disk_filling_up_mid_download_says_needs_and_has_and_frees_the_partial(hub_env, hub, tmp_path):
    hub.fault, hub.slow_delay = "slow", 0.01
    report = tmp_path / "report"
    report.mkdir()
    script = f"""
"$PY" -m chatllm pull smollm2-135m 2>"{report}/stderr" &
pid=$!
i=0
until [ -n "$(find "$HF_HOME" -name '*.incomplete' -size +20M)" ] || [ $i -gt 1200 ]; do sleep 0.05; i=$((i+1)); done
head -c 60000000 /dev/zero > "$HF_HOME/someone-elses-file"
wait $pid
echo $? > "{report}/rc"
find "$HF_HOME" -type f > "{report}/files"
"""
    on_small_disk(hub_env, 120, script)
    rc = int((report / "rc").read_text())
    stderr = (report / "stderr").read_text()
    assert rc == 1, stderr
    lines = stderr.splitlines()
    assert lines[-2].startswith("error: disk full while downloading") and lines[-1].startswith("hint: ")
    assert f"needs {SMOLLM['size']:,} bytes, has " in stderr and "Traceback" not in stderr
    free = int(re.search(r"has ([\d,]+)", stderr).group(1).replace(",", ""))
    assert free < SMOLLM["size"]
    files = (report / "files").read_text().split()
    assert not [f for f in files if "/snapshots/" in f or re.search(r"/blobs/[0-9a-f]{64}$", f)]
    assert not [f for f in files if f.endswith(".incomplete")], files  # the partial is removed: space back
    assert any(f.endswith("someone-elses-file") for f in files)  # other files are never touched


# -- the token -----------------------------------------------------------------------------------------


def all_text_under(*roots: Path) -> str:
    chunks = []
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and p.stat().st_size < 20_000_000:  # all but the model itself
                chunks.append(p.read_bytes().decode("latin-1"))
    return "\n".join(chunks)


def test_token_with_debug_appears_in_no_output_log_or_saved_file(hub_env, hub, tmp_path):
    env = dict(hub_env, HF_TOKEN=TOKEN, CHATLLM_DEBUG="1")
    seen = []
    r = run_chatllm(["--debug", "--verbose", "pull", "smollm2-135m"], env)
    assert r.returncode == 0, r.stderr
    assert hub.count("AUTH") > 0  # the token is sent to the hub
    seen.append(r)
    for args in (["--debug", "pull", "hf:nobody/missing-GGUF:Q4_K_M"],  # errors, with tracebacks under --debug
                 ["--debug", "pull", f"hf:{SMOLLM_REPO}/missing.Q4_1.gguf"],
                 ["--debug", "--verbose", "ask", "-m", "smollm2-135m", "-n", "3", "-t", "0", "--threads", "1", "hi"],
                 ["--debug", "info", "--json"],
                 ["--debug", "show", "smollm2-135m"]):
        seen.append(run_chatllm(args, env))
    hub.fault = "401"
    seen.append(run_chatllm(["--debug", "pull", "smollm2-135m", "--force"], env))
    hub.fault = None
    seen.append(run_chatllm(["--debug", "chat", "-m", "smollm2-135m", "-n", "3", "-t", "0", "--threads", "1"], env,
                            input="hello there\n"))
    assert any("Traceback" in r.stderr for r in seen)  # --debug did show tracebacks...
    for r in seen:
        assert TOKEN not in r.stdout and TOKEN not in r.stderr  # ...without the token
    saved = all_text_under(Path(env["CHATLLM_HOME"]), Path(env["HF_HOME"]), tmp_path)
    assert "hello there" in saved or (Path(env["CHATLLM_HOME"]) / "chatllm.db").exists()
    assert TOKEN not in saved


def test_a_token_of_any_shape_is_redacted_from_debug_tracebacks(hub_env, hub):
    token = "plain-secret-value-42"
    hub.fault = "401"
    for args in (["--debug", "pull", "smollm2-135m"], ["--debug", "pull", "hf:nobody/missing-GGUF:Q4_K_M"]):
        r = run_chatllm(args, dict(hub_env, HF_TOKEN=token))
        assert r.returncode == 1 and "Traceback" in r.stderr
        assert token not in r.stdout + r.stderr
