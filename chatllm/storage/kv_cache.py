"""The KV cache on disk: engine states saved under what determines them, so a resumed chat or a repeated one-shot starts warm.

An entry is one file: a magic line, a JSON header (the identity it was computed under, the tokens the state holds, when
and for what it was saved), the state bytes, and a sha256 of header and state. It is written to a unique temp file
(0600, in a 0700 directory) and renamed into place, so a reader sees a whole entry or none and two processes never
write into the same file. An entry is loaded only when its identity matches the engine's exactly and its length and
checksum verify; a truncated, corrupt or foreign file is deleted instead. The least recently used entries go when the
directory grows over its cap (CHATLLM_KV_CACHE_MAX, default 2 GB).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from chatllm.errors import ChatllmError
from chatllm.settings import Settings
from chatllm.storage.file_hashes import file_sha256, sha256_file

MAGIC = b"chatllm-kv-cache 1\n"
SUFFIX = ".kv"
DEFAULT_MAX_BYTES = 2 * 1024**3
MIN_TOKENS = 16  # a shorter common prefix is cheaper to evaluate than to load
STALE_TEMP_SECONDS = 600
_LEN = struct.Struct("<Q")
_DIGEST = 32
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3, "T": 1024**4}


class Engine(Protocol):
    """What the cache needs of an engine: its name and its KV state as bytes (the state-snapshot capability)."""

    name: str

    def state_key(self) -> dict | None:
        """What a saved state depends on; None when it cannot be saved."""
        ...

    def save_state(self, n_tokens: int | None = None) -> tuple[list[int], memoryview] | None:
        """The tokens the KV cache holds and its state as bytes."""
        ...

    def load_state(self, tokens: Sequence[int], data: memoryview) -> int:
        """Restore a state save_state gave; tokens restored."""
        ...


@dataclass
class Entry:
    """One saved state: where, under which identity, the tokens it holds, its size and last use."""

    path: Path
    identity: str
    tokens: list[int]
    size: int
    used: float
    model: str = ""
    slot: str | None = None
    extra: dict = field(default_factory=dict)
    key: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The `chatllm cache --json` row."""
        return {"file": self.path.name, "model": self.model, "tokens": len(self.tokens), "bytes": self.size,
                "last_used": self.used, "slot": self.slot, "n_ctx": self.key.get("n_ctx")}


def cache_dir(settings: Settings) -> Path:
    """Where the entries live: kv-cache under CHATLLM_HOME."""
    return settings.home / "kv-cache"


def max_bytes_setting() -> int:
    """The cap from CHATLLM_KV_CACHE_MAX (bytes, or with K/M/G), 2 GB when unset; 0 turns the cache off."""
    raw = os.environ.get("CHATLLM_KV_CACHE_MAX", "").strip().upper()
    if not raw:
        return DEFAULT_MAX_BYTES
    number, unit = raw.rstrip("KMGTB"), raw[len(raw.rstrip("KMGTB")):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ChatllmError(f"CHATLLM_KV_CACHE_MAX={raw!r} is not a size", "give bytes or a size like 500M or 2G; 0 turns it off")
    if value < 0:
        raise ChatllmError(f"CHATLLM_KV_CACHE_MAX={raw!r} is negative", "give a size like 2G, or 0 to turn the cache off")
    return int(value)


def token_hash(tokens: Sequence[int]) -> str:
    """A stable hash of a token list."""
    return hashlib.sha256(array("i", tokens).tobytes()).hexdigest()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class KVCache:
    """The directory of saved states: find the best one for a prompt, load it into an engine, save the engine's."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, settings: Settings | None = None,
                 notice: Callable[[str], None] | None = None):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.settings = settings
        self.notice = notice or (lambda message: None)
        self._identities: dict[int, tuple[Engine, str | None, dict]] = {}
        self._writer: threading.Thread | None = None
        self.last_error: str | None = None

    # -- identity -------------------------------------------------------------------------------

    def identity(self, engine: Engine) -> tuple[str | None, dict]:
        """The hash of everything the engine's state depends on (the model file by its sha256), and those parts."""
        known = self._identities.get(id(engine))
        if known is not None and known[0] is engine:
            return known[1], known[2]
        key = engine.state_key()
        digest = None
        if key is not None:
            key = dict(key)
            path = key.pop("model_path", None)
            if path is not None:
                # The sha256, not the name: a file replaced by another one under the same name must not match.
                key["model_sha256"] = self._model_sha256(Path(path))
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self._identities[id(engine)] = (engine, digest, key or {})
        return digest, key or {}

    def _model_sha256(self, path: Path) -> str:
        if self.settings is not None:
            return file_sha256(path, self.settings.home)  # remembered by size and mtime: hashed once per file
        return sha256_file(path)

    # -- reading --------------------------------------------------------------------------------

    def entries(self, identity: str | None = None) -> list[Entry]:
        """Every readable entry (of one identity when given), least recently used first; damaged files are deleted."""
        try:
            paths = list(self.directory.glob(f"{identity[:16] if identity else ''}*{SUFFIX}"))
        except OSError:
            return []
        found = []
        for path in paths:
            entry = self._header(path)
            if entry is not None and (identity is None or entry.identity == identity):
                found.append(entry)
        return sorted(found, key=lambda e: e.used)

    def _header(self, path: Path) -> Entry | None:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                head = fh.read(len(MAGIC) + _LEN.size)
                if len(head) < len(MAGIC) + _LEN.size or head[: len(MAGIC)] != MAGIC:
                    return self._drop(path, "not a chatllm KV cache file")
                (n,) = _LEN.unpack(head[len(MAGIC):])
                if n > st.st_size:
                    return self._drop(path, "truncated")
                meta = json.loads(fh.read(n))
            expected = len(MAGIC) + _LEN.size + n + int(meta["state_bytes"]) + _DIGEST
            if st.st_size != expected:
                return self._drop(path, f"{st.st_size:,} bytes where its header says {expected:,}")
            return Entry(path=path, identity=str(meta["identity"]), tokens=[int(t) for t in meta["tokens"]],
                         size=st.st_size, used=st.st_mtime, model=str(meta.get("model", "")), slot=meta.get("slot"),
                         extra=dict(meta.get("extra") or {}), key=dict(meta.get("key") or {}))
        except FileNotFoundError:
            return None  # evicted or replaced by another process meanwhile
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            return self._drop(path, "unreadable header")

    def _drop(self, path: Path, why: str) -> Any:
        """Delete a damaged file; always None, so a reader can `return self._drop(...)`."""
        self.last_error = why
        try:
            path.unlink()
            self.notice(f"removed a damaged KV cache file {path.name} ({why}); it will be rebuilt")
        except OSError:
            pass
        return None

    def _read_state(self, entry: Entry) -> memoryview | None:
        """The entry's state bytes once its length and checksum verify; else the file is deleted and None."""
        try:
            with open(entry.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                data = bytearray(size)
                if fh.readinto(data) != size:
                    return self._drop(entry.path, "truncated")
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._drop(entry.path, f"unreadable: {exc.strerror or exc}")
        view = memoryview(data)
        if size < len(MAGIC) + _LEN.size + _DIGEST or view[: len(MAGIC)] != MAGIC:
            return self._drop(entry.path, "not a chatllm KV cache file")
        (n,) = _LEN.unpack(view[len(MAGIC): len(MAGIC) + _LEN.size])
        start = len(MAGIC) + _LEN.size + n
        if start + _DIGEST > size or hashlib.sha256(view[:-_DIGEST]).digest() != view[-_DIGEST:]:
            return self._drop(entry.path, "checksum mismatch")
        try:
            meta = json.loads(bytes(view[len(MAGIC) + _LEN.size: start]))
        except ValueError:
            return self._drop(entry.path, "unreadable header")
        if meta.get("identity") != entry.identity or [int(t) for t in meta.get("tokens", ())] != entry.tokens:
            return None  # replaced by another process since its header was read: not the entry we chose
        return view[start:-_DIGEST]

    def restore(self, engine: Engine, tokens: Sequence[int], min_tokens: int = MIN_TOKENS) -> Entry | None:
        """Load the saved state sharing the longest prefix with `tokens` into the engine; the entry, or None."""
        identity, _ = self.identity(engine)
        if identity is None or not tokens:
            return None
        ranked = sorted(((common_prefix(e.tokens, tokens), e) for e in self.entries(identity)),
                        key=lambda pair: (-pair[0], len(pair[1].tokens), -pair[1].used))  # on a tie, less to load
        for shared, entry in ranked:
            if shared < min(min_tokens, len(tokens)):
                break
            data = self._read_state(entry)
            if data is None:
                continue
            if engine.load_state(entry.tokens, data) != len(entry.tokens):
                self._drop(entry.path, "the engine refused its state")
                continue
            try:
                os.utime(entry.path)  # its last use, for least-recently-used eviction
            except OSError:
                pass
            return entry
        return None

    # -- writing --------------------------------------------------------------------------------

    def save(self, engine: Engine, *, slot: str | None = None, n_tokens: int | None = None, extra: dict | None = None,
             background: bool = False) -> bool:
        """Save the engine's state (its first n_tokens); with a slot, it replaces that slot's older entry.

        The state is copied out of the engine at once; with background=True, hashing and writing happen in a
        thread (waited for by flush() and at exit), so the next reply need not wait for the disk.
        """
        if self.max_bytes <= 0:
            return False
        identity, key = self.identity(engine)
        if identity is None:
            return False
        self.flush()
        state = engine.save_state(n_tokens)
        if state is None:
            return False
        tokens, data = state
        meta = {"identity": identity, "key": key, "model": engine.name, "tokens": tokens, "state_bytes": len(data),
                "slot": slot, "extra": extra or {}, "created": time.time()}
        if background:
            self._writer = threading.Thread(target=self._write, args=(identity, meta, data), name="kv-cache-writer")
            self._writer.start()
            return True
        return self._write(identity, meta, data)

    def flush(self) -> None:
        """Wait for a background save to finish."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def _write(self, identity: str, meta: dict, data: memoryview) -> bool:
        header = json.dumps(meta, separators=(",", ":")).encode()
        total = len(MAGIC) + _LEN.size + len(header) + len(data) + _DIGEST
        if total > self.max_bytes:
            return False  # it would evict everything and itself
        final = self.directory / f"{identity[:16]}-{token_hash(meta['tokens'])[:16]}{SUFFIX}"
        tmp = self.directory / f".tmp-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                digest = hashlib.sha256()
                for part in (MAGIC, _LEN.pack(len(header)), header, data):
                    fh.write(part)
                    digest.update(part)
                fh.write(digest.digest())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self.last_error = f"cannot write {final}: {exc.strerror or exc}"
            return False  # a full or read-only disk costs a cold start next time, never this run
        if meta["slot"] is not None:
            for old in self.entries(identity):
                if old.slot == meta["slot"] and old.path != final:
                    old.path.unlink(missing_ok=True)
        self.evict(keep=final)
        return True

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete the least recently used entries until the directory fits its cap (and crashed writers' temp files)."""
        removed: list[Path] = []
        now = time.time()
        try:
            for tmp in self.directory.glob(".tmp-*"):
                try:
                    if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                        tmp.unlink()
                except OSError:
                    pass
        except OSError:
            return removed
        entries = self.entries()
        total = sum(e.size for e in entries)
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.path == keep:
                continue
            entry.path.unlink(missing_ok=True)
            total -= entry.size
            removed.append(entry.path)
        return removed

    def drop_slot(self, slot: str) -> int:
        """Delete the entries saved under a slot (a deleted conversation's state), whatever their identity; how many."""
        count = 0
        for entry in self.entries():
            if entry.slot == slot:
                entry.path.unlink(missing_ok=True)
                count += 1
        return count

    def total_bytes(self) -> int:
        """Bytes the entries take."""
        return sum(e.size for e in self.entries())

    def clear(self) -> int:
        """Delete every entry (and temp file); how many entries were deleted."""
        self.flush()
        count = 0
        try:
            for path in self.directory.iterdir():
                if path.suffix == SUFFIX or path.name.startswith(".tmp-"):
                    path.unlink(missing_ok=True)
                    count += path.suffix == SUFFIX
        except FileNotFoundError:
            pass
        return count


def open_cache(settings: Settings, notice: Callable[[str], None] | None = None, *, disabled: bool = False) -> KVCache | None:
    """The KV cache for this run, or None when --no-cache or CHATLLM_KV_CACHE_MAX=0 turned it off."""
    cap = max_bytes_setting()
    if disabled or cap <= 0:
        return None
    return KVCache(cache_dir(settings), cap, settings=settings, notice=notice)
