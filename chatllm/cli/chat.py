"""`chatllm chat`: the REPL on a model, every exchange saved."""

from contextlib import ExitStack
from typing import TYPE_CHECKING, Annotated, Optional, TextIO, cast

import typer

from chatllm.cli.context import command_context
from chatllm.cli.options import (
    AllTools,
    ChatFormat,
    Ctx,
    Device,
    Draft,
    Functions,
    GpuLayers,
    HideThinking,
    MaxTokens,
    MaxToolSteps,
    Mcp,
    Model,
    NoCache,
    Offline,
    ReasoningBudget,
    ReasoningEffort,
    Seed,
    ShowThinking,
    Stop,
    Temperature,
    Think,
    Threads,
    Tool,
    TopK,
    TopP,
    Yes,
)
from chatllm.errors import UsageError
from chatllm.output import Output
from chatllm.settings import Settings

if TYPE_CHECKING:
    from chatllm.engines.contract import Engine
    from chatllm.tasks.chat.conversation import Conversation


def chat(
    cli: typer.Context,
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt for the conversation.")] = None,
    cont: Annotated[bool, typer.Option("--continue", "-c", help="Resume the most recent conversation.")] = False,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", "-r", metavar="ID[@N]",
        help="Resume conversation ID (see `chatllm history`); ID@N branches it after its N-th exchange.")] = None,
    overflow: Annotated[Optional[str], typer.Option(
        "--overflow", metavar="compact|trim",
        help="When the conversation outgrows --ctx: summarize the oldest exchanges (compact) or drop them (trim) "
             "[default: compact; config key overflow]")] = None,
    exact_window: Annotated[bool, typer.Option(
        "--exact-window", help="Evaluate the window again after a trim instead of shifting the KV cache in place "
                               "(replies then depend only on the text in view).")] = False,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None, draft: Draft = None, no_cache: NoCache = False,
    think: Think = None, reasoning_effort: ReasoningEffort = None, reasoning_budget: ReasoningBudget = None,
    show_thinking: ShowThinking = False, hide_thinking: HideThinking = False,
    mcp: Mcp = None, functions: Functions = None, tool: Tool = None, all_tools: AllTools = False, yes: Yes = False,
    max_tool_steps: MaxToolSteps = None,
) -> None:
    """Chat with a model: replies stream as they are written, and every exchange is saved.

    Type /help inside for the commands. With stdin piped, each line is one message (slash commands work) and
    the replies come out as plain text.
    """
    context = command_context(cli)
    settings, out = context.settings, context.out
    import sys

    from chatllm.inputs import stdin_is_piped
    from chatllm.storage.conversations import Store
    from chatllm.tasks.chat.branching import check_turn, parse_resume, resume_at
    from chatllm.tasks.chat.conversation import Conversation, require_chat_template

    if cont and resume is not None:
        raise UsageError("--continue and --resume cannot be used together", "--continue picks the latest; "
                         "--resume ID a given one")
    piped = stdin_is_piped()
    resume_id, resume_turn = parse_resume(resume) if resume is not None else (None, None)
    store = Store(settings.db_path)
    stack = ExitStack()
    try:
        _repairs(store, out)
        stored = None
        if cont or resume_id is not None:
            conv_id = resume_id if resume_id is not None else store.latest_id()
            if conv_id is None:
                raise UsageError("no saved conversation to continue", "start one with `chatllm chat`")
            stored = store.load(conv_id)  # before loading the model: a wrong id (or turn) fails fast
            if resume_turn is not None:
                check_turn(stored, resume_turn)
        from chatllm.cli.tool_use import open_session

        # the tool files are read before the model loads (a bad one fails fast); the servers start while it loads
        tools = open_session(settings, out, mcp=mcp, functions=functions, names=tool, all_tools=all_tools, yes=yes,
                             max_steps=max_tool_steps, interactive=True)
        stack.callback(tools.toolbox.close)
        engine = require_chat_template(context.load_engine())
        try:
            tools.toolbox.ready()
        except BaseException:
            engine.close()
            raise

        def open_engine(name: str) -> "Engine":
            return context.replace(model=name).load_engine()

        conv = Conversation(engine, settings.sampling, system=system, store=store, notice=out.status,
                            open_engine=open_engine, overflow=settings.overflow, exact_window=exact_window)
        conv.tools = tools
        if stored is not None:
            at = len(stored.exchanges) if resume_turn is None else resume_turn
            branch = resume_at(conv, stored, at, system)
            if branch is not None:
                out.status(f"branched conversation {stored.id} after turn {at}: going on as conversation {branch}")
            if stored.model and stored.model != engine.name:
                out.status(f"note: conversation {stored.id} was with {stored.model}; continuing with {engine.name}")
            conv.warm_up()  # the saved KV state, if it matches, loads before the first message is typed
        try:
            _run(conv, out, settings, piped, sys.stdin, hide_thinking=hide_thinking, show_thinking=show_thinking)
        finally:
            conv.engine.close()  # waits for the last reply's state to reach the disk
    finally:
        stack.close()
        store.close()


def _repairs(store, out: Output) -> None:
    """Say what the store found damaged and mended (its search index)."""
    for note in store.repairs:
        out.warn(note)
    store.repairs.clear()


def _run(conv: "Conversation", out: Output, settings: Settings, piped: bool, stdin: TextIO, *,
         hide_thinking: bool = False, show_thinking: bool = False) -> None:
    from chatllm.inputs import piped_lines
    from chatllm.repl.loop import Repl

    if piped:
        repl = Repl(conv, out, interactive=False, hide_thinking=hide_thinking, show_thinking=show_thinking)
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
    Repl(conv, out, session=session, hide_thinking=hide_thinking).run_interactive()
