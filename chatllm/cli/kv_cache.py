"""`chatllm cache`: the KV states saved on disk (list them, clear them), and their size for `chatllm info`."""

from typing import Annotated

import typer

from chatllm.cli.context import command_context
from chatllm.settings import Settings


def cache_summary(settings: Settings) -> dict:
    """Where the cache lives, what it takes and its cap: for `chatllm info`."""
    from chatllm.storage.kv_cache import KVCache, cache_dir, max_bytes_setting

    directory = cache_dir(settings)
    cap = max_bytes_setting()
    used = KVCache(directory, cap).total_bytes()
    return {"kv_cache": str(directory), "kv_cache_size": f"{used / 1e6:,.1f} MB of {cap / 1e6:,.0f} MB"
            + ("" if cap else " (off: CHATLLM_KV_CACHE_MAX=0)")}


cache_app = typer.Typer(
    help="The KV states saved on disk so `chat --continue` and repeated one-shots start warm: list them, `clear` them.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


@cache_app.callback()
def cache(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the saved KV states, most recently used first: model, tokens, size, what for, last use."""
    if ctx.invoked_subcommand is not None:
        return
    from chatllm.output import format_date, short_model
    from chatllm.storage.kv_cache import KVCache, cache_dir, max_bytes_setting

    context = command_context(ctx)
    out, settings = context.out, context.settings
    cap = max_bytes_setting()
    kv = KVCache(cache_dir(settings), cap, notice=out.warn)
    entries = list(reversed(kv.entries()))
    total = sum(e.size for e in entries)

    def human() -> None:
        if not entries:
            out.status(f"the KV cache is empty ({kv.directory}, cap {cap / 1e6:,.0f} MB)")
            return
        out.table(["model", "tokens", "MB", "for", "last used"],
                  [[short_model(e.model), len(e.tokens), f"{e.size / 1e6:,.1f}", e.slot or "one-shot prefix",
                    format_date(e.used)] for e in entries])
        out.status(f"{len(entries)} entries, {total / 1e6:,.1f} MB of {cap / 1e6:,.0f} MB in {kv.directory}")

    out.result({"directory": str(kv.directory), "bytes": total, "max_bytes": cap,
                "entries": [e.to_json() for e in entries]}, human)


@cache_app.command("clear")
def cache_clear(cli: typer.Context) -> None:
    """Delete every saved KV state (they are rebuilt as needed)."""
    from chatllm.storage.kv_cache import KVCache, cache_dir

    context = command_context(cli)
    out = context.out
    kv = KVCache(cache_dir(context.settings))
    count = kv.clear()
    out.status(f"removed {count} KV cache {'entry' if count == 1 else 'entries'} from {kv.directory}")
