"""The Typer app: the global flags and the one table of commands (the commands live in sibling modules)."""

from typing import Annotated, Callable, Optional

import typer

from chatllm.cli import print_version
from chatllm.cli.context import GlobalOptions

app = typer.Typer(
    name="chatllm",
    help="Local LLMs at the terminal: chat, ask, summarize and classify with GGUF models from the Hugging Face Hub.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print_version()
        raise typer.Exit()


@app.callback()
def root(
    cli: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", "-V", callback=_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors [env CHATLLM_DEBUG=1].")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp's own log on stderr.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network [env HF_HUB_OFFLINE=1].")] = False,
    flash_attn: Annotated[Optional[str], typer.Option(
        "--flash-attn", metavar="auto|on|off", help="llama.cpp's flash attention; auto: on for a GPU, on the CPU only for a "
                                                    "one-shot shallower than where it stops paying (measured: off) "
                                                    "[env CHATLLM_FLASH_ATTN].")] = None,
) -> None:
    """Global flags go before the command: `chatllm --debug ask ...`."""
    cli.obj = GlobalOptions(debug=debug, verbose=verbose, offline=offline, flash_attn=flash_attn)


def _register() -> None:
    """Every command, in the order `chatllm --help` lists them."""
    from chatllm.cli import ask, chat, classify, embed, history, kv_cache, models, prompt_templates, serve, summarize, translate

    commands: list[tuple[str, Callable, dict]] = [
        ("chat", chat.chat, {}),
        ("ask", ask.ask, {"cls": ask.PairedParams}),
        ("generate", ask.generate, {}),
        ("summarize", summarize.summarize, {}),
        ("translate", translate.translate, {}),
        ("sentiment", classify.sentiment, {}),
        ("classify", classify.classify, {}),
        ("embed", embed.embed, {}),
        ("similar", embed.similar, {}),
        ("pull", models.pull, {}),
        ("models", models.list_models, {}),
        ("ls", models.list_models, {"help": "Alias of `models`.", "hidden": True}),
        ("show", models.show, {}),
        ("rm", models.rm, {}),
        ("info", models.info, {}),
        ("serve", serve.serve, {}),
    ]
    for name, func, extra in commands:
        app.command(name, **extra)(func)
    app.add_typer(history.history_app, name="history")
    app.add_typer(embed.collections_app, name="collections")
    app.add_typer(kv_cache.cache_app, name="cache")
    app.add_typer(prompt_templates.templates_app, name="templates")


_register()
