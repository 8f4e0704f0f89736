"""Conversations as files: markdown transcripts and JSON documents, written and read back."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from chatllm.errors import UsageError
from chatllm.output import format_date
from chatllm.storage.conversations import Exchange, StoredConversation, StoredSummary

INTERRUPTED_MARK = "*[interrupted]*"
JSON_FORMAT = "chatllm.conversation"
EXPORT_FORMATS = ("md", "json", "openai")


def transcript_markdown(system: str | None, exchanges: Sequence[Exchange], *, model: str = "",
                        conv_id: int | None = None, created_at: float | None = None) -> str:
    """A markdown transcript: `## System`, then `## User` / `## Assistant` sections."""
    head = f"# Conversation {conv_id}" if conv_id is not None else "# Conversation"
    info = " · ".join(x for x in (f"model: {model}" if model else "", format_date(created_at)) if x)
    parts = [head, ""] + ([info, ""] if info else [])
    if system:
        parts += ["## System", "", system.strip(), ""]
    for ex in exchanges:
        parts += ["## User", "", ex.user.strip(), ""]
        if ex.reasoning.strip():
            parts += ["## Thinking", "", ex.reasoning.strip(), ""]
        calls = tool_lines(ex.tool_steps)
        if calls:  # shown, not read back: the JSON form keeps the calls whole
            parts += ["## Tools", ""] + [f"- `{line}`" for line in calls] + [""]
        parts += ["## Assistant", "", ex.assistant.strip(), ""]
        if ex.interrupted:
            parts += [INTERRUPTED_MARK, ""]
    return "\n".join(parts)


def tool_lines(steps: Sequence[dict]) -> list[str]:
    """Each call made before an answer on one line (the calls the loop dropped left out)."""
    from chatllm.tasks.tools.loop import call_line

    return [call_line(c) for step in steps for c in step.get("calls", []) if c.get("status") != "dropped"]


def conversation_json(system: str | None, exchanges: Sequence[Exchange], *, model: str = "",
                      conv_id: int | None = None, created_at: float | None = None) -> dict:
    """A JSON-ready dict; `/load` reads it back."""
    return {
        "format": JSON_FORMAT,
        "version": 1,
        "id": conv_id,
        "model": model,
        "created_at": format_date(created_at),
        "system": system,
        "exchanges": [
            {"user": ex.user, "assistant": ex.assistant, "interrupted": ex.interrupted, "model": ex.model,
             "completion_tokens": ex.completion_tokens, **({"reasoning": ex.reasoning} if ex.reasoning else {}),
             **({"tool_steps": ex.tool_steps} if ex.tool_steps else {})}
            for ex in exchanges
        ],
    }


_SECTION = re.compile(r"^##\s+(System|User|Thinking|Tools|Assistant)\s*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def parse_markdown(text: str) -> tuple[str | None, list[Exchange]]:
    """Read a transcript written by transcript_markdown (headings inside code fences are content)."""
    sections: list[tuple[str, list[str]]] = []
    fence = None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
        head = _SECTION.match(line) if fence is None else None
        if head:
            sections.append((head.group(1).lower(), []))
        elif sections:
            sections[-1][1].append(line)
    if not sections:
        raise UsageError("no conversation found in the file",
                         "give a transcript saved with /save (## User / ## Assistant sections) or a .json file")
    system = None
    exchanges: list[Exchange] = []
    pending: str | None = None
    thinking = ""
    for role, lines in sections:
        body = "\n".join(lines).strip()
        if role == "system":
            system = body or None
        elif role == "thinking":
            thinking = body
        elif role == "tools":
            continue
        elif role == "user":
            if pending is not None:
                exchanges.append(Exchange(pending, "", interrupted=True))
            pending = body
        else:
            interrupted = body.endswith(INTERRUPTED_MARK)
            if interrupted:
                body = body[: -len(INTERRUPTED_MARK)].rstrip()
            exchanges.append(Exchange(pending or "", body, interrupted=interrupted, reasoning=thinking))
            pending, thinking = None, ""
    return system, exchanges


def parse_json(data: object) -> tuple[str | None, list[Exchange]]:
    """Read a chatllm JSON conversation, or a plain list of {role, content} messages."""
    if isinstance(data, dict) and isinstance(data.get("exchanges"), list):
        exchanges = []
        for item in data["exchanges"]:
            if not isinstance(item, dict) or not isinstance(item.get("user"), str):
                raise UsageError("malformed conversation file: an exchange has no user text",
                                 "give a file saved with /save chat.json")
            steps = item.get("tool_steps")
            exchanges.append(Exchange(item["user"], str(item.get("assistant") or ""),
                                      interrupted=bool(item.get("interrupted")), model=str(item.get("model") or ""),
                                      reasoning=str(item.get("reasoning") or ""),
                                      tool_steps=steps if isinstance(steps, list) else []))
        system = data.get("system")
        return (system if isinstance(system, str) and system else None), exchanges
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise UsageError("not a conversation file", "give a file saved with /save chat.json, or a list of "
                         '{"role": ..., "content": ...} messages')
    system, exchanges, pending = None, [], None
    for m in messages:
        role, content = m.get("role"), str(m.get("content") or "")
        if role == "system":
            system = content or None
        elif role == "user":
            if pending is not None:
                exchanges.append(Exchange(pending, "", interrupted=True))
            pending = content
        elif role == "assistant":
            exchanges.append(Exchange(pending or "", content))
            pending = None
    return system, exchanges


def openai_messages(system: str | None, exchanges: Sequence[Exchange]) -> list[dict]:
    """The conversation as an OpenAI chat-completions `messages` list (what other tools load)."""
    msgs = [{"role": "system", "content": system}] if system else []
    for ex in exchanges:
        msgs.append({"role": "user", "content": ex.user})
        if ex.assistant or not ex.interrupted:
            msgs.append({"role": "assistant", "content": ex.assistant})
    return msgs


def export_conversation(conv: StoredConversation, fmt: str) -> str:
    """A saved conversation as md (a transcript), json (chatllm's, summary and family included) or openai (messages)."""
    if fmt == "md":
        return transcript_markdown(conv.system, conv.exchanges, model=conv.model, conv_id=conv.id,
                                   created_at=conv.created_at)
    if fmt == "openai":
        return json.dumps(openai_messages(conv.system, conv.exchanges), ensure_ascii=False, indent=2) + "\n"
    if fmt != "json":
        raise UsageError(f"unknown format {fmt!r}", f"use one of: {', '.join(EXPORT_FORMATS)}")
    doc = conversation_json(conv.system, conv.exchanges, model=conv.model, conv_id=conv.id, created_at=conv.created_at)
    doc["parent_id"], doc["fork_turn"] = conv.parent_id, conv.fork_seq
    if conv.summary is not None:
        s = conv.summary
        doc["summary"] = {"text": s.text, "covers": s.upto, "window_start": s.window_start, "compactions": s.compactions,
                          "facts": s.facts}
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def read_import(path: Path) -> tuple[str | None, list[Exchange], StoredSummary | None]:
    """A conversation file to import: chatllm JSON (its summary too), an OpenAI messages list, or a markdown transcript."""
    from chatllm.inputs import read_text

    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
            raise UsageError(f"{path} is not valid JSON", "give a file from `chatllm history export`, a list of "
                             '{"role": ..., "content": ...} messages, or a markdown transcript') from None
        system, exchanges = parse_markdown(text)
        summary = None
    else:
        system, exchanges = parse_json(data)
        summary = _summary_of(data, len(exchanges))
    if not exchanges:
        raise UsageError(f"{path} holds no exchanges", "give a conversation with at least one user message")
    return system, exchanges, summary


def _summary_of(data: object, n: int) -> StoredSummary | None:
    """The running summary of a chatllm JSON export, when it has a sound one."""
    s = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(s, dict) or not isinstance(s.get("text"), str):
        return None
    covers, start = s.get("covers"), s.get("window_start")
    if not isinstance(covers, int) or not isinstance(start, int) or not 0 <= covers <= n or not covers <= start <= n:
        return None
    facts = [f for f in s.get("facts") or [] if isinstance(f, str)]
    compactions = s.get("compactions")
    return StoredSummary(s["text"], covers, start, compactions if isinstance(compactions, int) else 0, facts)


def read_conversation_file(path: Path) -> tuple[str | None, list[Exchange]]:
    """Parse a .json or markdown conversation file."""
    from chatllm.inputs import read_text

    text = read_text(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}", "give a file saved with /save chat.json")
        return parse_json(data)
    return parse_markdown(text)
