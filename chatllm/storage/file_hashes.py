"""File sha256s, and the memo of verified ones: a file hashed once is remembered by path, size and mtime in
CHATLLM_HOME/verified.json, so later loads of a multi-gigabyte model do not hash it again. Processes that verify
files at once update the memo one at a time (a lock file beside it), so none of them drops another's entry."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MEMO_LOCK_SECONDS = 10.0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _memo_path(home: Path) -> Path:
    return home / "verified.json"


def _load(home: Path) -> dict:
    try:
        return json.loads(_memo_path(home).read_text())
    except (OSError, ValueError):
        return {}


def known_sha256(home: Path, real: Path) -> str | None:
    """The remembered sha256 of a file (a resolved path), when its size and mtime are still the ones hashed."""
    known = _load(home).get(str(real))
    st = real.stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
        return known.get("sha256")
    return None


def remember(home: Path, real: Path, digest: str) -> None:
    """Remember a file's sha256 under its size and mtime (written whole through a rename; a read-only home is fine)."""
    from filelock import FileLock, Timeout

    st = real.stat()
    tmp = _memo_path(home).with_suffix(f".{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        home.mkdir(parents=True, exist_ok=True)
        # Read, add, write under the lock: two processes remembering two models at once must keep both.
        with FileLock(f"{_memo_path(home)}.lock", timeout=MEMO_LOCK_SECONDS):
            memo = _load(home)
            memo[str(real)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            tmp.write_text(json.dumps(memo, indent=1))
            tmp.replace(_memo_path(home))
    except (OSError, Timeout):
        tmp.unlink(missing_ok=True)  # costs a re-hash next time, nothing else


def file_sha256(path: Path, home: Path) -> str:
    """The file's sha256: remembered when it is unchanged since it was hashed, else computed once and remembered."""
    real = Path(os.path.realpath(path))
    digest = known_sha256(home, real)
    if digest is None:
        digest = sha256_file(real)
        remember(home, real, digest)
    return digest
