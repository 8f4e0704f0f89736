"""Is a downloaded model file what it should be: sha256 against the pin or the Hub's LFS hash, a sound GGUF header.

A file verified once is remembered (by size and mtime) in CHATLLM_HOME, so later loads do not re-hash gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from chatllm.errors import ChatllmError
from chatllm.output import Output
from chatllm.runtime.gguf import read_header
from chatllm.runtime.registry import ModelSpec, split_parts
from chatllm.settings import Settings

SHA_RE_LEN = 64


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _expected_sha(spec: ModelSpec, path: Path, filename: str) -> str | None:
    if spec.sha256 and filename == spec.file:
        return spec.sha256.lower()
    blob = Path(os.path.realpath(path)).name  # huggingface_hub names LFS blobs by their sha256
    return blob.lower() if len(blob) == SHA_RE_LEN and all(c in "0123456789abcdef" for c in blob.lower()) else None


def _verified_db(settings: Settings) -> Path:
    return settings.home / "verified.json"


def _load_verified(settings: Settings) -> dict:
    try:
        return json.loads(_verified_db(settings).read_text())
    except (OSError, ValueError):
        return {}


def _remember(settings: Settings, real: Path, digest: str) -> None:
    db = _load_verified(settings)
    st = real.stat()
    db[str(real)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        tmp = _verified_db(settings).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(db, indent=1))
        tmp.replace(_verified_db(settings))
    except OSError:
        pass  # a read-only home only costs a re-hash next time


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
    known = _load_verified(settings).get(str(real))
    if not rehash and known and known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
        if expected is None or known["sha256"] == expected:
            return None
    if expected is None:
        return None
    if out.err_tty:
        out.status(f"verifying {filename} ({st.st_size / 1e6:,.0f} MB)")
    actual = sha256_file(real)
    if actual != expected:
        return f"sha256 mismatch for {filename}: expected {expected}, got {actual}"
    _remember(settings, real, actual)
    return None


def remove_path(path: Path) -> None:
    real = Path(os.path.realpath(path))
    for p in {path, real}:
        p.unlink(missing_ok=True)


def file_sha256(spec: ModelSpec | None, path: Path, settings: Settings) -> str:
    """The file's sha256: the pinned or LFS hash once verified, else computed once and remembered."""
    real = Path(os.path.realpath(path))
    st = real.stat()
    known = _load_verified(settings).get(str(real))
    if known and known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
        return known["sha256"]
    digest = sha256_file(real)
    _remember(settings, real, digest)
    return digest


