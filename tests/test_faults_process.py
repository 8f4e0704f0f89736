"""Process faults: a reader that goes away (`| head -1`), SIGTERM and kill -9 mid-reply, a data directory that turns
read-only or fills up while a conversation is saved. Real shells, real signals, real filesystems, real model."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import run_chatllm

pytestmark = pytest.mark.model

LONG = "Write a long story about a dragon who learns to cook, with many details."


def wait_for(predicate, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- | head -1 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["ask", "-n", "120", "-t", "0", "--threads", "1", "List twenty fruits, one per line."]])
def test_pipe_into_head_ends_quietly(cli_env, tmp_path, command):
    err, rc = tmp_path / "stderr", tmp_path / "rc"
    args = " ".join("'" + a.replace("'", "'\\''") + "'" for a in command)
    script = f'"$PY" -m chatllm {args} 2>"{err}" | head -1; echo "${{PIPESTATUS[0]}}" > "{rc}"'
    r = subprocess.run(["bash", "-c", script], env=dict(cli_env, PY=sys.executable), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 1 and r.stdout.strip()
    assert int(rc.read_text()) == 0
    assert err.read_text() == ""  # no BrokenPipeError, no "Exception ignored", no traceback


# -- SIGTERM during a one-shot answer ----------------------------------------------------------------------


class Reader:
    """Collects a stream in a thread so the test can watch output arrive."""

    def __init__(self, stream):
        self.data = b""
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        while chunk := stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096):
            self.data += chunk

    def text(self) -> str:
        self._thread.join(timeout=30)
        return self.data.decode(errors="replace")


def test_sigterm_during_ask_ends_without_a_traceback(cli_env):
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "ask", "-n", "400", "-t", "0", "--threads", "1", LONG], env=cli_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = Reader(proc.stdout), Reader(proc.stderr)
    try:
        wait_for(lambda: len(out.data) > 20, what="the answer to start")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    assert "Traceback" not in err.text() and out.text()


# -- the conversation store --------------------------------------------------------------------------------


def db_rows(db: Path) -> list[tuple]:
    """(conversation_id, seq, user, interrupted) of every saved exchange, read like any other process would."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT conversation_id, seq, user, interrupted FROM exchanges ORDER BY 1, 2").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def integrity(db: Path) -> str:
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def start_chat(env: dict, *extra: str) -> tuple[subprocess.Popen, Reader, Reader]:
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "chat", "-n", "8", "-t", "0", "--threads", "1", *extra], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, Reader(proc.stdout), Reader(proc.stderr)


def send(proc: subprocess.Popen, *lines: str) -> None:
    proc.stdin.write("".join(line + "\n" for line in lines).encode())
    proc.stdin.flush()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill-9"])
def test_signal_mid_reply_keeps_the_store_intact_and_the_chat_resumes(cli_env, sig):
    db = Path(cli_env["CHATLLM_HOME"]) / "chatllm.db"
    proc, out, err = start_chat(cli_env)
    try:
        send(proc, "Say hello in one word.")
        wait_for(lambda: len(db_rows(db)) == 1, what="the first exchange to be saved")
        seen = len(out.data)
        send(proc, "/set max_tokens 400", LONG)
        wait_for(lambda: len(out.data) > seen + 40, what="the second reply to stream")
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "Traceback" not in err.text()
    assert integrity(db) == "ok"
    rows = db_rows(db)
    assert rows[0][1:3] == (0, "Say hello in one word.")
    assert len(rows) == 1 or rows[1][3] == 1  # a second exchange is only kept marked as interrupted

    r = run_chatllm(["chat", "--continue", "-n", "4", "-t", "0", "--threads", "1"], cli_env, input="And goodbye?\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    rows = db_rows(db)
    assert len({row[0] for row in rows}) == 1 and rows[-1][2] == "And goodbye?"
    assert integrity(db) == "ok"


def in_private_tmpfs(env: dict, size_kb: int, script: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace where $CHATLLM_HOME is a fresh tmpfs (gone afterwards)."""
    home = Path(env["CHATLLM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    unshare = ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    setup = f'mount -t tmpfs -o size={size_kb}k chatllm-test "$CHATLLM_HOME" || exit 99\n'
    r = subprocess.run([*unshare, "bash", "-c", setup + script], env=dict(env, PY=sys.executable),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode != 99, f"could not mount a tmpfs: {r.stderr}"
    return r


def test_disk_filling_up_while_saving_keeps_old_data_and_the_conversation(cli_env, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    transcript = report / "transcript.md"
    script = f"""
set -u
mkfifo "{report}/in"
"$PY" -m chatllm chat -n 8 -t 0 --threads 1 < "{report}/in" > "{report}/stdout" 2> "{report}/stderr" &
pid=$!
exec 3> "{report}/in"
echo "Say hello in one word." >&3
count() {{ "$PY" -c 'import sqlite3,sys
try: print(sqlite3.connect(sys.argv[1], timeout=10).execute("select count(*) from exchanges").fetchone()[0])
except Exception: print(0)' "$CHATLLM_HOME/chatllm.db"; }}
i=0
until [ "$(count)" = 1 ] || [ $i -gt 1800 ]; do sleep 0.05; i=$((i+1)); done
head -c 100000000 /dev/zero > "$CHATLLM_HOME/filler" 2>/dev/null  # the disk is now full to the last byte
echo "Now say goodbye in one word." >&3
echo "/save {transcript}" >&3
exec 3>&-
wait $pid
echo $? > "{report}/rc"
rm -f "$CHATLLM_HOME/filler"
"$PY" - "$CHATLLM_HOME/chatllm.db" > "{report}/db.json" <<'EOF'
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
print(json.dumps({{"integrity": con.execute("PRAGMA integrity_check").fetchone()[0],
                  "users": [r[0] for r in con.execute("SELECT user FROM exchanges ORDER BY conversation_id, seq")]}}))
EOF
"""
    in_private_tmpfs(cli_env, 1024, script)
    stderr = (report / "stderr").read_text()
    stdout = (report / "stdout").read_text()
    assert "Traceback" not in stderr
    assert int((report / "rc").read_text()) == 1, stderr  # the failed save is reported, and the exit says so
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert errors and "conversation store" in errors[0] and "full" in errors[0], stderr
    assert len(stdout.strip().splitlines()) >= 2  # both replies were shown
    saved = json.loads((report / "db.json").read_text())
    assert saved == {"integrity": "ok", "users": ["Say hello in one word."]}  # the old data, intact
    text = transcript.read_text()  # the conversation was still whole in memory
    assert "Say hello in one word." in text and "Now say goodbye in one word." in text


def test_read_only_data_dir_keeps_old_data(cli_env, tmp_path):
    """A mount cannot turn read-only under a process that has files open for writing (the kernel refuses), so the
    directory is read-only from the start of the second session, which continues the first conversation."""
    report = tmp_path / "report"
    report.mkdir()
    transcript = report / "transcript.md"
    script = f"""
set -u
echo "Say hello in one word." | "$PY" -m chatllm chat -n 8 -t 0 --threads 1 > /dev/null 2> "{report}/first-stderr"
sha256sum "$CHATLLM_HOME/chatllm.db" > "{report}/before"
mount -o remount,ro "$CHATLLM_HOME" || exit 98
printf 'Now say goodbye in one word.\\n/save {transcript}\\n' \\
  | "$PY" -m chatllm chat --continue -n 8 -t 0 --threads 1 > "{report}/stdout" 2> "{report}/stderr"
echo $? > "{report}/rc"
sha256sum "$CHATLLM_HOME/chatllm.db" > "{report}/after"
"""
    r = in_private_tmpfs(cli_env, 1024, script)
    assert r.returncode != 98, r.stderr
    assert (report / "first-stderr").read_text() == ""
    stderr = (report / "stderr").read_text()
    assert "Traceback" not in stderr
    assert (report / "before").read_text() == (report / "after").read_text()  # the old data, untouched
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert int((report / "rc").read_text()) == 1 and errors and "conversation store" in errors[0], stderr
    assert any(ln.startswith("hint: ") for ln in stderr.splitlines())
    if transcript.exists():  # the chat went on without saving: the conversation was kept in memory
        text = transcript.read_text()
        assert "Say hello in one word." in text and "Now say goodbye in one word." in text
