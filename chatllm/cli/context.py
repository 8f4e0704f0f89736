"""One command context: the shared flags become settings, output and an engine factory once, for every command.

A command declares the shared flags it takes (the Annotated aliases in cli/options.py) and a `cli: typer.Context`
parameter; `command_context(cli)` reads every shared flag the command has from its parsed parameters, with the
global flags (given before the command) from the root, and checks them once. Nothing here is global or mutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from chatllm.errors import UsageError
from chatllm.output import Output
from chatllm.settings import Settings, load_settings

if TYPE_CHECKING:
    from chatllm.engines.contract import Engine

SAMPLING_FLAGS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "think", "reasoning_budget", "draft")


@dataclass(frozen=True)
class GlobalOptions:
    """The flags given before the command (`chatllm --debug ask ...`), kept on the root context."""

    debug: bool = False
    verbose: bool = False
    offline: bool = False
    flash_attn: str | None = None


class CommandContext:
    """What a command works with: its checked settings, its output, and the one way it loads models."""

    def __init__(self, settings: Settings, out: Output, *, warm_start: bool = True):
        self.settings = settings
        self.out = out
        self.warm_start = warm_start  # --no-cache turns it off: no KV state is loaded from or saved to disk

    def replace(self, **changes: Any) -> "CommandContext":
        """The same context with some settings changed."""
        return CommandContext(self.settings.replace(**changes), self.out, warm_start=self.warm_start)

    def load_engine(self, ref: str | None = None, *, embedding: bool = False) -> "Engine":
        """The model (this command's, or ref), downloaded and checked when needed, with warm starts unless --no-cache."""
        from chatllm.engines.loader import load_engine

        engine = load_engine(self.settings, self.out, ref, embedding=embedding)
        return engine if embedding else self._warm(engine)

    def load_engines(self, parallel: int | None = None, *, spare: bool = False,
                     local_default: int | None = None) -> "list[Engine]":
        """One engine per concurrent worker (several only on a server); see engines.loader.load_engines."""
        from chatllm.engines.loader import load_engines

        engines = load_engines(self.settings, self.out, parallel, spare=spare, local_default=local_default)
        return [self._warm(engines[0]), *engines[1:]] if len(engines) == 1 else engines

    def _warm(self, engine: "Engine") -> "Engine":
        if not self.warm_start:
            return engine
        from chatllm.engines.warm_start import with_warm_start
        from chatllm.storage.kv_cache import open_cache

        return with_warm_start(engine, open_cache(self.settings, self.out.warn))


def command_context(cli: typer.Context, *, as_json: bool | None = None, **overrides: Any) -> CommandContext:
    """The context of the running command: its shared flags (overrides win when not None) and the global ones."""
    params = dict(cli.params)
    params.update({k: v for k, v in overrides.items() if v is not None})
    glob = cli.obj if isinstance(cli.obj, GlobalOptions) else GlobalOptions()
    if params.get("reasoning_effort") is not None:  # an effort is a way of thinking: it wins over --think
        from chatllm.settings import THINK_EFFORTS, parse_think

        params["think"] = parse_think(params["reasoning_effort"], "--reasoning-effort")
        if params["think"] not in THINK_EFFORTS:
            raise UsageError(f"--reasoning-effort must be low, medium or high, not {params['reasoning_effort']!r}",
                             "for example --reasoning-effort low")
    threads = params.get("threads")
    if threads is not None and threads < 0:
        raise UsageError(f"--threads must be 0 (auto) or more, not {threads}", "for example --threads 4, or leave it out")
    settings = load_settings(
        model=params.get("model"), device=params.get("device"), gpu_layers=params.get("gpu_layers"),
        ctx=params.get("ctx"), threads=threads, offline=bool(params.get("offline")) or glob.offline,
        flash_attn=params.get("flash_attn") or glob.flash_attn, overflow=params.get("overflow"), verbose=glob.verbose,
        debug=glob.debug,
        **{key: params.get(key) for key in SAMPLING_FLAGS},
    )
    if params.get("chat_format"):
        settings = settings.replace(chat_format=params["chat_format"])
    if params.get("embed_model"):
        settings = settings.replace(embed_model=params["embed_model"])
    json_mode = bool(params.get("as_json")) if as_json is None else as_json
    return CommandContext(settings, Output(as_json=json_mode), warm_start=not params.get("no_cache"))
