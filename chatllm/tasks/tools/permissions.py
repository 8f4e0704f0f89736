"""Whether a call may run: the user's consent, asked as a user expects it.

A call runs without a question when the user said so up front (`--yes`), when its tool or its whole server is marked
`"trusted": true` in the config, or when an earlier answer in this session said "always for this tool" or "always
for this server". Otherwise a terminal asks `y / n / always for this tool / always for this server`; with no terminal
to ask (a pipe), the call is refused with a one-line error and nothing runs. A "no" is the call's result: the model is
told the user declined, and goes on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from chatllm.errors import ChatllmError

YES, NO, ALWAYS_TOOL, ALWAYS_SOURCE = "yes", "no", "tool", "source"


@dataclass(frozen=True)
class ApprovalRequest:
    """What the user is asked about: a tool, where it runs, and the arguments the model gave it."""

    tool: str
    source: str
    kind: str  # mcp | functions
    arguments: dict


Approver = Callable[[ApprovalRequest], str]  # answers YES, NO, ALWAYS_TOOL or ALWAYS_SOURCE


class Trusting(Protocol):
    """What permissions need to know of a source."""

    name: str

    def trusted(self, tool: str) -> bool:
        """Marked as running without a question."""
        ...


class NeedsApproval(ChatllmError):
    """A call that needs the user's consent, and no terminal to ask it in."""


@dataclass
class Permissions:
    """The consent of one session: the up-front --yes, the config's trust, and the "always" answers given so far."""

    yes: bool = False
    ask: Approver | None = None  # None: no terminal to ask (a pipe)
    always_tools: set[tuple[str, str]] = field(default_factory=set)  # (source, tool)
    always_sources: set[str] = field(default_factory=set)

    def needs_asking(self, source: Trusting, tool: str) -> bool:
        """True when running this tool needs a question first."""
        return not (self.yes or source.trusted(tool) or (source.name, tool) in self.always_tools
                    or source.name in self.always_sources)

    def allows(self, source: Trusting, kind: str, tool: str, arguments: dict) -> bool:
        """True: run it; False: the user said no. NeedsApproval when it needs asking and nobody can be asked."""
        if not self.needs_asking(source, tool):
            return True
        if self.ask is None:
            raise NeedsApproval(
                f"the model called {tool} ({source.name}), which needs your approval, and there is no terminal to ask",
                "add --yes to run tool calls without asking, or mark the server \"trusted\": true in mcp.json")
        answer = self.ask(ApprovalRequest(tool, source.name, kind, arguments))
        if answer == ALWAYS_TOOL:
            self.always_tools.add((source.name, tool))
        elif answer == ALWAYS_SOURCE:
            self.always_sources.add(source.name)
        return answer in (YES, ALWAYS_TOOL, ALWAYS_SOURCE)
