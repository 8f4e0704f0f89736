"""A reply's raw text, as it streams, turned into events: reasoning, answer text and tool calls.

The parser is fed the pieces a model generates and returns events at once, holding back only what may still turn
out to be markup: the start of a `</think>` tag, of a call marker (`<tool_call>`, `[TOOL_CALLS]`), of a markdown
fence or a JSON object that may be a call. So call markup never reaches the screen as prose, and prose is never
delayed by more than a marker's length. It tolerates what models do: a reasoning block the prompt opened, one
never closed (the rest is reasoning), a call in a markdown block instead of the template's tags, a call cut off.
"""

from __future__ import annotations

import re
from typing import Sequence

from chatllm.engines.chat_formats.formats import ChatFormat
from chatllm.engines.chat_formats.tool_calls import ToolSpec, calls_from_json, lenient_calls, make_calls
from chatllm.engines.contract import Event, Reasoning, Text, ToolCall

MAX_CANDIDATE = 64 * 1024  # characters held while deciding whether a JSON value is a call; past it, it is text
_MARKERS = {"hermes": "<tool_call>", "llama3": "<|python_tag|>", "mistral": "[TOOL_CALLS]", "mistral-args": "[TOOL_CALLS]"}
_CLOSERS = {"hermes": "</tool_call>"}
_HARMONY_END = ("<|end|>", "<|call|>", "<|return|>")
_RECIPIENT = re.compile(r"to=(?:functions\.)?([^\s<]+)")


class ReplyParser:
    """Feed the raw pieces of one reply; get Reasoning, Text and ToolCall events back, in order."""

    def __init__(self, fmt: ChatFormat, *, in_reasoning: bool = False, tools: Sequence[ToolSpec] = ()):
        self.fmt = fmt
        self.tools = list(tools)
        self._buf = ""
        self._state = "reasoning" if in_reasoning and fmt.reasoning == "think" else "start"
        if fmt.reasoning == "harmony":
            self._state = "harmony-header"
        self.saw_reasoning = in_reasoning
        self.answer_started = False  # a Text or ToolCall event went out
        self.calls = 0
        self._text_started = False  # non-blank answer text went out (a bare JSON value then no longer starts a call)
        self._in_code = False  # inside a markdown code block that is not a call
        self._harmony: dict = {}
        self._trace_started = False
        self._strip_next = False  # after a reasoning block or a call: leading blank space is dropped

    @property
    def in_reasoning(self) -> bool:
        """True while the model is writing its reasoning trace."""
        return self._state == "reasoning" or (self._state == "harmony-body" and self._harmony.get("channel") == "analysis")

    def answering(self, thinking: bool) -> bool:
        """True once what the model writes next is its answer (not a trace, nor a trace that may still open)."""
        if self.fmt.reasoning == "harmony":
            return self._state == "harmony-body" and self._harmony.get("channel") == "final"
        if self._state == "start":
            return self.fmt.reasoning == "none" or not thinking
        return self._state != "reasoning"

    def feed(self, text: str) -> list[Event]:
        """The events this piece completes."""
        self._buf += text
        return self._run(final=False)

    def finish(self) -> list[Event]:
        """The events left when the reply ends (an unclosed block, a call cut off, text held back)."""
        return self._run(final=True)

    # -- the state machine ------------------------------------------------------------------------------------------

    def _run(self, final: bool) -> list[Event]:
        out: list[Event] = []
        while True:
            before = (self._state, len(self._buf))
            step = getattr(self, "_" + self._state.replace("-", "_"))
            out += step(final)
            if (self._state, len(self._buf)) == before:
                break
        return [e for e in out if not isinstance(e, (Text, Reasoning)) or e.text]

    def _start(self, final: bool) -> list[Event]:
        """Before the answer: blank space is dropped, and an opening reasoning tag starts the trace."""
        stripped = self._buf.lstrip()
        if self.fmt.reasoning == "think":
            tag = self.fmt.think_open
            if stripped.startswith(tag):
                self._buf = stripped[len(tag):].lstrip()
                self._state = "reasoning"
                self.saw_reasoning = True
                return []
            if tag.startswith(stripped) and not final:
                return []  # may still become the tag
        if not stripped and not final and self.fmt.reasoning == "think":
            return []
        self._state = "answer"  # the answer keeps its leading space: a reply may continue text the prompt began
        return []

    def _reasoning(self, final: bool) -> list[Event]:
        close = self.fmt.think_close
        at = self._buf.find(close)
        if at >= 0:
            trace, self._buf = self._buf[:at], self._buf[at + len(close):]
            self._state = "answer"
            self._strip_next = True  # the blank lines between a trace and its answer are not the answer
            return self._trace(trace.rstrip())
        # held back: what may be the start of the closing tag, and blank space that may end the trace before it
        keep = 0
        if not final:
            keep = _partial_suffix(self._buf, (close,))
            before = self._buf[:len(self._buf) - keep]
            keep += len(before) - len(before.rstrip())
        trace, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
        return self._trace(trace.rstrip() if final else trace)

    def _trace(self, text: str) -> list[Event]:
        if not self._trace_started:
            text = text.lstrip()
            self._trace_started = bool(text)
        return [Reasoning(text)]

    def _answer(self, final: bool) -> list[Event]:
        if not self.tools:
            text, self._buf = self._buf, ""
            return self._text(text)
        if self._in_code:  # a code block that is not a call: text until its closing fence
            end = self._buf.find("```")
            if end < 0:
                keep = 0 if final else _partial_suffix(self._buf, ("```",))
                text, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
                return self._text(text)
            self._in_code = False
            text, self._buf = self._buf[:end + 3], self._buf[end + 3:]
            return self._text(text)
        marker = _MARKERS.get(self.fmt.tools)
        lead_text = self._buf.lstrip()
        if marker and not final and lead_text and len(lead_text) < len(marker) and marker.startswith(lead_text):
            return []  # the family's call marker may be coming: not a bare [ or { yet
        starts = [m for m in (marker, "```") if m]
        found = [(self._buf.find(m), m) for m in starts if self._buf.find(m) >= 0]
        if not self._text_started:
            lead = len(self._buf) - len(self._buf.lstrip())
            if self._buf[lead:lead + 1] in ("{", "["):
                found.append((lead, self._buf[lead]))
        if found:
            at, marker = min(found, key=lambda f: (f[0], -len(f[1])))  # the family's marker over a bare [ or {
            text, self._buf = self._buf[:at], self._buf[at:]
            self._state = "call" if marker == _MARKERS.get(self.fmt.tools) else "candidate"
            return self._text(text) if text.strip() else []
        keep = 0 if final else _partial_suffix(self._buf, starts)
        if not self._text_started and not self._buf.strip() and not final:
            return []  # blank space before a possible call: held
        text, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
        return self._text(text)

    def _call(self, final: bool) -> list[Event]:
        """After the family's own call marker: the call's JSON (and closing tag), then back to the answer."""
        marker = _MARKERS[self.fmt.tools]
        body = self._buf[len(marker):]
        if self.fmt.tools == "mistral-args":
            return self._mistral_args(body, final)
        start = len(body) - len(body.lstrip())
        end = _json_end(body, start)
        if end is None:
            if final or len(body) > MAX_CANDIDATE:
                self._buf, self._state = "", "answer"
                return self._calls(marker + body, None, "the call was cut off before its JSON was complete")
            return []
        closer = _CLOSERS.get(self.fmt.tools, "")
        raw, rest = marker + body[:end], body[end:]
        if closer:
            stripped = rest.lstrip()
            if not final and len(stripped) < len(closer) and closer.startswith(stripped):
                return []  # the closing tag is still coming
            if stripped.startswith(closer):
                raw += rest[:len(rest) - len(stripped)] + closer
                rest = stripped[len(closer):]
        self._buf, self._state = rest, "answer"
        return self._calls(raw, _decode_calls(body[start:end], self.fmt.arguments_key), "the call is not valid JSON")

    def _mistral_args(self, body: str, final: bool) -> list[Event]:
        name_end = body.find("[ARGS]")
        if name_end < 0:
            if final:
                self._buf, self._state = "", "answer"
                return self._calls("[TOOL_CALLS]" + body, None, "the call has no [ARGS]")
            return []
        args_start = name_end + len("[ARGS]")
        end = _json_end(body, args_start)
        if end is None:
            if final:
                self._buf, self._state = "", "answer"
                return self._calls("[TOOL_CALLS]" + body, None, "the call was cut off before its JSON was complete")
            return []
        import json

        try:
            found = [{"name": body[:name_end].strip(), "arguments": json.loads(body[args_start:end])}]
        except ValueError:
            found = None
        self._buf, self._state = body[end:], "answer"
        return self._calls("[TOOL_CALLS]" + body[:end], found, "the call's arguments are not valid JSON")

    def _candidate(self, final: bool) -> list[Event]:
        """A markdown fence or a JSON value at the answer's start: a call when it decodes to one, else text."""
        buf = self._buf
        if buf.startswith("```"):
            newline = buf.find("\n")
            head = buf[3:newline] if newline >= 0 else buf[3:]
            content = buf[newline + 1:].lstrip() if newline >= 0 else ""
            languages = ("", "json", "tool_call", "tool_calls")
            if newline < 0 and not final and any(lang.startswith(head.strip().lower()) for lang in languages):
                return []  # the fence's language is still coming
            if head.strip().lower() not in languages or (content and content[0] not in "{["):
                self._in_code = True
                self._state = "answer"
                self._buf = buf[3:]
                return self._text("```")
            if newline < 0 or not content:
                if final:
                    self._state = "answer"
                return []
            close = buf.find("```", newline)
            if close < 0:
                if final or len(buf) > MAX_CANDIDATE:
                    self._buf, self._state = "", "answer"
                    found = lenient_calls(buf + "\n```", self.fmt.arguments_key)
                    return self._calls(buf, found, "the call was cut off") if found else self._text(buf)
                return []
            block, self._buf = buf[:close + 3], buf[close + 3:]
            self._state = "answer"
            found = lenient_calls(block, self.fmt.arguments_key)
            return self._calls(block, found, "") if found else self._text(block, literal=True)
        start = len(buf) - len(buf.lstrip())
        end = _json_end(buf, start)
        if end is None and not final and len(buf) <= MAX_CANDIDATE:
            return []
        self._state = "answer"
        if end is None:
            self._buf = ""
            return self._text(buf, literal=True)
        value, self._buf = buf[:end], buf[end:]
        found = _decode_calls(value[start:], self.fmt.arguments_key)
        return self._calls(value, found, "") if found else self._text(value, literal=True)

    # -- harmony (gpt-oss): channels --------------------------------------------------------------------------------

    def _harmony_header(self, final: bool) -> list[Event]:
        at = self._buf.find("<|message|>")
        if at < 0:
            if final:
                rest, self._buf = self._buf, ""
                return self._text(_strip_harmony(rest))
            return []
        header, self._buf = self._buf[:at], self._buf[at + len("<|message|>"):]
        channel = re.search(r"<\|channel\|>\s*(\w+)", header)
        recipient = _RECIPIENT.search(header)
        self._harmony = {"channel": channel.group(1) if channel else "final",
                         "recipient": recipient.group(1) if recipient else None, "content": ""}
        self._state = "harmony-body"
        if self._harmony["channel"] == "analysis":
            self.saw_reasoning = True
        return []

    def _harmony_body(self, final: bool) -> list[Event]:
        ends = [(self._buf.find(m), m) for m in _HARMONY_END if self._buf.find(m) >= 0]
        h = self._harmony
        if ends:
            at, marker = min(ends)
            piece, self._buf = self._buf[:at], self._buf[at + len(marker):]
            self._buf = self._buf.removeprefix("<|start|>assistant")
            self._state = "harmony-header"
        else:
            keep = 0 if final else _partial_suffix(self._buf, _HARMONY_END)
            piece, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
            if final:
                self._state = "harmony-header"
        if h["recipient"]:  # a call: its arguments gather until the call ends
            h["content"] += piece
            if self._state == "harmony-header":
                return self._harmony_call(h, complete=bool(ends))
            return []
        if h["channel"] == "analysis":
            return [Reasoning(piece)]
        return self._text(piece)

    def _harmony_call(self, h: dict, complete: bool) -> list[Event]:
        import json

        raw = h["content"]
        try:
            found = [{"name": h["recipient"], "arguments": json.loads(raw) if raw.strip() else {}}]
        except ValueError:
            found = None
        return self._calls(raw, found, "the call's arguments are not valid JSON" if complete else "the call was cut off")

    # -- events -----------------------------------------------------------------------------------------------------

    def _text(self, text: str, literal: bool = False) -> list[Event]:
        if self._strip_next and not literal:
            text = text.lstrip()
            if not text:
                return []
        self._strip_next = False
        if text.strip():
            self._text_started = True
        if text:
            self.answer_started = True
        return [Text(text)]

    def _calls(self, raw: str, found: list[dict] | None, error: str) -> list[Event]:
        calls: list[ToolCall] = make_calls(raw, found, self.tools, error or None)
        self.calls += len(calls)
        self.answer_started = True
        self._strip_next = True
        return list(calls)


def _partial_suffix(text: str, markers: Sequence[str]) -> int:
    """How many characters at the end of text could be the start of one of the markers (held back until known)."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if marker.startswith(text[-n:]):
                best = max(best, n)
                break
    return best


def _json_end(text: str, start: int) -> int | None:
    """Where the JSON value starting at `start` ends (one past its last character), or None while it is incomplete."""
    while start < len(text) and text[start].isspace():
        start += 1
    if start >= len(text):
        return None
    if text[start] not in "{[":
        return start  # not a JSON object or list: nothing to wait for
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _decode_calls(text: str, key: str) -> list[dict] | None:
    import json

    try:
        return calls_from_json(json.loads(text), key)
    except ValueError:
        return lenient_calls(text, key)


def _strip_harmony(text: str) -> str:
    return re.sub(r"<\|[a-z_]+\|>", "", text)
