"""`chatllm templates`: list the saved prompt templates, show one, remove one (`ask --save` creates them)."""

from typing import Annotated, List

import typer

from chatllm.cli.context import command_context

templates_app = typer.Typer(
    help="Saved prompt templates: list them (name, model, variables, first line), `show NAME`, `rm NAME`.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _config_dir():
    from chatllm.settings import config_dir

    return config_dir()


@templates_app.callback()
def templates(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List saved templates: name, model, variables, the prompt's first line."""
    if ctx.invoked_subcommand is not None:
        return
    from chatllm.tasks.ask.prompt_templates import list_templates, templates_dir

    out = command_context(ctx).out
    found = list_templates(_config_dir(), on_error=lambda exc: out.warn(f"{exc.message} (skipped)"))

    def human() -> None:
        if not found:
            out.status(f"no templates in {templates_dir(_config_dir())}; create one with "
                       "`chatllm ask --save NAME -s SYSTEM 'Summarize: $input'`")
            return
        out.table(["name", "model", "variables", "prompt"],
                  [[t.name, t.model or "", " ".join(f"${v}" for v in t.variables), _first_line(t.prompt)] for t in found])

    out.result([t.as_dict() for t in found], human)


def _first_line(text: str | None) -> str:
    if text is None:
        return "($input)"
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= 60 else line[:59] + "…"


@templates_app.command("show")
def templates_show(
    cli: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Template name from `chatllm templates`.")],
    as_json: JsonFlag = False,
) -> None:
    """Print a template's file: its path as a comment, then its TOML (or the checked template as JSON)."""
    from chatllm.tasks.ask.prompt_templates import load_template

    out = command_context(cli).out
    tpl = load_template(_config_dir(), name)

    def human() -> None:
        out.line(f"# {tpl.path}")
        out.write(tpl.path.read_text(encoding="utf-8"))

    out.result(tpl.as_dict(), human)


@templates_app.command("rm")
def templates_rm(
    cli: typer.Context,
    names: Annotated[List[str], typer.Argument(metavar="NAME...", help="Templates to delete.")],
) -> None:
    """Delete saved templates."""
    from chatllm.tasks.ask.prompt_templates import load_path

    out = command_context(cli).out
    paths = [load_path(_config_dir(), name) for name in names]  # every name checked before any file goes
    for path in paths:
        path.unlink(missing_ok=True)
        out.status(f"deleted template {path.stem!r} ({path})")
