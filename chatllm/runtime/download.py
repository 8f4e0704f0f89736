"""Hub downloads through huggingface_hub: quant lookup, verified pulls (sha256, GGUF header), cache inventory, removal."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from chatllm.errors import ChatllmError, from_exception
from chatllm.output import Output
from chatllm.runtime.gguf import read_header
from chatllm.runtime.registry import ModelSpec, pick_quant_file, split_parts
from chatllm.settings import Settings

SHA_RE_LEN = 64


def _hf():
    import logging

    import huggingface_hub

    # Its retry warnings would print raw URLs and tracebacks; our errors say what failed instead.
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    return huggingface_hub


def _repo_folder(settings: Settings, repo: str) -> Path:
    return settings.hub_cache / ("models--" + repo.replace("/", "--"))


def _hub_call(what: str, func, *args, **kwargs):
    """Call huggingface_hub, turning its exceptions into ChatllmErrors that name `what`."""
    try:
        return func(*args, **kwargs)
    except ChatllmError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        mapped = from_exception(exc, what)
        if mapped is None:
            raise
        raise mapped from exc


def resolve_file(spec: ModelSpec, settings: Settings) -> ModelSpec:
    """For hf:owner/repo:QUANT, list the repo and pick the file; other specs pass through."""
    if spec.file or spec.local_path:
        return spec
    if settings.offline:
        cached = _cached_quant(spec, settings)
        if cached:
            return dataclasses.replace(spec, file=cached)
        raise ChatllmError(
            f"offline, and no {spec.quant} file of {spec.repo} is downloaded",
            f"go online and run `chatllm pull hf:{spec.repo}:{spec.quant}`",
        )
    api = _hf().HfApi(endpoint=settings.hf_endpoint, token=settings.hf_token or None)
    info = _hub_call(spec.require("repo"), api.model_info, spec.repo, revision=spec.revision)
    files = [s.rfilename for s in (info.siblings or [])]
    return dataclasses.replace(spec, file=pick_quant_file(spec.require("repo"), spec.require("quant"), files))


def _cached_quant(spec: ModelSpec, settings: Settings) -> str | None:
    snapshots = _repo_folder(settings, spec.require("repo")) / "snapshots"
    files = [str(p.relative_to(snap)) for snap in snapshots.glob("*") for p in snap.rglob("*.gguf")]
    try:
        return pick_quant_file(spec.require("repo"), spec.require("quant"), sorted(set(files)))
    except ChatllmError:
        return None


def cached_path(spec: ModelSpec, settings: Settings) -> Path | None:
    """The downloaded file for spec (first shard of a split model), or None; never touches the network."""
    if spec.local_path:
        return spec.local_path if spec.local_path.exists() else None
    if not spec.file:
        spec = dataclasses.replace(spec, file=_cached_quant(spec, settings))
        if not spec.file:
            return None
    paths = []
    for part in split_parts(spec.file):
        found = _hf().try_to_load_from_cache(spec.repo, part, cache_dir=str(settings.hub_cache), revision=spec.revision)
        if not isinstance(found, str) or not os.path.exists(found):
            return None
        paths.append(Path(found))
    return paths[0]


def ensure_model(spec: ModelSpec, settings: Settings, out: Output, *, force: bool = False, verify: bool = False) -> Path:
    """A local, verified model file for spec: download it (with progress) when missing, unless offline.

    verify=True re-hashes a file already present (what `pull` does); otherwise a file verified once is trusted
    while its size and mtime are unchanged.
    """
    spec = resolve_file(spec, settings)
    present = None if force else cached_path(spec, settings)
    if present is not None:
        problem = _verify_all(spec, settings, present, out, rehash=verify)
        if problem is None:
            return present
        out.warn(f"{problem}; downloading it again")
        force = True
    if settings.offline:
        raise ChatllmError(
            f"{spec.name} is not downloaded and chatllm is offline",
            f"go online and run `chatllm pull {spec.name}`",
        )
    first = None
    for part in split_parts(spec.require("file")):
        path = _download_one(spec, part, settings, out, force)
        first = first or path
    if first is None:
        raise ChatllmError(f"{spec.name}: nothing was downloaded", "check its entry in models.toml")
    problem = _verify_all(spec, settings, first, out, rehash=True)
    if problem is not None:
        raise ChatllmError(problem, "the download was removed; run `chatllm pull` again, or check the pinned sha256")
    return first


def _download_one(spec: ModelSpec, filename: str, settings: Settings, out: Output, force: bool) -> Path:
    hf = _hf()
    what = f"{spec.repo}/{filename}"
    meta = _hub_call(
        what, hf.get_hf_file_metadata,
        hf.hf_hub_url(spec.repo, filename, revision=spec.revision, endpoint=settings.hf_endpoint),
        token=settings.hf_token or None, endpoint=settings.hf_endpoint,
    )
    size = meta.size or (spec.size if filename == spec.file else None)
    _check_disk(settings.hub_cache, size)
    if out.err_tty:
        out.status(f"pulling {spec.name}: {filename}" + (f" ({size / 1e6:,.1f} MB)" if size else ""))
    try:
        path = _hub_call(
            what, hf.hf_hub_download, spec.repo, filename,
            revision=spec.revision, cache_dir=str(settings.hub_cache), endpoint=settings.hf_endpoint,
            token=settings.hf_token or None, force_download=force, tqdm_class=None if out.err_tty else _silent_tqdm(),
        )
    except ChatllmError as err:
        if "disk full" in err.message and size:
            raise ChatllmError(f"disk full while downloading {what}: needs {size:,} bytes, has {_free(settings.hub_cache):,}",
                               err.hint) from err
        raise
    return Path(path)


def _silent_tqdm():
    from huggingface_hub.utils import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _free(folder: Path) -> int:
    for path in [folder, *folder.parents]:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            continue
    return 0


def _check_disk(folder: Path, size: int | None) -> None:
    if size is None:
        return
    free = _free(folder)
    if free < size:
        raise ChatllmError(
            f"not enough disk space in {folder}: needs {size:,} bytes, has {free:,}",
            "free some space, or set HF_HOME to a disk with room",
        )


# -- verification --------------------------------------------------------------------------------


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


def _verify_all(spec: ModelSpec, settings: Settings, first: Path, out: Output, rehash: bool) -> str | None:
    """None when every shard matches its expected size/sha256 and the header is sound; else the problem."""
    folder = first.parent
    for part in split_parts(spec.require("file")):
        path = folder / Path(part).name if part != spec.file else first
        problem = _verify_one(spec, settings, path, part, out, rehash)
        if problem:
            _remove_path(path)
            return problem
    try:
        read_header(first, check_data=len(split_parts(spec.require("file"))) == 1)
    except ChatllmError as err:
        _remove_path(first)
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


def _remove_path(path: Path) -> None:
    real = Path(os.path.realpath(path))
    for p in {path, real}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def file_sha256(spec: ModelSpec, path: Path, settings: Settings) -> str:
    """The file's sha256: the pinned or LFS hash once verified, else computed once and remembered."""
    real = Path(os.path.realpath(path))
    st = real.stat()
    known = _load_verified(settings).get(str(real))
    if known and known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
        return known["sha256"]
    digest = sha256_file(real)
    _remember(settings, real, digest)
    return digest


# -- inventory and removal -------------------------------------------------------------------------


def downloaded_files(spec: ModelSpec, settings: Settings) -> list[Path]:
    """Snapshot links and blobs of this model's file(s), in every cached revision."""
    if not spec.repo:
        return []
    if not spec.file:
        spec = dataclasses.replace(spec, file=_cached_quant(spec, settings))
        if not spec.file:
            return []
    folder = _repo_folder(settings, spec.require("repo"))
    found: list[Path] = []
    for part in split_parts(spec.file):
        for link in folder.glob(f"snapshots/*/{part}"):
            found.append(link)
            real = Path(os.path.realpath(link))
            if real != link and real.exists():
                found.append(real)
    return list(dict.fromkeys(found))


def remove_files(files: list[Path], settings: Settings) -> None:
    """Delete the given cache entries, then any now-empty snapshot folders."""
    for path in files:
        _remove_path(path)
    for path in files:
        for parent in path.parents:
            if parent == settings.hub_cache or not str(parent).startswith(str(settings.hub_cache)):
                break
            try:
                parent.rmdir()
            except OSError:
                break


def inventory(registry: dict[str, ModelSpec], settings: Settings) -> list[dict]:
    """Registry aliases plus any other GGUF in the Hugging Face cache, with download state."""
    rows, seen = [], set()
    for alias, spec in registry.items():
        path = cached_path(spec, settings)
        seen.add(str(path) if path else None)
        rows.append({
            "name": alias, "repo": spec.repo, "file": spec.file, "params": spec.params, "quant": spec.quantization,
            "size": path.stat().st_size if path else spec.size, "downloaded": path is not None,
            "path": str(path) if path else None, "default": spec.default, "description": spec.description,
        })
    for folder in sorted(settings.hub_cache.glob("models--*")):
        repo = folder.name[len("models--"):].replace("--", "/", 1)
        for link in sorted(folder.glob("snapshots/*/**/*.gguf")):
            if str(link) in seen or not link.exists():
                continue
            rel = link.relative_to(next(p for p in link.parents if p.parent.name == "snapshots"))
            spec = ModelSpec(repo=repo, file=str(rel), source="hf")
            seen.add(str(link))
            rows.append({
                "name": f"hf:{repo}/{rel}", "repo": repo, "file": str(rel), "params": "", "quant": spec.quantization,
                "size": link.stat().st_size, "downloaded": True, "path": str(link), "default": False, "description": "",
            })
    return rows
