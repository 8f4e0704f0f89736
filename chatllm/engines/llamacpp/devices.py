"""Device selection (CPU, CUDA, Metal) and weight-buffer safety: pure logic, testable without a GPU."""

from __future__ import annotations

from chatllm.errors import ChatllmError, UsageError
from chatllm.settings import DEVICES

INSTALL_HINTS = {  # the GPU devices of settings.DEVICES, and how to get a build that has them
    "cuda": 'reinstall with CUDA: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
    "metal": 'reinstall with Metal (macOS): CMAKE_ARGS="-DGGML_METAL=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
}


def choose_gpu_layers(device: str, gpu_layers: int | None, supports_offload: bool, backend: str) -> int:
    """How many layers to offload: 0 for CPU, -1 for all; refuses a GPU the build cannot use."""
    device = device.lower()
    if device == "cpu":
        if gpu_layers not in (None, 0):
            raise UsageError("--gpu-layers needs a GPU device", "drop --device cpu, or drop --gpu-layers")
        return 0
    if device in INSTALL_HINTS:
        if not supports_offload or backend.lower() != device:
            have = backend if supports_offload else "CPU only"
            raise ChatllmError(f"--device {device} asked for, but this llama-cpp-python build is {have}", INSTALL_HINTS[device])
        return -1 if gpu_layers is None else gpu_layers
    if device != "auto":
        raise UsageError(f"unknown device {device!r}", f"use one of: {', '.join(DEVICES)}")
    if not supports_offload:
        return 0
    return -1 if gpu_layers is None else gpu_layers


def extra_buffers_safe(system_info: str) -> bool:
    """Whether llama.cpp may repack weights into its extra CPU buffer types (AMX, REPACK) on this CPU."""
    # On AMX CPUs (Sapphire Rapids and later) llama.cpp's AMX matmul segfaults on the first batch of a prompt
    # (Q4_1 and Q4_K_M both, seen here; ggml-org/llama.cpp#20824, ollama dropped its AMX build). The AMX buffer
    # cannot be turned off alone, so on such CPUs the plain CPU buffers are used for all weights.
    return "AMX_INT8 = 1" not in system_info
