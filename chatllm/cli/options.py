"""Flags shared by the model-running commands, collected into Settings by one decorator."""

import functools
import inspect
from typing import Annotated, List, Optional

import typer

from chatllm.settings import Settings, load_settings

PANEL_MODEL = "Model and device"
PANEL_SAMPLING = "Sampling"


class GlobalFlags:
    """Flags given before the command (`chatllm --debug ask ...`)."""

    debug: bool = False
    verbose: bool = False
    offline: bool = False


def _opt(annotation, *decls: str, panel: str, help: str):
    return Annotated[annotation, typer.Option(*decls, help=help, rich_help_panel=panel, show_default=False)]


# name -> (annotation, default). Order is the order shown in --help.
MODEL_PARAMS = {
    "model": (_opt(Optional[str], "--model", "-m", panel=PANEL_MODEL,
                   help="Alias, hf:owner/repo:QUANT, hf:owner/repo/file.gguf[@rev] or a .gguf path [env CHATLLM_MODEL]"), None),
    "device": (_opt(Optional[str], "--device", panel=PANEL_MODEL, help="auto, cpu, cuda or metal [default: auto]"), None),
    "gpu_layers": (_opt(Optional[str], "--gpu-layers", panel=PANEL_MODEL, help="Layers to offload to the GPU: N or all"), None),
    "ctx": (_opt(Optional[int], "--ctx", panel=PANEL_MODEL, help="Context window in tokens [default: the model's, at most 8192]"), None),
    "threads": (_opt(Optional[int], "--threads", panel=PANEL_MODEL, help="CPU threads [default: physical cores]"), None),
    "chat_format": (_opt(Optional[str], "--chat-format", panel=PANEL_MODEL,
                         help="Use a built-in chat format (chatml, llama-3, gemma, ...) instead of the GGUF's template"), None),
    "offline": (_opt(bool, "--offline", panel=PANEL_MODEL, help="Use only downloaded models [env HF_HUB_OFFLINE=1]"), False),
}
SAMPLING_PARAMS = {
    "max_tokens": (_opt(Optional[int], "--max-tokens", "-n", panel=PANEL_SAMPLING, help="Longest reply in tokens [default: 512]"), None),
    "temperature": (_opt(Optional[float], "--temperature", "-t", panel=PANEL_SAMPLING, help="0 is deterministic [default: 0.7]"), None),
    "top_p": (_opt(Optional[float], "--top-p", panel=PANEL_SAMPLING, help="Nucleus sampling [default: 0.95]"), None),
    "top_k": (_opt(Optional[int], "--top-k", panel=PANEL_SAMPLING, help="Top-k sampling [default: 40]"), None),
    "seed": (_opt(Optional[int], "--seed", panel=PANEL_SAMPLING, help="Random seed for reproducible sampling"), None),
    "stop": (_opt(Optional[List[str]], "--stop", panel=PANEL_SAMPLING, help="Stop when this text appears (repeatable)"), None),
}


def _inject(params: dict, func, sampling: bool):
    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.name != "settings"]
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
        for name, (ann, default) in params.items()
    ]

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        flags = {name: kwargs.pop(name) for name in params}
        chat_format = flags.pop("chat_format", None)
        flags["offline"] = flags.get("offline") or GlobalFlags.offline
        settings = load_settings(verbose=GlobalFlags.verbose, debug=GlobalFlags.debug, **flags)
        kwargs["settings"] = settings.replace(chat_format=chat_format) if chat_format else settings
        return func(*args, **kwargs)

    new_params = own + extra
    wrapper.__signature__ = sig.replace(parameters=new_params)
    wrapper.__annotations__ = {p.name: p.annotation for p in new_params}
    del wrapper.__wrapped__  # typer must read the new signature, not the original
    return wrapper


def model_command(func):
    """Give a command the model/device flags and the sampling flags; it receives `settings: Settings`."""
    return _inject({**MODEL_PARAMS, **SAMPLING_PARAMS}, func, sampling=True)


def model_only_command(func):
    """Give a command the model/device flags (no sampling); it receives `settings: Settings`."""
    return _inject(MODEL_PARAMS, func, sampling=False)


def plain_settings(model: Optional[str] = None, offline: bool = False) -> Settings:
    """Settings for commands that manage models without running them."""
    return load_settings(model=model, offline=offline or GlobalFlags.offline, verbose=GlobalFlags.verbose,
                         debug=GlobalFlags.debug)
