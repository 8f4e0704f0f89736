"""Settings: flags, config.toml and the environment, read at call time into one frozen dataclass."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.errors import ChatllmError, UsageError

DEFAULT_MODEL = "qwen3-1.7b"
DEFAULT_CTX = 8192  # the context a model gets when neither --ctx nor the registry says otherwise (at most its own)
DEVICES = ("auto", "cpu", "cuda", "metal")
FLASH_ATTN = ("auto", "on", "off")
DRAFT = ("auto", "off")  # drafts from the prompt: where they pay (llama.cpp engine), or never (the exact path)
OVERFLOW = ("compact", "trim")  # what chat does with the oldest exchanges when a turn would not fit the window


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens; every generating command takes these."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: str | None = None  # compact JSON Schema text the answer must match (decoding is constrained to it)
    tools: str | None = None  # compact JSON list of the tools offered ({"name", "description", "parameters"})
    tool_choice: str = "auto"  # auto | required | none | a tool's name
    think: bool | str | None = None  # a reasoning model thinks (True), not (False), with an effort (low...), or as it likes
    reasoning_budget: int | None = None  # after this many reasoning tokens the block is closed and the answer begins
    draft: str = "auto"  # drafts from the prompt (speculative decoding): "auto" where they pay, "off" never

    def replace(self, **changes) -> "Sampling":
        """A copy with some values changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about where things live and how to run the model."""

    home: Path
    config_dir: Path
    hub_cache: Path
    hf_endpoint: str
    hf_token: str | None = field(default=None, repr=False)
    offline: bool = False
    model: str = DEFAULT_MODEL
    device: str = "auto"
    gpu_layers: int | None = None  # None: decided by device; -1: all
    n_ctx: int | None = None
    n_threads: int | None = None
    n_batch: int = 512
    chat_format: str | None = None
    flash_attn: bool | None = None  # None: chosen per run (engines/llamacpp/flash_attn.py); True/False: the user's explicit choice
    context_hint: int | None = None  # the most tokens this run's context will hold, when the command knows it up front
    embed_model: str | None = None  # `ask -f` past the window: hybrid retrieval with this embedding model
    overflow: str = "compact"  # chat: the oldest exchanges are summarized (compact) or dropped (trim)
    verbose: bool = False
    debug: bool = False
    sampling: Sampling = Sampling()

    @property
    def db_path(self) -> Path:
        """The SQLite conversation store."""
        return self.home / "chatllm.db"

    @property
    def user_registry(self) -> Path:
        """The user's own models.toml, merged over the shipped one."""
        return self.config_dir / "models.toml"

    def replace(self, **changes) -> "Settings":
        """A copy with some values changed."""
        return dataclasses.replace(self, **changes)


CONFIG_KEYS = {"model", "embed_model", "device", "gpu_layers", "ctx", "threads", "batch", "flash_attn", "overflow",
               "sampling"}
# a schema and the tools offered are per command, not settings
SAMPLING_KEYS = {f.name for f in dataclasses.fields(Sampling)} - {"json_schema", "tools", "tool_choice"}
# key: (lowest, highest, whether the lowest itself is refused). The one home of these bounds: flags, config.toml
# and the REPL's /set all check through check_sampling.
SAMPLING_BOUNDS: dict[str, tuple[float, float | None, bool]] = {
    "max_tokens": (1, None, False),
    "temperature": (0, None, False),
    "top_p": (0, 1, True),
    "top_k": (0, None, False),
    "min_p": (0, 1, False),
    "repeat_penalty": (0, None, True),
}


def flag_name(key: str) -> str:
    """The command-line flag of a setting: top_p -> --top-p."""
    return "--" + key.replace("_", "-")


def check_sampling(sampling: Sampling, name=flag_name, example=lambda label, value: f"{label} {value}") -> Sampling:
    """The sampling unchanged, or a UsageError naming the first value out of bounds (as `name(key)` calls it)."""
    defaults = Sampling()
    for key, (low, high, low_refused) in SAMPLING_BOUNDS.items():
        value = getattr(sampling, key)
        kind = int if isinstance(getattr(defaults, key), int) else float
        label = name(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            what = "a whole number" if kind is int else "a number"
            raise UsageError(f"{label} must be {what}, not {value!r}", f"for example {example(label, getattr(defaults, key))}")
        if value < low or (low_refused and value <= low) or (high is not None and value > high):
            if high is not None:
                span = f"in ({low}, {high}]" if low_refused else f"in [{low}, {high}]"
            else:
                span = f"above {low}" if low_refused else f"at least {low}"
            raise UsageError(f"{label} must be {span}, not {value}", f"for example {example(label, getattr(defaults, key))}")
    if sampling.seed is not None and (isinstance(sampling.seed, bool) or not isinstance(sampling.seed, int)):
        raise UsageError(f"{name('seed')} must be a whole number, not {sampling.seed!r}", f"for example {example(name('seed'), 7)}")
    budget = sampling.reasoning_budget
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise UsageError(f"{name('reasoning_budget')} must be 0 or more tokens, not {budget!r}",
                         f"for example {example(name('reasoning_budget'), 512)}")
    if sampling.think is not None and not isinstance(sampling.think, bool) and sampling.think not in THINK_EFFORTS:
        raise UsageError(f"{name('think')} must be on, off or an effort ({', '.join(THINK_EFFORTS)}), not {sampling.think!r}",
                         f"for example {example(name('think'), 'off')}")
    if sampling.draft not in DRAFT:
        label = name("draft")
        off = '"off"' if label.startswith("config") else "off"  # a TOML string needs its quotes
        raise UsageError(f"{label} must be auto or off, not {sampling.draft!r}", f"for example {example(label, off)}")
    return sampling


THINK_EFFORTS = ("low", "medium", "high")


def parse_think(value: str | bool | None, where: str = "--think") -> bool | str | None:
    """on/true -> True, off/false -> False, low/medium/high -> the effort, auto/None -> None (the model's default)."""
    if value is None or isinstance(value, bool):
        return value
    word = value.strip().lower()
    if word in ("on", "true", "yes", "1"):
        return True
    if word in ("off", "false", "no", "0"):
        return False
    if word in ("auto", "default", ""):
        return None
    if word in THINK_EFFORTS:
        return word
    raise UsageError(f"{where} must be on, off, auto or an effort (low, medium, high), not {value!r}", f"for example {where} off")


def home_dir() -> Path:
    """CHATLLM_HOME, else the platform's data dir for chatllm."""
    env = os.environ.get("CHATLLM_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("chatllm", appauthor=False))


def config_dir() -> Path:
    """CHATLLM_HOME when set (so one variable moves all state), else the platform's config dir."""
    env = os.environ.get("CHATLLM_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("chatllm", appauthor=False))


def hub_cache_dir() -> Path:
    """The standard Hugging Face cache, so models other tools downloaded are found."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def read_toml(path: Path) -> dict:
    """Parse a TOML file; a syntax error names the file, line and column."""
    if sys.version_info >= (3, 11):  # imported here: `chatllm --help` reads no TOML
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ChatllmError(f"{path}: invalid TOML: {exc}", f"fix the syntax in {path}; chatllm never rewrites it")
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ChatllmError(f"{path}: cannot read: {exc}", f"check {path}")


def load_config(path: Path) -> dict:
    """Read config.toml, refusing unknown keys so typos do not go unnoticed."""
    data = read_toml(path)
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise ChatllmError(
            f"{path}: unknown key {sorted(unknown)[0]!r}",
            f"known keys: {', '.join(sorted(CONFIG_KEYS))}; sampling keys go under [sampling]",
        )
    sampling = data.get("sampling", {})
    if not isinstance(sampling, dict):
        raise ChatllmError(f"{path}: sampling must be a table", "write it as a [sampling] section with keys under it")
    if set(sampling) - SAMPLING_KEYS:
        bad = sorted(set(sampling) - SAMPLING_KEYS)
        raise ChatllmError(f"{path}: unknown sampling key {bad[0]!r}", f"known: {', '.join(sorted(SAMPLING_KEYS))}")
    if isinstance(sampling.get("stop"), str):
        sampling["stop"] = [sampling["stop"]]
    check_types(path, data, CONFIG_TYPES)
    check_types(path, sampling, SAMPLING_TYPES, "sampling.")
    return data


# What each config key holds: (accepted types, how to say it, an example).
CONFIG_TYPES = {
    "model": ((str,), "a string", 'model = "qwen2.5-1.5b"'),
    "embed_model": ((str,), "a string", 'embed_model = "bge-small-en-v1.5"'),
    "device": ((str,), "a string", 'device = "cpu"'),
    "gpu_layers": ((int, str), "a number or \"all\"", 'gpu_layers = "all"'),
    "ctx": ((int,), "a whole number", "ctx = 4096"),
    "threads": ((int,), "a whole number", "threads = 4"),
    "batch": ((int,), "a whole number", "batch = 512"),
    "flash_attn": ((str, bool), '"auto", "on" or "off"', 'flash_attn = "auto"'),
    "overflow": ((str,), '"compact" or "trim"', 'overflow = "trim"'),
}
SAMPLING_TYPES = {
    "max_tokens": ((int,), "a whole number", "max_tokens = 256"),
    "temperature": ((int, float), "a number", "temperature = 0.7"),
    "top_p": ((int, float), "a number", "top_p = 0.95"),
    "top_k": ((int,), "a whole number", "top_k = 40"),
    "min_p": ((int, float), "a number", "min_p = 0.05"),
    "repeat_penalty": ((int, float), "a number", "repeat_penalty = 1.1"),
    "seed": ((int,), "a whole number", "seed = 42"),
    "stop": ((list,), "a list of strings", 'stop = ["###"]'),
    "think": ((bool, str), 'true, false or an effort ("low", "medium", "high")', "think = false"),
    "reasoning_budget": ((int,), "a whole number", "reasoning_budget = 1024"),
    "draft": ((str,), '"auto" or "off"', 'draft = "off"'),
}


def check_types(path: Path, table: dict, types: dict, prefix: str = "") -> None:
    """Refuse a value of the wrong type with the file, the key and an example, before it reaches the code."""
    for key, value in table.items():
        if key not in types:
            continue
        accepted, what, example = types[key]
        ok = isinstance(value, accepted) and (bool in accepted or not isinstance(value, bool))
        if ok and isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise ChatllmError(f"{path}: {prefix}{key} must be {what}, not {value!r}", f"for example: {example}")


def parse_flash_attn(value: str | bool | None, where: str = "--flash-attn") -> bool | None:
    """'on' -> True, 'off' -> False, 'auto' or None -> None (chosen per run)."""
    if value is None or isinstance(value, bool):
        return value
    word = value.strip().lower()
    if word not in FLASH_ATTN:
        raise UsageError(f"{where} must be auto, on or off, not {value!r}", "use auto (chosen per run), on or off")
    return None if word == "auto" else word == "on"


def parse_gpu_layers(value: str | int | None) -> int | None:
    """'all' -> -1, a number -> itself, None -> None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if value.strip().lower() == "all":
        return -1
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"--gpu-layers must be a number or 'all', not {value!r}", "for example --gpu-layers all")
    if n < -1:
        raise UsageError("--gpu-layers must be >= 0 or 'all'", "for example --gpu-layers 20")
    return n


def load_settings(
    *,
    model: str | None = None,
    device: str | None = None,
    gpu_layers: str | int | None = None,
    ctx: int | None = None,
    threads: int | None = None,
    offline: bool | None = None,
    flash_attn: str | bool | None = None,
    overflow: str | None = None,
    verbose: bool = False,
    debug: bool = False,
    **sampling: object,
) -> Settings:
    """Build Settings: flags win over config.toml, which wins over built-in defaults."""
    cfg_dir = config_dir()
    cfg = load_config(cfg_dir / "config.toml")
    model = model or os.environ.get("CHATLLM_MODEL") or cfg.get("model") or DEFAULT_MODEL
    device = (device or os.environ.get("CHATLLM_DEVICE") or cfg.get("device") or "auto").lower()
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}", f"use one of: {', '.join(DEVICES)}")
    layers = parse_gpu_layers(gpu_layers if gpu_layers is not None else cfg.get("gpu_layers"))
    if flash_attn is not None:  # the flag, else the environment, else config.toml ("auto" given anywhere wins too)
        fa = parse_flash_attn(flash_attn)
    elif os.environ.get("CHATLLM_FLASH_ATTN"):
        fa = parse_flash_attn(os.environ["CHATLLM_FLASH_ATTN"], "CHATLLM_FLASH_ATTN")
    else:
        fa = parse_flash_attn(cfg.get("flash_attn"), "config.toml: flash_attn")
    cfg_sampling: dict = dict(cfg.get("sampling", {}))
    if "stop" in cfg_sampling:
        cfg_sampling["stop"] = tuple(cfg_sampling["stop"])
    if "think" in cfg_sampling:
        cfg_sampling["think"] = parse_think(cfg_sampling["think"], "config.toml: [sampling] think")
    if isinstance(cfg_sampling.get("draft"), str):
        cfg_sampling["draft"] = cfg_sampling["draft"].strip().lower()
    base = Sampling().replace(**cfg_sampling)
    flag_sampling: dict = {k: v for k, v in sampling.items() if v is not None}
    if "stop" in flag_sampling:
        flag_sampling["stop"] = tuple(flag_sampling["stop"]) or None
    if isinstance(flag_sampling.get("draft"), str):
        flag_sampling["draft"] = flag_sampling["draft"].strip().lower()
    for key in flag_sampling:
        if key not in SAMPLING_KEYS:
            raise TypeError(f"unknown sampling setting {key}")
    check_sampling(base, name=lambda key: f"config.toml: [sampling] {key}", example=lambda label, value: f"{label.split()[-1]} = {value}")
    samp = check_sampling(base.replace(**flag_sampling))
    where = "--overflow" if overflow else "config.toml: overflow"
    overflow = (overflow or cfg.get("overflow") or "compact").strip().lower()
    if overflow not in OVERFLOW:
        raise UsageError(f"{where} must be compact or trim, not {overflow!r}",
                         "compact summarizes the oldest exchanges, trim drops them")
    n_ctx = ctx if ctx is not None else cfg.get("ctx")
    if n_ctx is not None and n_ctx < 64:
        raise UsageError(f"--ctx {n_ctx} is too small", "use at least 64 tokens")
    return Settings(
        home=home_dir(),
        config_dir=cfg_dir,
        hub_cache=hub_cache_dir(),
        hf_endpoint=(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
        hf_token=os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None,
        offline=bool(offline) or _truthy(os.environ.get("HF_HUB_OFFLINE")),
        model=model,
        embed_model=os.environ.get("CHATLLM_EMBED_MODEL") or cfg.get("embed_model") or None,
        overflow=overflow,
        device=device,
        gpu_layers=layers,
        flash_attn=fa,
        n_ctx=n_ctx,
        n_threads=threads if threads is not None else cfg.get("threads"),
        n_batch=int(cfg.get("batch", 512)),
        verbose=verbose,
        debug=debug or _truthy(os.environ.get("CHATLLM_DEBUG")),
        sampling=samp,
    )
