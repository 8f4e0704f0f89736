"""The engine contract on any OpenAI-compatible server (vLLM, llama-cpp-python's server, ollama, LM Studio, hosted APIs):
messages through /v1/chat/completions, raw text through /v1/completions. connect_remote() picks it or RemoteEngine.

Each contract method and what it asks the server (HTTP in chatllm.engines.remote.http_client):

- tokenize / count_tokens / detokenize: the server's tokenizer where it has an endpoint (exact), else chatllm's local
  estimate; turn markers are ids of the engine's own (engines/remote/chat_api_tokens.py). GenerationStats.estimated
  says which, and n_ctx keeps a margin back (estimate_margin) for what cannot be counted: the server's template.
- render_chat: a ChatML transcript the engine reads back; the server applies the model's real template.
- stream / complete: a prompt with turns goes to /v1/chat/completions as messages (SSE); one without (generate, a
  base model's prompt) to /v1/completions as text. A lead (text after the open assistant turn, like summarize's "-")
  is not sent; the reply is joined to it (a duplicate lead the model writes itself is dropped).
  Sampling: temperature, top_p, seed, stop, max_tokens; top_k, min_p and the repetition penalty too, dropped for good
  when the server refuses them. --schema: response_format json_schema (the OpenAI form), else llama-cpp-python's
  json_object + schema; the answer is validated by the task either way.
- score_continuations: /v1/completions with max_tokens 1 and logprobs (top N by text), one request per label token:
  the label's text is followed through the server's own tokens (the longest top-N token that starts what is left);
  a token outside the top N ends the label with an upper bound of its log-probability. No logprobs: a refusal. On
  llama-cpp-python's server (known by its /extras/tokenize) a first request evaluates the prompt but its last token,
  so that the label requests decode that token alone, as the local engine does: the same numbers (issue 32).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import ExitStack, contextmanager
from typing import Any, Generator, Iterator, Sequence

from chatllm.engines.chat_formats.formats import ChatFormat
from chatllm.engines.chat_formats.prompting import prepare
from chatllm.engines.chat_formats.reply_parser import ReplyParser
from chatllm.engines.chat_formats.tool_calls import ToolSpec, make_calls, tools_from_json
from chatllm.engines.chat_templates import check_fits
from chatllm.engines.contract import Engine, Event, GenerationStats, Reasoning, Text, ToolCall
from chatllm.engines.remote.chat_api_tokens import Codec, Tokenizer, estimate_margin, parse, probe_tokenizer, render, split_text
from chatllm.engines.remote.http_client import Server
from chatllm.engines.remote.llama_server_engine import ServerEngine, connect_server, pick_model
from chatllm.errors import ChatllmError, EngineUnavailable, UsageError
from chatllm.models.registry import ModelSpec
from chatllm.settings import DEFAULT_CTX, Sampling
from chatllm.storage.kv_cache import common_prefix

TOP_N = 10  # next-token log-probs asked per scoring request (5 where a server allows no more, as OpenAI's)
EXTRAS = ("top_k", "min_p", "repeat_penalty", "repetition_penalty")  # sampling keys beyond the OpenAI API


def connect_remote(spec: ModelSpec, *, n_ctx: int | None = None, chat_format: str | None = None) -> Engine:
    """The engine for a remote spec: llama-server's (its /props and /tokenize answer) or the chat-completions one."""
    from chatllm.engines.remote.llama_server_engine import RemoteEngine

    if spec.api == "llama-server" or (spec.api == "auto" and is_llama_server(spec)):
        return RemoteEngine.connect(spec, n_ctx=n_ctx, chat_format=chat_format)
    return ChatRemoteEngine.connect(spec, n_ctx=n_ctx, chat_format=chat_format)


def is_llama_server(spec: ModelSpec) -> bool:
    """Whether the server is llama.cpp's llama-server: /props with its settings, and /tokenize of {content}."""
    server = connect_server(spec)
    try:
        props = server.get("/props", missing_ok=True)
        if not isinstance(props, dict) or not ({"default_generation_settings", "build_info", "total_slots"} & set(props)):
            return False
        try:
            data = server.post("/tokenize", {"content": "a"}, missing_ok=True)
        except EngineUnavailable:
            raise
        except ChatllmError:
            return False
        return isinstance(data, dict) and isinstance(data.get("tokens"), list)
    finally:
        server.close()


def describe_remote(spec: ModelSpec) -> dict:
    """What the server says about a remote entry (for `chatllm show`), and which engine and token counts it gets."""
    from chatllm.engines.remote.llama_server_engine import describe

    if spec.api == "llama-server" or (spec.api == "auto" and is_llama_server(spec)):
        return {**describe(spec), "api": "llama-server", "token_counts": "exact (llama-server /tokenize)"}
    engine = ChatRemoteEngine.connect(spec)
    try:
        ids = engine.server.model_ids()
    finally:
        engine.close()
    key = spec.api_key_env
    return {
        "model": spec.name, "remote": True, "url": engine.server.shown, "api": "chat (/v1/chat/completions)",
        "server_model": engine.model, "served_models": ids, "context_length": None, "context_per_slot": engine.ctx,
        "context": spec.context, "context_usable": engine.n_ctx, "token_counts": engine.token_counts, "slots": None,
        "parameters": None, "size": None, "vocabulary": None, "chat_template": True, "chat_template_sha256": "the server's",
        "server_build": None, "api_key_env": f"{key} ({'set' if os.environ.get(key) else 'not set'})" if key else None,
        "tls_verify": spec.tls_verify, "description": spec.description, "license": spec.license,
    }


class ChatRemoteEngine(ServerEngine):
    """The engine contract on a server that speaks only the OpenAI API (plus, maybe, a tokenize endpoint)."""

    # The server applies the model's template and parses its calls: render_chat is a transcript for counting, not
    # the model's prompt, so nothing can be scored against it (the tool-call decision leaves the call to the server).
    templated_by_server = True

    def __init__(self, server: Server, *, name: str, model: str, ctx: int, tokenizer: Tokenizer):
        self.server, self.name, self.model = server, name, model
        self.ctx = ctx  # the server's window
        self.margin = min(estimate_margin(ctx, tokenizer.exact), ctx // 4)
        self.n_ctx = ctx - self.margin  # what the tasks plan with
        self.tokenizer = tokenizer
        self.codec = Codec(tokenizer)
        self.last_stats = GenerationStats()
        self._extras = True  # top_k, min_p, repeat_penalty: sent until the server refuses them
        self._schema_form = "json_schema"  # then "json_object" (llama-cpp-python's), then "none"
        self._top_n = TOP_N
        self._completions: bool | None = None  # whether /v1/completions answers; None: not asked yet
        self._held: list[int] = []  # the tokens of the last raw prompt sent (what llama-cpp-python's server keeps)

    @classmethod
    def connect(cls, spec: ModelSpec, *, n_ctx: int | None = None, chat_format: str | None = None) -> "ChatRemoteEngine":
        """Reach the server, check it serves the model, find its tokenizer (or settle for the estimate)."""
        if chat_format:
            raise UsageError(f"--chat-format is for local GGUF models; {spec.name} uses its server's chat template",
                             "drop --chat-format")
        server = connect_server(spec)
        try:
            model, _ = pick_model(server, spec.remote_model)
            reported = _reported_context(server, model)
            sizes = [c for c in (n_ctx or spec.context, reported) if isinstance(c, int) and c > 0]
            return cls(server, name=spec.name, model=model, ctx=min(sizes) if sizes else DEFAULT_CTX,
                       tokenizer=probe_tokenizer(server, model))
        except BaseException:
            server.close()
            raise

    # -- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Text to token ids (special=True gives the transcript's turn markers their own ids)."""
        bos = self.tokenizer.bos
        return ([bos] if add_bos and bos is not None else []) + self.codec.encode(text, special)

    def count_tokens(self, text: str) -> int:
        """How many tokens the text costs (an estimate when the server has no tokenizer: see token_counts)."""
        return len(self.tokenize(text))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids back to text."""
        return self.codec.decode(tokens)

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]:
        """A whole prompt's tokens, with the BOS the server adds when it tokenizes a prompt itself."""
        return self.tokenize(prompt, add_bos=True, special=special)

    @property
    def token_counts(self) -> str:
        """How token counts are made here (for `chatllm show`)."""
        return self.tokenizer.how

    # -- chat template --------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        """True: the server applies the model's template to the messages."""
        return True

    @property
    def thinks(self) -> bool:
        """Unknown until it streams a trace; its reasoning is read apart all the same (reasoning_content, <think>)."""
        return False

    @property
    def family(self) -> str | None:
        """Unknown: the server does not report the model's metadata, so tasks use their default presets."""
        return None

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, *,
                    tools: Sequence[ToolSpec] | None = None, think: bool | str | None = None) -> str:
        """The messages as a transcript this engine reads back (the server renders the real template, with the tools
        and the thinking switch stream() sends it); earlier reasoning is left out, calls kept in the OpenAI shape."""
        prepared, _ = prepare(SERVER_FORMAT, messages, tools, think)
        return render(prepared, add_generation_prompt)

    # -- generation -----------------------------------------------------------------------------

    def stream(self, prompt: str | Sequence[int], sampling: Sampling) -> Generator[Event, None, None]:
        """The reply as events as the server streams them; close() stops the request. Stats in last_stats."""
        tokens = self.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)
        if not tokens:
            raise ChatllmError("empty prompt", "give some text")
        check_fits(len(tokens), min(sampling.max_tokens, 1), self.n_ctx)
        messages, text = parse(split_text(prompt) if isinstance(prompt, str) else self.codec.segments(tokens))
        chat = messages is not None
        room = self.ctx - len(tokens) - (self.margin if chat or not self.tokenizer.exact else 0)
        body = self._body(sampling, max(1, min(sampling.max_tokens, room)))
        tools = tools_from_json(sampling.tools) if chat and sampling.tool_choice != "none" else []
        if chat:
            body["messages"] = [_wire_message(m) for m in messages or []]
            body.update(_tool_fields(tools, sampling.tool_choice))
            if sampling.think is not None:  # llama-server and vLLM pass these to the model's template
                body["chat_template_kwargs"] = {"enable_thinking": sampling.think is not False}
                if isinstance(sampling.think, str):
                    body["reasoning_effort"] = sampling.think
        else:
            body["prompt"] = text
            self._require_completions("generate raw text")
        self._held = [] if chat else tokens
        stats = self.last_stats = GenerationStats(prompt_tokens=len(tokens), finish_reason="length",
                                                  estimated=chat or not self.tokenizer.exact)
        exact = self.tokenizer.exact
        deltas = DeltaReader()
        # Content is read again for what a server that does not parse its model's syntax leaves in it: a <think>
        # block, a tool call in the text.
        parser = ReplyParser(SERVER_FORMAT, tools=tools)
        relay = self._relay(
            self._open("/chat/completions" if chat else "/completions", body), stats, max_tokens=body["max_tokens"],
            stop=sampling.stop, lead=_Lead(text if chat else ""),
            piece_of=(lambda c: (c.get("delta") or {}).get("content")) if chat else (lambda c: c.get("text")),
            take_usage=lambda st, event: _take_usage(st, event, exact), side=deltas.read if chat else None)
        try:
            for event in relay:
                yield from parser.feed(event.text) if isinstance(event, Text) else (event,)
            yield from parser.finish()
            calls = deltas.calls(tools)
            yield from calls
        finally:
            relay.close()
        if parser.calls or calls:
            stats.finish_reason = "tool_calls"

    def _body(self, s: Sampling, max_tokens: int) -> dict:
        body: dict[str, Any] = {"model": self.model, "stream": True, "stream_options": {"include_usage": True},
                                "max_tokens": max_tokens, "temperature": s.temperature, "top_p": s.top_p}
        if self._extras:
            body.update(top_k=s.top_k, min_p=s.min_p, repeat_penalty=s.repeat_penalty, repetition_penalty=s.repeat_penalty)
        if s.seed is not None:
            body["seed"] = s.seed & 0xFFFFFFFF
        if s.stop:
            body["stop"] = list(s.stop)[:4]  # the OpenAI API takes four; the StopFilter here applies them all
        if s.json_schema:
            body["_schema"] = json.loads(s.json_schema)
        return body

    @contextmanager
    def _open(self, path: str, body: dict) -> Iterator[Iterator[dict]]:
        """Server.events, sent again without what the server refuses (extra sampling keys, a schema form it lacks)."""
        while True:
            wire = {k: v for k, v in body.items() if k != "_schema" and (self._extras or k not in EXTRAS)}
            if "_schema" in body and self._schema_form != "none":
                wire["response_format"] = _response_format(self._schema_form, body["_schema"])
            with ExitStack() as stack:
                try:  # entering sends the request: a refusal is raised here, before any event
                    events = stack.enter_context(self.server.events(path, wire))
                except EngineUnavailable:
                    raise
                except ChatllmError as exc:
                    if not self._retreat(exc.message, "_schema" in body):
                        raise
                    continue
                yield events
                return

    def _retreat(self, message: str, schema: bool) -> bool:
        """Drop what a refusal names (an extra sampling key, a response_format form); False if there is nothing to drop."""
        if schema and "response_format" in message and self._schema_form != "none":
            self._schema_form = "json_object" if self._schema_form == "json_schema" else "none"
            return True
        if self._extras and any(k in message for k in EXTRAS):
            self._extras = False
            return True
        return False

    def _require_completions(self, what: str) -> None:
        if self._completions is None:
            probe = {"model": self.model, "prompt": "a", "max_tokens": 1, "temperature": 0}
            self._completions = self.server.post("/completions", probe, api=True, missing_ok=True) is not None
        if not self._completions:
            raise ChatllmError(f"{self.server.where} has no /v1/completions, so chatllm cannot {what} through it",
                               "use `chatllm ask` (chat), or a server with /v1/completions (vLLM, llama-server, "
                               "llama-cpp-python's server)")

    # -- scoring --------------------------------------------------------------------------------

    def score_continuations(self, prefix: str | Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Log-probability of each token sequence following the prefix, through the server's logprobs (module docstring)."""
        tokens = self.prompt_tokens(prefix, special=False) if isinstance(prefix, str) else list(prefix)
        longest = max((len(c) for c in continuations), default=0)
        check_fits(len(tokens) + longest, 0, self.n_ctx)
        if not continuations:
            return []
        self._require_completions("score labels")
        text = prefix if isinstance(prefix, str) else self.detokenize(tokens)
        self._evaluate_all_but_last(tokens, text)
        known: dict[str, dict[str, float]] = {}
        scores = []
        for cont in continuations:
            rest, path, total = self.detokenize(cont), "", 0.0
            while rest:
                top = known.get(path)
                if top is None:
                    top = known[path] = self._top(text + path)
                match = max((t for t in top if t and rest.startswith(t)), key=len, default=None)
                if match is None:  # outside the top N: an upper bound, and the label cannot be followed further
                    mass = sum(math.exp(v) for v in top.values())
                    total += min(min(top.values(), default=0.0), math.log(max(1e-12, 1.0 - mass)))
                    break
                total += top[match]
                path, rest = path + match, rest[len(match):]
            scores.append(total)
        self._held = tokens  # and a label's first tokens after them, which the next prompt hardly shares
        return scores

    def _evaluate_all_but_last(self, tokens: list[int], text: str) -> None:
        """On llama-cpp-python's server (llama.cpp, which keeps the last prompt evaluated and evaluates only what follows
        its longest common prefix): evaluate all but the prompt's last token first, so that the label requests decode it
        alone, as the local engine does (the reason is in llama_server_engine's _evaluate_all_but_last)."""
        if getattr(self.tokenizer, "kind", None) != "extras" or len(tokens) < 2:
            return  # elsewhere another engine computes the numbers anyway; an extra request would only cost
        head = self.detokenize(tokens[:-1])
        if head and text.startswith(head) and head != text and common_prefix(self._held, tokens) < len(tokens) - 1:
            self.server.post("/completions", {"model": self.model, "prompt": head, "max_tokens": 1, "temperature": 0.0},
                             api=True)
            self._held = list(tokens[:-1])

    def _top(self, prompt: str) -> dict[str, float]:
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": self._top_n}
        try:
            data = self.server.post("/completions", body, api=True)
        except EngineUnavailable:
            raise
        except ChatllmError as exc:
            if "logprobs" not in exc.message or self._top_n <= 5:
                raise
            self._top_n = 5
            return self._top(prompt)
        try:
            top = data["choices"][0]["logprobs"]["top_logprobs"][0]
            return {str(k): float(v) for k, v in top.items()}
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise ChatllmError(f"{self.server.where} sends no token log-probabilities, so chatllm cannot score labels "
                               "through it", "use a server that returns logprobs on /v1/completions (vLLM, llama-server, "
                               "llama-cpp-python's server)") from None



SERVER_FORMAT = ChatFormat("server", reasoning="think", tools="hermes", native_tools=True)


class DeltaReader:
    """What a streamed chat completion carries beside its content: reasoning, and tool calls in pieces."""

    def __init__(self) -> None:
        self._calls: dict[int, dict] = {}

    def read(self, choice: dict) -> list[Event]:
        """The Reasoning of one chunk (and its tool-call fragments, kept until the reply ends)."""
        delta = choice.get("delta") or {}
        for frag in delta.get("tool_calls") or []:
            if not isinstance(frag, dict):
                continue
            call = self._calls.setdefault(int(frag.get("index", len(self._calls))), {"id": "", "name": "", "arguments": ""})
            fn = frag.get("function") or {}
            call["id"] = frag.get("id") or call["id"]
            call["name"] += fn.get("name") or ""
            args = fn.get("arguments")
            call["arguments"] += args if isinstance(args, str) else (json.dumps(args) if args is not None else "")
        trace = delta.get("reasoning_content") or delta.get("reasoning")
        return [Reasoning(trace)] if isinstance(trace, str) and trace else []

    def calls(self, tools: Sequence[ToolSpec]) -> list[ToolCall]:
        """The calls the server streamed, decoded and checked against the offered tools."""
        out: list[ToolCall] = []
        for _, call in sorted(self._calls.items()):
            found = [{"name": call["name"], "arguments": call["arguments"] or "{}"}] if call["name"] else None
            for made in make_calls(call["arguments"], found, tools, "the server sent a call without a name"):
                out.append(ToolCall(made.name, made.arguments, id=call["id"], raw=made.raw, error=made.error))
        return out


def _wire_message(message: dict) -> dict:
    """A message as the OpenAI API takes it: a call's arguments are a JSON string."""
    if not message.get("tool_calls"):
        return message
    calls = [{**c, "function": {**c["function"], "arguments": c["function"]["arguments"] if isinstance(
        c["function"]["arguments"], str) else json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
        for c in message["tool_calls"]]
    return {**message, "tool_calls": calls}


def _tool_fields(tools: Sequence[ToolSpec], choice: str) -> dict:
    """The request's tools and tool_choice (OpenAI's form)."""
    if not tools:
        return {}
    wire = choice if choice in ("auto", "required", "none") else {"type": "function", "function": {"name": choice}}
    return {"tools": [t.openai() for t in tools], "tool_choice": wire}


class _Lead:
    """Joins a reply to the lead the prompt already gave it (the server never saw the lead)."""

    def __init__(self, lead: str):
        self.lead = lead.strip()
        self.held: str | None = "" if self.lead else None

    def feed(self, piece: str) -> str:
        """What of the reply can go out now."""
        if self.held is None:
            return piece
        self.held += piece
        if len(self.held.lstrip()) < len(self.lead) and self.lead.startswith(self.held.lstrip()):
            return ""  # it may still turn out to be the lead
        return self.flush()

    def flush(self) -> str:
        """The held text: without the lead if the model wrote it again, else apart from it by a space."""
        held, self.held = self.held or "", None
        body = held.lstrip()
        if body.startswith(self.lead):
            return body[len(self.lead):]
        return (" " + body) if body and body[0].isalnum() else body


def _response_format(form: str, schema: dict) -> dict:
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    return {"type": "json_object", "schema": schema}


def _reported_context(server: Server, model: str) -> int | None:
    """The context /v1/models reports for the model (vLLM's max_model_len), if any."""
    data = server.get("/models", api=True, missing_ok=True)
    for row in (data.get("data") or []) if isinstance(data, dict) else []:
        if isinstance(row, dict) and row.get("id") == model:
            for key in ("max_model_len", "context_length", "context_window"):
                if isinstance(row.get(key), int):
                    return row[key]
    return None


def _take_usage(stats: GenerationStats, event: dict, exact: bool) -> None:
    usage = event.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("completion_tokens"), int):
            stats.completion_tokens = usage["completion_tokens"]
        if isinstance(usage.get("prompt_tokens"), int):
            stats.prompt_tokens = usage["prompt_tokens"]
            stats.estimated = False  # the server counted both with the model's tokenizer
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if isinstance(cached, int):
            stats.cached_tokens = cached
