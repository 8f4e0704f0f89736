"""`chatllm history`: the saved conversations: list them, show one, delete some."""

from typing import Annotated

import typer

from chatllm.cli.context import command_context
from chatllm.errors import UsageError
from chatllm.settings import Settings

history_app = typer.Typer(
    help="Saved conversations: list them (id, model, first line, turns, date), `show ID` as markdown, `rm ID`.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def _store(settings: Settings):
    from chatllm.storage.conversations import Store

    return Store(settings.db_path)


@history_app.callback()
def history(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N conversations (0: all).")] = 0,
) -> None:
    """List saved conversations, most recent first: id, model, first line, turns, date."""
    if ctx.invoked_subcommand is not None:
        return
    if limit < 0:
        raise UsageError("--limit must be 0 or more", "0 shows all")
    from chatllm.output import format_date, short_model

    context = command_context(ctx)
    out = context.out
    store = _store(context.settings)
    try:
        rows = store.list(limit or None)
    finally:
        store.close()

    def human() -> None:
        if not rows:
            out.status("no saved conversations yet; start one with `chatllm chat`")
            return
        out.table(["id", "model", "first line", "turns", "date"],
                  [[r.id, short_model(r.model), r.title, r.turns, format_date(r.updated_at)] for r in rows])

    out.result([r.as_dict() for r in rows], human)


@history_app.command("show")
def history_show(
    cli: typer.Context,
    conv_id: Annotated[int, typer.Argument(metavar="ID", help="Conversation id from `chatllm history`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of markdown.")] = False,
) -> None:
    """Print one conversation as markdown (rendered in a terminal)."""
    from chatllm.tasks.chat.transcripts import conversation_json, transcript_markdown

    context = command_context(cli)
    out = context.out
    store = _store(context.settings)
    try:
        conv = store.load(conv_id)
    finally:
        store.close()
    kw = dict(model=conv.model, conv_id=conv.id, created_at=conv.created_at)
    out.result(conversation_json(conv.system, conv.exchanges, **kw),
               lambda: out.markdown(transcript_markdown(conv.system, conv.exchanges, **kw)))


@history_app.command("rm")
def history_rm(
    cli: typer.Context,
    conv_ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Conversation ids to delete.")],
) -> None:
    """Delete saved conversations (and their KV states saved on disk)."""
    from chatllm.storage.kv_cache import KVCache, cache_dir

    context = command_context(cli)
    out, settings = context.out, context.settings
    store = _store(settings)
    try:
        for conv_id in conv_ids:
            store.delete(conv_id)
            # its KV state holds the conversation's text too: it goes with it
            KVCache(cache_dir(settings), settings=settings).drop_slot(f"chat:{conv_id}")
            out.status(f"deleted conversation {conv_id}")
    finally:
        store.close()
