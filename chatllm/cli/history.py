"""`chatllm history`: the saved conversations: list them, show one (or its branches), search, export, import, delete."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from chatllm.cli.context import command_context
from chatllm.errors import UsageError
from chatllm.settings import Settings

history_app = typer.Typer(
    help="Saved conversations: list them (id, model, first line, turns, date), `show ID` as markdown (--tree: its "
         "branches), `search TEXT`, `export ID`, `import FILE`, `rm ID`.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def _store(settings: Settings, out=None):
    from chatllm.storage.conversations import Store

    store = Store(settings.db_path)
    _repairs(store, out)
    return store


def _repairs(store, out) -> None:
    """Say what the store found damaged and mended (its search index)."""
    if out is not None:
        for note in store.repairs:
            out.warn(note)
    store.repairs.clear()


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
    tree: Annotated[bool, typer.Option("--tree", help="Show the conversation's branches instead: the family it "
                                                        "belongs to, where each one forked.")] = False,
) -> None:
    """Print one conversation as markdown (rendered in a terminal), or with --tree its branches."""
    from chatllm.tasks.chat.transcripts import conversation_json, transcript_markdown

    context = command_context(cli)
    out = context.out
    store = _store(context.settings)
    try:
        if tree:
            _show_tree(out, store.tree(conv_id), conv_id)
            return
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


def _show_tree(out, nodes, current: int) -> None:
    """The branch tree: one line per conversation, drawn (human) or a flat list with parents (--json)."""
    from chatllm.output import format_date, short_model
    from chatllm.tasks.chat.branching import tree_rows

    rows = tree_rows(nodes)

    def human() -> None:
        for lead, node in rows:
            fork = f" (from #{node.parent_id} after turn {node.fork_seq})" if node.parent_id is not None else ""
            mark = " *" if node.id == current else ""
            out.line(f"{lead}{node.id}{mark}  {node.turns} turn{'' if node.turns == 1 else 's'}{fork}  "
                     f"{short_model(node.model)}  {format_date(node.updated_at)}  {node.title}")

    out.result([dict(node.as_dict(), depth=len(lead) // 3) for lead, node in rows], human)


@history_app.command("search")
def history_search(
    cli: typer.Context,
    text: Annotated[list[str], typer.Argument(metavar="TEXT...", help="Words every hit holds (any language; "
                                                                      "case-insensitive, parts of words match).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N messages.")] = 20,
) -> None:
    """Search every saved message, newest first: conversation id, turn, who wrote it, a snippet with the match marked."""
    if limit < 1:
        raise UsageError("--limit must be 1 or more", "for example -n 50")
    from chatllm.output import format_date
    from chatllm.storage.conversations import HIGHLIGHT

    context = command_context(cli)
    out = context.out
    store = _store(context.settings, out)
    try:
        hits = store.search(" ".join(text), limit)
        _repairs(store, out)
    finally:
        store.close()

    def human() -> None:
        if not hits:
            out.status(f"no saved message holds {' '.join(text)!r}")
            return
        for h in hits:
            snippet = h.snippet
            if out.rich:
                snippet = snippet.replace(HIGHLIGHT[0], "\x1b[1;33m").replace(HIGHLIGHT[1], "\x1b[0m")
            out.line(f"{h.conversation_id}@{h.turn}\t{h.role}\t{format_date(h.created_at)}\t{snippet}")

    out.result([h.as_dict() for h in hits], human)


@history_app.command("export")
def history_export(
    cli: typer.Context,
    conv_id: Annotated[int, typer.Argument(metavar="ID", help="Conversation id from `chatllm history`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="md|json|openai",
                                     help="md: a transcript; json: chatllm's (summary and branch included); openai: "
                                          "the chat-completions messages list other tools load.")] = "md",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Write one conversation as markdown, chatllm JSON or an OpenAI messages list (`history import` reads all three)."""
    from chatllm.tasks.chat.transcripts import EXPORT_FORMATS, export_conversation

    fmt = fmt.lower()
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"use one of: {', '.join(EXPORT_FORMATS)}")
    context = command_context(cli)
    out = context.out
    store = _store(context.settings)
    try:
        text = export_conversation(store.load(conv_id), fmt)
    finally:
        store.close()
    if output is None:
        out.write(text)
        return
    try:
        output.expanduser().write_text(text, encoding="utf-8")
    except IsADirectoryError:
        raise UsageError(f"{output} is a directory", "give a file name, e.g. -o chat.json") from None
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}", "check the path and its permissions") from None
    out.status(f"wrote conversation {conv_id} to {output}")


@history_app.command("import")
def history_import(
    cli: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="FILE", help="A `history export` file (md, json or openai), or a "
                                                               "list of {role, content} messages.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the new conversation's record as JSON.")] = False,
) -> None:
    """Save a conversation from a file as a new conversation; prints its id (continue it with `chat --resume ID`)."""
    from chatllm.tasks.chat.transcripts import read_import

    context = command_context(cli)
    out = context.out
    system, exchanges, summary = read_import(path.expanduser())
    model = next((ex.model for ex in reversed(exchanges) if ex.model), "")
    store = _store(context.settings)
    try:
        conv_id = store.create(model, system, exchanges, summary=summary)
    finally:
        store.close()
    record = {"id": conv_id, "turns": len(exchanges), "file": str(path)}
    out.result(record, lambda: out.line(str(conv_id)))
    if not out.as_json:
        out.status(f"imported {len(exchanges)} exchange{'' if len(exchanges) == 1 else 's'} as conversation {conv_id}; "
                   f"`chatllm chat --resume {conv_id}` goes on with it")
