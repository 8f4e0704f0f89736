"""Model management: `pull`, `models`/`ls`, `show`, `rm` and `info`."""

from typing import Annotated, Optional

import typer

from chatllm.cli.context import command_context
from chatllm.output import Output

ModelArg = Annotated[str, typer.Argument(help="Alias, hf:owner/repo:QUANT, hf:owner/repo/file.gguf[@rev] or a .gguf path.",
                                         show_default=False)]


def _human(size: Optional[int]) -> str:
    if size is None:
        return ""
    n = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def pull(
    cli: typer.Context,
    model: ModelArg,
    force: Annotated[bool, typer.Option("--force", help="Download again even if present and verified.")] = False,
) -> None:
    """Download a model from the Hugging Face Hub and verify its sha256 and GGUF header."""
    from chatllm.engines.loader import resolve_spec
    from chatllm.models import download

    context = command_context(cli)
    out, settings = context.out, context.settings
    spec = resolve_spec(settings, model)
    if spec.local_path is not None:
        out.status(f"{spec.local_path} is a local file: nothing to pull")
        return
    if spec.url:
        out.status(f"{spec.name} runs on the server at {spec.url}: nothing to pull")
        return
    path = download.ensure_model(spec, settings, out, force=force, verify=True)
    out.status(f"ready: {spec.name} -> {path}")


def list_models(
    cli: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the registry's models (remote ones too) and the GGUF files already downloaded."""
    from chatllm.models import download
    from chatllm.models.registry import load_registry

    context = command_context(cli)
    out, settings = context.out, context.settings
    registry = load_registry(settings)
    rows = download.inventory({a: s for a, s in registry.items() if not s.is_remote}, settings)
    rows += [{"name": alias, "remote": True, "url": s.url, "model": s.remote_model, "params": s.params, "quant": "",
              "size": None, "downloaded": False, "path": None, "default": s.default, "description": s.description,
              "thinking": s.thinking, "tools": s.tools, "ram_gb": None}
             for alias, s in registry.items() if s.is_remote]
    for row in rows:
        row["kind"] = registry[row["name"]].kind or "chat" if row["name"] in registry else "chat"
    out.result(rows, lambda: out.table(
        ["model", "params", "quant", "size", "RAM", "can", "downloaded", "path"],
        [[r["name"] + (" (default)" if r.get("default") else "") + (" (embedding)" if r["kind"] == "embedding" else ""),
          r["params"], r["quant"], _human(r["size"]), f"{r['ram_gb']:g} GB" if r.get("ram_gb") else "", _abilities(r),
          "remote" if r.get("remote") else "yes" if r["downloaded"] else "no",
          (f"{r['url']}#{r['model']}" if r.get("model") else r["url"]) if r.get("remote") else r["path"] or ""] for r in rows],
    ))


def _abilities(row: dict) -> str:
    """What a model can do beyond chat: think (a reasoning trace), call tools."""
    return ", ".join(word for word, key in (("think", "thinking"), ("tools", "tools")) if row.get(key))



def show(
    cli: typer.Context,
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a model's metadata, read from the GGUF header without loading the weights (or asked of its server)."""
    from chatllm.engines.loader import model_path, resolve_spec
    from chatllm.models import download
    from chatllm.models.gguf_header import format_params, read_header
    from chatllm.storage.file_hashes import file_sha256

    context = command_context(cli)
    out, settings = context.out, context.settings
    spec = resolve_spec(settings, model)
    if spec.is_remote:
        _show_remote(spec, out)
        return
    path = spec.local_path or download.cached_path(spec, settings)
    if path is None:
        path = model_path(spec, settings, out)
    info = read_header(path)
    data = {
        "model": spec.name,
        "repo": spec.repo,
        "file": spec.file or path.name,
        "path": str(path),
        "size": info.size,
        "sha256": file_sha256(path, settings.home),
        "architecture": info.architecture,
        "parameters": info.n_params,
        "context_length": info.context_length,
        "quantization": info.quantization,
        "chat_template": info.chat_template is not None,
        "chat_template_sha256": info.chat_template_hash,
        **_format_fields(info.chat_template),
        "gguf_version": info.version,
        "tensors": info.tensor_count,
        "description": spec.description,
        "license": spec.license,
    }

    def human() -> None:
        shown = dict(data, parameters=f"{format_params(info.n_params)} ({info.n_params:,})",
                     size=f"{_human(info.size)} ({info.size:,} bytes)",
                     chat_template=f"yes ({info.chat_template_hash})" if info.chat_template else "no (use `generate`, or --chat-format)")
        del shown["chat_template_sha256"]
        _print_fields(out, shown)

    out.result(data, human)


def _format_fields(template: Optional[str]) -> dict:
    """How the model writes reasoning and tool calls, as its template says (nothing without a template)."""
    if not template:
        return {}
    from chatllm.engines.chat_formats.formats import detect_format

    fmt = detect_format(template)
    return {"reasoning": fmt.reasoning, "tool_calls": fmt.tools + (" (its template's own)" if fmt.native_tools else "")}


def _show_remote(spec, out: Output) -> None:
    from chatllm.engines.remote.chat_api_engine import describe_remote as describe
    from chatllm.models.gguf_header import format_params

    data = describe(spec)

    def human() -> None:
        shown = dict(data)
        if isinstance(shown["parameters"], int):
            shown["parameters"] = f"{format_params(shown['parameters'])} ({shown['parameters']:,})"
        if isinstance(shown["size"], int):
            shown["size"] = f"{_human(shown['size'])} ({shown['size']:,} bytes)"
        shown["remote"] = "yes: the server runs it, nothing is downloaded"
        shown["served_models"] = ", ".join(shown["served_models"])
        sha = shown.pop("chat_template_sha256")
        shown["chat_template"] = f"yes ({sha})" if shown["chat_template"] else "no (use `generate`)"
        shown["tls_verify"] = None if shown["tls_verify"] else "off"
        _print_fields(out, shown, width=18)

    out.result(data, human)


def _print_fields(out: Output, data: dict, width: int = 16, skip_empty: bool = True) -> None:
    """One `key  value` line per field, aligned."""
    for key, value in data.items():
        if not skip_empty or value not in (None, ""):
            out.line(f"{key:<{width}}{value}")


def rm(
    cli: typer.Context,
    model: ModelArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove a model's downloaded files (and nothing else)."""
    from chatllm.engines.loader import resolve_spec
    from chatllm.errors import ChatllmError
    from chatllm.models import download

    context = command_context(cli)
    out, settings = context.out, context.settings
    spec = resolve_spec(settings, model)
    if spec.local_path is not None:
        raise ChatllmError(f"{spec.local_path} is your own file, not a download", "delete it yourself if you mean to")
    if spec.url:
        raise ChatllmError(f"{spec.name} runs on the server at {spec.url}: nothing is downloaded",
                           "remove its entry from your models.toml to forget it")
    files = download.downloaded_files(spec, settings)
    if not files:
        out.status(f"{spec.name} is not downloaded: nothing to remove")
        return
    total = sum(p.stat().st_size for p in {f.resolve() for f in files if f.exists()})  # a snapshot link and its blob once
    if not yes:
        if not out.confirm(f"remove {spec.name} ({_human(total)})?"):
            raise ChatllmError("not removed", "pass -y to remove without asking")
    download.remove_files(files, settings)
    out.status(f"removed {spec.name} ({_human(total)})")


def info(cli: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Versions, the compute backend this build supports, threads, paths and defaults."""
    import platform

    from chatllm import __version__
    from chatllm.engines.llamacpp.devices import extra_buffers_safe
    from chatllm.engines.llamacpp.llamacpp_engine import build_info
    from chatllm.engines.llamacpp.threads import physical_cores
    from chatllm.engines.loader import resolve_spec

    context = command_context(cli)
    out, settings = context.out, context.settings
    build = build_info()
    try:
        default_model = resolve_spec(settings).name
    except Exception as exc:  # an unknown CHATLLM_MODEL should not hide the rest of the report
        default_model = f"{settings.model} ({exc})"
    data = {
        "chatllm": __version__,
        "python": platform.python_version(),
        "llama_cpp_python": build["llama_cpp_python"],
        "backend": build["backend"],
        "gpu_offload": build["gpu_offload"],
        "threads": settings.n_threads or physical_cores(),
        "default_model": default_model,
        "device": settings.device,
        "home": str(settings.home),
        "config_dir": str(settings.config_dir),
        "models_cache": str(settings.hub_cache),
        "hf_endpoint": settings.hf_endpoint,
        "hf_token": "set" if settings.hf_token else "not set",
        "offline": settings.offline,
        "weight_repacking": "on" if extra_buffers_safe(build["system_info"]) else "on, without llama.cpp's AMX buffers (they crash)",
        "cpu_features": build["system_info"],
    }
    from chatllm.cli.kv_cache import cache_summary

    data.update(cache_summary(settings))
    out.result(data, lambda: _print_fields(out, data, width=18, skip_empty=False))
