"""The slash-command table and the parsing of their arguments (/set KEY VALUE)."""

from __future__ import annotations

import dataclasses
from typing import Any

from chatllm.errors import UsageError
from chatllm.settings import Sampling, check_sampling, parse_think

COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("", "list these commands"),
    "/exit": ("", "leave the chat (also /quit or Ctrl-D)"),
    "/quit": ("", "leave the chat"),
    "/clear": ("", "start a new conversation (same model and system prompt)"),
    "/system": ("[TEXT | -]", "show the system prompt, set it, or remove it with -"),
    "/model": ("[MODEL]", "show the model, or switch to another one (downloaded if needed)"),
    "/retry": ("", "generate the last reply again"),
    "/undo": ("", "drop the last exchange"),
    "/edit": ("N [TEXT]", "rewrite message N and go on from there in a new branch (the old one is kept)"),
    "/branch": ("", "fork the conversation here into a new saved conversation (the old one is kept)"),
    "/compact": ("[KEEP]", "summarize every exchange the model sees but the last KEEP (1) into the running summary"),
    "/save": ("[FILE]", "save the conversation: markdown, or JSON when FILE ends in .json"),
    "/load": ("FILE", "load a conversation from a .md or .json file"),
    "/set": ("[KEY VALUE]", "show or change sampling: temperature, top_p, top_k, max_tokens, seed, think, draft, ..."),
    "/stats": ("", "speed of the last reply, context use, what is compacted, sampling"),
    "/history": ("[N | search TEXT]", "list saved conversations (resume one with `chatllm chat --resume ID`), or "
                 "search every message"),
    "/tools": ("[on|off NAME]", "list the tools (source, on or off), or switch a tool or a server's tools on or off"),
    "/mcp": ("", "the MCP servers: running, or failed and why"),
}
INPUT_HELP = 'Alt-Enter or a trailing \\ adds a line · """ starts a block · Ctrl-C stops a reply'
SET_ALIASES = {"temp": "temperature", "max-tokens": "max_tokens", "top-p": "top_p", "top-k": "top_k",
               "min-p": "min_p", "repeat-penalty": "repeat_penalty", "n": "max_tokens", "budget": "reasoning_budget"}
SETTABLE = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "stop", "think",
            "reasoning_budget", "draft")


def setting_name(key: str) -> str:
    """The Sampling field a /set KEY means (aliases and dashes resolved)."""
    return SET_ALIASES.get(key.lower(), key.lower().replace("-", "_"))


def parse_set(sampling: Sampling, key: str, value: str) -> Sampling:
    """Sampling with KEY set to VALUE (as typed after /set), validated."""
    key = setting_name(key)
    if key not in SETTABLE:
        raise UsageError(f"unknown setting {key!r}", f"settable: {', '.join(SETTABLE)}")
    value = value.strip()
    if key == "stop":
        stops = () if value.lower() in ("", "none", "-") else (value.encode().decode("unicode_escape"),)
        return dataclasses.replace(sampling, stop=stops)
    if key == "think":  # on, off, an effort (low, medium, high), or auto: the model's own default
        return dataclasses.replace(sampling, think=parse_think(value, "/set think"))
    if key in ("seed", "reasoning_budget"):
        if value.lower() in ("none", "random", "-", "off"):
            return dataclasses.replace(sampling, seed=None) if key == "seed" else dataclasses.replace(sampling, reasoning_budget=None)
    if key == "draft":
        return check_sampling(dataclasses.replace(sampling, draft=value.lower()), name=lambda k: k,
                              example=lambda label, v: f"/set {label} {v}")
    kind = int if key in ("top_k", "max_tokens", "seed", "reasoning_budget") else float
    try:
        number = kind(value)
    except ValueError:
        raise UsageError(f"{key} must be {'a whole number' if kind is int else 'a number'}, not {value!r}",
                         f"for example /set {key} {dataclasses.asdict(Sampling())[key]}")
    change: dict[str, Any] = {key: number}  # the key is a numeric field, checked against SETTABLE above
    changed = dataclasses.replace(sampling, **change)
    return check_sampling(changed, name=lambda k: k, example=lambda label, v: f"/set {label} {v}")


def sampling_text(s: Sampling) -> str:
    """The settable sampling values on one line, as /set and /stats show them."""
    return "  ".join(f"{k}={list(s.stop)!r}" if k == "stop" else f"{k}={getattr(s, k)}" for k in SETTABLE)
