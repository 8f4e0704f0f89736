"""Is a downloaded model file what it should be: sha256 against the pin or the Hub's LFS hash, a sound GGUF header.

A file verified once is remembered (storage/file_hashes.py), so later loads do not re-hash gigabytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from chatllm.errors import ChatllmError
from chatllm.models.gguf_header import read_header
from chatllm.models.registry import ModelSpec, split_parts
from chatllm.output import Output
from chatllm.settings import Settings
from chatllm.storage.file_hashes import known_sha256, remember, sha256_file

SHA_RE_LEN = 64


def _expected_sha(spec: ModelSpec, path: Path, filename: str) -> str | None:
    if spec.sha256 and filename == spec.file:
        return spec.sha256.lower()
    blob = Path(os.path.realpath(path)).name  # huggingface_hub names LFS blobs by their sha256
    return blob.lower() if len(blob) == SHA_RE_LEN and all(c in "0123456789abcdef" for c in blob.lower()) else None


def verify_all(spec: ModelSpec, settings: Settings, first: Path, out: Output, rehash: bool) -> str | None:
    """None when every shard matches its expected size/sha256 and the header is sound; else the problem."""
    folder = first.parent
    for part in split_parts(spec.require("file")):
        path = folder / Path(part).name if part != spec.file else first
        problem = _verify_one(spec, settings, path, part, out, rehash)
        if problem:
            remove_path(path)
            return problem
    try:
        read_header(first, check_data=len(split_parts(spec.require("file"))) == 1)
    except ChatllmError as err:
        remove_path(first)
        return err.message
    return None


def _verify_one(spec: ModelSpec, settings: Settings, path: Path, filename: str, out: Output, rehash: bool) -> str | None:
    if not path.exists():
        return f"{filename} is missing from the cache"
    real = Path(os.path.realpath(path))
    st = real.stat()
    if spec.size and filename == spec.file and st.st_size != spec.size:
        return f"{filename}: size {st.st_size:,} bytes, expected {spec.size:,}"
    expected = _expected_sha(spec, path, filename)
    known = None if rehash else known_sha256(settings.home, real)
    if known is not None and (expected is None or known == expected):
        return None
    if expected is None:
        return None
    if out.err_tty:
        out.status(f"verifying {filename} ({st.st_size / 1e6:,.0f} MB)")
    actual = sha256_file(real)
    if actual != expected:
        return f"sha256 mismatch for {filename}: expected {expected}, got {actual}"
    remember(settings.home, real, actual)
    return None


def remove_path(path: Path) -> None:
    real = Path(os.path.realpath(path))
    for p in {path, real}:
        p.unlink(missing_ok=True)
