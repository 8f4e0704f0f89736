"""`chatllm embed`, `chatllm similar` and `chatllm collections`: sentence vectors, SQLite collections, nearest items."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, List, Optional

import typer

from chatllm.cli.context import command_context
from chatllm.cli.options import Ctx, Device, GpuLayers, Model, Offline, Threads
from chatllm.errors import UsageError
from chatllm.output import Output
from chatllm.settings import Settings

if TYPE_CHECKING:
    from chatllm.storage.collections import CollectionStore

TextArg = Annotated[Optional[List[str]], typer.Argument(help="The text (else -f FILE or piped stdin).", show_default=False)]
FileOpt = Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the input from FILE (`-` for stdin).")]
LinesOpt = Annotated[bool, typer.Option("--lines", help="Each non-empty input line is one text: JSON Lines out, in order.")]
StoreOpt = Annotated[Optional[str], typer.Option("--store", metavar="NAME",
                                                 help="Save the vectors in collection NAME instead of printing them.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _collections(settings: Settings) -> "CollectionStore":
    from chatllm.storage.collections import CollectionStore

    return CollectionStore(settings.home / "collections.db")


def embed(
    cli: typer.Context,
    text: TextArg = None,
    file: FileOpt = None,
    lines: LinesOpt = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    offline: Offline = False,
) -> None:
    """L2-normalised sentence vectors from an embedding model: a JSON array for one text, JSON Lines with --lines."""
    if store is not None and not store.strip():
        raise UsageError("--store needs a collection name", "for example --store notes")
    context = command_context(cli)
    settings, out = context.settings, context.out
    items = _items(text, file, lines, out)
    first = next(items, None)  # the input is checked before the model loads
    if first is None:
        raise UsageError("the input has no text to embed", "give one text per line")
    from itertools import chain

    from chatllm.tasks.retrieval.embeddings import embed_stream, store_stream

    engine = context.load_engine(embedding=True)
    long: list[int] = []
    try:
        embedded = embed_stream(engine, chain([first], items), on_long=long.append)
        if store is not None:
            collections = _collections(settings)
            try:
                added, skipped = store_stream(engine, collections, store.strip(), embedded)
            finally:
                collections.close()
            record = {"collection": store.strip(), "model": engine.name, "added": added, "already_there": skipped}
            out.result(record, lambda: out.status(f"{store.strip()}: {added} added, {skipped} already there ({engine.name})"))
        elif lines:
            for item in embedded:
                out.json(item.to_json())
        else:
            out.json(next(embedded).embedding)
    finally:
        engine.close()
    if long:
        where = f"line {long[0]}" if lines and len(long) == 1 else (f"{len(long)} lines" if lines else "the text")
        out.warn(f"{where} past the model's {engine.n_ctx}-token window: cut to it (raise --ctx up to the model's own)")


def _items(text: Optional[List[str]], file: Optional[Path], lines: bool, out: Output) -> Iterator[tuple[int, str]]:
    """(id, text): each non-empty line (id = its line number) with --lines, else the one whole text (id 1)."""
    from chatllm.inputs import input_lines, read_text, stdin_is_piped

    if lines:
        stream, _ = input_lines(text, file, out.warn)
        return ((n, line) for n, line in enumerate(stream, 1) if line.strip())
    if text:
        whole = " ".join(text)
    elif file is not None:
        whole = read_text(file, out.warn)
    elif stdin_is_piped():
        whole = read_text("-", out.warn)
    else:
        raise UsageError("no text to embed", 'give TEXT, -f FILE or piped input: chatllm embed -m MODEL "some text"')
    whole = whole.rstrip("\r\n")
    return iter([(1, whole)] if whole.strip() else [])


def similar(
    cli: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The collection (see `chatllm collections`).")],
    query: Annotated[Optional[List[str]], typer.Argument(help="The query text (else piped stdin).", show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="How many items to show.")] = 10,
    as_json: JsonOpt = False,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The collection's model [default: the one it records].",
                                                 show_default=False)] = None,
    device: Device = None, threads: Threads = None, offline: Offline = False,
) -> None:
    """The items of a collection nearest to a query, with cosine scores (best first)."""
    from chatllm.inputs import read_text, stdin_is_piped

    if top < 1:
        raise UsageError(f"--top must be 1 or more, not {top}", "for example --top 5")
    text = " ".join(query) if query else (read_text("-", None).strip() if stdin_is_piped() else "")
    if not text.strip():
        raise UsageError("no query", f'give one: chatllm similar {name} "what to look for"')
    context = command_context(cli)
    out = context.out
    collections = _collections(context.settings)
    try:
        found = collections.require(name)
        from chatllm.tasks.retrieval.embeddings import similar as find_similar

        engine = context.load_engine(model or found.model, embedding=True)
        try:
            matches = find_similar(engine, collections, name, text, top)
        finally:
            engine.close()
    finally:
        collections.close()

    def human() -> None:
        for m in matches:
            out.line(f"{m.score:.4f}\t{m.text.replace(chr(10), ' ').replace(chr(9), ' ')}")

    out.result({"collection": name, "model": found.model, "query": text, "items": [m.to_json() for m in matches]}, human)


collections_app = typer.Typer(
    help="Embedding collections: list them (name, model, dimension, items), `rm NAME` to delete one.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


@collections_app.callback()
def collections(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the embedding collections: name, model, dimension, items."""
    if ctx.invoked_subcommand is not None:
        return
    from chatllm.output import format_date, short_model

    context = command_context(ctx)
    out = context.out
    store = _collections(context.settings)
    try:
        rows = store.collections()
    finally:
        store.close()

    def human() -> None:
        if not rows:
            out.status("no collections yet; make one with `chatllm embed --lines -f FILE -m MODEL --store NAME`")
            return
        out.table(["name", "model", "dimension", "items", "updated"],
                  [[r.name, short_model(r.model), r.dimension, r.count, format_date(r.updated_at)] for r in rows])

    out.result([r.as_dict() for r in rows], human)


@collections_app.command("rm")
def collections_rm(
    cli: typer.Context,
    names: Annotated[List[str], typer.Argument(metavar="NAME...", help="Collections to delete.")],
) -> None:
    """Delete collections and their vectors."""
    context = command_context(cli)
    out = context.out
    store = _collections(context.settings)
    try:
        for name in names:
            store.remove(name)
            out.status(f"removed collection {name}")
    finally:
        store.close()
