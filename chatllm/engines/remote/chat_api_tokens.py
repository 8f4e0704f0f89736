"""Tokens and transcripts for the chat-completions engine (engines/remote/chat_api_engine.py).

Tokenizers: the server's own where it has an endpoint (vLLM's POST /tokenize {model, prompt}; llama-cpp-python's
/extras/tokenize and /extras/detokenize), exact; else a local estimate (pieces of a few letters, one per digit group,
symbol or non-Latin character: at or above what BPE tokenizers give for most text), reversible, flagged as estimated.

Transcripts: render() writes messages as ChatML text. Its two markers are not the server's tokens but ids of this
module's own (negative, so no server id can be one), given only to marker text tokenized with special=True, as a local
engine gives its template markers: text tokenized as plain text never makes a turn boundary, however it reads.
parse() reads messages back out of such tokens; the server then applies the model's real template.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from typing import Sequence, Union

from chatllm.engines.remote.http_client import Server
from chatllm.errors import ChatllmError, EngineUnavailable

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
START_ID, END_ID = -1, -2
MARKER_IDS = {IM_START: START_ID, IM_END: END_ID}
MARKER_TEXT = {v: k for k, v in MARKER_IDS.items()}
# The same two strings met in plain text (special=False) are ids of their own too, which read back as text: a server
# tokenizer may parse them as its special tokens (llama-cpp-python's always does) and detokenize them to nothing.
LITERAL_IDS = {IM_START: -3, IM_END: -4}
LITERAL_TEXT = {v: k for k, v in LITERAL_IDS.items()}
_MARKER_RE = re.compile("(" + "|".join(re.escape(m) for m in MARKER_IDS) + ")")
# A piece: a short run of ASCII letters (with the space before it), a group of up to 3 digits, a run of spaces or one
# other character (a CJK character, an accented letter, a symbol): each a token, as BPE vocabularies mostly give.
_PIECE_RE = re.compile(r" ?[A-Za-z]{1,6}| ?\d{1,3}| +(?! )|\s|.", re.DOTALL)
_MEMO_ITEMS, _MEMO_CHARS = 4096, 4000


class Tokenizer:
    """How the engine turns text into ids: exact (the server's) or estimated (local)."""

    exact = False
    how = "estimated (the server has no tokenize endpoint)"
    bos: int | None = None  # the id the server puts first when it tokenizes a whole prompt itself

    def encode(self, text: str) -> list[int]:
        """Ids of the text, no BOS."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text."""
        raise NotImplementedError


class EstimateTokenizer(Tokenizer):
    """A local, reversible estimate: every piece of text is interned to an id of its own."""

    _vocab: list[str] = []
    _ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        """One id per piece; the pieces join back into the text."""
        out = []
        for piece in _PIECE_RE.findall(text):
            if piece not in self._ids:
                self._ids[piece] = len(self._vocab)
                self._vocab.append(piece)
            out.append(self._ids[piece])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """The pieces joined."""
        return "".join(self._vocab[i] for i in ids if 0 <= i < len(self._vocab))


class ServerTokenizer(Tokenizer):
    """The server's tokenizer: vLLM's /tokenize and /detokenize, or llama-cpp-python's /extras ones."""

    exact = True

    def __init__(self, server: Server, model: str, kind: str):
        self.server, self.model, self.kind = server, model, kind
        self.how = "exact (vLLM /tokenize)" if kind == "vllm" else "exact (llama-cpp-python /extras/tokenize)"
        self._always: list[int] = []
        if kind == "vllm":
            with_special = self._raw("a", True)
            plain = self._raw("a", False)
            self.bos = with_special[0] if len(with_special) > len(plain) else None
        else:  # llama-cpp-python adds the model's BOS (if it has one) to every tokenization: learn it, take it off
            self._always = self._raw("", True)
            self.bos = self._always[0] if self._always else None

    def _raw(self, text: str, special: bool) -> list[int]:
        if self.kind == "vllm":
            data = self.server.post("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": special})
        else:
            data = self.server.post("/extras/tokenize", {"model": self.model, "input": text})
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise self.server.error(f"{self.server.where} sent a malformed tokenize reply", "check the server's log")
        return tokens

    def encode(self, text: str) -> list[int]:
        """The server's ids for the text, without the BOS it adds on its own."""
        if not text:
            return []
        ids = self._raw(text, False)
        n = len(self._always)
        ids = ids[n:] if n and ids[:n] == self._always else ids
        if not ids:  # every tokenizer turns some text into some ids: counts and scores would be silently wrong
            raise self.server.error(f"{self.server.where} tokenized {len(text)} characters into no tokens",
                                    "check the server's log, or that its /tokenize is vLLM's")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The server's text for the ids."""
        if not ids:
            return ""
        if self.kind == "vllm":
            data = self.server.post("/detokenize", {"model": self.model, "tokens": list(ids)})
            return str(data.get("prompt", "")) if isinstance(data, dict) else ""
        data = self.server.post("/extras/detokenize", {"model": self.model, "tokens": list(ids)})
        return str(data.get("text", "")) if isinstance(data, dict) else ""


def probe_tokenizer(server: Server, model: str) -> Tokenizer:
    """The server's tokenizer when it has an endpoint for one (vLLM's, then llama-cpp-python's), else the estimate."""
    for kind, path, body in (("vllm", "/tokenize", {"model": model, "prompt": "a"}),
                             ("extras", "/extras/tokenize", {"model": model, "input": "a"})):
        try:
            data = server.post(path, body, missing_ok=True)
        except EngineUnavailable:
            raise
        except ChatllmError:
            continue  # an endpoint of that name with another shape (llama-server's /tokenize wants "content")
        # Non-empty: llama-server's /tokenize answers vLLM's body (no "content") with no tokens rather than an error.
        if isinstance(data, dict) and isinstance(data.get("tokens"), list) and data["tokens"]:
            return ServerTokenizer(server, model, kind)
    return EstimateTokenizer()


class Codec:
    """Text <-> ids for one engine: the tokenizer, the turn markers, and memos (tasks count the same pieces again)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._memo: OrderedDict[str, list[int]] = OrderedDict()
        self._texts: OrderedDict[tuple[int, ...], str] = OrderedDict()

    def encode(self, text: str, special: bool) -> list[int]:
        """Ids of the text; special=True gives the turn markers their own ids."""
        out: list[int] = []
        for part in _MARKER_RE.split(text):
            if part in MARKER_IDS:
                out.append(MARKER_IDS[part] if special else LITERAL_IDS[part])
            elif part:
                out.extend(self._encode(part))
        return out

    def _encode(self, text: str) -> list[int]:
        hit = self._memo.get(text)
        if hit is not None:
            self._memo.move_to_end(text)
            return list(hit)
        ids = self.tokenizer.encode(text)
        if len(text) <= _MEMO_CHARS:
            _remember(self._memo, text, ids)
            _remember(self._texts, tuple(ids), text)
        return list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids, markers as their text, a leading BOS left out."""
        return "".join(part if isinstance(part, str) else MARKER_TEXT[part] for part in self.segments(ids))

    def segments(self, ids: Sequence[int]) -> list[Union[str, int]]:
        """The ids as text runs and marker ids, in order."""
        ids = list(ids)
        if ids and self.tokenizer.bos is not None and ids[0] == self.tokenizer.bos:
            ids = ids[1:]
        out: list[Union[str, int]] = []
        run: list[int] = []
        for t in ids + [-99]:  # a sentinel that ends the last run
            if t >= 0:
                run.append(t)
                continue
            if run:
                out.append(self._text_of(run))
                run = []
            if t in MARKER_TEXT:
                out.append(t)
            elif t in LITERAL_TEXT:
                out.append(LITERAL_TEXT[t])
        return out

    def _text_of(self, run: list[int]) -> str:
        key = tuple(run)
        hit = self._texts.get(key)
        if hit is None:
            hit = self.tokenizer.decode(run)
            _remember(self._texts, key, hit)
        return hit


def _remember(memo: OrderedDict, key, value) -> None:
    memo[key] = value
    if len(memo) > _MEMO_ITEMS:
        memo.popitem(last=False)


_EXTRA_KEYS = ("tool_calls", "tool_call_id", "name")  # what a turn carries besides its content, read back by _message


def render(messages: list[dict], add_generation_prompt: bool) -> str:
    """Messages as ChatML text (the markers are this engine's own, see the module docstring); a turn's tool calls or
    tool-result ids ride on its role line as JSON, which only chatllm writes (it follows a marker no text can forge)."""
    text = "".join(f"{IM_START}{_role_line(m)}\n{m.get('content') or ''}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def _role_line(message: dict) -> str:
    extra = {k: message[k] for k in _EXTRA_KEYS if message.get(k)}
    return message["role"] + (" " + json.dumps(extra, ensure_ascii=False, separators=(",", ":")) if extra else "")


def split_text(text: str) -> list[Union[str, int]]:
    """A prompt text as text runs and marker ids (its markers read as markers, as special=True tokenizing does)."""
    return [MARKER_IDS[p] if p in MARKER_IDS else p for p in _MARKER_RE.split(text) if p]


def parse(segments: Sequence[Union[str, int]]) -> tuple[list[dict] | None, str]:
    """The messages of a transcript and the start of the reply after its last, open assistant turn (a lead);
    (None, text) for a prompt with no turns (raw text, for /v1/completions)."""
    if START_ID not in segments:
        return None, "".join(s if isinstance(s, str) else MARKER_TEXT[s] for s in segments)
    messages: list[dict] = []
    current: list[str] | None = None
    last: list[str] = []  # the raw text of the last closed turn
    for seg in segments:
        if seg == START_ID:
            current = []
        elif seg == END_ID:
            if current is not None:
                messages.append(_message("".join(current)))
                last = current
            current = None
        elif current is not None and isinstance(seg, str):
            current.append(seg)
        elif isinstance(seg, str) and seg.strip() and messages:
            # Text after a turn's end, before the next turn: the end marker was the message's own text ("a <|im_end|> b"
            # in what a user typed). Reopen that message, so it is sent whole, as it was written.
            messages.pop()
            current = last + [IM_END, seg]
        # else: the transcript's own newline between turns
    lead = ""
    if current is not None:  # the open turn: the generation prompt, and what the reply already starts with
        role, _, lead = "".join(current).partition("\n")
        if role.strip().partition(" ")[0] != "assistant":
            messages.append(_message("".join(current)))
            lead = ""
    return messages, lead


def _message(text: str) -> dict:
    line, _, content = text.partition("\n")
    role, _, extra = line.strip().partition(" ")
    message: dict = {"role": role or "user", "content": content.strip()}
    if extra.startswith("{"):
        try:
            message.update({k: v for k, v in json.loads(extra).items() if k in _EXTRA_KEYS})
        except ValueError:
            pass
    return message


def estimate_margin(n_ctx: int, exact: bool) -> int:
    """Tokens of the window kept back for what chatllm cannot count: the server's template (a default system prompt,
    its own markers) and, without the server's tokenizer, the estimate's error."""
    return 64 if exact else max(64, math.ceil(n_ctx * 0.15))
