"""The engine contract on an OpenAI-compatible server, starting with llama.cpp's llama-server.

Each contract method and what it asks the server (HTTP in chatllm.engines.remote.http_client):

- tokenize / count_tokens: POST /tokenize {content, add_special, parse_special}: the server's own tokenizer, exact
  (recent answers are memoized: the tasks count the same pieces again and again).
- detokenize: POST /detokenize. Special tokens come back as their text (the local engine drops them).
- prompt_tokens: /tokenize, with BOS added when the model adds one and the text does not already start with it
  (BOS learnt once by tokenizing with and without add_special), as the local engine does.
- render_chat: the chat template /props reports, rendered here in the same sandboxed Jinja (trim_blocks,
  lstrip_blocks, tojson, raise_exception, strftime_now) as the local engine, so both render a conversation to the
  same text. Not /apply-template: it renders a conversation that ends with an assistant message as a reply to be
  continued (no end-of-turn), whatever add_generation_prompt says; it is used only when /props gives no template.
- stream / complete: POST /v1/completions with the prompt as a token list and stream=true (server-sent events);
  stop strings, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty and seed go to the server, which samples.
  last_stats: prompt_tokens is the list's length, cached_tokens the server's timings.cache_n (or usage's
  cached_tokens), completion_tokens counts streamed pieces (about one a token) and is set from usage at the end.
  Closing the generator closes the HTTP response, which makes llama-server stop generating. A server that streams
  text past max_tokens is cut off there: the reply ends as "length" and the connection closes (events without text
  and without end are refused by Server.events).
- score_continuations: POST /completion (llama-server's own) with n_predict=1 and n_probs, one request per
  continuation token (shared prefixes asked once). The prompt is evaluated in the batches the local engine uses: first
  an n_predict=0 request for all but its last token (what the server's cache lacks goes in one batch), then each label
  request decodes the last token alone; llama.cpp's kernels round differently by batch shape, so other batches give
  other numbers (issue 32). Each request biases the target token (logit_bias) so that it is the one "sampled":
  llama-server reports the sampled token's log-probability from the raw logits over the whole vocabulary, before any
  bias or sampler, so the score is the local engine's up to the server's float32 softmax (a shift of about 1e-4 shared
  by every token at one position). Three cases stay apart from a local run: a sliding-window model (Gemma 3, gpt-oss)
  on a server without --swa-full, which re-evaluates the end of every prompt from its context checkpoints in batches
  no client chooses; labels of three or more tokens, whose tokens the local engine evaluates in one batch and the
  server one request each; requests of several slots that the server batches together (--parallel). Should a server
  not honour the bias, the token's log-prob is taken from the top-N list (exact) or, when the token is outside it,
  bounded above by min(lowest top-N log-prob, log(1 - top-N mass)): the score returned is that bound.
- family: read from the GGUF file /props names when it is readable here and is the one served (same parameter count
  and tensor size): `chatllm serve` and a server on this machine get the local engine's task presets.
- n_ctx: the entry's `context` (or --ctx), else the server's per-slot context from /props, never above the latter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, ContextManager, Generator, Iterator, Protocol, Sequence, TypeVar

from chatllm.engines.chat_formats.formats import detect_format
from chatllm.engines.chat_formats.prompting import finish_prompt, prepare
from chatllm.engines.chat_formats.reply_parser import ReplyParser
from chatllm.engines.chat_formats.tool_calls import ToolSpec, call_schema, tools_from_json
from chatllm.engines.chat_templates import ChatTemplate, check_fits
from chatllm.engines.contract import Event, GenerationStats, Text
from chatllm.engines.remote.http_client import Server
from chatllm.engines.stop_strings import StopFilter
from chatllm.errors import ChatllmError, NoChatTemplateError, UsageError
from chatllm.models.gguf_header import read_header
from chatllm.models.registry import ModelSpec
from chatllm.settings import DEFAULT_CTX, Sampling
from chatllm.storage.kv_cache import common_prefix

_UNREAD = object()
TOP_N = 10  # next-token log-probs asked per scoring request
FORCE_BIAS = 1000.0  # logit bias that makes a scored token the sampled one
_MEMO_ITEMS, _MEMO_CHARS = 4096, 4000


def connect_server(spec: ModelSpec) -> Server:
    """The HTTP client of a remote spec (nothing sent yet)."""
    assert spec.url is not None
    return Server(spec.url, name=spec.name, key_env=spec.api_key_env, tls_verify=spec.tls_verify, read_timeout=spec.timeout)


def pick_model(server: Server, wanted: str | None) -> tuple[str, list[str]]:
    """The server's model id for the spec (its only model when none is named), and every id it lists."""
    ids = server.model_ids()
    if wanted is None:
        if len(ids) == 1:
            return ids[0], ids
        raise ChatllmError(f"{server.where}: which model? it serves {', '.join(ids) or 'no listed model'}",
                           'name one: model = "ID" in the models.toml entry, or openai:URL#ID')
    if ids and wanted not in ids:
        raise ChatllmError(server.scrub(f"{server.where} does not serve the model {wanted!r}"),
                           f"it serves: {', '.join(ids)}; set model = \"ID\" in the entry (or openai:URL#ID)")
    return wanted, ids


_ServerEngine = TypeVar("_ServerEngine", bound="ServerEngine")


class PieceFilter(Protocol):
    """What a reply's pieces pass through before the stop strings (remote_chat's lead): feed each, flush at the end."""

    def feed(self, piece: str) -> str: ...

    def flush(self) -> str: ...


class ServerEngine:
    """What every engine on a server shares: the server's own embeddings (Embedder) and a connection; the server keeps
    its own KV cache, so there are no state snapshots here."""

    server: Server
    model: str
    name: str
    EMBED_HINT = "serve an embedding model (with the server's embedding option on)"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised vectors from the server's /v1/embeddings, in input order."""
        answer = self.server.post("/embeddings", {"model": self.model, "input": list(texts)}, api=True) if texts else {}
        rows = sorted((answer or {}).get("data") or [], key=lambda row: row.get("index", 0))
        if len(rows) != len(texts) or not all(isinstance(r.get("embedding"), list) and r["embedding"] for r in rows):
            raise ChatllmError(f"{self.name}: the server gave {len(rows)} vectors for {len(texts)} texts", self.EMBED_HINT)
        vectors = []
        for row in rows:
            norm = math.sqrt(sum(x * x for x in row["embedding"])) or 1.0
            vectors.append([x / norm for x in row["embedding"]])
        return vectors

    def close(self) -> None:
        """Close the connection to the server (the server keeps running)."""
        self.server.close()

    def _relay(self, opened: ContextManager[Iterator[dict]], stats: GenerationStats, *, max_tokens: int,
               stop: Sequence[str], piece_of: Callable[[dict], str | None], take_usage: Callable[[GenerationStats, dict], None],
               lead: PieceFilter | None = None, side: Callable[[dict], list[Event]] | None = None
               ) -> Generator[Event, None, None]:
        """A streamed reply as Text events: cut at max_tokens and at the stop strings; stats and finish reason set."""
        start = time.perf_counter()
        stops = StopFilter(stop)
        finish: str | None = None
        try:
            with opened as events:
                for event in events:
                    take_usage(stats, event)
                    choices = event.get("choices") or [{}]
                    choice = choices[0] if isinstance(choices[0], dict) else {}
                    for extra in side(choice) if side is not None and finish is None else ():
                        stats.completion_tokens += 1  # a reasoning piece: a token of the reply, at least
                        if stats.completion_tokens == 1:
                            stats.first_token_seconds = time.perf_counter() - start
                        yield extra
                    piece = piece_of(choice) or ""
                    if piece and finish is None:
                        if stats.completion_tokens >= max_tokens:
                            finish = "length"  # the server ignores max_tokens: stop reading, which closes the connection
                            break
                        stats.completion_tokens += 1
                        if stats.completion_tokens == 1:
                            stats.first_token_seconds = time.perf_counter() - start
                        out = stops.feed(lead.feed(piece) if lead else piece)
                        if out:
                            yield Text(out)
                        if stops.stopped:
                            finish = "stop"
                            break  # closing the response cancels the rest on the server
                    finish = choice.get("finish_reason") or finish
                if finish is None:
                    raise self.server.error(f"{self.server.where} ended its stream before the reply was complete",
                                            "check the server's log: it may have crashed or restarted")
            tail = "" if stops.stopped else (stops.feed(lead.flush()) if lead else "") + stops.flush()
            if tail:
                yield Text(tail)
            stats.finish_reason = "length" if finish == "length" else "stop"
        except (KeyboardInterrupt, GeneratorExit):
            stats.finish_reason = "interrupted"
            raise
        finally:
            stats.seconds = time.perf_counter() - start

    def __enter__(self: _ServerEngine) -> _ServerEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemoteEngine(ServerEngine):
    """The engine contract on a server: tokens, template and scoring through llama-server's endpoints."""

    EMBED_HINT = "start llama-server with --embeddings (and an embedding model)"

    def __init__(self, server: Server, *, name: str, model: str, n_ctx: int, props: dict):
        self.server = server
        self.name = name
        self.model = model
        self.n_ctx = n_ctx
        self.props = props
        self.chat_template: str | None = props.get("chat_template") or None
        self._bos_text = str(props.get("bos_token") or "")
        self._eos_text = str(props.get("eos_token") or "")
        self._template: ChatTemplate | None = None
        self._memo: OrderedDict[tuple[str, bool, bool], list[int]] = OrderedDict()
        self.last_stats = GenerationStats()
        self._family: object = _UNREAD
        self._held: list[int] = []  # what the server's cache holds after this engine's last request, as far as known
        with_bos = self.tokenize("a", add_bos=True)
        plain = self.tokenize("a")
        self._bos: int | None = with_bos[0] if len(with_bos) > len(plain) and with_bos[1:1 + len(plain)] == plain else None
        self._apply_template = not self.chat_template and bool(props)
        self.format = detect_format(self.chat_template)  # how the served model writes reasoning and tool calls

    @classmethod
    def connect(cls, spec: ModelSpec, *, n_ctx: int | None = None, chat_format: str | None = None) -> "RemoteEngine":
        """Reach the server, check it serves the model, learn its context and template."""
        if chat_format:
            raise UsageError(f"--chat-format is for local GGUF models; {spec.name} uses its server's chat template",
                             "drop --chat-format, or start llama-server with --chat-template NAME")
        server = connect_server(spec)
        try:
            props = server.get("/props", missing_ok=True) or {}
            model, _ = pick_model(server, spec.remote_model)
            slot_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
            wanted = n_ctx or spec.context
            sizes = [c for c in (wanted, slot_ctx) if isinstance(c, int) and c > 0]
            return cls(server, name=spec.name, model=model, n_ctx=min(sizes) if sizes else DEFAULT_CTX, props=props)
        except BaseException:
            server.close()
            raise

    # -- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Text to token ids (special=True parses template markers like <|im_start|>)."""
        key = (text, add_bos, special)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return list(hit)
        data = self.server.post("/tokenize", {"content": text, "add_special": add_bos, "parse_special": special},
                                missing_ok=True)
        if data is None:
            raise ChatllmError(f"{self.server.where} has no /tokenize: chatllm needs llama.cpp's llama-server "
                               "(its tasks send token prompts and score tokens)",
                               "serve the model with llama-server; other OpenAI-compatible servers are not supported yet")
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise ChatllmError(f"{self.server.where} sent a malformed /tokenize reply", "check the server's log")
        if len(text) <= _MEMO_CHARS:
            self._memo[key] = tokens
            if len(self._memo) > _MEMO_ITEMS:
                self._memo.popitem(last=False)
        return list(tokens)

    def count_tokens(self, text: str) -> int:
        """How many tokens the text costs."""
        return len(self.tokenize(text))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids back to text."""
        data = self.server.post("/detokenize", {"tokens": list(tokens)})
        return str(data.get("content", "")) if isinstance(data, dict) else ""

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]:
        """Tokenize a prompt, BOS added unless the text has it; special=True parses template markers."""
        add_bos = self._bos is not None and not (self._bos_text and prompt.startswith(self._bos_text))
        return self.tokenize(prompt, add_bos=add_bos, special=special)

    # -- chat template --------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        """True when the server reports a chat template (or can apply one)."""
        return bool(self.chat_template or self._apply_template)

    @property
    def thinks(self) -> bool:
        """True when the server's template is a reasoning model's."""
        return self.format.thinks

    @property
    def family(self) -> str | None:
        """The served GGUF's family (pre-tokenizer, else architecture) as the local engine reads it, when the file the
        server names in /props is readable here and is the one it serves; else None (tasks use their default presets)."""
        if self._family is _UNREAD:
            self._family = self._read_family()
        return self._family  # type: ignore[return-value]

    def _read_family(self) -> str | None:
        # llama-server reports no GGUF metadata, only the file's path: a server on this machine (`chatllm serve`) is
        # known by reading its file. The same parameter count and tensor data size as the server reports make sure the
        # file here is the one served, whatever host the server runs on.
        path = self.props.get("model_path")
        if not isinstance(path, str) or not path or not Path(path).is_file():  # never a FIFO or a device
            return None
        try:
            data = self.server.get("/models", api=True, missing_ok=True) or {}
            rows = data.get("data") if isinstance(data, dict) else None
            meta = next((r.get("meta") or {} for r in rows or [] if isinstance(r, dict)
                         and self.model in [r.get("id"), *(r.get("aliases") or [])]), {})
            info = read_header(path, check_data=False)
        except ChatllmError:
            return None
        if not isinstance(meta, dict) or (meta.get("n_params"), meta.get("size")) != (info.n_params, info.data_size):
            return None
        pre = str(info.metadata.get("tokenizer.ggml.pre") or "")
        return pre if pre and pre != "default" else (str(info.metadata.get("general.architecture") or "") or None)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, *,
                    tools: Sequence[ToolSpec] | None = None, think: bool | str | None = None) -> str:
        """Render messages with the server's template, in the same sandboxed Jinja as the local engine, in the model's
        family format (tools, calls, results, the thinking switch) as the local engine renders them."""
        if not self.has_chat_template:
            raise NoChatTemplateError(self.name)
        msgs, variables = prepare(self.format, messages, tools, think)
        if not self.chat_template:
            data = self.server.post("/apply-template", {"messages": msgs, "add_generation_prompt": add_generation_prompt,
                                                        **{k: v for k, v in variables.items() if v is not None}})
            prompt = str(data.get("prompt", "")) if isinstance(data, dict) else ""
        else:
            if self._template is None:
                self._template = ChatTemplate(
                    self.chat_template, bos=self._bos_text, eos=self._eos_text, model=self.name,
                    hint="start llama-server with --chat-template chatml (or llama3, gemma, ...) to use a built-in template",
                )
            prompt = self._template.render(msgs, add_generation_prompt, **variables)
        return finish_prompt(self.format, prompt, think, add_generation_prompt)

    # -- generation -----------------------------------------------------------------------------

    def _body(self, tokens: list[int], s: Sampling) -> dict:
        body: dict[str, Any] = {
            "model": self.model, "prompt": tokens, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": min(s.max_tokens, self.n_ctx - len(tokens)), "temperature": s.temperature, "top_p": s.top_p,
            "top_k": s.top_k, "min_p": s.min_p, "repeat_penalty": s.repeat_penalty, "cache_prompt": True,
        }
        if s.seed is not None:
            body["seed"] = s.seed & 0xFFFFFFFF
        if s.stop:
            body["stop"] = list(s.stop)
        if s.json_schema:  # llama-server turns it into the same grammar the local engine decodes with
            body["json_schema"] = json.loads(s.json_schema)
        return body

    def stream(self, prompt: str | Sequence[int], sampling: Sampling) -> Generator[Event, None, None]:
        """The reply as events as the server streams them; close() stops the request. Stats in last_stats."""
        tokens = self.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)
        if not tokens:
            raise ChatllmError("empty prompt", "give some text")
        check_fits(len(tokens), min(sampling.max_tokens, 1), self.n_ctx)
        tools = tools_from_json(sampling.tools) if sampling.tool_choice != "none" else []
        body = self._body(tokens, sampling)
        if tools and sampling.tool_choice != "auto":  # a call from the first token: the server holds it to the schema
            only = sampling.tool_choice if sampling.tool_choice != "required" else None
            body["json_schema"] = call_schema(tools, key=self.format.arguments_key, only=only)
        stats = self.last_stats = GenerationStats(prompt_tokens=len(tokens), finish_reason="length")
        self._held = tokens  # at least: the reply follows in the server's cache
        tail = self.detokenize(tokens[-8:]).rstrip() if self.format.reasoning == "think" else ""
        parser = ReplyParser(self.format, in_reasoning=tail.endswith(self.format.think_open), tools=tools)
        relay = self._relay(self.server.events("/completions", body), stats, max_tokens=body["max_tokens"],
                            stop=sampling.stop, piece_of=lambda choice: choice.get("text"), take_usage=_take_usage)
        try:
            for event in relay:
                yield from parser.feed(event.text) if isinstance(event, Text) else (event,)
            yield from parser.finish()
        finally:
            relay.close()
        if parser.calls and stats.finish_reason == "stop":
            stats.finish_reason = "tool_calls"

    # -- scoring --------------------------------------------------------------------------------

    def score_continuations(self, prefix: str | Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Log-probability of each token sequence following the prefix (exact; see the module docstring)."""
        tokens = self.prompt_tokens(prefix) if isinstance(prefix, str) else list(prefix)
        longest = max((len(c) for c in continuations), default=0)
        check_fits(len(tokens) + longest, 0, self.n_ctx)
        known: dict[tuple[int, ...], dict[int, float]] = {}
        if longest:
            self._evaluate_all_but_last(tokens)
        scores = []
        for cont in continuations:
            total = 0.0
            for i, token in enumerate(cont):
                total += self._next_logprob(tokens, tuple(cont[:i]), int(token), known)
            scores.append(total)
        return scores

    def _evaluate_all_but_last(self, tokens: list[int]) -> None:
        """Have the server evaluate the prompt as the local engine does: what its cache lacks in one batch, up to but
        not including the last token, which each scoring request then decodes alone."""
        # llama.cpp's kernels round differently by batch shape (the repacked weights go through a 4-row gemm and a
        # one-row gemv), so a token's KV entries depend on the batch it was evaluated in: sending the whole prompt
        # would evaluate its uncached tokens together with the last one, in a batch one token longer than locally.
        if len(tokens) > 1 and common_prefix(self._held, tokens) < len(tokens) - 1:
            self.server.post("/completion", {"prompt": tokens[:-1], "n_predict": 0, "cache_prompt": True,
                                             "model": self.model})
        self._held = list(tokens[:-1])

    def _next_logprob(self, tokens: list[int], path: tuple[int, ...], token: int, known: dict) -> float:
        seen = known.setdefault(path, {})
        if token in seen:
            return seen[token]
        prompt = tokens + list(path)
        body = {"prompt": prompt, "n_predict": 1, "n_probs": TOP_N, "temperature": 0.0, "cache_prompt": True,
                "logit_bias": [[token, FORCE_BIAS]], "samplers": ["temperature"], "model": self.model}
        data = self.server.post("/completion", body, missing_ok=True)
        self._held = prompt
        if data is None:
            raise ChatllmError(f"{self.server.where} has no /completion endpoint, so it cannot score labels",
                               "serve the model with llama.cpp's llama-server")
        try:
            step = data["completion_probabilities"][0]
            top = {int(e["id"]): float(e["logprob"]) for e in step.get("top_logprobs") or []}
            seen.update(top)
            seen[int(step["id"])] = float(step["logprob"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ChatllmError(f"{self.server.where} sent no token log-probabilities in its /completion reply",
                               "use a llama-server recent enough to support n_probs") from None
        if token in seen:
            return seen[token]
        mass = sum(math.exp(v) for v in top.values())
        bound = min(min(top.values(), default=0.0), math.log(max(1e-12, 1.0 - mass)))
        seen[token] = bound  # outside the top N: an upper bound
        return bound



def describe(spec: ModelSpec) -> dict:
    """What the server says about a remote entry (for `chatllm show`): /v1/models and llama-server's /props."""
    server = connect_server(spec)
    try:
        props = server.get("/props", missing_ok=True) or {}
        data = server.get("/models", api=True, missing_ok=True) or {}
        rows = [r for r in data.get("data") or [] if isinstance(r, dict)] if isinstance(data, dict) else []
        model, ids = pick_model(server, spec.remote_model)
        meta = next((r.get("meta") or {} for r in rows if model in [r.get("id"), *(r.get("aliases") or [])]), {})
    finally:
        server.close()
    template = props.get("chat_template") or None
    key = spec.api_key_env
    return {
        "model": spec.name,
        "remote": True,
        "url": server.shown,
        "server_model": model,
        "served_models": ids,
        "context_length": meta.get("n_ctx_train"),
        "context_per_slot": (props.get("default_generation_settings") or {}).get("n_ctx") or meta.get("n_ctx"),
        "context": spec.context,
        "slots": props.get("total_slots"),
        "parameters": meta.get("n_params"),
        "size": meta.get("size"),
        "vocabulary": meta.get("n_vocab"),
        "chat_template": template is not None,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()[:16] if template else None,
        "server_build": props.get("build_info"),
        "api_key_env": f"{key} ({'set' if os.environ.get(key) else 'not set'})" if key else None,
        "tls_verify": spec.tls_verify,
        "description": spec.description,
        "license": spec.license,
    }


def _take_usage(stats: GenerationStats, event: dict) -> None:
    usage, timings = event.get("usage"), event.get("timings")
    if isinstance(usage, dict):
        if isinstance(usage.get("completion_tokens"), int):
            stats.completion_tokens = usage["completion_tokens"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if isinstance(cached, int):
            stats.cached_tokens = cached
    if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
        stats.cached_tokens = timings["cache_n"]


