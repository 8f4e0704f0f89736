"""llama.cpp's extra CPU weight buffers: keep the repacked ones, leave out AMX (it crashes)."""

from __future__ import annotations

import ctypes
from pathlib import Path


def drop_amx_buffer() -> bool:
    """Take llama.cpp's AMX weight buffer out of the CPU's extra buffer types, keeping REPACK; False if it cannot."""
    # llama.cpp's AMX matmul segfaults on the first prompt batch (ggml-org/llama.cpp#20824) and use_extra_bufts
    # cannot leave AMX out, but the CPU device hands out the list it uses as a NULL-terminated array that lives as
    # long as the library: with AMX taken out, AMX CPUs repack weights like every other x86 CPU. Must run before
    # the first model load; it is idempotent.
    try:
        base, ggml = ctypes.CDLL(_loaded_lib("ggml-base")), ctypes.CDLL(_loaded_lib("ggml"))
    except OSError:
        return False
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    dev = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    reg = base.ggml_backend_dev_backend_reg(dev) if dev else None
    proc = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts") if reg else None
    if not proc:
        return False
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(proc)(dev)
    found: list[int] = []
    while bufts and bufts[len(found)]:
        found.append(bufts[len(found)])
    kept = [b for b in found if base.ggml_backend_buft_name(b) != b"AMX"]
    for i in range(len(found)):
        bufts[i] = kept[i] if i < len(kept) else None
    return True


def _loaded_lib(name: str) -> str:
    """The path of lib{name} as this process mapped it (the wheel ships .so and .so.0 as separate copies)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = {line.split()[-1] for line in fh if "/lib" + name + ".so" in line}
    except OSError:
        raise OSError("not Linux") from None
    for path in sorted(paths):
        if Path(path).name.split(".so")[0] == "lib" + name:
            return path
    raise OSError(f"lib{name} is not loaded")
