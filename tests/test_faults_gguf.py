"""Broken model files: every one is refused with one clear error before llama.cpp sees it, and a fuzzer checks
that whatever chatllm's header check accepts, llama.cpp's own GGUF reader reads the same way."""

from __future__ import annotations

import ctypes
import glob
import hashlib
import importlib.util
import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from chatllm.errors import ChatllmError
from chatllm.models.gguf_header import GGML_TYPES, GGUFError, read_header
from tests.conftest import run_chatllm
from tests.gguf_writer import (
    ARRAY,
    BOOL,
    FLOAT32,
    INT32,
    STRING,
    UINT32,
    UINT64,
    build_header,
    encode_value,
    gguf_string,
    split_header,
    tensor_info,
    tiny_gguf,
)
from tests.model_fetch import SMOLLM

HEADER_BYTES = 1_785_664  # where SmolLM2's tensor data starts


# -- building broken files -------------------------------------------------------------------------


def real_header(smollm_path: Path) -> bytes:
    """The real SmolLM2 header, magic to the start of the tensor data."""
    with open(smollm_path, "rb") as fh:
        return fh.read(HEADER_BYTES)


def sparse_model(path: Path, header: bytes, size: int) -> Path:
    """A file of `size` bytes that starts with `header`; the rest is a hole (zeros), so it costs no disk."""
    path.write_bytes(header)
    os.truncate(path, size)
    return path


def safetensors_bytes() -> bytes:
    """A real (tiny) safetensors file: u64 header length, JSON header, raw tensor bytes."""
    meta = json.dumps({"weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                       "__metadata__": {"format": "pt"}}).encode()
    return struct.pack("<Q", len(meta)) + meta + b"\x00" * 16


def broken_files(tmp: Path, smollm_path: Path) -> dict[str, tuple[Path, str]]:
    """Each broken model file, with a phrase its error message must contain."""
    head = real_header(smollm_path)
    size = SMOLLM["size"]
    tokens_count_at = head.index(gguf_string("tokenizer.ggml.tokens")) + len(gguf_string("tokenizer.ggml.tokens")) + 8
    files = {
        "html-error-page": ((tmp / "html.gguf"), b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                            b"<body><h1>Not Found</h1></body></html>\n", "HTML page"),
        "safetensors": (tmp / "model.gguf", safetensors_bytes(), "safetensors"),
        "empty": (tmp / "empty.gguf", b"", "wrong magic"),
        "truncated-header": (tmp / "cut-header.gguf", head[:300_000], "truncated header"),
        "truncated-data": (tmp / "cut-data.gguf", None, "truncated: tensor data needs"),
        "string-past-end": (tmp / "string.gguf", head[:24] + struct.pack("<Q", 1 << 40) + head[32:], "past the end"),
        "array-past-end": (tmp / "array.gguf",
                           head[:tokens_count_at] + struct.pack("<Q", 10**12) + head[tokens_count_at + 8:], "cannot fit"),
        "tensor-count-past-end": (tmp / "count.gguf", head[:8] + struct.pack("<Q", 999_999) + head[16:600_000],
                                  "cannot fit"),
        "gguf-v1": (tmp / "v1.gguf", head[:4] + struct.pack("<I", 1) + head[8:], "version 1 is obsolete"),
        "gguf-v99": (tmp / "v99.gguf", head[:4] + struct.pack("<I", 99) + head[8:], "unknown GGUF version 99"),
    }
    out = {}
    for name, (path, data, phrase) in files.items():
        if name == "truncated-data":
            sparse_model(path, head, size - 1_000_000)
        elif data is not None and len(data) >= len(head):
            sparse_model(path, data, size)
        else:
            path.write_bytes(data)
        out[name] = (path, phrase)
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory, smollm_path):
    return broken_files(tmp_path_factory.mktemp("broken"), smollm_path)


CASES = ["html-error-page", "safetensors", "empty", "truncated-header", "truncated-data", "string-past-end",
         "array-past-end", "tensor-count-past-end", "gguf-v1", "gguf-v99"]


def assert_one_clean_error(r, phrase: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("error: ")] == [lines[0]], r.stderr
    assert phrase in lines[0], r.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("case", CASES)
def test_broken_file_is_refused_by_read_header(broken, case):
    path, phrase = broken[case]
    with pytest.raises(GGUFError) as exc:
        read_header(path)
    assert phrase in exc.value.message and str(path) in exc.value.message


@pytest.mark.model
@pytest.mark.parametrize("case", ["html-error-page", "safetensors", "truncated-data", "array-past-end", "gguf-v1"])
def test_show_refuses_a_broken_file(broken, cli_env, case):
    path, phrase = broken[case]
    assert_one_clean_error(run_chatllm(["show", str(path)], cli_env), phrase)


@pytest.mark.model
@pytest.mark.parametrize("case", CASES)
def test_ask_refuses_a_broken_file_before_llama_cpp_loads_it(broken, cli_env, case):
    path, phrase = broken[case]
    r = run_chatllm(["ask", "-m", str(path), "hi"], cli_env)
    assert_one_clean_error(r, phrase)
    assert "llama.cpp could not load" not in r.stderr  # refused by the header check, not by llama.cpp


@pytest.mark.model
@pytest.mark.parametrize("keep_mtime", [True, False], ids=["same-size-same-mtime", "same-size-new-mtime"])
def test_corrupt_cached_file_is_found_by_sha256_and_fetched_again_on_pull(hub_env, hub, keep_mtime):
    assert run_chatllm(["pull", "smollm2-135m"], hub_env).returncode == 0
    [blob] = Path(hub_env["HF_HOME"]).rglob("blobs/*")
    st_before = blob.stat()
    with open(blob, "r+b") as fh:  # bit rot in the tensor data: the header is still fine
        fh.seek(50_000_000)
        chunk = fh.read(4096)
        fh.seek(50_000_000)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    if keep_mtime:
        os.utime(blob, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    assert blob.stat().st_size == SMOLLM["size"]
    gets = hub.count("GET", "/resolve/")

    r = run_chatllm(["pull", "smollm2-135m"], hub_env)
    assert r.returncode == 0, r.stderr
    assert "sha256 mismatch" in r.stderr and "downloading it again" in r.stderr and "Traceback" not in r.stderr
    assert hub.count("GET", "/resolve/") == gets + 1
    [blob] = Path(hub_env["HF_HOME"]).rglob("blobs/*")
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == SMOLLM["sha256"]


# -- llama.cpp's own GGUF reader as the oracle -------------------------------------------------------


class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def _ggml_base() -> ctypes.CDLL:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec and spec.origin
    [lib] = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "lib", "libggml-base.*")))[:1]
    ggml = ctypes.CDLL(lib)
    ggml.gguf_init_from_file.restype = ctypes.c_void_p
    ggml.gguf_init_from_file.argtypes = [ctypes.c_char_p, _InitParams]
    for name, res, args in [("gguf_get_version", ctypes.c_uint32, [ctypes.c_void_p]),
                            ("gguf_get_n_kv", ctypes.c_int64, [ctypes.c_void_p]),
                            ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
                            ("gguf_get_data_offset", ctypes.c_size_t, [ctypes.c_void_p]),
                            ("gguf_get_alignment", ctypes.c_size_t, [ctypes.c_void_p]),
                            ("gguf_get_tensor_size", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                            ("gguf_free", None, [ctypes.c_void_p])]:
        getattr(ggml, name).restype = res
        getattr(ggml, name).argtypes = args
    return ggml


def _summary(path: Path) -> dict | None:
    ggml = _ggml_base()
    ctx = ggml.gguf_init_from_file(str(path).encode(), _InitParams(True, None))
    if not ctx:
        return None
    align = ggml.gguf_get_alignment(ctx)
    sizes = [ggml.gguf_get_tensor_size(ctx, i) for i in range(ggml.gguf_get_n_tensors(ctx))]
    out = {"version": ggml.gguf_get_version(ctx), "n_kv": ggml.gguf_get_n_kv(ctx), "n_tensors": len(sizes),
           "data_offset": ggml.gguf_get_data_offset(ctx), "data_size": sum((s + align - 1) // align * align for s in sizes)}
    ggml.gguf_free(ctx)
    return out


def llama_cpp_reads(path: Path) -> dict | None | str:
    """What llama.cpp's GGUF reader makes of the file: a summary, None if it refuses it, or how it crashed.

    It runs in a forked child, so an abort or a segfault in llama.cpp fails the test instead of killing pytest.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.close(rfd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)  # llama.cpp logs why it refuses a file
            os.write(wfd, json.dumps(_summary(path)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 1 << 16):
        data += chunk
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"llama.cpp crashed with signal {os.WTERMSIG(status)}"
    if os.WEXITSTATUS(status) != 0:
        return f"the oracle failed with exit {os.WEXITSTATUS(status)}"
    return json.loads(data)


def _event(label: str) -> None:
    if currently_in_test_context():  # hypothesis statistics (--hypothesis-show-statistics), in property tests only
        event(label)


def check_against_llama_cpp(path: Path) -> bool:
    """The property: read_header refuses with a ChatllmError, or llama.cpp reads exactly what it accepted."""
    try:
        info = read_header(path)
    except ChatllmError as err:
        _event("refused: " + err.message.split("GGUF model: ")[-1].split(" ")[0])
        return False
    _event("accepted")
    theirs = llama_cpp_reads(path)
    assert isinstance(theirs, dict), f"read_header accepted a file llama.cpp refuses: {theirs}"
    ours = {"version": info.version, "n_kv": theirs["n_kv"], "n_tensors": info.tensor_count,
            "data_offset": info.data_offset, "data_size": info.data_size}
    if info.tensor_count == 0:  # no data section: llama.cpp does not pad to the alignment then
        ours["data_offset"] = theirs["data_offset"]
    assert ours == theirs
    assert info.data_offset + info.data_size <= info.size  # the tensor data is inside the file
    return True


def test_the_oracle_reads_the_real_files(smollm_path, gemma_path):
    for path in (smollm_path, gemma_path):
        assert check_against_llama_cpp(path)
    assert read_header(smollm_path).data_offset == HEADER_BYTES


# -- property tests ----------------------------------------------------------------------------------

_INTERESTING_U64 = [0, 1, 2, 3, 7, 8, 31, 32, 255, 4096, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63,
                    2**64 - 1]


def _mutation():
    # Counts and the first keys live in the first bytes; token strings (and their lengths) fill the rest.
    pos = st.one_of(st.integers(0, 64), st.integers(64, 2048), st.integers(2048, 65_535))
    return st.one_of(
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("byte"), pos, st.integers(0x21, 0x7E)),
        st.tuples(st.just("u64"), pos, st.sampled_from(_INTERESTING_U64)),
        st.tuples(st.just("u32"), pos, st.sampled_from([0, 1, 2, 3, 4, 8, 9, 12, 13, 2**31, 2**32 - 1])),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=32)),
        st.tuples(st.just("truncate"), st.integers(0, HEADER_BYTES + 2_000_000), st.just(0)),
    )


def _apply(data: bytearray, mutation) -> tuple[bytearray, int | None]:
    kind, pos, arg = mutation
    pos = min(pos, len(data))
    if kind == "byte" and pos < len(data):
        data[pos] = arg
    elif kind == "u64":
        data[pos : pos + 8] = struct.pack("<Q", arg)
    elif kind == "u32":
        data[pos : pos + 4] = struct.pack("<I", arg)
    elif kind == "delete":
        del data[pos : pos + arg]
    elif kind == "insert":
        data[pos:pos] = arg
    elif kind == "truncate":
        return data, pos
    return data, None


@pytest.fixture(scope="module")
def header_bytes(smollm_path) -> bytes:
    return real_header(smollm_path)


@pytest.fixture(scope="module")
def header_parts(smollm_path) -> dict:
    return split_header(smollm_path)


_VALUES = st.one_of(st.text(max_size=40), st.integers(-(2**31), 2**32 - 1), st.booleans(), st.floats(width=32),
                    st.lists(st.text(max_size=8), max_size=5), st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5))


def _kv_edit():
    """Drop a key, give it a value of another type (or a new value), or add a key."""
    return st.one_of(
        st.tuples(st.just("drop"), st.integers(0, 40), st.none()),
        st.tuples(st.just("value"), st.integers(0, 40), _VALUES),
        st.tuples(st.just("add"), st.sampled_from(["general.alignment", "tokenizer.ggml.bos_token_id", "x.y"]), _VALUES),
    )


def _edit_kvs(kvs: list[tuple[str, bytes]], edits) -> list[tuple[str, bytes]]:
    kvs = list(kvs)
    for kind, where, value in edits:
        if kind == "add":
            kvs.append((where, encode_value(value)))
        elif kvs:
            i = where % len(kvs)
            if kind == "drop":
                del kvs[i]
            else:
                kvs[i] = (kvs[i][0], encode_value(value))
    return kvs


@pytest.mark.model
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(_kv_edit(), max_size=3), mutations=st.lists(_mutation(), max_size=3))
def test_mutated_real_headers_never_crash_and_never_fool_the_check(header_parts, tmp_path, edits, mutations):
    parts = header_parts
    header = build_header(parts["version"], parts["n_tensors"], _edit_kvs(parts["kvs"], edits), parts["infos"],
                          parts["alignment"])
    data, cut = bytearray(header), None
    for m in mutations:
        data, c = _apply(data, m)
        cut = c if c is not None else cut
    path = tmp_path / "mutant.gguf"
    sparse_model(path, bytes(data), SMOLLM["size"] - HEADER_BYTES + len(data))
    if cut is not None:
        os.truncate(path, min(cut, path.stat().st_size))
    check_against_llama_cpp(path)


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@st.composite
def random_gguf(draw) -> bytes:
    """A GGUF assembled from random parts: mostly well-formed, with occasional lies in versions, counts, lengths,
    types, names, shapes and offsets (each lie is rare, so some files are valid and reach llama.cpp's reader)."""

    def lie() -> bool:
        return draw(st.integers(0, 11)) == 0

    version = draw(st.sampled_from([0, 1, 4, 0x03000000, 2**32 - 1])) if lie() else draw(st.sampled_from([2, 3]))
    kvs = []
    for i in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(["", "a\x00b", "general.k0"])) if lie() else f"general.k{i}"
        vtype = draw(st.sampled_from([13, 2**31])) if lie() else draw(st.sampled_from(list(_SCALAR_SIZES) + [STRING, ARRAY]))
        if vtype == STRING:
            text = draw(st.binary(max_size=20))
            n = draw(st.sampled_from([len(text) + 5, 2**63])) if lie() else len(text)
            body = struct.pack("<Q", n) + text
        elif vtype == ARRAY:
            itype = draw(st.sampled_from([ARRAY, 13])) if lie() else draw(st.sampled_from([UINT32, STRING, FLOAT32]))
            n = draw(st.integers(0, 4))
            items = b"".join(gguf_string(f"t{j}") if itype == STRING else struct.pack("<I", j) for j in range(n))
            body = struct.pack("<IQ", itype, draw(st.sampled_from([n + 1, 2**40])) if lie() else n) + items
        elif vtype in _SCALAR_SIZES:
            body = draw(st.binary(min_size=_SCALAR_SIZES[vtype], max_size=_SCALAR_SIZES[vtype]))
        else:
            body = draw(st.binary(max_size=9))
        kvs.append((key, struct.pack("<I", vtype) + body))
    alignment = 32
    if draw(st.booleans()):
        atype = draw(st.sampled_from([UINT64, BOOL, INT32])) if lie() else UINT32
        value = draw(st.sampled_from([0, 3, 2**31 + 1])) if lie() else draw(st.sampled_from([1, 8, 16, 32, 64]))
        fmt = {UINT32: "<I", UINT64: "<Q", BOOL: "<?", INT32: "<i"}[atype]
        if atype == INT32 and value >= 2**31:
            value = -value % 2**31  # an int32 cannot hold it: lie with a negative alignment instead
        kvs.append(("general.alignment", struct.pack("<I", atype) + struct.pack(fmt, value if atype != BOOL else True)))
        if atype == UINT32 and value and not value & (value - 1):
            alignment = value
    if draw(st.booleans()):
        n_tok = draw(st.integers(1, 4))
        kvs.append(("tokenizer.ggml.tokens", struct.pack("<IIQ", ARRAY, STRING, n_tok)
                    + b"".join(gguf_string(f"<{j}>") for j in range(n_tok))))
        n_sc = draw(st.sampled_from([n_tok - 1, n_tok + 1])) if lie() else n_tok
        kvs.append(("tokenizer.ggml.scores", struct.pack("<IIQ", ARRAY, FLOAT32, n_sc) + b"\x00" * 4 * n_sc))
        eos = draw(st.sampled_from([n_tok, 2**31])) if lie() else draw(st.integers(0, n_tok - 1))
        kvs.append(("tokenizer.ggml.eos_token_id", struct.pack("<II", UINT32, eos)))
    infos, offset, count = b"", 0, draw(st.integers(0, 3))
    for i in range(count):
        name = draw(st.sampled_from(["dup", "x" * 64, "t0.weight", "a\x00b"])) if lie() else f"t{i}.weight"
        ggml_type = draw(st.sampled_from([4, 31, 43, 1000])) if lie() else draw(st.sampled_from([0, 1, 2, 8, 12, 30, 39]))
        block = GGML_TYPES.get(ggml_type, ("", 1, 1))[1]
        n_dims = draw(st.sampled_from([0, 5, 6])) if lie() else draw(st.integers(1, 4))
        dims = [block * draw(st.integers(1, 3))] + [draw(st.integers(1, 3)) for _ in range(n_dims - 1)]
        if lie() and dims:
            dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from([0, -1, 3, 2**62, 2**63 - 1]))
        declared = draw(st.sampled_from([offset + 1, 0, 2**63])) if lie() else offset
        infos += tensor_info(name, dims, ggml_type, declared)
        elements = 1
        for d in dims:
            elements *= max(d, 0)
        _, blk, blk_bytes = GGML_TYPES.get(ggml_type, ("", 1, 4))
        offset += (min(elements, 1 << 16) // blk * blk_bytes + alignment - 1) // alignment * alignment
    header = build_header(version, 0, kvs, infos, alignment)
    n_tensors = draw(st.sampled_from([count + 1, 2**40, 2**63])) if lie() else count
    header = header[:8] + struct.pack("<Q", n_tensors) + header[16:]
    if lie():
        header = header[:16] + struct.pack("<Q", draw(st.sampled_from([len(kvs) + 1, 2**40]))) + header[24:]
    data_len = draw(st.sampled_from([offset - 1, 0, offset // 2])) if lie() else offset
    return header + b"\x00" * max(0, data_len)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=random_gguf())
def test_random_headers_never_crash_and_never_fool_the_check(tmp_path, data):
    path = tmp_path / "random.gguf"
    path.write_bytes(data)
    check_against_llama_cpp(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), prefix=st.sampled_from([b"", b"GGUF", b"GGUF\x03\x00\x00\x00"]))
def test_random_bytes_never_crash_the_check(tmp_path, data, prefix):
    path = tmp_path / "noise.gguf"
    path.write_bytes(prefix + data)
    check_against_llama_cpp(path)


def test_tiny_valid_file_is_accepted_and_agrees_with_llama_cpp(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(tiny_gguf())
    assert check_against_llama_cpp(path)
    info = read_header(path)
    assert info.metadata["general.name"] == "tiny" and info.n_params == 32


def test_alignment_of_the_wrong_type_is_refused_like_llama_cpp_does(tmp_path):
    key = gguf_string("general.alignment")
    good = tiny_gguf({"general.alignment": 32})
    assert good[24 : 24 + len(key) + 8] == key + struct.pack("<II", UINT32, 32)
    path = tmp_path / "align.gguf"
    path.write_bytes(good[:24] + key + struct.pack("<IQ", UINT64, 32) + good[24 + len(key) + 8 :])
    with pytest.raises(GGUFError, match="uint32"):
        read_header(path)
    assert llama_cpp_reads(path) is None


# -- the full llama.cpp model load as the oracle -------------------------------------------------------

_LOADER = r"""
import os, sys
out = os.fdopen(os.dup(1), "w")
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
import llama_cpp
from llama_cpp import _internals
for line in sys.stdin:
    try:
        model = _internals.LlamaModel(path_model=line.strip(), params=llama_cpp.llama_model_default_params(),
                                      verbose=False)
        model.close()
        result = "loaded"
    except Exception:
        result = "refused"
    out.write(result + "\n")
    out.flush()
"""


class LlamaLoader:
    """A worker process that loads models with llama.cpp one by one; if llama.cpp aborts, we learn how."""

    def __init__(self):
        self.proc = None

    def load(self, path: Path) -> str:
        """'loaded', 'refused' (a clean llama.cpp error), or 'crashed: ...'."""
        import subprocess
        import sys

        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-c", _LOADER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer:
            return answer
        code = self.proc.wait()
        self.proc = None
        return f"crashed: exit {code}"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def llama_loader():
    loader = LlamaLoader()
    yield loader
    loader.close()


def _variant(tmp_path: Path, parts: dict, changes: dict) -> Path:
    kvs = [(k, encode_value(changes[k]) if k in changes else raw) for k, raw in parts["kvs"]]
    header = build_header(parts["version"], parts["n_tensors"], kvs, parts["infos"], parts["alignment"])
    return sparse_model(tmp_path / "variant.gguf", header, SMOLLM["size"] - HEADER_BYTES + len(header))


@pytest.mark.model
def test_layer_count_that_would_abort_llama_cpp_is_refused_first(tmp_path, header_parts, llama_loader):
    path = _variant(tmp_path, header_parts, {"llama.block_count": 513})
    assert llama_loader.load(path).startswith("crashed")  # what read_header protects against
    with pytest.raises(GGUFError, match="block_count = 513"):
        read_header(path)
    assert llama_loader.load(_variant(tmp_path, header_parts, {})) == "loaded"


_HPARAM_VALUES = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 512, 513, 65_535, 2**31 - 1, 2**32 - 1, -1, -(2**31)]),
                           st.sampled_from(["", "x", "llama"]), st.sampled_from([0.0, -1.0, 1e30, float("nan")]),
                           st.lists(st.sampled_from([0, 1, 9, 2**31 - 1]), max_size=40))


@pytest.mark.model
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_whatever_passes_the_check_loads_in_llama_cpp_without_crashing(tmp_path, header_parts, llama_loader, data):
    keys = [k for k, _ in header_parts["kvs"]]
    changes = data.draw(st.dictionaries(st.sampled_from(keys), _HPARAM_VALUES, min_size=1, max_size=3))
    path = _variant(tmp_path, header_parts, changes)
    try:
        read_header(path)
    except ChatllmError:
        event("refused by read_header")
        return
    result = llama_loader.load(path)
    event(result)
    assert not result.startswith("crashed"), f"llama.cpp crashed on a file read_header accepted: {changes}"
