"""Hub downloads through huggingface_hub: quant lookup, verified pulls (sha256, GGUF header), cache inventory, removal.

A pull that is stopped (Ctrl-C, SIGTERM, SIGKILL, a crash, a connection that stays down) is resumed by the next
one: the bytes go to a part file beside the blob, blobs/<etag>.<file>.incomplete, which outlives the process and is
continued with a Range request. huggingface_hub (2.x) cannot do that itself: it downloads to a name unique to each
process and deletes it on any error. The etag in the name keeps a partial of a file the Hub has since replaced from
being spliced onto the new one; the finished file is verified (sha256, GGUF header) as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import shutil
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from chatllm.errors import ChatllmError, from_exception
from chatllm.models.registry import ModelSpec, pick_quant_file, split_parts
from chatllm.models.verify import remove_path, verify_all
from chatllm.output import Output
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
        problem = verify_all(spec, settings, present, out, rehash=verify)
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
    problem = verify_all(spec, settings, first, out, rehash=True)
    if problem is not None:
        raise ChatllmError(problem, "the download was removed; run `chatllm pull` again, or check the pinned sha256")
    return first


def _download_one(spec: ModelSpec, filename: str, settings: Settings, out: Output, force: bool) -> Path:
    hf = _hf()
    what = f"{spec.repo}/{filename}"
    url = hf.hf_hub_url(spec.repo, filename, revision=spec.revision, endpoint=settings.hf_endpoint)
    meta = _hub_call(what, hf.get_hf_file_metadata, url, token=settings.hf_token or None, endpoint=settings.hf_endpoint)
    size = meta.size or (spec.size if filename == spec.file else None)
    tqdm_class = None if out.err_tty else _silent_tqdm()
    resumable = bool(meta.etag and meta.commit_hash)
    try:
        if resumable:
            _hub_call(what, _fetch_blob, spec, filename, settings, out, force, url, meta, size, tqdm_class)
        else:  # huggingface_hub refuses such a response itself, with its own error
            _check_disk(settings.hub_cache, size)
        # With the blob in place huggingface_hub only links it into its snapshot (and writes the ref).
        path = _hub_call(
            what, hf.hf_hub_download, spec.repo, filename,
            revision=spec.revision, cache_dir=str(settings.hub_cache), endpoint=settings.hf_endpoint,
            token=settings.hf_token or None, force_download=force and not resumable, tqdm_class=tqdm_class,
        )
    except ChatllmError as err:
        if "disk full" in err.message and size:
            raise ChatllmError(f"disk full while downloading {what}: needs {size:,} bytes, has {_free(settings.hub_cache):,}",
                               err.hint) from err
        raise
    return Path(path)


def _fetch_blob(spec: ModelSpec, filename: str, settings: Settings, out: Output, force: bool, url: str, meta,
                size: int | None, tqdm_class) -> None:
    """Download the blob of meta.etag into the cache, continuing a part file a stopped pull left behind."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    folder = _repo_folder(settings, spec.require("repo"))
    etag: str = meta.etag
    blob = folder / "blobs" / etag
    part = _part_path(folder, etag, filename)
    lock = settings.hub_cache / ".locks" / folder.name / f"{etag}.lock"  # the lock huggingface_hub takes for this blob
    lock.parent.mkdir(parents=True, exist_ok=True)
    blob.parent.mkdir(parents=True, exist_ok=True)
    (folder / "snapshots").mkdir(exist_ok=True)  # a repo folder without one is a corrupted cache to huggingface_hub
    with WeakFileLock(lock):
        if blob.exists() and not force:
            return  # another pull finished it while we waited
        # A partial of another version of this file (another etag) must not be continued, and huggingface_hub's own
        # per-process partials of this blob cannot be: both are dead weight (we hold the blob's lock).
        for stale in _partials_of(folder, filename, {etag}):
            if stale != part:
                stale.unlink(missing_ok=True)
        if force:
            part.unlink(missing_ok=True)
        have = _size(part)
        if size is not None and have > size:
            part.unlink(missing_ok=True)
            have = 0
        _check_disk(settings.hub_cache, None if size is None else size - have)
        if out.err_tty:
            total = f" ({size / 1e6:,.1f} MB)" if size else ""
            out.status(f"resuming {spec.name}: {filename} at {have / 1e6:,.1f} MB{total}" if have
                       else f"pulling {spec.name}: {filename}{total}")
        headers = build_hf_headers(token=settings.hf_token or None)
        target = url
        if meta.xet_file_data is None and meta.location and meta.location != url:
            target = meta.location  # the redirect's target: this exact version, one hop fewer (as huggingface_hub does)
            if _origin(target) != _origin(url):
                headers.pop("authorization", None)  # a signed CDN url: the token stays with the Hub
        extra = {"tqdm_class": tqdm_class} if "tqdm_class" in inspect.signature(http_get).parameters else {}
        try:
            with open(part, "ab") as fh:
                http_get(target, fh, resume_size=have, headers=headers, expected_size=size, displayed_filename=filename,
                         **extra)
        except KeyboardInterrupt:
            kept = _size(part)
            if kept:
                of = f" of {size / 1e6:,.1f}" if size else ""
                out.status(f"interrupted: {kept / 1e6:,.1f}{of} MB of {filename} kept; "
                           f"`chatllm pull {spec.name}` resumes from there")
            raise
        except Exception as exc:
            kept = _size(part)
            if not kept or not _transient(exc):
                part.unlink(missing_ok=True)  # no use to a next pull (or unsafe to continue): give the space back
                raise
            mapped = from_exception(exc, f"{spec.repo}/{filename}")
            if mapped is None:
                raise
            raise ChatllmError(mapped.message, f"{mapped.hint}; the {kept / 1e6:,.1f} MB already downloaded are kept "
                                               "and the next pull resumes from there") from exc
        os.replace(part, blob)


_NETWORK_ERRORS = {"ConnectionError", "ConnectError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException",
                   "RemoteProtocolError", "ChunkedEncodingError", "ProtocolError", "ReadError", "NetworkError"}


def _transient(exc: BaseException) -> bool:
    """A failure after which the bytes already written are still good to continue from (the network, the Hub)."""
    if {cls.__name__ for cls in type(exc).__mro__} & _NETWORK_ERRORS:
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return isinstance(status, int) and (status >= 500 or status in (401, 403, 408, 429))


def _origin(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    return parsed.scheme, parsed.netloc


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- partial downloads -----------------------------------------------------------------------------

PART_SUFFIX = ".incomplete"


def _part_tag(filename: str) -> str:
    """The file's name as it appears in its part file's name (a hash when quoting makes it too long)."""
    tag = quote(filename, safe="")
    return tag if len(tag) <= 160 else "sha256-" + hashlib.sha256(filename.encode()).hexdigest()[:32]


def _part_path(folder: Path, etag: str, filename: str) -> Path:
    return folder / "blobs" / f"{etag}.{_part_tag(filename)}{PART_SUFFIX}"


def _partials(folder: Path) -> list[tuple[Path, str, str]]:
    """(path, etag, tag) of each partial download in a repo folder: chatllm's (tag: the file) and huggingface_hub's
    (<etag>.incomplete or <etag>.<random>.incomplete: tag '' or the random part)."""
    found = []
    for path in (folder / "blobs").glob("*" + PART_SUFFIX):
        etag, _, tag = path.name[: -len(PART_SUFFIX)].partition(".")
        found.append((path, etag, tag))
    return found


def _partials_of(folder: Path, filename: str, etags: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """The partial downloads of one file: chatllm's part files of any version of it, and any partial (huggingface_hub's
    too) of one of its known etags."""
    tag = _part_tag(filename)
    entries = _partials(folder)
    etags = set(etags) | {e for _, e, t in entries if t == tag}
    return [p for p, e, t in entries if t == tag or e in etags]


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


# -- inventory and removal -------------------------------------------------------------------------


def downloaded_files(spec: ModelSpec, settings: Settings) -> list[Path]:
    """Snapshot links and blobs of this model's file(s), in every cached revision, and their partial downloads."""
    if not spec.repo:
        return []
    folder = _repo_folder(settings, spec.require("repo"))
    if not spec.file:
        spec = dataclasses.replace(spec, file=_cached_quant(spec, settings) or _partial_quant(spec, folder))
        if not spec.file:
            return []
    found: list[Path] = []
    for part in split_parts(spec.file):
        etags = {spec.sha256.lower()} if spec.sha256 and part == spec.file else set()
        for link in folder.glob(f"snapshots/*/{part}"):
            found.append(link)
            real = Path(os.path.realpath(link))
            if real != link and real.exists():
                found.append(real)
                etags.add(real.name)
        found.extend(_partials_of(folder, part, etags))
    return list(dict.fromkeys(found))


def _partial_quant(spec: ModelSpec, folder: Path) -> str | None:
    """For hf:owner/repo:QUANT with nothing but a partial download: the file that partial is of."""
    files = sorted({unquote(tag) for _, _, tag in _partials(folder) if tag.endswith(".gguf")})
    try:
        return pick_quant_file(spec.require("repo"), spec.require("quant"), files) if files else None
    except ChatllmError:
        return None


def remove_files(files: list[Path], settings: Settings) -> None:
    """Delete the given cache entries, then any now-empty snapshot folders (and a repo folder left with nothing)."""
    for path in files:
        remove_path(path)
    for path in files:
        for parent in path.parents:
            if parent == settings.hub_cache or not str(parent).startswith(str(settings.hub_cache)):
                break
            try:
                parent.rmdir()
            except OSError:
                break
    for repo in {p for path in files for p in path.parents if p.parent == settings.hub_cache}:
        for folder in (repo / "snapshots", repo / "blobs", repo):
            try:
                folder.rmdir()
            except OSError:
                pass


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
            "thinking": spec.thinking, "tools": spec.tools, "ram_gb": spec.ram,
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
                "thinking": None, "tools": None, "ram_gb": None,
            })
    return rows
