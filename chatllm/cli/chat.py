"""`chatllm chat` (the REPL) and `chatllm history` (saved conversations)."""

from typing import TYPE_CHECKING, Annotated, Optional, TextIO, cast

import typer

from chatllm.cli.kv_cache import NoCache, open_kv_cache
from chatllm.cli.options import (
    ChatFormat,
    Ctx,
    Device,
    GpuLayers,
    MaxTokens,
    Model,
    Offline,
    Seed,
    Stop,
    Temperature,
    Threads,
    TopK,
    TopP,
    model_settings,
    plain_settings,
)
from chatllm.errors import UsageError
from chatllm.output import Output
from chatllm.settings import Settings

if TYPE_CHECKING:
    from chatllm.engines.contract import Engine
    from chatllm.tasks.chat.conversation import Conversation


def chat(
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt for the conversation.")] = None,
    cont: Annotated[bool, typer.Option("--continue", "-c", help="Resume the most recent conversation.")] = False,
    resume: Annotated[Optional[int], typer.Option("--resume", "-r", metavar="ID",
                                                  help="Resume conversation ID (see `chatllm history`).")] = None,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None, no_cache: NoCache = False,
) -> None:
    """Chat with a model: replies stream as they are written, and every exchange is saved.

    Type /help inside for the commands. With stdin piped, each line is one message (slash commands work) and
    the replies come out as plain text: printf 'Hello\\n/exit\\n' | chatllm chat
    """
    settings = model_settings(model=model, device=device, gpu_layers=gpu_layers, ctx=ctx, threads=threads,
                              chat_format=chat_format, offline=offline, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed, stop=stop)
    import sys

    from chatllm.engines.loader import load_engine
    from chatllm.inputs import stdin_is_piped
    from chatllm.storage.conversations import Store
    from chatllm.tasks.chat.conversation import Conversation, require_chat_template

    if cont and resume is not None:
        raise UsageError("--continue and --resume cannot be used together", "--continue picks the latest; "
                         "--resume ID a given one")
    out = Output()
    piped = stdin_is_piped()
    store = Store(settings.db_path)
    try:
        stored = None
        if cont or resume is not None:
            conv_id = resume if resume is not None else store.latest_id()
            if conv_id is None:
                raise UsageError("no saved conversation to continue", "start one with `chatllm chat`")
            stored = store.load(conv_id)  # before loading the model: a wrong id fails fast
        engine = require_chat_template(load_engine(settings, out))

        def open_engine(name: str) -> "Engine":
            return load_engine(settings.replace(model=name), out)

        kv = open_kv_cache(settings, out, no_cache)
        conv = Conversation(engine, settings.sampling, system=system, store=store, notice=out.status,
                            open_engine=open_engine, kv_cache=kv)
        if stored is not None:
            conv.resume(stored, system)
            if stored.model and stored.model != engine.name:
                out.status(f"note: conversation {stored.id} was with {stored.model}; continuing with {engine.name}")
            conv.warm_up()  # the saved KV state, if it matches, loads before the first message is typed
        try:
            _run(conv, out, settings, piped, sys.stdin)
        finally:
            if kv is not None:
                kv.flush()  # the last reply's state reaches the disk before the process ends
            conv.engine.close()
    finally:
        store.close()


def _run(conv: "Conversation", out: Output, settings: Settings, piped: bool, stdin: TextIO) -> None:
    from chatllm.inputs import piped_lines
    from chatllm.repl.loop import Repl

    if piped:
        repl = Repl(conv, out, interactive=False)
        repl.run_piped(piped_lines(stdin.buffer, out.warn))
        if repl.errors:
            raise typer.Exit(1)
        return
    from chatllm.repl.session import make_session

    output = None
    if not out.is_tty and out.err_tty:
        # stdout goes to a file: draw the prompt on the terminal (stderr) so only replies land in the file
        from prompt_toolkit.output import create_output

        output = create_output(stdout=cast(TextIO, out.stderr))
    session = make_session(settings.home / "chat_history", output=output, color=out.color)
    Repl(conv, out, session=session).run_interactive()


history_app = typer.Typer(
    help="Saved conversations: list them (id, model, first line, turns, date), `show ID` as markdown, `rm ID`.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def _store():
    from chatllm.storage.conversations import Store

    return Store(plain_settings().db_path)


@history_app.callback()
def history(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N conversations (0: all).")] = 0,
) -> None:
    """List saved conversations, most recent first: id, model, first line, turns, date.

    Example: chatllm history; chatllm history show 3; chatllm chat --resume 3
    """
    if ctx.invoked_subcommand is not None:
        return
    if limit < 0:
        raise UsageError("--limit must be 0 or more", "0 shows all")
    from chatllm.output import format_date, short_model

    out = Output(as_json=as_json)
    store = _store()
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
    conv_id: Annotated[int, typer.Argument(metavar="ID", help="Conversation id from `chatllm history`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of markdown.")] = False,
) -> None:
    """Print one conversation as markdown (rendered in a terminal)."""
    from chatllm.tasks.chat.transcripts import conversation_json, transcript_markdown

    out = Output(as_json=as_json)
    store = _store()
    try:
        conv = store.load(conv_id)
    finally:
        store.close()
    kw = dict(model=conv.model, conv_id=conv.id, created_at=conv.created_at)
    out.result(conversation_json(conv.system, conv.exchanges, **kw),
               lambda: out.markdown(transcript_markdown(conv.system, conv.exchanges, **kw)))


@history_app.command("rm")
def history_rm(
    conv_ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Conversation ids to delete.")],
) -> None:
    """Delete saved conversations (and their KV states saved on disk)."""
    from chatllm.storage.kv_cache import KVCache, cache_dir

    out = Output()
    settings = plain_settings()
    store = _store()
    try:
        for conv_id in conv_ids:
            store.delete(conv_id)
            # its KV state holds the conversation's text too: it goes with it
            KVCache(cache_dir(settings), settings=settings).drop_slot(f"chat:{conv_id}")
            out.status(f"deleted conversation {conv_id}")
    finally:
        store.close()
