"""A GPU check ready to run: build llama-cpp-python with CUDA offline, install chatllm, measure it next to llama.cpp.

Two steps, so the machine with the GPU needs no network:

    python bench/gpu_check.py prepare          # here (PyPI reachable): fills gpu-check/ (git-ignored, < 50 MiB)
    python bench/gpu_check.py run              # there (NVIDIA GPU, nvcc, cmake, ninja, scikit-build-core, no network)

`prepare` downloads the llama-cpp-python sdist of the installed version (76.6 MB for 0.3.36) and keeps only what a
CUDA build uses (the binding, llama.cpp's core, common, ggml with its CPU and CUDA backends, and the three reference
tools: llama-bench, llama-batched-bench, llama-lookup); the wheels chatllm needs that the GPU image lacks; and the
SmolLM2-135M test model's GGUF header. The model itself (94 MiB) cannot travel in 50 MiB, so `run` writes a model of
exactly its architecture, tensor types and sizes with random weights (what speed depends on; drafts, which need a
model that copies, are then measured for what they cost, not what they gain).

`run` builds llama-cpp-python from that source with CUDA for the local GPU's architecture only (`pip install
--no-index --no-build-isolation`, one CMake build that also makes the reference tools from the same sources and
flags), installs chatllm into a venv without network, and prints `chatllm info`, generation and prompt rates next
to llama-bench, `ask --lines` throughput at --parallel 1/4/16 next to llama-batched-bench, and drafts on/off. With
no NVIDIA GPU (or `--cpu`) it says so and runs the same checks on the CPU build of llama-cpp-python already
installed, against CPU reference tools; `--dry-run` prints the plan without running it. The report goes to stdout
and, as Markdown and JSON, to --out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "gpu-check"
LIMIT_BYTES = 50 << 20
SMOLLM = Path.home() / ".cache" / "chatllm-test" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# What chatllm needs that the GPU image ('cuda', docs of the device tool) does not hold: a wheel each, no deps.
WHEELS = ("prompt-toolkit", "wcwidth", "platformdirs", "jsonschema", "jsonschema-specifications", "referencing",
          "rpds-py", "diskcache", "hatchling", "trove-classifiers")
TOOLS = ("llama-bench", "llama-batched-bench", "llama-lookup")
PROMPT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
          "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.")


def log(msg: str) -> None:
    print(f"[gpu_check] {msg}", file=sys.stderr, flush=True)


# -- prepare ---------------------------------------------------------------------------------------------

_KEEP_TOP = ("CMakeLists.txt", "pyproject.toml", "README.md", "LICENSE.md", "llama_cpp/")
_KEEP_VENDOR = ("CMakeLists.txt", "LICENSE", "cmake/", "include/", "src/", "common/", "licenses/",
                "vendor/",
                "ggml/CMakeLists.txt", "ggml/cmake/", "ggml/include/", "ggml/src/ggml-cpu/", "ggml/src/ggml-cuda/",
                "tools/llama-bench/", "tools/batched-bench/", "examples/lookup/")
# CMake files rewritten so that only the kept tools and examples are added.
_REWRITTEN = {
    "tools/CMakeLists.txt": "llama_add_compile_flags()\nadd_subdirectory(llama-bench)\nadd_subdirectory(batched-bench)\n",
    "examples/CMakeLists.txt": "llama_add_compile_flags()\nadd_subdirectory(lookup)\n",
    "pocs/CMakeLists.txt": "",
}


def keep(path: str) -> bool:
    """Whether a path inside the sdist (below its top folder) is part of a CUDA build of the binding and tools."""
    if path.startswith("vendor/llama.cpp/"):
        rest = path[len("vendor/llama.cpp/"):]
        if rest.startswith("ggml/src/") and rest.count("/") == 2:
            return True  # ggml's own sources and CMakeLists, not the other backends' folders
        return any(rest == k or (k.endswith("/") and rest.startswith(k)) for k in _KEEP_VENDOR)
    return any(path == k or (k.endswith("/") and path.startswith(k)) for k in _KEEP_TOP)


def trim_sdist(tarball: Path, dest: Path) -> Path:
    """A .tar.gz of the sdist holding only what keep() keeps (and the rewritten CMake files); its path."""
    with tarfile.open(tarball) as src:
        members = src.getmembers()
        top = members[0].name.split("/")[0]
        out_path = dest / f"{top}-cuda-src.tar.gz"
        with tarfile.open(out_path, "w:gz", compresslevel=9) as out:
            for m in members:
                rel = m.name[len(top) + 1:]
                if not m.isfile() or not keep(rel) or rel.startswith("vendor/llama.cpp/") and \
                        rel[len("vendor/llama.cpp/"):] in _REWRITTEN:
                    continue
                out.addfile(m, src.extractfile(m))
            for rel, text in _REWRITTEN.items():
                data = text.encode()
                info = tarfile.TarInfo(f"{top}/vendor/llama.cpp/{rel}")
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                out.addfile(info, io.BytesIO(data))
    return out_path


def gguf_tensors(header: bytes) -> tuple[int, list[tuple[str, int, int, int]]]:
    """A GGUF header's data offset and its tensors as (name, ggml type, element count, offset in the data)."""
    pos = 4
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", header, pos)
    pos += 20
    alignment = 32

    def string(p: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from("<Q", header, p)
        return header[p + 8:p + 8 + n], p + 8 + n

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(vtype: int, p: int) -> int:
        if vtype == 8:
            return string(p)[1]
        if vtype == 9:
            inner, count = struct.unpack_from("<IQ", header, p)
            p += 12
            for _ in range(count):
                p = skip(inner, p)
            return p
        return p + sizes[vtype]

    for _ in range(n_kv):
        key, pos = string(pos)
        (vtype,) = struct.unpack_from("<I", header, pos)
        if key == b"general.alignment":
            (alignment,) = struct.unpack_from("<I", header, pos + 4)
        pos = skip(vtype, pos + 4)
    tensors = []
    for _ in range(n_tensors):
        name, pos = string(pos)
        (n_dims,) = struct.unpack_from("<I", header, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", header, pos + 4)
        pos += 4 + 8 * n_dims
        ggml_type, offset = struct.unpack_from("<IQ", header, pos)
        pos += 12
        count = 1
        for d in dims:
            count *= d
        tensors.append((name.decode(), ggml_type, count, offset))
    return (pos + alignment - 1) // alignment * alignment, tensors


def pip_download(names: list[str], dest: Path, python_version: str) -> None:
    """One wheel per name, at the version installed here, for CPython `python_version` on manylinux x86-64."""
    from importlib import metadata

    platforms = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)] + ["manylinux2014_x86_64"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", *[a for p in platforms for a in ("--platform", p)],
           "-d", str(dest), *pins]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def prepare(dest: Path, model: Path, python_version: str) -> dict:
    """Fill `dest` with the trimmed sdist, the wheels and the model header; refuse to leave it at 50 MiB or more."""
    sys.path.insert(0, str(ROOT / "bench"))
    from llamacpp_ref import cache_dir, fetch_sdist, installed_version

    version = installed_version()
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    tarball = fetch_sdist(version, cache_dir())
    log(f"trimming {tarball.name} ({tarball.stat().st_size / 1e6:.1f} MB) to what a CUDA build uses")
    source = trim_sdist(tarball, dest)
    wheels = dest / "wheels"
    wheels.mkdir()
    log(f"downloading {len(WHEELS)} wheels for CPython {python_version}")
    pip_download(list(WHEELS), wheels, python_version)
    with open(model, "rb") as fh:
        head = fh.read(8 << 20)
    data_offset, tensors = gguf_tensors(head)
    (dest / "model-header.gguf").write_bytes(head[:data_offset])
    manifest = {"llama_cpp_python": version, "source": source.name, "python": python_version,
                "model": {"name": model.name, "size": model.stat().st_size, "header": "model-header.gguf",
                          "tensors": len(tensors)},
                "wheels": sorted(p.name for p in wheels.iterdir()), "sdist_bytes": tarball.stat().st_size}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    manifest["total_bytes"] = total
    if total >= LIMIT_BYTES:
        raise SystemExit(f"{dest} holds {total / 2**20:.1f} MiB, over the 50 MiB the check may carry")
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"{dest}: {total / 2**20:.1f} MiB ({source.stat().st_size / 2**20:.1f} source, "
        f"{sum(p.stat().st_size for p in wheels.iterdir()) / 2**20:.1f} wheels)")
    return manifest


# -- the synthetic model -----------------------------------------------------------------------------------

_BLOCKS = {8: (32, 34), 3: (32, 20), 2: (32, 18), 0: (1, 4), 1: (1, 2)}  # ggml type: (elements, bytes) per block


def write_model(header_path: Path, dest: Path, seed: int = 0) -> Path:
    """The header's model with random weights of the right types and sizes (F32 norms of 1, small quantized values)."""
    import numpy as np

    header = header_path.read_bytes()
    data_offset, tensors = gguf_tensors(header + b"\0" * 64)
    rng = np.random.default_rng(seed)
    half = lambda x: np.array([x], dtype=np.float16).tobytes()  # noqa: E731
    with open(dest, "wb") as out:
        out.write(header[:data_offset])
        at = 0
        for name, ggml_type, count, offset in sorted(tensors, key=lambda t: t[3]):
            if ggml_type not in _BLOCKS:
                raise SystemExit(f"tensor {name}: ggml type {ggml_type} is not one the check can fill")
            out.write(b"\0" * (offset - at))
            per, size = _BLOCKS[ggml_type]
            n = count // per
            if ggml_type == 0:  # F32: a norm's weights
                block = np.ones(count, dtype=np.float32).tobytes()
            elif ggml_type == 1:
                block = (rng.standard_normal(count) * 0.02).astype(np.float16).tobytes()
            else:
                raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
                raw[:, 0:2] = np.frombuffer(half(0.02 if ggml_type == 3 else 0.004), dtype=np.uint8)
                if ggml_type == 3:  # Q4_1: d, m
                    raw[:, 2:4] = np.frombuffer(half(-0.15), dtype=np.uint8)
                block = raw.tobytes()
            out.write(block)
            at = offset + len(block)
    return dest


# -- run -------------------------------------------------------------------------------------------------


def gpu_arch(nvidia_smi: str | None) -> tuple[str, str] | None:
    """(GPU name, CUDA architecture like "90") from `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`."""
    if not nvidia_smi:
        return None
    line = nvidia_smi.strip().splitlines()[0] if nvidia_smi.strip() else ""
    found = re.match(r"\s*(.+?),\s*(\d+)\.(\d+)\s*$", line)
    return (found.group(1), found.group(2) + found.group(3)) if found else None


def detect_gpu() -> tuple[str, str] | None:
    """The first NVIDIA GPU and its architecture, or None (no nvidia-smi, no GPU, no nvcc)."""
    if not shutil.which("nvidia-smi") or not shutil.which("nvcc"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return gpu_arch(out)


@dataclass
class Plan:
    """What `run` does: the commands in order and where things go."""

    gpu: tuple[str, str] | None
    work: Path
    venv: Path
    model: Path
    tools: dict[str, Path]
    steps: list[tuple[str, list[str], dict]] = field(default_factory=list)  # (what, argv, extra environment)
    ngl: int = 0

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def make_plan(src: Path, work: Path, gpu: tuple[str, str] | None, jobs: int, reference_bin: Path | None = None) -> Plan:
    """The commands of a run: with a GPU, a CUDA build for its architecture; without, the CPU build already here."""
    manifest = json.loads((src / "manifest.json").read_text())
    venv = work / "venv"
    plan = Plan(gpu, work, venv, work / manifest["model"]["name"].replace(".gguf", ".random.gguf"), {})
    if gpu is not None:
        build = work / "build"
        plan.ngl = 99
        plan.tools = {t: build / "bin" / t for t in TOOLS}
        cmake = " ".join([
            "-DGGML_CUDA=on", f"-DCMAKE_CUDA_ARCHITECTURES={gpu[1]}", "-DGGML_NATIVE=on", "-DLLAVA_BUILD=off",
            "-DLLAMA_BUILD_TOOLS=on", "-DLLAMA_BUILD_EXAMPLES=on", "-DLLAMA_BUILD_SERVER=off", "-DLLAMA_BUILD_TESTS=off",
            "-DLLAMA_BUILD_APP=off", "-DLLAMA_CURL=off"])
        env = {"CMAKE_ARGS": cmake, "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs)}
        plan.steps.append(("venv", [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], {}))
        plan.steps.append(("build llama-cpp-python with CUDA", [
            str(plan.python), "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
            "--find-links", str(src / "wheels"), "-C", f"build-dir={build}", "-C", "cmake.build-type=Release",
            str(src / manifest["source"])], env))
    else:
        plan.tools = {t: (reference_bin or Path("")) / t for t in TOOLS}
        plan.steps.append(("venv", [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], {}))
    plan.steps.append(("install chatllm", [
        str(plan.python), "-m", "pip", "install", "--no-index", "--no-build-isolation", "--find-links",
        str(src / "wheels"), str(ROOT)], {}))
    return plan


def _base_paths_pth(venv: Path) -> None:
    """Make the venv see this interpreter's own packages too (the GPU image keeps them in a venv of its own)."""
    import site

    paths = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    for lib in (venv / "lib").glob("python*/site-packages"):
        (lib / "_gpu_check_base.pth").write_text("\n".join(paths) + "\n")


def _run(argv: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                          env={**os.environ, **(env or {})})


def measure(plan: Plan, runs: int) -> dict:
    """chatllm next to llama.cpp's tools on the plan's model: rates, batch throughput, drafts."""
    py, model, ngl = str(plan.python), str(plan.model), plan.ngl
    env = {"CHATLLM_HOME": str(plan.work / "home"), "PYTHONPATH": "", "NO_COLOR": "1"}
    device = ["--device", "cuda" if plan.gpu else "cpu"]
    result: dict = {"gpu": plan.gpu[0] if plan.gpu else None, "arch": plan.gpu[1] if plan.gpu else None}
    info = _run([py, "-m", "chatllm", "info", "--json"], env)
    result["info"] = info.stdout.strip() or info.stderr.strip()
    # generation and prompt rates: chatllm's engine as `ask` runs it, next to llama-bench, alternated
    rates: dict[str, list[float]] = {"tg": [], "pp": [], "ref_tg": [], "ref_pp": []}
    code = ("import json,sys; sys.path.insert(0, %r); from perf_engine import load, generation_rate, prompt_rate; "
            "e = load(%r, device=%r); print(json.dumps({'tg': generation_rate(e)['tokens_per_second'], "
            "'pp': prompt_rate(e)['tokens_per_second']}))") % (str(ROOT / "bench"), model, device[1])
    for _ in range(runs):
        mine = _run([py, "-c", code], env)
        ref = _run([str(plan.tools["llama-bench"]), "-m", model, "-p", "512", "-n", "128", "-ngl", str(ngl), "-r", "2",
                    "-o", "json"])
        try:
            m = json.loads(mine.stdout.strip().splitlines()[-1])
            rates["tg"].append(m["tg"])
            rates["pp"].append(m["pp"])
            for row in json.loads(ref.stdout):
                rates["ref_pp" if row.get("n_prompt") else "ref_tg"].append(row["avg_ts"])
        except (ValueError, KeyError, IndexError):
            result.setdefault("errors", []).append((mine.stderr + ref.stderr)[-400:])
    result["rates"] = {k: statistics.median(v) for k, v in rates.items() if v}
    # batch throughput: ask --lines over the same short rows at --parallel 1/4/16, next to llama-batched-bench
    rows = "\n".join(f"Say one word about the number {i}." for i in range(64)) + "\n"
    batch = {}
    for p in ("1", "4", "16"):
        start = time.perf_counter()
        r = subprocess.run([py, "-m", "chatllm", "ask", "--lines", "--no-cache", "-m", model, *device, "-n", "16", "-t",
                            "0", "--parallel", p, "Answer:"], input=rows, capture_output=True, text=True,
                           errors="replace", env={**os.environ, **env}, timeout=900)
        batch[p] = {"rows_per_s": 64 / (time.perf_counter() - start), "ok": r.returncode == 0}
    ref = _run([str(plan.tools["llama-batched-bench"]), "-m", model, "-c", "8192", "-b", "2048", "-ub", "512",
                "-npp", "32", "-ntg", "16", "-npl", "1,4,16", "-ngl", str(ngl), "--output-format", "jsonl"])
    bench = [json.loads(line) for line in ref.stdout.splitlines() if line.startswith("{")]
    result["batch"] = {"chatllm": batch, "llama_batched_bench": {str(r["pl"]): r["speed"] for r in bench}}
    # drafts on and off on a copy prompt (random weights copy nothing: what the machinery costs)
    drafts = {}
    for d in ("off", "auto"):
        r = _run([py, "-m", "chatllm", "ask", "--json", "--no-cache", "-m", model, *device, "-n", "128", "-t", "0",
                  "--draft", d, f"Copy this text exactly:\n\n{PROMPT}"], env)
        try:
            rec = json.loads(r.stdout)
            drafts[d] = {"tokens_per_second": rec["tokens_per_second"], "drafted": rec["drafted_tokens"],
                         "accepted": rec["accepted_tokens"]}
        except (ValueError, KeyError):
            drafts[d] = {"error": r.stderr[-300:]}
    result["drafts"] = drafts
    return result


def report(result: dict, seconds: float) -> str:
    """The check's figures as Markdown."""
    where = f"{result['gpu']} (sm_{result['arch']})" if result.get("gpu") else "no NVIDIA GPU: the CPU fallback"
    lines = [f"# chatllm GPU check: {where}", "", f"whole run: {seconds:.0f} s", "",
             "| figure | chatllm | llama.cpp | ratio |", "|---|---:|---:|---:|"]
    r = result.get("rates", {})
    for key, label in (("tg", "generation tok/s (tg128)"), ("pp", "prompt tok/s (pp512)")):
        if key in r and f"ref_{key}" in r:
            lines.append(f"| {label} | {r[key]:.1f} | {r['ref_' + key]:.1f} | {r[key] / r['ref_' + key]:.2f} |")
    b = result.get("batch", {})
    ours, ref = b.get("chatllm", {}), b.get("llama_batched_bench", {})
    for p in ("4", "16"):
        if p in ours and "1" in ours and ours["1"]["rows_per_s"]:
            mine = ours[p]["rows_per_s"] / ours["1"]["rows_per_s"]
            theirs = ref[p] / ref["1"] if p in ref and ref.get("1") else float("nan")
            lines.append(f"| `ask --lines` speed-up, --parallel {p} vs 1 / batched-bench npl {p} vs 1 | {mine:.2f} | "
                         f"{theirs:.2f} | {mine / theirs:.2f} |")
    d = result.get("drafts", {})
    if "tokens_per_second" in d.get("off", {}) and "tokens_per_second" in d.get("auto", {}):
        off, auto = d["off"]["tokens_per_second"], d["auto"]["tokens_per_second"]
        lines.append(f"| drafts auto / off, tok/s ({d['auto']['accepted']} of {d['auto']['drafted']} drafted kept) | "
                     f"{auto:.1f} | {off:.1f} | {auto / off if off else float('nan'):.2f} |")
    if result.get("errors"):
        lines += ["", "errors:", *[f"    {e}" for e in result["errors"]]]
    lines += ["", "chatllm info:", "", "```", str(result.get("info", ""))[:1500], "```"]
    return "\n".join(lines) + "\n"


def run(src: Path, out: Path, *, cpu: bool, dry_run: bool, jobs: int, runs: int) -> int:
    """Build, install, measure and report; 0 when every step ran."""
    started = time.perf_counter()
    if not (src / "manifest.json").exists():
        print(f"error: {src} has no manifest.json\nhint: run `python bench/gpu_check.py prepare` where PyPI is "
              "reachable, and bring its folder along", file=sys.stderr)
        return 2
    gpu = None if cpu else detect_gpu()
    if gpu is None:
        log("no NVIDIA GPU with nvcc here" + (" (--cpu)" if cpu else "") + ": the CPU fallback, on the llama-cpp-python "
            "installed here and CPU reference tools built by bench/llamacpp_ref.py")
    work = Path(tempfile.mkdtemp(prefix="chatllm-gpu-check-"))
    reference = None
    if gpu is None and not dry_run:
        sys.path.insert(0, str(ROOT / "bench"))
        from llamacpp_ref import SPECULATIVE_TARGETS, ensure_built

        reference = ensure_built(targets=SPECULATIVE_TARGETS)["llama-bench"].parent
    plan = make_plan(src, work, gpu, jobs, reference)
    if dry_run:
        for what, argv, env in plan.steps:
            print(f"# {what}\n{' '.join(f'{k}={v!r}' for k, v in env.items())} {' '.join(argv)}".strip())
        print(f"# model: {plan.model} (random weights, from {src / 'model-header.gguf'})")
        print(f"# tools: {', '.join(str(p) for p in plan.tools.values())}; -ngl {plan.ngl}")
        return 0
    for what, argv, env in plan.steps:
        log(f"{what} ...")
        t = time.perf_counter()
        done = _run(argv, env, timeout=1800)
        if done.returncode != 0:
            print(f"error: {what} failed ({done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        if what == "venv":
            _base_paths_pth(plan.venv)
        log(f"{what}: {time.perf_counter() - t:.0f} s")
    write_model(src / "model-header.gguf", plan.model)
    result = measure(plan, runs)
    text = report(result, time.perf_counter() - started)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`prepare` or `run` (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="here, with PyPI: fill the folder the GPU machine needs")
    p.add_argument("--dest", type=Path, default=DEFAULT_DIR)
    p.add_argument("--model", type=Path, default=SMOLLM, help="the GGUF whose header the check's model copies")
    p.add_argument("--python-version", default="3.12", help="the GPU machine's CPython (its image has 3.12)")
    r = sub.add_parser("run", help="on the GPU machine, without network: build, install, measure, report")
    r.add_argument("--src", type=Path, default=DEFAULT_DIR)
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu-check" / "report"))
    r.add_argument("--cpu", action="store_true", help="the CPU fallback even where a GPU is found")
    r.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    r.add_argument("--jobs", type=int, default=os.cpu_count() or 16)
    r.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.step == "prepare":
        if not args.model.exists():
            print(f"error: no model at {args.model}\nhint: python tests/model_fetch.py fetches the test models",
                  file=sys.stderr)
            return 2
        prepare(args.dest, args.model, args.python_version)
        return 0
    return run(args.src, args.out, cpu=args.cpu, dry_run=args.dry_run, jobs=args.jobs, runs=args.runs)


if __name__ == "__main__":
    sys.exit(main())
