"""`chatllm translate` as a user runs it: real SmolLM2 inference in real subprocesses, files, pipes and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.model
FAST = ["-n", "24"]

MARKDOWN = """# Install

Run the command below, then open http://localhost:8080 in a browser.

```bash
pip install chatllm
chatllm pull smollm2

echo "done"
```

| Flag | Meaning |
|------|---------|
| `-n` | tokens |

- The `--to` flag picks the language.
- See bob@example.org for help.
"""


def test_markdown_keeps_code_blocks_tables_and_lines(chatllm, tmp_path):
    doc = tmp_path / "guide.md"
    doc.write_text(MARKDOWN, encoding="utf-8")
    r = chatllm("translate", *FAST, "--to", "zh", str(doc))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    code = MARKDOWN[MARKDOWN.index("```bash"):MARKDOWN.index("```\n\n|") + 4]
    assert code in out  # byte for byte
    for kept in ("|------|---------|", "`-n`", "http://localhost:8080", "bob@example.org", "`--to`", "# ", "- "):
        assert kept in out, kept
    assert out.count("\n") == MARKDOWN.count("\n")
    assert [ln == "" for ln in out.split("\n")] == [ln == "" for ln in MARKDOWN.split("\n")]


def test_a_chinese_file_to_english(chatllm, tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("今天天气很好。\n\n我们去公园散步。\n", encoding="utf-8")
    r = chatllm("translate", *FAST, "--to", "English", "--json", str(doc))
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    parts, summary = records[:-1], records[-1]
    assert len(parts) == 2 and summary["from"] == "zh" and summary["to"] == "en" and summary["parts"] == 2
    assert {"source", "translation", "tokens", "retries"} <= set(parts[0])
    assert parts[0]["source"] == "今天天气很好。" and parts[0]["translation"]


def test_a_file_far_past_the_window(chatllm, tmp_path):
    long_paragraph = " ".join(f"The ferry left the harbour at {h} o'clock and the crew waved to the town." for h in range(1, 40))
    text = "\n\n".join([f"Paragraph {i} is short." for i in range(1, 4)] + [long_paragraph]) + "\n"
    doc = tmp_path / "long.txt"
    doc.write_text(text, encoding="utf-8")
    r = chatllm("translate", "-n", "16", "--ctx", "512", "--to", "zh", "--json", str(doc), timeout=300)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    parts, summary = records[:-1], records[-1]
    assert summary["parts"] == len(parts) > 6  # the long paragraph went in several parts
    assert all(p["tokens"]["prompt"] < 512 for p in parts)


def test_stdin_in_a_real_shell_pipe_and_output_dir(cli_env, tmp_path):
    cmd = f"printf 'Good morning.\\n\\nSee you soon.\\n' | {sys.executable} -m chatllm translate -n 16 --to ja"
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n\n") == 1 and r.stdout.endswith("\n")
    doc = tmp_path / "a.md"
    doc.write_text("Hello world.\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "chatllm", "translate", "-n", "8", "--to", "zh", "-o", str(out_dir), str(doc)],
                       capture_output=True, text=True, env=cli_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and (out_dir / "a.zh.md").read_text(encoding="utf-8").endswith("\n")


@pytest.mark.parametrize(("args", "needle"), [
    (["--to", "klingon", "README.md"], "unknown language 'klingon'"),
    (["--to", "zh", "missing.txt"], "no such file"),
    (["--to", "zh", "."], "is a directory"),
    (["--to", "zh", "empty.txt"], "is empty"),
    (["--to", "zh", "blob.bin"], "binary"),
    (["README.md"], "no target language"),
    (["--to", "zh", "--from", "Chinese", "README.md"], "both Chinese"),
])
def test_bad_input_fails_fast_with_a_hint(chatllm, tmp_path, args, needle):
    (tmp_path / "README.md").write_text("Hello.\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02abc")
    env = {"CHATLLM_MODEL": str(tmp_path / "no-such-model.gguf")}  # the model is never loaded for bad input
    r = _run_in(tmp_path, chatllm, args, env)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr


def _run_in(cwd, chatllm, args, env):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return chatllm("translate", *args, env_extra=env)
    finally:
        os.chdir(old)


def test_ctrl_c_exits_130_with_the_parts_done_written(cli_env, tmp_path):
    doc = tmp_path / "many.txt"
    doc.write_text("\n\n".join(f"Line number {i} of the list." for i in range(200)) + "\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "chatllm", "translate", "-n", "12", "--to", "zh", str(doc)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env)
    first = proc.stdout.read(1)  # type: ignore[union-attr]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (first + rest).strip() and b"Traceback" not in err
