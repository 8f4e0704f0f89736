"""Build the reference llama.cpp tools (llama-bench, llama-completion) from the sources llama-cpp-python vendors.

The same build can also make `llama-server` (the tests of chatllm's remote engine run against it): pass
`targets=SERVER_TARGETS` to ensure_built(), or `--server` on the command line; and llama.cpp's own prompt-lookup
decoding and batch bench (`llama-lookup`, `llama-batched-bench`: the references of bench/drafts_batches.py) with
`targets=SPECULATIVE_TARGETS`, or `--speculative`.

The installed llama-cpp-python's sdist carries `vendor/llama.cpp`; building that exact tree with the same build type
(Release, native CPU flags, OpenMP: scikit-build-core's and llama.cpp's defaults) gives a reference that differs from
chatllm only by the Python front end. Everything goes under a cache directory, never into the repository; a finished
build is reused.

    python bench/llamacpp_ref.py            # prints the two binary paths (building them first if needed)
    python bench/llamacpp_ref.py --server   # the same for llama-server
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

TARGETS = ("llama-bench", "llama-completion")
SERVER_TARGETS = ("llama-server",)
SPECULATIVE_TARGETS = ("llama-lookup", "llama-batched-bench", "llama-bench")


def cache_dir() -> Path:
    """CHATLLM_BENCH_CACHE, else ~/.cache/chatllm-bench."""
    env = os.environ.get("CHATLLM_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "chatllm-bench"


def installed_version() -> str:
    """The llama-cpp-python version chatllm runs on."""
    return metadata.version("llama_cpp_python")


def _log(msg: str) -> None:
    print(f"[llamacpp_ref] {msg}", file=sys.stderr, flush=True)


def fetch_sdist(version: str, cache: Path) -> Path:
    """The sdist tarball of that version (downloaded once with pip)."""
    dest = cache / "sdist"
    tarball = dest / f"llama_cpp_python-{version}.tar.gz"
    if tarball.exists():
        return tarball
    dest.mkdir(parents=True, exist_ok=True)
    _log(f"downloading the llama-cpp-python {version} sdist into {dest}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={version}", "-d", str(dest)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz")) + sorted(dest.glob(f"llama-cpp-python-{version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip did not leave an sdist for llama-cpp-python {version} in {dest}")
    return found[0]


def unpack(tarball: Path, cache: Path, version: str) -> Path:
    """The vendored llama.cpp source tree inside the unpacked sdist."""
    root = cache / "src" / f"llama_cpp_python-{version}"
    src = root / "vendor" / "llama.cpp"
    if (src / "CMakeLists.txt").exists():
        return src
    _log(f"unpacking {tarball.name}")
    tmp = cache / "src" / f".unpack-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name or m.name.endswith("/vendor/llama.cpp")]
        tar.extractall(tmp, members=members, filter="data")
    (top,) = list(tmp.iterdir())
    shutil.rmtree(root, ignore_errors=True)
    top.rename(root)
    shutil.rmtree(tmp, ignore_errors=True)
    return src


def binaries(cache: Path | None = None, version: str | None = None, targets: tuple[str, ...] = TARGETS) -> dict[str, Path]:
    """Where the reference binaries are (or will be) for that version."""
    cache = cache or cache_dir()
    version = version or installed_version()
    bindir = cache / f"build-{version}" / "bin"
    return {t: bindir / t for t in targets}


def ensure_built(cache: Path | None = None, jobs: int = 2, targets: tuple[str, ...] = TARGETS) -> dict[str, Path]:
    """Download, unpack and build the reference tools (or other targets) when they are not there yet; their paths."""
    cache = cache or cache_dir()
    version = installed_version()
    bins = binaries(cache, version, targets)
    if all(p.exists() for p in bins.values()):
        return bins
    src = unpack(fetch_sdist(version, cache), cache, version)
    build = cache / f"build-{version}"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        "cmake", "-S", str(src), "-B", str(build), *generator,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        # examples/ holds llama-lookup; every other target builds without them.
        f"-DLLAMA_BUILD_EXAMPLES={'ON' if 'llama-lookup' in targets else 'OFF'}",
        # The server only when asked for; one build tree, so a later server build reuses the compiled libraries.
        f"-DLLAMA_BUILD_SERVER={'ON' if 'llama-server' in targets else 'OFF'}",
        "-DLLAMA_BUILD_TOOLS=ON",
        # The server's web UI is neither built (npm) nor fetched (a prebuilt from the Hub): nothing is downloaded.
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
    ]
    _log(f"configuring llama.cpp (llama-cpp-python {version}) in {build}")
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    _log(f"building {', '.join(targets)} with -j{jobs} (several minutes on 2 cores)")
    subprocess.run(["cmake", "--build", str(build), "--config", "Release", "-j", str(jobs), "--target", *targets],
                   check=True, stdout=subprocess.DEVNULL)
    missing = [str(p) for p in bins.values() if not p.exists()]
    if missing:
        raise SystemExit(f"the build finished but these are missing: {', '.join(missing)}")
    return bins


def main() -> None:
    """Print the reference binaries' paths, building them first if needed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-j", type=int, default=2)
    parser.add_argument("--server", action="store_true", help="build llama-server instead of the bench tools")
    parser.add_argument("--speculative", action="store_true", help="build llama-lookup and llama-batched-bench")
    args = parser.parse_args()
    targets = SERVER_TARGETS if args.server else SPECULATIVE_TARGETS if args.speculative else TARGETS
    for name, path in ensure_built(jobs=args.jobs, targets=targets).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
