"""`chatllm ask` and `chatllm generate`: parse the flags, read the prompt, run the one-shot task, print."""

from pathlib import Path
from typing import Annotated, List, Optional

import typer

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
)
from chatllm.output import Output, format_stats
from chatllm.settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object with text and token counts.")]
FileOpt = Annotated[Optional[Path], typer.Option("--file", "-f", help="Read more input from FILE.")]


def ask(
    prompt: Annotated[Optional[List[str]], typer.Argument(help="The instruction; piped stdin is appended.", show_default=False)] = None,
    system: Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")] = None,
    file: FileOpt = None,
    as_json: JsonOpt = False,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None,
) -> None:
    """Ask one question through the model's chat template; the answer streams to stdout.

    Example: cat notes.txt | chatllm ask "what are the action items?"
    """
    settings = model_settings(model=model, device=device, gpu_layers=gpu_layers, ctx=ctx, threads=threads,
                              chat_format=chat_format, offline=offline, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed, stop=stop)
    _one_shot("ask", prompt, file, settings, Output(as_json=as_json), system=system)


def generate(
    prompt: Annotated[Optional[List[str]], typer.Argument(help="Text to continue; piped stdin is appended.", show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the text from FILE.")] = None,
    as_json: JsonOpt = False,
    model: Model = None, device: Device = None, gpu_layers: GpuLayers = None, ctx: Ctx = None, threads: Threads = None,
    chat_format: ChatFormat = None, offline: Offline = False,
    max_tokens: MaxTokens = None, temperature: Temperature = None, top_p: TopP = None, top_k: TopK = None,
    seed: Seed = None, stop: Stop = None,
) -> None:
    """Continue raw text with no chat template (works with base models too).

    Example: chatllm generate "Once upon a time" --max-tokens 50
    """
    settings = model_settings(model=model, device=device, gpu_layers=gpu_layers, ctx=ctx, threads=threads,
                              chat_format=chat_format, offline=offline, max_tokens=max_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed, stop=stop)
    _one_shot("generate", prompt, file, settings, Output(as_json=as_json))


def _one_shot(kind: str, words: Optional[List[str]], file: Optional[Path], settings: Settings, out: Output,
              system: Optional[str] = None) -> None:
    from chatllm.inputs import gather_prompt
    from chatllm.runtime.loader import load_engine
    from chatllm.tasks import oneshot

    text = gather_prompt(words, file, out.warn, settings.n_ctx)  # read before the model loads: bad input fails fast
    engine = load_engine(settings, out)
    on_text = None if out.as_json else out.write
    if kind == "ask":
        answer = oneshot.ask(engine, text, settings.sampling, system=system, on_text=on_text)
    else:
        answer = oneshot.generate(engine, text, settings.sampling, on_text=on_text)

    def human() -> None:
        if not answer.text.endswith("\n"):
            out.write("\n")
        if out.err_tty:
            out.status(format_stats(answer.stats))

    out.result(answer.as_dict(), human)
