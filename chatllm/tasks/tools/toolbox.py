"""The tools of a run: every source the user named, which of their tools are offered, and the switches of /tools.

What is offered follows the user's words only: `--mcp FILE`, `--functions FILE.py` and `--tools FILE.json` make their
tools available and offered; `-T NAME` (a tool or a whole source) narrows the offer to those named; the servers of
`mcp.json` in the config dir start only when `-T` names them (or a tool none of the other sources has) or with
`--all-tools`, and `/tools on NAME` in a chat. No flag, no tool.

Opening is split in two so servers start while the model loads: `open_toolbox` reads every file and starts the
servers (a bad file is an error before any model loads); `Toolbox.ready()` waits for them, warns about those that
failed, and resolves the names given with -T."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from chatllm.engines.chat_formats.tool_calls import ToolSpec
from chatllm.errors import UsageError
from chatllm.tasks.tools.sources import ToolSource


@dataclass
class Entry:
    """One tool of one source: the name it is offered under (the source's own unless two sources share it)."""

    name: str
    tool: str  # the source's own name for it
    source: ToolSource
    spec: ToolSpec
    on: bool = False


class Toolbox:
    """The sources of a run and the tools they offer, each switched on or off."""

    def __init__(self, sources: Sequence[ToolSource] = (), *, names: Sequence[str] = (), all_tools: bool = False,
                 configured: Callable[[], list] | None = None, log_dir: Path | None = None,
                 warn: Callable[[str], None] = lambda m: None):
        self.sources: list[ToolSource] = list(sources)
        self.names = list(dict.fromkeys(names))  # -T, in order, once each
        self.all_tools = all_tools
        self.warn = warn
        self._configured = configured  # reads mcp.json in the config dir (only when asked)
        self._config_read = False
        self._reported: set[str] = set()  # servers already warned about
        self._log_dir = log_dir  # where MCP servers' logs go (None: no server may start)
        self._runtime: object | None = None
        self._explicit = {s.name for s in self.sources}  # named on the command line: offered unless -T narrows
        self._entries: dict[str, Entry] = {}
        self._told: set[str] = set()

    # -- what is offered ----------------------------------------------------------------------------------------------

    def offered(self) -> list[ToolSpec]:
        """The tools switched on, as the model is offered them."""
        self._tell_notes()
        return [e.spec for e in self._entries.values() if e.on]

    def entries(self) -> list[Entry]:
        """Every tool known, on or off."""
        return list(self._entries.values())

    def lookup(self, name: str) -> Entry | None:
        """The tool offered under this name."""
        entry = self._entries.get(name)
        return entry if entry is not None and entry.on else None

    @property
    def runnable(self) -> bool:
        """True when some offered tool has an implementation (not only definitions)."""
        return any(e.on and e.source.kind != "definitions" for e in self._entries.values())

    # -- starting ---------------------------------------------------------------------------------------------------

    def ready(self) -> "Toolbox":
        """Wait for the servers started so far, warn about those that failed, resolve -T; a UsageError for a -T name
        that no running source has (a warning instead when a failed server might have had it)."""
        from chatllm.tasks.tools.mcp_servers import McpServer

        if self.all_tools:
            self._read_config(start=None)
        elif self._unresolved():  # servers of mcp.json named with -T start now, beside those of --mcp
            self._read_config(start=set(self._unresolved()))
        self._wait()
        if self._config_read and self._unresolved():  # a -T tool none of the started sources has: look in every server
            for server in self.sources:
                if isinstance(server, McpServer) and server.state == "not started":
                    server.start()
            self._wait()
        self._index()
        missing = self._unresolved()
        if missing:
            failed = [s.name for s in self.sources if isinstance(s, McpServer) and s.state == "failed"]
            known = ", ".join(sorted(self._entries)) or "none"
            if failed:
                self.warn(f"-T {missing[0]}: no running source offers it (not available: {', '.join(failed)})")
            else:
                self.close()
                raise UsageError(f"-T {missing[0]}: no such tool or tool source (tools: {known})",
                                 "a server of mcp.json is named by its key; `chatllm chat` then /tools lists the tools")
        return self

    def _unresolved(self) -> list[str]:
        """The -T names no source (and no tool of a running source) answers to."""
        known = {s.name for s in self.sources}
        for source in self.sources:
            known.update(t.name for t in source.tools())
        known.update(self._entries)
        return [n for n in self.names if n not in known]

    def _read_config(self, start: set[str] | None) -> None:
        """Add the servers of mcp.json (once); start those named in `start` (all when None)."""
        if self._config_read or self._configured is None:
            return
        self._config_read = True
        configs = [c for c in self._configured() if c.name not in {s.name for s in self.sources}]
        servers = self._servers(configs)
        self.sources.extend(servers)
        for server in servers:
            if start is None or server.name in start:
                server.start()

    def _servers(self, configs: list) -> list:
        from chatllm.tasks.tools.mcp_servers import McpRuntime, McpServer

        if not configs:
            return []
        if self._runtime is None:
            if self._log_dir is None:
                raise UsageError("MCP servers cannot start here", "")
            self._runtime = McpRuntime(self._log_dir)
        runtime = self._runtime
        assert isinstance(runtime, McpRuntime)
        runtime.add_secrets(configs)
        return [McpServer(c, runtime) for c in configs]

    def add_servers(self, configs: list) -> None:
        """Servers named on the command line (--mcp): started now, offered when ready."""
        servers = self._servers(configs)
        self.sources.extend(servers)
        self._explicit.update(s.name for s in servers)
        for server in servers:
            server.start()

    def _wait(self) -> None:
        from chatllm.tasks.tools.mcp_servers import McpServer

        for source in self.sources:
            # a server that failed before this wait (one that exits at once) is reported all the same, once
            if (isinstance(source, McpServer) and source.state in ("starting", "failed") and not source.wait()
                    and source.name not in self._reported):
                self._reported.add(source.name)
                self.warn(f"MCP server {source.name} is not available: {source.reason}")

    def _index(self) -> None:
        """Every running source's tools under a unique name, switched on as the flags say."""
        before = {name: e.on for name, e in self._entries.items()}
        entries: dict[str, Entry] = {}
        for source in self.sources:
            for spec in source.tools():
                tool = spec.name
                name = spec.name if spec.name not in entries else f"{source.name}_{spec.name}"
                if name != spec.name:
                    self.warn(f"two sources offer a tool named {spec.name}: the one of {source.name} is offered as {name}")
                    spec = ToolSpec(name, spec.description, spec.parameters)
                on = before.get(name, self._wanted(source, tool, name))
                entries[name] = Entry(name, tool, source, spec, on)
        self._entries = entries

    def _wanted(self, source: ToolSource, tool: str, name: str) -> bool:
        if self.names:
            return bool({tool, name, source.name} & set(self.names))
        return source.name in self._explicit or self.all_tools

    # -- /tools and /mcp -----------------------------------------------------------------------------------------------

    def switch(self, name: str, on: bool) -> list[str]:
        """Turn a tool, or every tool of a source, on or off (a server of mcp.json is started first); the names changed."""
        from chatllm.tasks.tools.mcp_servers import McpServer

        source = self._source(name)
        if source is None and name not in self._entries and on:
            self._read_config(start=set())
            source = self._source(name)
        if isinstance(source, McpServer) and on and source.state in ("not started", "starting"):
            source.start()
            if not source.wait():
                raise UsageError(f"the MCP server {name} did not start: {source.reason}", "/mcp shows each server's state")
            self._index()
        if source is not None:
            changed = [e.name for e in self._entries.values() if e.source is source]
            if not changed:
                raise UsageError(f"{name} offers no tools ({source.status()})", "/mcp shows each server's state")
        elif name in self._entries:
            changed = [name]
        else:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UsageError(f"no tool or tool source named {name!r} (tools: {known})", "/tools lists them; /mcp the servers")
        for tool in changed:
            self._entries[tool].on = on
        return changed

    def _source(self, name: str) -> ToolSource | None:
        return next((s for s in self.sources if s.name == name), None)

    def servers(self) -> list[tuple[str, str, str]]:
        """(name, where, state) of every source, for /mcp (and the sources that are files)."""
        if self._configured is not None and not self._config_read:
            try:
                self._read_config(start=set())
            except UsageError as exc:
                self.warn(exc.message)
        rows = []
        for source in self.sources:
            config = getattr(source, "config", None)
            where = config.where() if config is not None else source.kind
            rows.append((source.name, where, source.status()))
        return rows

    def _tell_notes(self) -> None:
        """Faults a running server showed (garbage on its stdout...): one warning each."""
        for source in self.sources:
            for note in getattr(source, "notes", ()):
                if note not in self._told:
                    self._told.add(note)
                    self.warn(note)

    def close(self) -> None:
        """Stop every server (and the loop they ran on)."""
        for source in self.sources:
            try:
                source.close()
            except Exception:  # closing one must not keep the others running
                pass
        close = getattr(self._runtime, "close", None)
        if close is not None:
            close()
            self._runtime = None


def open_toolbox(*, config_dir: Path, log_dir: Path, mcp_files: Sequence[Path] = (), function_files: Sequence[Path] = (),
                 definition_files: Sequence[Path] = (), names: Sequence[str] = (), all_tools: bool = False,
                 warn: Callable[[str], None] = lambda m: None) -> Toolbox:
    """Read every file the user named (UsageError for one that cannot be used, before any model loads) and start
    the servers in the background; call ready() on the result before the first turn."""
    from chatllm.tasks.tools.definitions import check_tools, load_tool_file
    from chatllm.tasks.tools.functions import load_functions
    from chatllm.tasks.tools.mcp_config import config_servers, read_servers
    from chatllm.tasks.tools.sources import DefinitionsSource

    sources: list[ToolSource] = []
    for path in definition_files:
        sources.append(DefinitionsSource(Path(path).name, check_tools(load_tool_file(path), str(path))))
    for path in function_files:
        sources.append(load_functions(Path(path), warn))
    explicit = [server for path in mcp_files for server in read_servers(Path(path))]
    _check_unique([s.name for s in sources] + [c.name for c in explicit])

    box = Toolbox(sources, names=names, all_tools=all_tools, configured=lambda: config_servers(config_dir),
                  log_dir=log_dir, warn=warn)
    box.add_servers(explicit)
    return box


def _check_unique(names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise UsageError(f"two tool sources are named {name!r}", "rename one of the servers (or files)")
        seen.add(name)


def describe_call(name: str, arguments: dict, width: int = 80) -> str:
    """`name(city="Berlin", days=3)`, cut to width: how a call is shown on one line."""
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    text = f"{name}({args})"
    return text if len(text) <= width else text[: width - 1] + "…"
