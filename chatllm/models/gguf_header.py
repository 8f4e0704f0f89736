"""A bounded GGUF header reader: checks a file before llama.cpp sees it and reads metadata without the weights."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from chatllm.errors import ChatllmError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_DIMS = 4  # GGML_MAX_DIMS
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
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18), 42: ("Q2_0", 64, 18),
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
    data_offset: int = 0  # where the tensor data starts
    data_size: int = 0  # the tensor data's length, padding included
    tensor_types: dict[str, str] = field(default_factory=dict)  # tensor name -> ggml type name (Q4_K, F32, ...)

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


_U32, _U64, _I64 = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<q")
_CHUNK = 1 << 20
MAX_KEPT_ITEMS = 4096  # longer arrays are checked and skipped, never held in memory
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS: llama.cpp aborts on more (GGML_ASSERT), so refuse first
GGML_MAX_NAME = 64  # llama.cpp's limit on tensor names, terminating NUL included
# Token-indexed arrays llama.cpp reads by position: each must be as long as tokenizer.ggml.tokens.
_PER_TOKEN = ("tokenizer.ggml.scores", "tokenizer.ggml.token_type")


class _Reader:
    """Reads the header through a 1 MiB window, so skipping 100k-token vocabularies stays cheap."""

    def __init__(self, fh: BinaryIO, size: int, path: Path):
        self.fh, self.size, self.path = fh, size, path
        self.buf, self.base, self.pos = b"", 0, 0

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(self.path, problem)

    def _window(self, n: int) -> int:
        """Make the window cover [pos, pos + n) and return pos's offset in it."""
        if n < 0 or self.pos + n > self.size:
            raise self.fail("truncated header (a length points past the end of the file)")
        off = self.pos - self.base
        if off < 0 or off + n > len(self.buf):
            self.fh.seek(self.pos)
            self.buf, self.base, off = self.fh.read(max(n, _CHUNK)), self.pos, 0
            if len(self.buf) < n:
                raise self.fail("truncated header (the file ended early)")
        return off

    def read(self, n: int) -> bytes:
        off = self._window(n)
        self.pos += n
        return self.buf[off : off + n]

    def unpack(self, st: struct.Struct):
        off = self._window(st.size)
        self.pos += st.size
        return st.unpack_from(self.buf, off)[0]

    def raw_string(self) -> bytes:
        n = self.unpack(_U64)
        if self.pos + n > self.size:
            raise self.fail(f"truncated header: a string of {n} bytes runs past the end of the file")
        if n > MAX_STRING:
            raise self.fail(f"a string of {n} bytes in the header (the limit is {MAX_STRING})")
        return self.read(n)

    def string(self) -> str:
        return self.raw_string().decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail("truncated header (an array runs past the end of the file)")
        self.pos += n

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            off = self._window(8)
            n = _U64.unpack_from(self.buf, off)[0]
            self.pos += 8
            if n > MAX_STRING or self.pos + n > self.size:
                raise self.fail("truncated header (a string array runs past the end of the file)")
            self.pos += n

    def value(self, vtype: int, keep: bool, key: str, lengths: dict):
        if vtype in _SCALARS:
            return self.unpack(_SCALAR_STRUCTS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise self.fail(f"key {key!r} has unknown metadata type {vtype}")
        itype, count = self.unpack(_U32), self.unpack(_U64)
        lengths[key] = count
        keep = keep and count <= MAX_KEPT_ITEMS
        if itype in _SCALARS:
            width = _SCALAR_STRUCTS[itype].size
            if count > (self.size - self.pos) // width:
                raise self.fail(f"truncated header: array {key!r} of {count} items cannot fit in the rest of the file")
            if not keep:
                self.skip(count * width)
                return None
            return list(struct.unpack(f"<{count}{_SCALARS[itype][1]}", self.read(count * width)))
        if itype != _STRING:
            raise self.fail(f"array {key!r} has unknown item type {itype}")
        if count > (self.size - self.pos) // 8:
            raise self.fail(f"truncated header: array {key!r} of {count} strings cannot fit in the rest of the file")
        if not keep:
            self.skip_strings(count)
            return None
        return [self.string() for _ in range(count)]


_SCALAR_STRUCTS = {t: struct.Struct(fmt) for t, fmt in _SCALARS.items()}


def read_header(path: Path | str, *, check_data: bool = True) -> GGUFInfo:
    """Parse and sanity-check a GGUF header; raise GGUFError on anything implausible.

    The checks are at least as strict as llama.cpp's own GGUF reader (so nothing it would refuse, or trip
    over, gets past), plus the tokenizer-array lengths llama.cpp indexes by token id.
    """
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
    except OSError as exc:
        raise ChatllmError(f"cannot read model file: {path}: {exc.strerror}", "check the file")
    with fh:
        try:
            return _parse(_Reader(fh, size, path), check_data)
        except OSError as exc:  # an I/O error mid-read (a bad disk, a file on a vanished mount)
            raise ChatllmError(f"cannot read model file: {path}: {exc.strerror or exc}", "check the file and its disk")


def _parse(r: _Reader, check_data: bool) -> GGUFInfo:
    size = r.size
    head = r.fh.read(16)
    r.fh.seek(0)
    if head[:4] != MAGIC:
        raise r.fail(f"wrong magic {head[:4]!r} ({_guess_kind(head)})")
    if size < 24:
        raise r.fail(f"only {size} bytes")
    r.pos = 4
    version = r.unpack(_U32)
    if version == 1:
        raise r.fail("GGUF version 1 is obsolete and not supported")
    if version and version & 0xFFFF == 0:
        raise r.fail(f"GGUF version {version:#x}: a big-endian file, which this machine cannot read")
    if version not in SUPPORTED_VERSIONS:
        raise r.fail(f"unknown GGUF version {version}")
    n_tensors, n_kv = r.unpack(_U64), r.unpack(_U64)
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise r.fail(f"implausible counts: {n_tensors} tensors, {n_kv} metadata keys")
    if n_tensors * 28 + n_kv * 13 > size:
        raise r.fail(f"truncated: the header lists {n_tensors} tensors and {n_kv} keys, which cannot fit in {size} bytes")
    metadata: dict = {}
    types: dict[str, int] = {}
    lengths: dict[str, int] = {}
    seen_keys: set[bytes] = set()
    for _ in range(n_kv):
        raw = r.raw_string()
        if not raw or b"\x00" in raw:
            raise r.fail("an empty metadata key, or one with a NUL byte")
        if raw in seen_keys:
            raise r.fail(f"duplicate metadata key {raw.decode('utf-8', 'replace')!r}")
        seen_keys.add(raw)
        key = raw.decode("utf-8", errors="replace")
        vtype = r.unpack(_U32)
        types[key] = vtype
        value = r.value(vtype, not key.startswith("tokenizer.ggml."), key, lengths)
        if value is not None:
            metadata[key] = value
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if "general.alignment" in types and types["general.alignment"] != 4:
        raise r.fail("general.alignment must be a uint32")
    if alignment <= 0 or alignment & (alignment - 1):
        raise r.fail(f"bad alignment {alignment!r}")
    _check_tokenizer(r, lengths)
    _check_hparams(r, metadata)
    n_params, data_size, names = 0, 0, set()
    tensor_types: dict[str, str] = {}
    for _ in range(n_tensors):
        raw = r.raw_string()
        if len(raw) >= GGML_MAX_NAME or b"\x00" in raw:
            raise r.fail(f"bad tensor name {raw[:80]!r}")
        if raw in names:
            raise r.fail(f"duplicate tensor name {raw.decode('utf-8', 'replace')!r}")
        names.add(raw)
        n_dims = r.unpack(_U32)
        if n_dims == 0 or n_dims > MAX_DIMS:
            raise r.fail(f"tensor with {n_dims} dimensions")
        dims = [r.unpack(_I64) for _ in range(n_dims)]
        elements = 1
        for d in dims:
            if d <= 0:
                raise r.fail(f"tensor {raw.decode('utf-8', 'replace')!r} has a dimension of {d}")
            elements *= d
            if elements > size * 64:
                raise r.fail("tensor dimensions larger than the file could hold")
        ttype, offset = r.unpack(_U32), r.unpack(_U64)
        if ttype not in GGML_TYPES:
            raise r.fail(f"tensor {raw.decode('utf-8', 'replace')!r} has unknown type {ttype}")
        type_name, block, block_bytes = GGML_TYPES[ttype]
        tensor_types[raw.decode("utf-8", "replace")] = type_name
        if dims[0] % block:
            raise r.fail(f"tensor rows of {dims[0]} elements do not fit {GGML_TYPES[ttype][0]} blocks of {block}")
        if offset != data_size:
            raise r.fail(f"tensor {raw.decode('utf-8', 'replace')!r} at offset {offset}, expected {data_size}")
        nbytes = elements // block * block_bytes
        data_size += (nbytes + alignment - 1) // alignment * alignment
        n_params += elements
    data_offset = (r.pos + alignment - 1) // alignment * alignment
    if check_data and data_offset + data_size > size:
        raise r.fail(f"truncated: tensor data needs {data_offset + data_size} bytes, the file has {size}")
    return GGUFInfo(path=r.path, version=version, size=size, tensor_count=n_tensors, metadata=metadata,
                    n_params=n_params, data_offset=data_offset, data_size=data_size, tensor_types=tensor_types)


def _check_hparams(r: _Reader, metadata: dict) -> None:
    """Values llama.cpp asserts on (an abort that takes the whole process down) rather than reporting."""
    arch = metadata.get("general.architecture")
    layers = metadata.get(f"{arch}.block_count") if isinstance(arch, str) else None
    if isinstance(layers, int) and not 1 <= layers <= MAX_LAYERS:
        raise r.fail(f"{arch}.block_count = {layers} is outside 1..{MAX_LAYERS}")


def _check_tokenizer(r: _Reader, lengths: dict) -> None:
    """llama.cpp indexes these arrays by token id: they must be as long as the vocabulary."""
    n_tokens = lengths.get("tokenizer.ggml.tokens")
    if n_tokens is None:
        return
    # (Special-token ids outside the vocabulary are fine: llama.cpp checks those itself and falls back.)
    for key in _PER_TOKEN:
        if key in lengths and lengths[key] != n_tokens:
            raise r.fail(f"{key} has {lengths[key]} entries for {n_tokens} tokens")


def _guess_kind(head: bytes) -> str:
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!do", b"<htm", b"<?xm", b"<hea", b"<bod")):
        return "an HTML page, probably an error page saved as a model"
    if lowered.startswith((b"{", b"[")):
        return "JSON text, probably an error message saved as a model"
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= struct.unpack_from("<Q", head)[0] < 100_000_000:
        return "a safetensors file: convert it to GGUF first"
    if head[:2] == b"PK":
        return "a zip archive (a PyTorch checkpoint?)"
    if head[:4] == b"ggjt" or head[:4] == b"tjgg" or head[:4] in (b"lmgg", b"fmgg"):
        return "an old GGML file from before GGUF"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself"
    return "not a GGUF file"


def format_params(n: int) -> str:
    """1234567 -> '1.2M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
