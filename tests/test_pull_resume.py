"""A pull stopped part-way (Ctrl-C, SIGTERM, SIGKILL, a connection that stays down) is resumed by the next pull.

A real HTTP hub on 127.0.0.1 serves the real SmolLM2 GGUF and counts the body bytes it sends; `chatllm pull` runs as
a real process and is stopped when about half the file was served. The next pull must make the hub serve no more than
1.15 x the file size in all, and end with the verified sha256. `rm` removes a partial download too, and a partial of
a file the Hub has since replaced is discarded, never spliced onto the new one.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_chatllm
from tests.model_fetch import SMOLLM

pytestmark = pytest.mark.model

SIZE = SMOLLM["size"]
BUDGET = 1.15  # bytes served over both pulls, as a multiple of the file size


def partials(env) -> list[Path]:
    return list(Path(env["HF_HOME"]).rglob("*.incomplete"))


def final_files(env) -> list[Path]:
    return list(Path(env["HF_HOME"]).rglob("snapshots/*/*.gguf"))


def wait_for(predicate, timeout: float = 40, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def stop_at_half(hub, env, sig: int, ref: str = "smollm2-135m") -> tuple[int, str, str]:
    """Start `chatllm pull ref` against a slow hub, send sig once half the file was served; (returncode, out, err)."""
    hub.fault, hub.slow_delay = "slow", 0.02  # 256 KiB per 20 ms: about 8 s for the whole file
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "pull", ref], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: hub.bytes_served >= SIZE // 2 or proc.poll() is not None, what="half the file to be served")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    hub.fault = None
    return proc.returncode, out, err


def assert_resumed_and_verified(hub, env, kept: int) -> float:
    """Pull again: it asks for the rest only, the hub serves <= BUDGET x the size in all, show reports the sha256."""
    r = run_chatllm(["pull", "smollm2-135m"], env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert hub.ranges[-1] == f"bytes={kept}-", hub.ranges  # the second process continued where the first stopped
    ratio = hub.bytes_served / SIZE
    print(f"bytes served / file size: {hub.bytes_served:,} / {SIZE:,} = {ratio:.3f}")
    assert hub.bytes_served <= BUDGET * SIZE, ratio
    assert not partials(env)  # the part file became the blob
    r = run_chatllm(["show", "smollm2-135m", "--json"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sha256"] == SMOLLM["sha256"]
    return ratio


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_pull_says_so_in_one_line_and_the_next_pull_resumes(hub_env, hub, sig, code):
    rc, out, err = stop_at_half(hub, hub_env, sig)
    assert rc == code, err
    assert out == "" and "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("interrupted: ") and "kept" in line and "`chatllm pull smollm2-135m` resumes" in line, line
    [part] = partials(hub_env)
    kept = part.stat().st_size
    assert SIZE * 0.3 < kept <= hub.bytes_served and not final_files(hub_env)
    assert_resumed_and_verified(hub, hub_env, kept)


def test_killed_pull_is_resumed_by_the_next_one(hub_env, hub):
    rc, _, err = stop_at_half(hub, hub_env, signal.SIGKILL)
    assert rc == -signal.SIGKILL, err
    [part] = partials(hub_env)
    kept = part.stat().st_size
    assert SIZE * 0.3 < kept <= hub.bytes_served and not final_files(hub_env)
    assert_resumed_and_verified(hub, hub_env, kept)


def test_connection_down_after_the_retries_keeps_the_partial_for_the_next_pull(hub_env, hub):
    hub.fault, hub.drop_after = "outage", SIZE // 2  # the link dies at half and stays down through every retry
    r = run_chatllm(["pull", "smollm2-135m"], hub_env, timeout=60)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-2].startswith("error: network error") and lines[-1].startswith("hint: ") and "Traceback" not in r.stderr
    assert "already downloaded are kept" in lines[-1]
    [part] = partials(hub_env)
    kept = part.stat().st_size
    assert SIZE * 0.3 < kept <= SIZE // 2
    hub.fault = None  # the link is back
    assert_resumed_and_verified(hub, hub_env, kept)


@pytest.mark.parametrize("ref", ["smollm2-135m", "hf:someone/tiny-GGUF:Q4_1"])
def test_rm_after_an_interrupted_pull_leaves_no_partial_behind(hub_env, hub, smollm_path, ref):
    hub.add_file("someone/tiny-GGUF", "tiny.Q4_1.gguf", path=smollm_path)
    hub.add_file("someone/tiny-GGUF", "tiny.Q8_0.gguf", data=b"GGUF-not-really")
    rc, _, err = stop_at_half(hub, hub_env, signal.SIGINT, ref)
    assert rc == 130, err
    assert partials(hub_env)
    r = run_chatllm(["rm", ref, "-y"], hub_env)
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stderr
    assert not partials(hub_env) and not list(Path(hub_env["HF_HOME"]).rglob("blobs/*"))
    assert not list((Path(hub_env["HF_HOME"]) / "hub").glob("models--*"))  # nor an empty repo folder
    r = run_chatllm(["rm", ref, "-y"], hub_env)
    assert r.returncode == 0 and "not downloaded" in r.stderr


def test_partial_of_a_file_the_hub_has_replaced_is_discarded_not_spliced(hub_env, hub, smollm_path, tmp_path):
    repo, name = "someone/tiny-GGUF", "tiny.Q4_1.gguf"
    hub.add_file(repo, name, path=smollm_path)
    ref = f"hf:{repo}/{name}"
    rc, _, err = stop_at_half(hub, hub_env, signal.SIGINT, ref)
    assert rc == 130, err
    [old_part] = partials(hub_env)
    assert old_part.name.startswith(SMOLLM["sha256"])

    # The Hub's file changes (a new commit: new bytes, so a new etag) in the part already downloaded.
    data = bytearray(smollm_path.read_bytes())
    data[20_000_000] ^= 0xFF
    changed = tmp_path / name
    changed.write_bytes(bytes(data))
    new_sha = hashlib.sha256(data).hexdigest()
    hub.add_file(repo, name, path=changed)
    before = hub.bytes_served

    r = run_chatllm(["pull", ref], hub_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert hub.ranges[-1] is None and hub.bytes_served - before == SIZE  # the whole new file, nothing reused
    assert not partials(hub_env)  # the old partial is gone too
    [blob] = [p for p in Path(hub_env["HF_HOME"]).rglob("blobs/*")]
    assert blob.name == new_sha and hashlib.sha256(blob.read_bytes()).hexdigest() == new_sha
