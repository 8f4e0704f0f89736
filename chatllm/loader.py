"""From a MODEL argument to a loaded Engine: registry lookup, download if needed, header check, load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chatllm.output import Output
from chatllm.registry import ModelSpec, default_alias, load_registry, parse_ref
from chatllm.settings import DEFAULT_MODEL, Settings

if TYPE_CHECKING:
    from chatllm.engine import Engine


def resolve_spec(settings: Settings, ref: str | None = None) -> ModelSpec:
    """The ModelSpec for ref (or the configured default model)."""
    registry = load_registry(settings)
    ref = ref or settings.model
    if ref == DEFAULT_MODEL and ref not in registry:
        ref = default_alias(registry)
    return parse_ref(ref, registry)


def model_path(spec: ModelSpec, settings: Settings, out: Output) -> Path:
    """A verified local file for spec, pulled first when missing (unless offline)."""
    if spec.local_path is not None:
        return spec.local_path
    from chatllm import download

    return download.ensure_model(spec, settings, out)


def load_engine(settings: Settings, out: Output, ref: str | None = None) -> "Engine":
    """Resolve, fetch, check and load the model: the one model load of the process."""
    from chatllm.gguf import read_header

    spec = resolve_spec(settings, ref)
    path = model_path(spec, settings, out)
    info = read_header(path)
    from chatllm.engine import Engine

    n_ctx = settings.n_ctx or spec.context or min(info.context_length or 8192, 8192)
    return Engine(
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
