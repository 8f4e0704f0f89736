"""The model registry: the shipped models.toml merged with the user's, and parsing of MODEL references."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path, PurePosixPath

from chatllm.errors import ChatllmError, UsageError
from chatllm.settings import DEFAULT_MODEL, Settings, check_types, read_toml

SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
QUANT_RE = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class ModelSpec:
    """One model: where it lives on the Hub (or on disk) and how to run it."""

    alias: str | None = None
    repo: str | None = None
    file: str | None = None  # None with quant set: pick the file from the repo listing
    quant: str | None = None
    revision: str = "main"
    sha256: str | None = None
    size: int | None = None
    context: int | None = None
    chat_format: str | None = None
    description: str = ""
    license: str = ""
    params: str = ""
    default: bool = False
    kind: str = ""  # "embedding" (vectors: `chatllm embed`), "chat", or "" (unsaid: the GGUF's pooling decides)
    thinking: bool = False  # a reasoning model (it may write a trace before its answer: --think/--no-think)
    tools: bool = False  # trained to call tools in its template's syntax (`--tools`, `--mcp`)
    ram: float | None = None  # GB of memory it needs at its default context, weights and KV cache
    local_path: Path | None = None
    source: str = "builtin"
    # A remote (OpenAI-compatible) server instead of a GGUF: its base url, the model id it serves, the environment
    # variable that holds its API key (the key itself is read at call time and never stored), TLS verification and
    # the timeout in seconds (for a whole reply, or between two streamed events); `parallel`: how many requests at
    # once the work that splits sends it (--parallel).
    url: str | None = None
    remote_model: str | None = None
    api_key_env: str | None = None
    tls_verify: bool = True
    timeout: float | None = None
    parallel: int | None = None
    api: str = "auto"  # which remote engine: "auto" (probed at connect), "llama-server" or "chat" (see REMOTE_APIS)

    def require(self, key: str) -> str:
        """A field a Hub download cannot do without (repo, file, quant); an error naming the model if unset."""
        value = getattr(self, key)
        if not value:
            raise ChatllmError(f"{self.name}: no {key} to download it by", "check its entry in models.toml")
        return value

    @property
    def is_remote(self) -> bool:
        """True for a model served over HTTP (no file to download or check)."""
        return self.url is not None

    @property
    def name(self) -> str:
        """How to show this model to the user."""
        if self.alias:
            return self.alias
        if self.url:
            return f"openai:{self.url}" + (f"#{self.remote_model}" if self.remote_model else "")
        if self.local_path:
            return str(self.local_path)
        return f"hf:{self.repo}/{self.file}" if self.file else f"hf:{self.repo}:{self.quant}"

    @property
    def quantization(self) -> str:
        """The quant named in the file name, or ''."""
        found = QUANT_RE.findall(Path(self.file or (self.local_path and self.local_path.name) or "").stem)
        return found[-1].upper() if found else (self.quant or "").upper()


REMOTE_FIELDS = {"url", "remote_model", "api_key_env", "tls_verify", "timeout", "parallel", "api"}
# "llama-server": its token endpoints (RemoteEngine, exact); "chat": any OpenAI-compatible server (ChatRemoteEngine).
REMOTE_APIS = ("auto", "llama-server", "chat")
TABLE_KEYS = {f.name for f in fields(ModelSpec)} - {"alias", "quant", "local_path", "source"} - REMOTE_FIELDS
# A remote entry: `url` marks it; `model` in the file is the server's model id (ModelSpec.remote_model).
REMOTE_KEYS = {"url", "model", "api_key_env", "tls_verify", "timeout", "parallel", "context", "description", "license", "params",
               "default", "kind", "api", "thinking", "tools"}
ONE_OFF_KEY_ENV = "CHATLLM_API_KEY"  # the key variable of a one-off openai:URL#MODEL reference
_TEXT = ((str,), "a string", 'description = "..."')
SPEC_TYPES = {
    "repo": ((str,), "a string", 'repo = "owner/name"'), "file": ((str,), "a string", 'file = "model.Q4_K_M.gguf"'),
    "revision": ((str,), "a string", 'revision = "main"'), "sha256": ((str,), "a string", 'sha256 = "<64 hex digits>"'),
    "size": ((int,), "a whole number of bytes", "size = 986048768"),
    "context": ((int,), "a whole number of tokens", "context = 8192"),
    "chat_format": ((str,), "a string", 'chat_format = "chatml"'), "description": _TEXT, "license": _TEXT,
    "params": ((str,), "a string", 'params = "1.5B"'), "default": ((bool,), "true or false", "default = true"),
    "url": ((str,), "a string", 'url = "http://127.0.0.1:8080/v1"'), "model": ((str,), "a string", 'model = "server-model-id"'),
    "api_key_env": ((str,), "a string", 'api_key_env = "MY_SERVER_KEY"'),
    "tls_verify": ((bool,), "true or false", "tls_verify = false"),
    "timeout": ((int, float), "a number of seconds", "timeout = 300"),
    "kind": ((str,), '"chat" or "embedding"', 'kind = "embedding"'),
    "parallel": ((int,), "a whole number of requests at once", "parallel = 4"),
    "api": ((str,), '"auto", "llama-server" or "chat"', 'api = "chat"'),
    "thinking": ((bool,), "true or false", "thinking = true"), "tools": ((bool,), "true or false", "tools = true"),
    "ram": ((int, float), "a number of GB", "ram = 2.5"),
}
URL_RE = re.compile(r"^https?://[^\s/#?]+(/[^\s#?]*)?$", re.IGNORECASE)
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def shipped_registry_path() -> Path:
    """models.toml inside the installed package, or at the repo top level in a source checkout."""
    packaged = resources.files("chatllm").joinpath("models.toml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "models.toml"


def _validate_file(path: Path, alias: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ChatllmError(f"{path}: [{alias}] needs a `file`", "give the GGUF file name inside the repo")
    posix = PurePosixPath(value)
    if posix.is_absolute() or ".." in posix.parts or "\\" in value or re.match(r"^[A-Za-z]:", value):
        raise ChatllmError(
            f"{path}: [{alias}] file {value!r} must be a relative path inside the repo",
            "remove '..' and leading '/' from `file`",
        )
    return value


def _load_table(path: Path, source: str) -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for alias, table in read_toml(path).items():
        if not isinstance(table, dict):
            raise ChatllmError(f"{path}: {alias!r} must be a table like [{alias}]", "see the shipped models.toml for the shape")
        if "url" in table:
            specs[alias] = _remote_entry(path, alias, table, source)
            continue
        _check_keys(path, alias, table, TABLE_KEYS)
        check_types(path, table, SPEC_TYPES, f"[{alias}] ")
        _check_kind(path, alias, table)
        if not isinstance(table.get("repo"), str) or table["repo"].count("/") != 1:
            raise ChatllmError(f"{path}: [{alias}] needs `repo = \"owner/name\"`", "give the Hub repository")
        values = dict(table, file=_validate_file(path, alias, table.get("file")))
        sha = values.get("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha)):
            raise ChatllmError(f"{path}: [{alias}] sha256 is not 64 hex digits", "copy the hash from the Hub file page")
        specs[alias] = ModelSpec(alias=alias, source=source, **values)
    return specs


def _check_keys(path: Path, alias: str, table: dict, known: set[str], what: str = "") -> None:
    """Refuse a key the entry's kind does not have, listing the ones it has."""
    unknown = set(table) - known
    if unknown:
        raise ChatllmError(f"{path}: [{alias}] has unknown key {sorted(unknown)[0]!r}{what}",
                           f"known keys: {', '.join(sorted(known))}")


def _check_kind(path: Path, alias: str, table: dict) -> None:
    if table.get("kind", "chat") not in ("chat", "embedding"):
        raise ChatllmError(f"{path}: [{alias}] kind must be \"chat\" or \"embedding\", not {table['kind']!r}",
                           'for example kind = "embedding" for a model `chatllm embed` uses')


def _remote_entry(path: Path, alias: str, table: dict, source: str) -> ModelSpec:
    _check_keys(path, alias, table, REMOTE_KEYS, " for a remote model (it has a `url`)")
    check_types(path, table, SPEC_TYPES, f"[{alias}] ")
    _check_kind(path, alias, table)
    url = _check_url(table["url"], lambda msg: ChatllmError(f"{path}: [{alias}] {msg}", 'for example url = "http://127.0.0.1:8080/v1"'))
    key_env = table.get("api_key_env")
    if key_env is not None and not ENV_RE.match(key_env):
        raise ChatllmError(f"{path}: [{alias}] api_key_env must name an environment variable, not hold the key",
                           'for example api_key_env = "MY_SERVER_KEY", with the key in that variable')
    timeout = table.get("timeout")
    if timeout is not None and timeout <= 0:
        raise ChatllmError(f"{path}: [{alias}] timeout must be above 0 seconds", "for example timeout = 300")
    if not 1 <= table.get("parallel", 1) <= 256:
        raise ChatllmError(f"{path}: [{alias}] parallel must be 1 to 256", "for example parallel = 4 (the server's slots)")
    if table.get("api", "auto") not in REMOTE_APIS:
        raise ChatllmError(f"{path}: [{alias}] api must be \"auto\", \"llama-server\" or \"chat\", not {table['api']!r}",
                           'api = "chat" for any OpenAI-compatible server (vLLM, ollama, a hosted API); "auto" probes it')
    values = {k: v for k, v in table.items() if k not in ("url", "model")}
    return ModelSpec(alias=alias, source=source, url=url, remote_model=table.get("model") or None, **values)


def _check_url(url: str, error) -> str:
    url = url.strip().rstrip("/")
    if not URL_RE.match(url):
        raise error(f"url {url!r} is not an http:// or https:// address")
    return url


def load_registry(settings: Settings) -> dict[str, ModelSpec]:
    """All aliases: the shipped ones, overridden and extended by the user's models.toml."""
    registry = _load_table(shipped_registry_path(), "builtin")
    registry.update(_load_table(settings.user_registry, "user"))
    return registry


def default_alias(registry: dict[str, ModelSpec]) -> str:
    """The alias marked default (the user's choice wins), else DEFAULT_MODEL."""
    marked = [s for s in registry.values() if s.default]
    user = [s for s in marked if s.source == "user"]
    return ((user or marked)[0].alias or DEFAULT_MODEL) if marked else DEFAULT_MODEL


def parse_ref(ref: str, registry: dict[str, ModelSpec]) -> ModelSpec:
    """Turn a MODEL argument (alias, hf:owner/repo:QUANT, hf:owner/repo/file.gguf[@rev], openai:URL#ID, path) into a spec."""
    ref = ref.strip()
    if not ref:
        raise UsageError("empty model name", "run `chatllm models` to see the aliases")
    if ref in registry:
        return registry[ref]
    if ref.startswith("hf:"):
        return _parse_hf(ref)
    if ref.startswith("openai:"):
        return _parse_openai(ref)
    path = Path(ref).expanduser()
    if ref.lower().endswith(".gguf") or path.exists() or "/" in ref or ref.startswith("."):
        if path.is_dir():
            raise UsageError(f"{ref} is a directory, not a .gguf file", "give the path of the .gguf file itself")
        if not path.exists():
            raise UsageError(f"no such model file: {ref}", "check the path, or use an alias from `chatllm models`")
        return ModelSpec(local_path=path.resolve(), source="path")
    close = difflib.get_close_matches(ref, list(registry), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UsageError(f"unknown model {ref!r}", hint + "run `chatllm models` for aliases, or use hf:owner/repo:QUANT or a .gguf path")


def _parse_openai(ref: str) -> ModelSpec:
    url, _, model = ref[len("openai:"):].partition("#")
    usage = "use openai:http://HOST:PORT/v1#MODEL_ID (the key, if any, in $" + ONE_OFF_KEY_ENV + ")"
    url = _check_url(url, lambda msg: UsageError(f"bad model reference {ref!r}: {msg}", usage))
    return ModelSpec(url=url, remote_model=model.strip() or None, api_key_env=ONE_OFF_KEY_ENV, source="openai")


def _parse_hf(ref: str) -> ModelSpec:
    body = ref[3:]
    usage = "use hf:owner/repo:QUANT or hf:owner/repo/file.gguf[@revision]"
    parts = body.split("/", 2)
    if len(parts) == 2 and ":" in parts[1]:
        name, quant = parts[1].split(":", 1)
        if not (parts[0] and name and quant):
            raise UsageError(f"bad model reference {ref!r}", usage)
        return ModelSpec(repo=f"{parts[0]}/{name}", quant=quant, source="hf")
    if len(parts) == 3 and parts[0] and parts[1]:
        file, _, revision = parts[2].partition("@")
        if not file.lower().endswith(".gguf") or ".." in PurePosixPath(file).parts:
            raise UsageError(f"bad model reference {ref!r}: the file must be a .gguf inside the repo", usage)
        return ModelSpec(repo=f"{parts[0]}/{parts[1]}", file=file, revision=revision or "main", source="hf")
    raise UsageError(f"bad model reference {ref!r}", usage)


def pick_quant_file(repo: str, quant: str, files: list[str]) -> str:
    """Choose the one .gguf in a repo listing whose name carries the quant; ambiguity is an error."""
    wanted = quant.upper()
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    matches = [f for f in ggufs if wanted in [q.upper() for q in QUANT_RE.findall(PurePosixPath(f).stem)]]
    # Split models list every shard: keep the first, the loader finds the rest.
    firsts = [f for f in matches if (m := SPLIT_RE.search(f)) is None or m.group(1) == "00001"]
    if len(firsts) == 1:
        return firsts[0]
    if not firsts:
        quants = sorted({q.upper() for f in ggufs for q in QUANT_RE.findall(PurePosixPath(f).stem)})
        raise UsageError(
            f"no {wanted} file in {repo}",
            f"available quants: {', '.join(quants) or 'none (no .gguf files)'}",
        )
    raise UsageError(
        f"{wanted} is ambiguous in {repo}: {', '.join(firsts)}",
        f"name the file: hf:{repo}/{firsts[0]}",
    )


def split_parts(file: str) -> list[str]:
    """All shard names of a split GGUF (just [file] for a single-file model)."""
    m = SPLIT_RE.search(file)
    if not m:
        return [file]
    total = int(m.group(2))
    stem = file[: m.start()]
    return [f"{stem}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1)]
