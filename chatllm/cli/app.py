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


# Two or three real examples at the end of every command's --help.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "chat": ('chatllm chat -m qwen2.5-0.5b -s "You are a terse assistant."', "chatllm chat --continue",
             "printf 'Hello!\\nName three colours.\\n/exit\\n' | chatllm chat -t 0"),
    "ask": ('cat notes.txt | chatllm ask "What are the action items?"', 'chatllm ask -f docs/ "How do I log in?"',
            "chatllm ask --schema 'name, age int' \"Invent a person\"", 'chatllm ask --lines "Translate to French:" < phrases.txt'),
    "generate": ('chatllm generate -n 50 "Once upon a time"',
                 "chatllm generate --schema 'city, country' \"The capital of France, as JSON:\""),
    "summarize": ("chatllm summarize report.txt --length short", "curl -s https://example.com/a.txt | chatllm summarize --style bullets",
                  "chatllm summarize book.txt --json | jq .entities"),
    "translate": ("chatllm translate README.md --to zh", "cat notes.txt | chatllm translate --to English",
                  "chatllm translate --lines strings.txt --to fr --json", "chatllm translate talk.srt --to zh -o subs/",
                  "chatllm translate docs/*.md --to ja -o translated/"),
    "sentiment": ('chatllm sentiment "The food was great but the service was slow."',
                  "cut -f1 reviews.tsv | chatllm sentiment --lines --json > out.jsonl"),
    "classify": ('chatllm classify --labels news,blog,ad "Buy one, get one free this weekend only!"',
                 "chatllm classify --labels bug,feature,question --lines < issues.txt"),
    "embed": ('chatllm embed -m bge-small-en-v1.5 "a sentence to embed"',
              "chatllm embed --lines -f notes.txt -m bge-small-en-v1.5 --store notes"),
    "similar": ('chatllm similar notes "where did I park"', 'chatllm similar notes -k 3 --json "meeting notes"'),
    "pull": ("chatllm pull qwen2.5-0.5b", "chatllm pull hf:bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
    "models": ("chatllm models", "chatllm models --json | jq '.[] | select(.downloaded) | .name'"),
    "show": ("chatllm show smollm2-135m", "chatllm show ./model.gguf --json | jq .context_length"),
    "rm": ("chatllm rm qwen2.5-0.5b", "chatllm rm qwen2.5-0.5b -y"),
    "info": ("chatllm info", "chatllm info --json | jq .backend"),
    "serve": ("chatllm serve -m smollm2-135m --parallel 4",
              'chatllm ask -m openai:http://127.0.0.1:8080/v1#smollm2-135m "Hello"'),
    "history": ("chatllm history", "chatllm history show 3 --tree", "chatllm history search Lyon",
                "chatllm history export 3 --format openai -o chat.json", "chatllm chat --resume 3@2"),
    "collections": ("chatllm collections", "chatllm collections rm notes"),
    "cache": ("chatllm cache", "chatllm cache clear"),
    "templates": ("chatllm ask --save tldr -t 0 'Summarize in one line: $input'", "cat notes.txt | chatllm ask --template tldr",
                  "chatllm templates"),
}


def examples(name: str) -> str:
    """The examples epilog of a command (\\b keeps Click from rewrapping the lines)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])


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
        app.command(name, epilog=examples("models" if name == "ls" else name), **extra)(func)
    app.add_typer(history.history_app, name="history", epilog=examples("history"))
    app.add_typer(embed.collections_app, name="collections", epilog=examples("collections"))
    app.add_typer(kv_cache.cache_app, name="cache", epilog=examples("cache"))
    app.add_typer(prompt_templates.templates_app, name="templates", epilog=examples("templates"))


_register()
