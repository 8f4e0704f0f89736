"""From a MODEL argument to a loaded Engine: registry lookup, download if needed, header check, load (or a server)."""

from __future__ import annotations

from pathlib import Path

from chatllm.errors import ChatllmError
from chatllm.output import Output
from chatllm.runtime.contract import Engine
from chatllm.runtime.registry import ModelSpec, default_alias, load_registry, parse_ref
from chatllm.settings import DEFAULT_CTX, DEFAULT_MODEL, Settings


def resolve_spec(settings: Settings, ref: str | None = None) -> ModelSpec:
    """The ModelSpec for ref (or the configured default model)."""
    registry = load_registry(settings)
    ref = ref or settings.model
    if ref == DEFAULT_MODEL and ref not in registry:
        ref = default_alias(registry)
    return parse_ref(ref, registry)


def model_path(spec: ModelSpec, settings: Settings, out: Output) -> Path:
    """A verified local file for spec, pulled first when missing (unless offline)."""
    if spec.is_remote:
        raise ChatllmError(f"{spec.name} runs on its server ({spec.url}): there is no model file here",
                           "`chatllm show` asks the server about it")
    if spec.local_path is not None:
        return spec.local_path
    from chatllm.runtime import download

    return download.ensure_model(spec, settings, out)


def load_engine(settings: Settings, out: Output, ref: str | None = None) -> Engine:
    """Resolve, fetch, check and load the model: the one model load of the process."""
    spec = resolve_spec(settings, ref)
    if spec.is_remote:  # a server runs the model: nothing to download or check here
        from chatllm.runtime.remote import RemoteEngine

        return RemoteEngine.connect(spec, n_ctx=settings.n_ctx, chat_format=settings.chat_format)
    from chatllm.runtime.gguf import read_header

    path = model_path(spec, settings, out)
    info = read_header(path)
    from chatllm.runtime.llamacpp import LlamaCppEngine

    n_ctx = settings.n_ctx or spec.context or min(info.context_length or DEFAULT_CTX, DEFAULT_CTX)
    return LlamaCppEngine(
        path,
        n_ctx=n_ctx,
        n_threads=settings.n_threads,
        n_batch=settings.n_batch,
        device=settings.device,
        gpu_layers=settings.gpu_layers,
        chat_format=settings.chat_format or spec.chat_format,
        verbose=settings.verbose,
        name=spec.name,
    )
