"""A small GGUF writer for tests: copy a real GGUF with some metadata values replaced, or build one from scratch.

It parses the header on its own (independently of chatllm.models.gguf_header, so the two can check each other), rewrites the
metadata section, keeps the tensor infos byte for byte, re-pads to the alignment and copies the tensor data.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_FMT = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f", BOOL: "<?",
        UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


def gguf_string(text: str | bytes) -> bytes:
    """A GGUF string: u64 length, then the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def encode_value(value) -> bytes:
    """The type id and encoding of a Python value (str, bool, int as u32/i64, float as f32, list of str/int)."""
    if isinstance(value, bool):
        return struct.pack("<I?", BOOL, value)
    if isinstance(value, int):
        return struct.pack("<Ii", INT32, value) if value < 0 else struct.pack("<II", UINT32, value)
    if isinstance(value, float):
        return struct.pack("<If", FLOAT32, value)
    if isinstance(value, (str, bytes)):
        return struct.pack("<I", STRING) + gguf_string(value)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return struct.pack("<IIQ", ARRAY, STRING, len(value)) + b"".join(gguf_string(v) for v in value)
        return struct.pack("<IIQ", ARRAY, INT32, len(value)) + struct.pack(f"<{len(value)}i", *value)
    raise TypeError(f"cannot encode {value!r}")


class _Cursor:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("header runs past the bytes read")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> bytes:
        return self.take(self.u64())

    def skip_value(self, vtype: int) -> None:
        if vtype in _FMT:
            self.take(struct.calcsize(_FMT[vtype]))
        elif vtype == STRING:
            self.string()
        elif vtype == ARRAY:
            itype, count = self.u32(), self.u64()
            if itype == STRING:
                for _ in range(count):
                    self.string()
            else:
                self.take(count * struct.calcsize(_FMT[itype]))
        else:
            raise ValueError(f"unknown type {vtype}")


def split_header(path: Path, limit: int = 64 << 20) -> dict:
    """The parts of a GGUF: version, [(key, raw type+value bytes)], raw tensor infos, alignment, data offset."""
    with open(path, "rb") as fh:
        data = fh.read(limit)
    cur = _Cursor(data)
    assert cur.take(4) == b"GGUF"
    version, n_tensors, n_kv = cur.u32(), cur.u64(), cur.u64()
    kvs: list[tuple[str, bytes]] = []
    alignment = 32
    for _ in range(n_kv):
        key = cur.string().decode()
        start = cur.pos
        vtype = cur.u32()
        cur.skip_value(vtype)
        raw = data[start : cur.pos]
        if key == "general.alignment":
            alignment = struct.unpack("<I", raw[4:8])[0]
        kvs.append((key, raw))
    info_start = cur.pos
    for _ in range(n_tensors):
        cur.string()
        n_dims = cur.u32()
        cur.take(8 * n_dims + 4 + 8)
    infos = data[info_start : cur.pos]
    data_offset = (cur.pos + alignment - 1) // alignment * alignment
    return {"version": version, "n_tensors": n_tensors, "kvs": kvs, "infos": infos, "alignment": alignment,
            "data_offset": data_offset}


def build_header(version: int, n_tensors: int, kvs: list[tuple[str, bytes]], infos: bytes, alignment: int) -> bytes:
    """A GGUF header (magic to the end of the tensor infos), padded to the alignment."""
    out = b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kvs))
    out += b"".join(gguf_string(k) + raw for k, raw in kvs)
    out += infos
    return out + b"\x00" * (-len(out) % alignment)


def copy_with_metadata(src: Path, dst: Path, changes: dict) -> Path:
    """Copy a GGUF, replacing (or adding) metadata values; a value of None removes the key."""
    parts = split_header(src)
    kvs, done = [], set()
    for key, raw in parts["kvs"]:
        if key in changes:
            done.add(key)
            if changes[key] is None:
                continue
            raw = encode_value(changes[key])
        kvs.append((key, raw))
    kvs += [(k, encode_value(v)) for k, v in changes.items() if k not in done and v is not None]
    header = build_header(parts["version"], parts["n_tensors"], kvs, parts["infos"], parts["alignment"])
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(header)
        fin.seek(parts["data_offset"])
        shutil.copyfileobj(fin, fout, 1 << 22)
    return dst


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    """One tensor info record."""
    return gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}q", *dims) + struct.pack("<IQ", ggml_type, offset)


def tiny_gguf(kvs: dict | None = None, tensors: list[tuple[str, list[int]]] | None = None, version: int = 3) -> bytes:
    """A small, valid GGUF with F32 tensors (zeros), for building broken variants."""
    kvs = {"general.architecture": "llama", "general.name": "tiny"} if kvs is None else kvs
    tensors = [("a.weight", [8, 2]), ("b.weight", [16])] if tensors is None else tensors
    infos, offset = b"", 0
    for name, dims in tensors:
        infos += tensor_info(name, dims, 0, offset)
        n = 4
        for d in dims:
            n *= d
        offset += (n + 31) // 32 * 32
    header = build_header(version, len(tensors), [(k, encode_value(v)) for k, v in kvs.items()], infos, 32)
    return header + b"\x00" * offset
