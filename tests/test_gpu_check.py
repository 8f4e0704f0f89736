"""bench/gpu_check.py's CPU-side logic: what the trimmed source keeps, the GPU detection, the plan of a run with and
without a GPU (the CPU fallback), the report, refusing a folder never prepared, and the synthetic model it writes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402


def test_the_gpu_and_its_architecture_come_from_nvidia_smi():
    assert gpu_check.gpu_arch("NVIDIA H100 80GB HBM3, 9.0\n") == ("NVIDIA H100 80GB HBM3", "90")
    assert gpu_check.gpu_arch("NVIDIA GeForce RTX 4090, 8.9\nNVIDIA GeForce RTX 4090, 8.9\n") == ("NVIDIA GeForce RTX 4090", "89")
    assert gpu_check.gpu_arch("") is None and gpu_check.gpu_arch(None) is None
    assert gpu_check.gpu_arch("No devices were found") is None


@pytest.mark.parametrize("path, kept", [
    ("llama_cpp/llama.py", True), ("pyproject.toml", True), ("README.md", True), ("tests/test_llama.py", False),
    ("vendor/llama.cpp/src/llama.cpp", True), ("vendor/llama.cpp/ggml/src/ggml.c", True),
    ("vendor/llama.cpp/ggml/src/CMakeLists.txt", True), ("vendor/llama.cpp/ggml/src/ggml-cuda/mmq.cu", True),
    ("vendor/llama.cpp/ggml/src/ggml-cpu/ops.cpp", True), ("vendor/llama.cpp/ggml/src/ggml-vulkan/x.cpp", False),
    ("vendor/llama.cpp/ggml/src/ggml-metal/x.m", False), ("vendor/llama.cpp/models/ggml-vocab-llama.gguf", False),
    ("vendor/llama.cpp/docs/build.md", False), ("vendor/llama.cpp/tools/llama-bench/llama-bench.cpp", True),
    ("vendor/llama.cpp/tools/server/server.cpp", False), ("vendor/llama.cpp/examples/lookup/lookup.cpp", True),
    ("vendor/llama.cpp/examples/simple/simple.cpp", False), ("vendor/llama.cpp/common/common.cpp", True),
    ("vendor/llama.cpp/vendor/nlohmann/json.hpp", True), (".git/config", False),
])
def test_the_trimmed_source_keeps_what_a_cuda_build_uses(path, kept):
    assert gpu_check.keep(path) is kept


def test_trimming_rewrites_the_tool_lists(tmp_path):
    src = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        for name, text in [("pkg-1.0/pyproject.toml", "x"), ("pkg-1.0/vendor/llama.cpp/tools/CMakeLists.txt", "all"),
                           ("pkg-1.0/vendor/llama.cpp/models/big.gguf", "0" * 1000), ("pkg-1.0/llama_cpp/a.py", "y")]:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    out = gpu_check.trim_sdist(src, tmp_path)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        tools = tar.extractfile("pkg-1.0/vendor/llama.cpp/tools/CMakeLists.txt").read().decode()  # type: ignore[union-attr]
    assert "pkg-1.0/vendor/llama.cpp/models/big.gguf" not in names and "pkg-1.0/llama_cpp/a.py" in names
    assert "add_subdirectory(llama-bench)" in tools and "server" not in tools
    assert "pkg-1.0/vendor/llama.cpp/examples/CMakeLists.txt" in names


def prepared(tmp_path: Path) -> Path:
    src = tmp_path / "gpu-check"
    (src / "wheels").mkdir(parents=True)
    (src / "manifest.json").write_text(json.dumps({"source": "llama_cpp_python-0.3.36-cuda-src.tar.gz",
                                                   "model": {"name": "SmolLM2-135M-Instruct.Q4_1.gguf"}}))
    return src


def test_a_gpu_gets_a_cuda_build_for_its_architecture_only(tmp_path):
    plan = gpu_check.make_plan(prepared(tmp_path), tmp_path / "work", ("NVIDIA H100", "90"), jobs=16)
    (_, venv, _), (what, build, env), (_, install, _) = plan.steps
    assert "--system-site-packages" in venv and "CUDA" in what
    assert "-DGGML_CUDA=on" in env["CMAKE_ARGS"] and "-DCMAKE_CUDA_ARCHITECTURES=90" in env["CMAKE_ARGS"]
    assert env["CMAKE_BUILD_PARALLEL_LEVEL"] == "16"
    for argv in (build, install):
        assert "--no-index" in argv and "--no-build-isolation" in argv
    assert any(a.startswith("build-dir=") for a in build) and plan.ngl == 99
    assert plan.tools["llama-bench"] == tmp_path / "work" / "build" / "bin" / "llama-bench"


def test_no_gpu_means_the_cpu_fallback_on_the_binding_already_here(tmp_path):
    plan = gpu_check.make_plan(prepared(tmp_path), tmp_path / "work", None, jobs=2, reference_bin=tmp_path / "bin")
    assert [what for what, _, _ in plan.steps] == ["venv", "install chatllm"]
    assert plan.ngl == 0 and plan.tools["llama-lookup"] == tmp_path / "bin" / "llama-lookup"


def test_a_dry_run_prints_the_plan_and_an_unprepared_folder_is_refused(tmp_path, capsys):
    assert gpu_check.main(["run", "--src", str(prepared(tmp_path)), "--cpu", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "# install chatllm" in out and "--no-index" in out and "-ngl 0" in out
    assert gpu_check.main(["run", "--src", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "hint: run `python bench/gpu_check.py prepare`" in err


def test_the_report_puts_each_figure_next_to_llama_cpp():
    result = {"gpu": "NVIDIA H100 80GB HBM3", "arch": "90", "info": "{}",
              "rates": {"tg": 400.0, "ref_tg": 420.0, "pp": 20000.0, "ref_pp": 21000.0},
              "batch": {"chatllm": {"1": {"rows_per_s": 10.0}, "4": {"rows_per_s": 30.0}, "16": {"rows_per_s": 80.0}},
                        "llama_batched_bench": {"1": 500.0, "4": 1700.0, "16": 5000.0}},
              "drafts": {"off": {"tokens_per_second": 400.0}, "auto": {"tokens_per_second": 398.0, "drafted": 0,
                                                                       "accepted": 0}}}
    text = gpu_check.report(result, 312.0)
    assert text.startswith("# chatllm GPU check: NVIDIA H100 80GB HBM3 (sm_90)")
    assert "| generation tok/s (tg128) | 400.0 | 420.0 | 0.95 |" in text
    assert "--parallel 16 vs 1 / batched-bench npl 16 vs 1 | 8.00 | 10.00 | 0.80 |" in text
    assert "| drafts auto / off" in text and "whole run: 312 s" in text
    assert gpu_check.report({"gpu": None}, 1.0).startswith("# chatllm GPU check: no NVIDIA GPU: the CPU fallback")


def test_the_check_folder_is_ignored_by_git():
    r = subprocess.run(["git", "check-ignore", "gpu-check/wheels/x.whl"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0


@pytest.mark.model
def test_the_synthetic_model_has_the_real_shape_and_runs(tmp_path, smollm_path):
    from chatllm.engines.contract import complete
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine
    from chatllm.settings import Sampling

    data_offset, tensors = gpu_check.gguf_tensors(smollm_path.read_bytes()[:4 << 20])
    header = tmp_path / "header.gguf"
    header.write_bytes(smollm_path.read_bytes()[:data_offset])
    model = gpu_check.write_model(header, tmp_path / "random.gguf")
    assert model.stat().st_size == smollm_path.stat().st_size and len(tensors) == 272
    with LlamaCppEngine(model, n_ctx=256) as engine:
        complete(engine, engine.render_chat([{"role": "user", "content": "hi"}]), Sampling(temperature=0, max_tokens=8))
        assert engine.last_stats.completion_tokens > 0
