"""From a MODEL argument to a loaded Engine: registry lookup, download if needed, header check, load (or a server)."""

from __future__ import annotations

from pathlib import Path

from chatllm.engines.contract import Engine
from chatllm.errors import ChatllmError, UsageError
from chatllm.models.registry import ModelSpec, default_alias, load_registry, parse_ref
from chatllm.output import Output
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
    from chatllm.models import download

    return download.ensure_model(spec, settings, out)


def load_engine(settings: Settings, out: Output, ref: str | None = None, *, embedding: bool = False,
                parallel: int | None = 1) -> Engine:
    """Resolve, fetch, check and load the model: the one model load of the process (embedding=True: for vectors);
    a local model decodes up to `parallel` sequences together in batches (None: a default for the device)."""
    from chatllm.models.model_kinds import EMBED_CTX, check_model_kind, declared_pooling

    spec = resolve_spec(settings, ref)
    if spec.is_remote:  # a server runs the model: nothing to download or check here
        check_model_kind(spec.name, spec.kind, None, embedding, header=False)
        from chatllm.engines.remote.chat_api_engine import connect_remote  # llama-server's engine, or the chat-completions one

        return connect_remote(spec, n_ctx=settings.n_ctx, chat_format=settings.chat_format)
    from chatllm.models.gguf_header import read_header

    path = model_path(spec, settings, out)
    info = read_header(path)
    check_model_kind(spec.name, spec.kind, declared_pooling(info.metadata), embedding)
    from chatllm.engines.llamacpp.llamacpp_engine import LlamaCppEngine

    n_ctx = settings.n_ctx or spec.context or min(info.context_length or DEFAULT_CTX, EMBED_CTX if embedding else DEFAULT_CTX)
    return LlamaCppEngine(
        path,
        n_ctx=n_ctx,
        n_threads=settings.n_threads,
        n_batch=settings.n_batch,
        device=settings.device,
        gpu_layers=settings.gpu_layers,
        flash_attn=settings.flash_attn,
        depth_hint=settings.context_hint,
        chat_format=settings.chat_format or spec.chat_format,
        verbose=settings.verbose,
        name=spec.name,
        embedding=embedding,
        parallel=1 if embedding else parallel,
    )


def load_engines(settings: Settings, out: Output, parallel: int | None = None, *, spare: bool = False,
                 local_default: int | None = None) -> list[Engine]:
    """One engine per concurrent worker: `parallel` (else the entry's `parallel`, else 1) connections to a server, one
    more with `spare` when there are several (for the caller's own thread); a local model gives one engine that
    decodes up to `parallel` sequences together (else the entry's, else `local_default`, else a default for the
    device: BatchGeneration)."""
    if parallel is not None and not 1 <= parallel <= 256:
        raise UsageError(f"--parallel must be 1 to 256, not {parallel}", "for example --parallel 4 (the server's slots)")
    spec = resolve_spec(settings)
    if not spec.is_remote:
        from chatllm.engines.llamacpp.multi_sequence import MAX_SEQS

        wanted_local = parallel or spec.parallel or local_default
        if wanted_local is not None and wanted_local >= MAX_SEQS:
            raise UsageError(f"--parallel {wanted_local} is more sequences than a local model decodes together",
                             f"use at most {MAX_SEQS - 1} with a local model")
        return [load_engine(settings, out, parallel=wanted_local)]
    wanted = parallel or spec.parallel or 1
    engines = [load_engine(settings, out)]
    try:
        while spec.is_remote and len(engines) < wanted + (spare and wanted > 1):
            engines.append(load_engine(settings, out))  # a connection of its own: engines keep per-call state
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines
