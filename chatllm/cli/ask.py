"""`chatllm ask` and `chatllm generate`: parse the flags, read the prompt, run the one-shot task, print."""

from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional, Sequence

import typer
from typer.core import TyperCommand

from chatllm.cli.context import SAMPLING_FLAGS, CommandContext, command_context
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
    Parallel,
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
from chatllm.output import Output, ThinkingView, format_stats

PANEL_STRUCTURED = "Structured output"
PANEL_BATCH = "Batches and templates"
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON record of what was done (text, data, token counts, "
                                                      "timings) instead of the plain answer; the model is asked the same.")]
FileOpt = Annotated[Optional[List[Path]], typer.Option(
    "--file", "-f", metavar="FILE|DIR", help="Read more input from FILE (repeatable; a folder gives its text files). Past the "
                                            "window, the question is answered from the passages that match it, with citations.")]
SourcesOpt = Annotated[bool, typer.Option("--sources", help="With -f and a question: print the passages used (on stderr).")]
NoRerankOpt = Annotated[bool, typer.Option(
    "--no-rerank", help="With -f past the window: give the model every passage that fits and let it decide, instead of "
                        "ranking the passages with the model and answering from the best ones.")]
EmbedModelOpt = Annotated[Optional[str], typer.Option(
    "--embed-model", "-E", metavar="MODEL", help="With -f past the window: hybrid retrieval, BM25 fused with this embedding "
                                                 "model's vectors (default: embed_model in config.toml, or BM25 alone).",
    show_default=False)]
SchemaOpt = Annotated[Optional[str], typer.Option(
    "--schema", metavar="SCHEMA", help="The answer must match this JSON Schema: a file, inline JSON, 'name, age int, tags str[], "
                     "bio: a short bio', or `object` for any JSON object. Stdout is exactly the JSON.",
    rich_help_panel=PANEL_STRUCTURED, show_default=False)]
SchemaMultiOpt = Annotated[Optional[str], typer.Option(
    "--schema-multi", metavar="SCHEMA", help="Like --schema, for a list of such objects: {\"items\": [...]}",
    rich_help_panel=PANEL_STRUCTURED, show_default=False)]
LinesOpt = Annotated[bool, typer.Option(
    "--lines", help="Each input line (or JSON Lines row) is one prompt; the words are the shared instruction. One output "
                    "line per row, in order.", rich_help_panel=PANEL_BATCH)]
OutputOpt = Annotated[Optional[Path], typer.Option(
    "--output", "-o", metavar="OUT.jsonl", help="With --lines: write the --json rows to OUT.jsonl (replaced unless --resume).",
    rich_help_panel=PANEL_BATCH, show_default=False)]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="With --lines -o OUT: skip the ids already in OUT (failed rows too: delete their lines to retry "
                     "them), append the rest.", rich_help_panel=PANEL_BATCH)]
TemplateOpt = Annotated[Optional[str], typer.Option(
    "--template", metavar="NAME", help="Run the saved template NAME (see `chatllm templates`).", rich_help_panel=PANEL_BATCH,
    show_default=False)]
ParamOpt = Annotated[Optional[List[str]], typer.Option(
    "--param", "-p", metavar="KEY VALUE", help="A template variable ($KEY).", rich_help_panel=PANEL_BATCH, show_default=False)]
PANEL_TOOLS = "Tools"
ToolsOpt = Annotated[Optional[List[Path]], typer.Option(
    "--tools", metavar="FILE.json", help="Offer the tools defined in FILE (OpenAI's form, a JSON list; repeatable): the "
                                       "model's calls are printed, one JSON object per line; nothing runs.",
    rich_help_panel=PANEL_TOOLS, show_default=False)]
ToolChoiceOpt = Annotated[Optional[str], typer.Option(
    "--tool-choice", metavar="auto|required|none|NAME", help="Whether the model must call a tool (or that one) "
                                                            "[default: auto, it may answer in prose]",
    rich_help_panel=PANEL_TOOLS, show_default=False)]
SaveOpt = Annotated[Optional[str], typer.Option(
    "--save", metavar="NAME", help="Save these flags and prompt as template NAME; run nothing.", rich_help_panel=PANEL_BATCH,
    show_default=False)]
PARAM_FLAGS = ("-p", "--param")


class PairedParams(TyperCommand):
    """A command whose `-p KEY VALUE` takes two words (Typer has no two-value repeatable option)."""

    def parse_args(self, ctx, args):
        """Join each `-p KEY VALUE` into one `KEY=VALUE` word before Click parses."""
        return super().parse_args(ctx, join_param_pairs(args))


def join_param_pairs(args: List[str]) -> List[str]:
    """`-p KEY VALUE` as `-p KEY\\0VALUE`; `-p KEY=VALUE` is accepted as it is."""
    joined: List[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return joined + args[i:]
        if word in PARAM_FLAGS and i + 2 < len(args) and "=" not in args[i + 1]:
            joined += [word, f"{args[i + 1]}\0{args[i + 2]}"]
            i += 3
            continue
        joined.append(word)
        i += 1
    return joined


def ask(
    cli: typer.Context,
    prompt: Annotated[Optional[List[str]], typer.Argument(help="The instruction; piped stdin is appended.", show_default=False)] = None,
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")] = None,
    file: FileOpt = None,
    sources: SourcesOpt = False,
    embed_model: EmbedModelOpt = None,
    no_rerank: NoRerankOpt = False,
    as_json: JsonOpt = False,
    schema: SchemaOpt = None,
    schema_multi: SchemaMultiOpt = None,
    lines: LinesOpt = False,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    template: TemplateOpt = None,
    param: ParamOpt = None,
    save: SaveOpt = None,
    no_cache: NoCache = False,
    tools: ToolsOpt = None,
    tool_choice: ToolChoiceOpt = None,
    mcp: Mcp = None,
    functions: Functions = None,
    tool: Tool = None,
    all_tools: AllTools = False,
    yes: Yes = False,
    max_tool_steps: MaxToolSteps = None,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False, parallel: Parallel = None,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None, draft: Draft = None,
    think: Think = None, reasoning_effort: ReasoningEffort = None, reasoning_budget: ReasoningBudget = None,
    show_thinking: ShowThinking = False, hide_thinking: HideThinking = False,
) -> None:
    """Ask one question through the model's chat template; the answer streams to stdout."""
    sampling: dict[str, Any] = {key: cli.params.get(key) for key in SAMPLING_FLAGS}
    _check_one_schema(schema, schema_multi)
    if save:
        _save_template(save, prompt, system=system, schema=schema_multi or schema, multi=schema_multi is not None,
                       model=model, sampling=sampling)
        return
    compose: Callable[[str], str] = _instruction_first(prompt)
    if template:
        tpl = _load_template(template)
        model = model or tpl.model
        system = system if system is not None else _template_system(tpl, param or [])
        if schema is None and schema_multi is None and tpl.schema:
            schema, schema_multi = (None, tpl.schema) if tpl.schema_multi else (tpl.schema, None)
        sampling = {k: v if v is not None else tpl.sampling.get(k) for k, v in sampling.items()}
        compose = _template_compose(tpl, param or [], prompt, lines)
    elif param:
        raise UsageError("-p sets a template variable, and no --template was given", "chatllm ask --template NAME -p KEY VALUE")
    context = command_context(cli, model=model, **sampling)
    spec = _spec(schema, schema_multi)
    one_file = _one_file(file, lines, bool(prompt))
    from chatllm.cli.tool_use import wants_tools

    runnable = wants_tools(mcp, functions, tool, all_tools)
    if runnable and (lines or (file and prompt)):
        raise UsageError("--mcp, --functions, -T and --all-tools go with one question, not --lines or questions over files",
                         'chatllm ask --mcp servers.json "what is the status of order A-1042?"')
    if lines:
        from chatllm.cli.ask_lines import run_batch

        run_batch(context, compose=compose, system=system, spec=spec, file=one_file, output=output, resume=resume,
                  parallel=parallel)
        return
    if output is not None or resume or parallel is not None:
        raise UsageError("-o/--output, --resume and --parallel go with --lines", "chatllm ask --lines -o out.jsonl < prompts.txt")
    if file and prompt:  # a question over files: the whole text when it fits, else retrieval with citations
        _ask_files(prompt, file, context, system=system, spec=spec, compose=compose if template else None,
                   show_sources=sources, rerank=not no_rerank)
        return
    if sources or embed_model or no_rerank:
        flag = "--sources" if sources else "--embed-model" if embed_model else "--no-rerank"
        raise UsageError(f"{flag} goes with -f FILE and a question", f'chatllm ask -f notes.txt {flag} ... "who signed it?"')
    if runnable:
        if spec is not None:
            raise UsageError("tools and --schema cannot be used together", "ask for the JSON in words, or drop the tools")
        from chatllm.cli.tool_use import open_session

        session = open_session(context.settings, context.out, mcp=mcp, functions=functions, definitions=tools, names=tool,
                               all_tools=all_tools, yes=yes, max_steps=max_tool_steps, interactive=True)
        try:
            context = context.replace(sampling=context.settings.sampling.replace(tool_choice=tool_choice or "auto"))
            _one_shot("ask", prompt, one_file, context, system=system, compose=compose if template else None,
                      session=session, show_thinking=show_thinking, hide_thinking=hide_thinking)
        finally:
            session.toolbox.close()
        return
    offered = _load_tools(tools, tool_choice, spec)
    if offered:
        context = context.replace(sampling=context.settings.sampling.replace(tool_choice=tool_choice or "auto"))
    _one_shot("ask", prompt, one_file, context, system=system, spec=spec, compose=compose if template else None,
              tools=offered, show_thinking=show_thinking, hide_thinking=hide_thinking)


def _one_file(files: Optional[List[Path]], lines: bool, question: bool) -> Optional[Path]:
    """The one -f file of --lines, or of a prompt with no question words; several need a question."""
    if not files or len(files) == 1 or question and not lines:
        return files[0] if files else None
    if lines:
        raise UsageError("--lines reads one -f FILE", "join the files first: cat a.txt b.txt | chatllm ask --lines ...")
    raise UsageError("several -f files need a question to search them with", 'chatllm ask -f a.txt -f b.txt "what changed?"')


def generate(
    cli: typer.Context,
    prompt: Annotated[Optional[List[str]], typer.Argument(help="Text to continue; piped stdin is appended.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the text from FILE.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON record with text and token counts.")] = False,
    schema: SchemaOpt = None,
    schema_multi: SchemaMultiOpt = None,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None, draft: Draft = None,
) -> None:
    """Continue raw text with no chat template (works with base models too)."""
    _check_one_schema(schema, schema_multi)
    _one_shot("generate", prompt, file, command_context(cli), spec=_spec(schema, schema_multi))


def _check_one_schema(schema: Optional[str], schema_multi: Optional[str]) -> None:
    if schema is not None and schema_multi is not None:
        raise UsageError("give --schema or --schema-multi, not both", "--schema-multi takes the schema of one item")


def _spec(schema: Optional[str], schema_multi: Optional[str]):
    if schema is None and schema_multi is None:
        return None
    from chatllm.tasks.ask.structured_output import json_spec

    if schema_multi is not None:
        return json_spec(schema_multi, multi=True, where="--schema-multi")
    return json_spec(schema)


def _instruction_first(words: Optional[List[str]]) -> Callable[[str], str]:
    """Row text -> message: the shared instruction first, so every row reuses its cached tokens."""
    instruction = " ".join(words or []).strip()
    return lambda row: f"{instruction}\n\n{row}" if instruction and row else instruction or row


def _load_template(name: str):
    from chatllm.settings import config_dir
    from chatllm.tasks.ask.prompt_templates import load_template

    return load_template(config_dir(), name)


def _param_values(params: List[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in params:
        key, sep, value = pair.partition("\0") if "\0" in pair else pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-p needs a name and a value, not {pair!r}", "chatllm ask --template NAME -p KEY VALUE")
        values[key] = value
    return values


def _template_system(tpl, params: List[str]) -> Optional[str]:
    from chatllm.tasks.ask.prompt_templates import render_system

    return render_system(tpl, _param_values(params))


def _template_compose(tpl, params: List[str], words: Optional[List[str]], lines: bool) -> Callable[[str], str]:
    from chatllm.tasks.ask.prompt_templates import render_prompt

    values = _param_values(params)
    if lines and words:
        raise UsageError("with --template and --lines, each line is the template's $input", "drop the prompt words")
    render_prompt(tpl, "check", values)  # a missing variable fails before any model loads
    return lambda text: render_prompt(tpl, text, values)


def _save_template(name: str, words: Optional[List[str]], **fields) -> None:
    from chatllm.settings import config_dir
    from chatllm.tasks.ask.prompt_templates import save_template

    path = save_template(config_dir(), name, prompt=" ".join(words or []).strip() or None, **fields)
    Output().status(f"saved template {name!r} to {path}")


def _load_tools(files: Optional[List[Path]], choice: Optional[str], spec) -> list:
    """The tools of the --tools files, checked before any model loads (with --tool-choice)."""
    if not files:
        if choice is not None:
            raise UsageError("--tool-choice goes with --tools FILE", "chatllm ask --tools tools.json --tool-choice required ...")
        return []
    if spec is not None:
        raise UsageError("--tools and --schema cannot be used together", "a call's arguments already follow its tool's schema")
    from chatllm.tasks.tools.definitions import check_choice, check_tools, load_tool_file

    offered = check_tools([tool for path in files for tool in load_tool_file(path)], "--tools")
    check_choice(choice or "auto", offered)
    return offered


def _one_shot(kind: str, words: Optional[List[str]], file: Optional[Path], context: CommandContext,
              system: Optional[str] = None, spec=None, compose: Optional[Callable[[str], str]] = None, *,
              tools: Sequence = (), session=None, show_thinking: bool = False, hide_thinking: bool = False) -> None:
    from chatllm.inputs import gather_prompt

    settings, out = context.settings, context.out

    # read before the model loads: bad input fails fast
    text = gather_prompt(words, file, out.warn, settings.n_ctx, allow_empty=compose is not None)
    if compose is not None:
        text = compose(text)
    from chatllm.engines.llamacpp.flash_attn import one_shot_depth

    # how deep this context can get, known before the load: it decides flash attention on the CPU
    depth = one_shot_depth((system, text, spec.instruction() if spec is not None else None), settings.sampling.max_tokens)
    engine = context.replace(context_hint=depth).load_engine()
    from chatllm.tasks.ask import oneshot

    on_tool = None
    if session is not None:  # its servers started while the model loaded
        from functools import partial

        from chatllm.cli.tool_use import show_event
        from chatllm.tasks.tools.definitions import check_choice

        session.toolbox.ready()
        check_choice(settings.sampling.tool_choice, session.offered())
        if not session.active():
            out.warn("no tool can run: the model answers without tools")
        on_tool = partial(show_event, out)

    view = ThinkingView(out, hide=hide_thinking, show_in_pipe=show_thinking)

    def on_text(piece: str) -> None:
        view.fold(engine.last_stats.reasoning_tokens)
        if not out.as_json and spec is None:
            out.write(piece)

    if kind == "ask":
        answer = oneshot.ask(engine, text, settings.sampling, system=system, on_text=on_text, spec=spec, tools=tools,
                             on_reasoning=view.reasoning, session=session, on_tool=on_tool)
    else:
        answer = oneshot.generate(engine, text, settings.sampling, on_text=on_text, spec=spec)
    view.fold(answer.stats.reasoning_tokens)
    _show_answer(answer, out, spec)


def _show_answer(answer, out: Output, spec) -> None:
    """A one-shot answer after it streamed: the JSON value under a schema, its calls (one JSON object a line), the
    stats line, or the --json record."""
    from chatllm.tasks.ask.oneshot import call_record

    def human() -> None:
        if spec is not None:
            out.json_value(answer.data)
        elif answer.text and not answer.text.endswith("\n"):
            out.write("\n")
        for call in answer.tool_calls:
            out.json(call_record(call))
        if answer.stats.finish_reason == "length" and answer.reasoning and not answer.text and not answer.tool_calls:
            out.warn("the reply ended inside its reasoning (--max-tokens): raise -n, or cap the trace with --reasoning-budget")
        if out.err_tty:
            out.status(format_stats(answer.stats))

    out.result(answer.as_dict(), human)


INDEX_FILE = "index.db"


def _ask_files(words: List[str], files: List[Path], context: CommandContext, *, system: Optional[str], spec,
               compose: Optional[Callable[[str], str]], show_sources: bool, rerank: bool = True) -> None:
    """A question over files: the inputs are checked and read (when they may fit) before the model loads."""
    from chatllm.inputs import gather_files, prompt_char_limit, read_prompt, read_text, stdin_is_piped
    from chatllm.storage.search_index import SearchIndex
    from chatllm.tasks.retrieval import file_answers

    settings, out = context.settings, context.out
    question = " ".join(words).strip()
    paths = gather_files(files, out.warn)  # before the model loads: bad input fails fast
    piped = read_prompt("-", out.warn, settings.n_ctx, allow_empty=True) if stdin_is_piped() else ""
    total = sum(p.stat().st_size for p in paths) + len(piped.encode("utf-8"))
    # more bytes than the window holds cannot fit: those files are read only for indexing, when new
    texts = [read_text(p, out.warn) for p in paths] if total <= prompt_char_limit(settings.n_ctx) else None
    index = SearchIndex(settings.home / INDEX_FILE, fingerprint=file_answers.CHUNKER, warn=out.warn)
    embedder = None
    try:
        docs = file_answers.file_docs(index, paths, texts, piped)
        engine = context.load_engine()
        embedder = _load_embedder(context) if settings.embed_model else None
        on_text = None if out.as_json or spec is not None else out.write
        result = file_answers.ask_files(engine, index, docs, question, settings.sampling,
                                        read=lambda d: read_text(d.name, out.warn), system=system, on_text=on_text,
                                        spec=spec, compose=compose, embedder=embedder, on_status=out.status,
                                        rerank=file_answers.RERANK if rerank else None)
    finally:
        if embedder is not None:
            embedder.close()
        index.close()
    if isinstance(result, file_answers.RetrievalAnswer):
        _show_retrieval(result, out, spec is not None, show_sources)
        return
    if show_sources:
        for n, doc in enumerate(docs, 1):
            out.status(f"[{n}] {doc.name}:1-{(doc.text or '').count(chr(10)) + 1} (the whole file: it fits the window)")
    _show_answer(result, out, spec)


def _load_embedder(context: CommandContext):
    """The embedding model of hybrid retrieval; a refusal's hint names --embed-model, the flag that chose it."""
    from chatllm.errors import ChatllmError

    try:
        return context.load_engine(context.settings.embed_model, embedding=True)
    except ChatllmError as exc:
        if exc.hint and " -m " in exc.hint:
            exc.hint = exc.hint.replace(" -m ", " --embed-model ")
        raise


def _show_retrieval(result, out: Output, structured: bool, show_sources: bool) -> None:
    """The answer's citations after it on stdout (--sources: the passages on stderr), or the --json record."""
    if show_sources:  # stderr, so stdout stays the answer and its citations
        if not result.passages:
            out.status("no passage shares a word with the question")
        for n, p in enumerate(result.passages, 1):
            judged = f", relevance {p.relevance:.2f}" if p.relevance is not None else ""
            out.status(f"[{n}] {p.span} score {p.score:.2f}{judged}, {p.tokens} tokens")
            out.status("    " + (p.window or p.text).replace("\n", "\n    "))
        if result.reranking is not None:
            rest = result.reranking.judged[len(result.passages):]
            if rest:
                out.status("also judged: " + ", ".join(f"{p.span} ({p.relevance:.2f})" for p in rest))

    def human() -> None:
        if structured:
            out.json_value(result.answer.data)
        else:
            if not result.answer.text.endswith("\n"):
                out.write("\n")
            if result.citations:
                out.write("\n" + "".join(c.line() + "\n" for c in result.citations))
        if out.err_tty:
            cached = "index cached" if not result.indexed else f"indexed {result.indexed} file(s) in {result.index_seconds:.1f}s"
            r = result.reranking
            ranked = f" · {len(r.judged)} reranked ({r.tokens} tokens, {r.seconds:.1f}s)" if r is not None else ""
            out.status(f"{format_stats(result.answer.stats)} · {len(result.passages)} passages{ranked} · {cached}")

    out.result(result.as_dict(with_text=show_sources), human)
