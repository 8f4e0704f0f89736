"""`chatllm serve`: a verified local model behind an OpenAI-compatible server (llama-server, else llama-cpp-python's)."""

import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from chatllm.cli.context import command_context
from chatllm.cli.options import Ctx, Model, Offline, Threads
from chatllm.errors import UsageError

DEFAULT_PORT = 8080


def serve(
    cli: typer.Context,
    model: Model = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback is reachable from other "
                                                     "machines.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = DEFAULT_PORT,
    parallel: Annotated[int, typer.Option("--parallel", help="Requests served at once (llama-server slots), each with "
                                                             "--ctx tokens.")] = 1,
    ctx: Ctx = None,
    threads: Threads = None,
    api_key_env: Annotated[Optional[str], typer.Option(
        "--api-key-env", metavar="VAR", help="Require the API key held in $VAR from every client (the key itself never goes "
                                             "on a command line).", show_default=False)] = None,
    offline: Offline = False,
) -> None:
    """Serve a local model over an OpenAI-compatible API until Ctrl-C; other tools (and chatllm -m openai:URL#MODEL) use it."""
    context = command_context(cli)
    settings, out = context.settings, context.out
    if not 1 <= parallel <= 256:
        raise UsageError(f"--parallel must be 1 to 256, not {parallel}", "for example --parallel 4")
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env) or not key:
            raise UsageError(f"--api-key-env names ${api_key_env}, which is not set", f"export {api_key_env}=... first")
    from chatllm.engines.loader import model_path, resolve_spec
    from chatllm.models import serve as server
    from chatllm.models.gguf_header import read_header
    from chatllm.settings import DEFAULT_CTX

    kind, command = server.find_server()  # no server to run: said before any download
    server.check_port(host, port)
    spec = resolve_spec(settings)
    if spec.is_remote:
        raise UsageError(f"{spec.name} already runs on its server ({spec.url})", "serve a local model: an alias, hf:... or a .gguf path")
    path = model_path(spec, settings, out)  # pulled and sha256-checked through the registry, as for every command
    info = read_header(path)
    n_ctx = settings.n_ctx or spec.context or min(info.context_length or DEFAULT_CTX, DEFAULT_CTX)
    alias = spec.alias or Path(spec.file or path.name).stem
    from chatllm.engines.llamacpp.devices import extra_buffers_safe
    from chatllm.engines.llamacpp.llamacpp_engine import build_info
    from chatllm.engines.llamacpp.threads import default_threads

    build = build_info()
    plan = server.plan_server(kind, command, path, alias, host=host, port=port, parallel=parallel, ctx=n_ctx,
                              threads=settings.n_threads or default_threads(), api_key=key,
                              repack=extra_buffers_safe(build["system_info"]), gpu=build["gpu_offload"], warn=out.warn)
    if not server.is_loopback(host):
        out.warn(f"listening on {host}: anyone who can reach this machine on port {port} can use the model"
                 + ("" if key else " (add --api-key-env VAR to require a key)"))
    log = None if settings.verbose else settings.home / "logs" / f"serve-{port}.log"
    running = server.RunningServer(plan, log).start()
    try:
        out.status(f"starting {kind} on {path.name} ({parallel} slot{'s' if parallel > 1 else ''} of {n_ctx} tokens)"
                   + (f", log: {log}" if log else ""))
        running.wait_ready()
        out.line(plan.url)
        out.line(f"-m {plan.ref}")
        out.status(f"serving {alias} at {plan.url}; use it with: chatllm ask -m {plan.ref} \"...\"; Ctrl-C stops it")
        raise running.exit_error(running.wait())
    finally:
        running.stop()
