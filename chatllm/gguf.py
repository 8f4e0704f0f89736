"""A bounded GGUF header reader: checks a file before llama.cpp sees it and reads metadata without the weights."""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from chatllm.errors import ChatllmError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_DIMS = 8
MAX_STRING = 64 * 1024 * 1024
DEFAULT_ALIGNMENT = 32

# Scalar metadata value types: struct format by GGUF type id.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block), for the size check of the data section.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
}

# general.file_type values, as llama.cpp names them.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0",
}


class GGUFError(ChatllmError):
    """A file that is not a usable GGUF model."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(
            f"{path}: not a usable GGUF model: {problem}",
            "download it again with `chatllm pull MODEL --force`, or check that the file is a .gguf model",
        )


@dataclass
class GGUFInfo:
    """What the header says about a model."""

    path: Path
    version: int
    size: int
    tensor_count: int
    metadata: dict = field(default_factory=dict)
    n_params: int = 0

    @property
    def architecture(self) -> str:
        """general.architecture, e.g. llama or gemma3."""
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def context_length(self) -> int | None:
        """The training context, from {arch}.context_length."""
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def quantization(self) -> str:
        """The file type as llama.cpp names it (Q4_K_M, ...)."""
        ft = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ft, f"type {ft}") if isinstance(ft, int) else "unknown"

    @property
    def chat_template(self) -> str | None:
        """The GGUF's own Jinja chat template, if it carries one."""
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def chat_template_hash(self) -> str | None:
        """A short hash that tells templates apart."""
        tpl = self.chat_template
        return hashlib.sha256(tpl.encode()).hexdigest()[:12] if tpl else None


class _Reader:
    def __init__(self, fh: BinaryIO, size: int, path: Path):
        self.fh, self.size, self.path = fh, size, path

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(self.path, problem)

    def read(self, n: int) -> bytes:
        if n < 0 or self.fh.tell() + n > self.size:
            raise self.fail("truncated header (a length points past the end of the file)")
        data = self.fh.read(n)
        if len(data) != n:
            raise self.fail("truncated header")
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > MAX_STRING:
            raise self.fail(f"string of {n} bytes in the header")
        return self.read(n).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if n < 0 or self.fh.tell() + n > self.size:
            raise self.fail("truncated header (an array runs past the end of the file)")
        self.fh.seek(n, os.SEEK_CUR)

    def value(self, vtype: int, keep: bool):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.unpack("<I"), self.unpack("<Q")
            if itype == _ARRAY:
                raise self.fail("nested arrays are not supported")
            if itype in _SCALARS:
                nbytes = count * struct.calcsize(_SCALARS[itype])
                if not keep:
                    self.skip(nbytes)
                    return None
                return list(struct.unpack(f"<{count}{_SCALARS[itype][1]}", self.read(nbytes)))
            if itype != _STRING:
                raise self.fail(f"unknown array type {itype}")
            if count * 8 > self.size:
                raise self.fail(f"array of {count} strings cannot fit in the file")
            for _ in range(count):
                n = self.unpack("<Q")
                self.skip(n)
            return None
        raise self.fail(f"unknown metadata type {vtype}")


def read_header(path: Path | str, *, check_data: bool = True) -> GGUFInfo:
    """Parse and sanity-check a GGUF header; raise GGUFError on anything implausible."""
    path = Path(path)
    try:
        size = path.stat().st_size
        fh = open(path, "rb")
    except IsADirectoryError:
        raise GGUFError(path, "it is a directory")
    except FileNotFoundError:
        raise ChatllmError(f"no such model file: {path}", "check the path or run `chatllm pull MODEL`")
    except PermissionError:
        raise ChatllmError(f"cannot read model file: {path}", "check the file's permissions")
    with fh:
        r = _Reader(fh, size, path)
        if size < 24:
            raise r.fail(f"only {size} bytes")
        magic = fh.read(4)
        if magic != MAGIC:
            raise r.fail(f"wrong magic {magic!r} ({_guess_kind(magic)})")
        version = r.unpack("<I")
        if version == 1:
            raise r.fail("GGUF version 1 is obsolete and not supported")
        if version not in SUPPORTED_VERSIONS:
            raise r.fail(f"unknown GGUF version {version}")
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        if n_tensors > MAX_TENSORS or n_tensors * 28 > size:
            raise r.fail(f"implausible tensor count {n_tensors}")
        if n_kv > MAX_KV or n_kv * 13 > size:
            raise r.fail(f"implausible metadata count {n_kv}")
        metadata: dict = {}
        for _ in range(n_kv):
            key = r.string()
            vtype = r.unpack("<I")
            value = r.value(vtype, keep=not key.startswith("tokenizer.ggml."))
            if value is not None:
                metadata[key] = value
        n_params, data_needed = 0, 0
        for _ in range(n_tensors):
            r.string()
            n_dims = r.unpack("<I")
            if n_dims == 0 or n_dims > MAX_DIMS:
                raise r.fail(f"tensor with {n_dims} dimensions")
            dims = [r.unpack("<Q") for _ in range(n_dims)]
            ttype, offset = r.unpack("<I"), r.unpack("<Q")
            elements = 1
            for d in dims:
                elements *= d
            if elements > size * 64:
                raise r.fail("tensor dimensions larger than the file could hold")
            n_params += elements
            if ttype in GGML_TYPES:
                _, block, nbytes = GGML_TYPES[ttype]
                data_needed = max(data_needed, offset + (elements + block - 1) // block * nbytes)
            else:
                data_needed = max(data_needed, offset)
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise r.fail(f"bad alignment {alignment!r}")
        data_start = (fh.tell() + alignment - 1) // alignment * alignment
        if check_data and data_start + data_needed > size:
            raise r.fail(f"truncated: tensor data needs {data_start + data_needed} bytes, the file has {size}")
    return GGUFInfo(path=path, version=version, size=size, tensor_count=n_tensors, metadata=metadata, n_params=n_params)


def _guess_kind(magic: bytes) -> str:
    lowered = magic.lower()
    if lowered.startswith((b"<!do", b"<htm", b"<?xm", b"<hea")):
        return "an HTML page, probably an error page saved as a model"
    if lowered.startswith(b"{"):
        return "JSON text"
    if magic[:1] and magic[1:4] == b"\x00\x00\x00" or magic.startswith(b"\x00"):
        return "looks like safetensors or another binary format"
    return "not a GGUF file"


def format_params(n: int) -> str:
    """1234567 -> '1.2M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
