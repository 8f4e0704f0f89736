"""MCP server configuration in the format users already have from Claude Desktop, Cursor and llama-server:

    {"mcpServers": {"NAME": {"command": "...", "args": [...], "env": {...}},       a stdio server
                    "NAME": {"url": "https://.../mcp", "headers": {...}}}}         a Streamable HTTP server

read from `mcp.json` in the config dir or a `--mcp FILE`. chatllm's own keys beside them: `"trusted": true` (every
tool of the server runs without asking) or a list of the tool names that do, `"timeout"` (seconds a call may take),
`"disabled": true`. Keys other clients add are ignored. `${VAR}` in an env or header value is read from chatllm's
environment, so a secret need not sit in the file. The file is only read, never rewritten; env and header values are
never shown (not in errors, not in `repr`)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from chatllm.errors import ChatllmError, UsageError

CONFIG_FILE = "mcp.json"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_VAR = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class ServerConfig:
    """One MCP server as configured: how to reach it, and how far it is trusted."""

    name: str
    origin: str  # the file it came from
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    trusted: bool = False
    trusted_tools: frozenset[str] = frozenset()
    timeout: float | None = None
    from_config_dir: bool = False  # mcp.json in the config dir: its tools are offered only when asked for

    @property
    def transport(self) -> str:
        """"stdio" or "http"."""
        return "http" if self.url else "stdio"

    def where(self) -> str:
        """How it is reached, without a secret: the command and its arguments, or the URL."""
        if self.url:
            return self.url
        return " ".join([self.command or ""] + list(self.args))


def read_servers(path: Path, *, from_config_dir: bool = False) -> list[ServerConfig]:
    """The servers a file configures; a ChatllmError naming the file (and line, or the server) when it cannot be used."""
    path = Path(path).expanduser()
    problem = ChatllmError if from_config_dir else UsageError
    what = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise problem(f"no such file: {what}", 'give a JSON file like {"mcpServers": {"NAME": {"command": ...}}}')
    except (OSError, UnicodeDecodeError) as exc:
        raise problem(f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}", "check the file and its permissions")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise problem(f"{what}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}",
                      f"fix line {exc.lineno} of {path.name}; chatllm never rewrites it")
    servers = data.get("mcpServers", data.get("servers")) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise problem(f"{what}: no \"mcpServers\" object", 'write {"mcpServers": {"NAME": {"command": "...", "args": []}}}')
    found = []
    for name, entry in servers.items():
        server = _server(name, entry, what, problem, from_config_dir)
        if server is not None:
            found.append(server)
    return found


def _server(name: str, entry: object, what: str, problem: type[ChatllmError], from_config_dir: bool) -> ServerConfig | None:
    where = f"{what}: server {name!r}"
    if not _NAME.match(str(name)):
        raise problem(f"{where}: a name is letters, digits, _ . or - (at most 64)", "rename the server")
    if not isinstance(entry, dict):
        raise problem(f"{where} is not a JSON object", 'for example {"command": "npx", "args": ["-y", "some-server"]}')
    if entry.get("disabled") is True:
        return None
    command, url = entry.get("command"), entry.get("url") or entry.get("serverUrl")
    kind = entry.get("type") or entry.get("transport")
    if kind in ("sse",):
        raise problem(f"{where}: the SSE transport is not supported", "use the server's Streamable HTTP endpoint (often /mcp)")
    if (command is None) == (url is None):
        raise problem(f"{where} needs either \"command\" (a stdio server) or \"url\" (Streamable HTTP)",
                      'for example {"command": "uvx", "args": ["mcp-server-time"]}')
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise problem(f"{where}: \"command\" must be a non-empty string", "name the program that starts the server")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://", url)):
        raise problem(f"{where}: \"url\" must be an http:// or https:// URL", "for example http://127.0.0.1:8000/mcp")
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise problem(f"{where}: \"args\" must be a list of strings", 'for example "args": ["--port", "8000"]')
    env = _string_map(entry.get("env", {}), f"{where}: \"env\"", problem)
    headers = _string_map(entry.get("headers", {}), f"{where}: \"headers\"", problem)
    trusted = entry.get("trusted", False)
    if not isinstance(trusted, (bool, list)) or isinstance(trusted, list) and not all(isinstance(t, str) for t in trusted):
        raise problem(f"{where}: \"trusted\" must be true, false or a list of tool names", '"trusted": ["get_time"]')
    timeout = entry.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise problem(f"{where}: \"timeout\" must be a number of seconds above 0", '"timeout": 30')
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise problem(f"{where}: \"cwd\" must be a path", '"cwd": "/path/to/dir"')
    return ServerConfig(
        name=name, origin=what, command=command, args=tuple(str(a) for a in args), env=env, cwd=cwd, url=url,
        headers=headers, trusted=trusted is True, trusted_tools=frozenset(trusted) if isinstance(trusted, list) else frozenset(),
        timeout=float(timeout) if timeout is not None else None, from_config_dir=from_config_dir)


def _string_map(value: object, where: str, problem: type[ChatllmError]) -> dict[str, str]:
    """A map of strings with ${VAR} read from the environment; an error names the key, never the value."""
    if not isinstance(value, dict):
        raise problem(f"{where} must be an object of strings", '{"API_KEY": "${MY_API_KEY}"}')
    out = {}
    for key, raw in value.items():
        if not isinstance(raw, str):
            raise problem(f"{where}: the value of {key!r} must be a string", "quote it")

        def expand(match: re.Match) -> str:
            var = match.group(1)
            if var not in os.environ:
                raise problem(f"{where}: {key!r} uses ${{{var}}}, which is not set", f"export {var}=... before running chatllm")
            return os.environ[var]

        out[str(key)] = _VAR.sub(expand, raw)
    return out


def config_servers(config_dir: Path) -> list[ServerConfig]:
    """The servers of mcp.json in the config dir (none when there is no such file)."""
    path = Path(config_dir) / CONFIG_FILE
    if not path.exists():
        return []
    return read_servers(path, from_config_dir=True)


def secrets_of(servers: list[ServerConfig]) -> list[str]:
    """The env and header values long enough to be secrets, and each of their words (the token of "Bearer TOKEN",
    which a server may echo alone): never shown, scrubbed from what a server sends back."""
    whole = [v for s in servers for v in list(s.env.values()) + list(s.headers.values())]
    values = {part for v in whole for part in [v, *v.split()] if len(part) >= 8}
    return sorted(values, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """The text with every secret value replaced by ***."""
    for value in secrets:
        if value in text:
            text = text.replace(value, "***")
    return text
