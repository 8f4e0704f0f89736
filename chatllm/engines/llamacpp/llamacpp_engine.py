"""The engine on llama.cpp: load a GGUF, stream, score, snapshot its state (with every capability of the contract)."""

from __future__ import annotations

import codecs
import collections
import ctypes
import hashlib
import math
import mmap
import os
import sys
import time
from pathlib import Path
from typing import Callable, Generator, Iterable, Iterator, Sequence

import llama_cpp
from llama_cpp import _internals as internals
from llama_cpp import llama_chat_format

from chatllm.engines.chat_formats.formats import detect_format, format_named
from chatllm.engines.chat_templates import ChatTemplate, check_fits
from chatllm.engines.contract import BatchItem, GenerationStats
from chatllm.engines.llamacpp.chat_replies import ChatRepliesMixin
from chatllm.engines.llamacpp.cpu_buffers import drop_amx_buffer
from chatllm.engines.llamacpp.devices import choose_gpu_layers, extra_buffers_safe
from chatllm.engines.llamacpp.embedding_mode import EmbeddingMixin, embedding_params
from chatllm.engines.llamacpp.flash_attn import choose_flash_attn
from chatllm.engines.llamacpp.grammar_sampling import GrammarSampler, json_schema_grammar
from chatllm.engines.llamacpp.multi_sequence import MAX_SEQS, default_parallel, generate_batch, score_batch
from chatllm.engines.llamacpp.prompt_lookup import DecodeCosts, Drafter
from chatllm.engines.llamacpp.steering import Steering
from chatllm.engines.llamacpp.threads import default_threads
from chatllm.engines.stop_strings import StopFilter
from chatllm.errors import ChatllmError, NoChatTemplateError
from chatllm.settings import DEFAULT_CTX, Sampling

_LOG: collections.deque[str] = collections.deque(maxlen=4000)
_LOG_ECHO = False


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp writes straight to stderr unless a callback takes its log; keep it for --verbose and errors.
    line = text.decode("utf-8", errors="replace")
    _LOG.append(line)
    if _LOG_ECHO:
        sys.stderr.write(line)


llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
_BACKEND_READY = False


def captured_log() -> str:
    """What llama.cpp logged lately (for --verbose and for load errors)."""
    return "".join(_LOG)


def build_info() -> dict:
    """What this llama-cpp-python build can do, without loading a model."""
    system = llama_cpp.llama_print_system_info().decode(errors="replace")
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "backend": backend_name(system, bool(llama_cpp.llama_supports_gpu_offload())),
        "mmap": bool(llama_cpp.llama_supports_mmap()),
        "system_info": system.strip(),
    }


def backend_name(system_info: str, gpu_offload: bool) -> str:
    """CUDA, Metal, Vulkan, ROCm... or CPU, from llama.cpp's system info."""
    if gpu_offload:
        for name in ("CUDA", "Metal", "Vulkan", "ROCm", "HIP", "SYCL", "OpenCL"):
            if name.upper() in system_info.upper():
                return name
        return "GPU"
    return "CPU"


class LlamaCppEngine(EmbeddingMixin, ChatRepliesMixin):
    """The engine contract on llama.cpp: one loaded model and its context, whose KV cache is kept across calls."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = 512,
        device: str = "auto",
        gpu_layers: int | None = None,
        flash_attn: bool | None = None,
        depth_hint: int | None = None,
        repack: bool = True,
        chat_format: str | None = None,
        verbose: bool = False,
        name: str | None = None,
        embedding: bool = False,
        parallel: int | None = 1,
    ):
        global _BACKEND_READY, _LOG_ECHO
        _LOG_ECHO = verbose
        if not _BACKEND_READY:
            llama_cpp.llama_backend_init()
            _BACKEND_READY = True
        self.path = Path(path)
        self.name = name or self.path.name
        info = build_info()
        self.backend = info["backend"]
        self.gpu_layers = choose_gpu_layers(device, gpu_layers, info["gpu_offload"], info["backend"])
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if self.gpu_layers == -1 else self.gpu_layers
        self.repack = repack and (extra_buffers_safe(info["system_info"]) or drop_amx_buffer())
        model_params.use_extra_bufts = self.repack
        _LOG.clear()
        try:
            self._model = internals.LlamaModel(path_model=str(self.path), params=model_params, verbose=True)
        except (ValueError, OSError) as exc:
            tail = _last_error_line(captured_log())
            raise ChatllmError(
                f"llama.cpp could not load {self.path.name}: {tail or exc}",
                "the file may be corrupt or need a newer llama-cpp-python; try `chatllm pull MODEL --force`",
            )
        self.n_ctx_train = self._model.n_ctx_train()
        wanted_ctx = n_ctx or min(self.n_ctx_train or DEFAULT_CTX, DEFAULT_CTX)
        self.n_threads = n_threads or default_threads()
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = wanted_ctx
        ctx_params.n_batch = min(n_batch, wanted_ctx)
        ctx_params.n_ubatch = min(n_batch, wanted_ctx)
        ctx_params.n_threads = self.n_threads
        ctx_params.n_threads_batch = self.n_threads
        # None: on for a GPU; on the CPU only for a run whose context stays shallow (depth_hint: its deepest, if known)
        self.flash_attn = flash_attn = choose_flash_attn(flash_attn, self.gpu_layers, depth_hint, wanted_ctx)
        ctx_params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx_params.no_perf = True
        # Sequences decoded together by generate_batch/score_batch (None: chosen for the device); 1 keeps the context
        # exactly as the plain path has always had it. Several share one unified KV cache of the same n_ctx cells.
        self.parallel = max(1, min(parallel or default_parallel(self.gpu_layers), MAX_SEQS - 1))
        if self.parallel > 1:
            ctx_params.n_seq_max = MAX_SEQS
            ctx_params.kv_unified = True
        embedding_params(ctx_params, wanted_ctx, embedding)  # with embedding: pooled vectors, not logits
        try:
            self._ctx = internals.LlamaContext(model=self._model, params=ctx_params, verbose=True)
        except ValueError:
            self._model.close()
            raise ChatllmError(
                f"llama.cpp could not create a {wanted_ctx}-token context: {_last_error_line(captured_log())}",
                "lower --ctx (memory grows with it)",
            )
        self.n_ctx = self._ctx.n_ctx()
        self.n_batch = ctx_params.n_batch
        self._batch = internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=True)
        self._vocab = self._model.vocab
        self.n_vocab = self._model.n_vocab()
        self._tokens: list[int] = []  # what the KV cache holds, position by position
        self._shift_pending = False  # shift_out moved positions; llama.cpp rotates the keys at the next decode
        self._piece = ctypes.create_string_buffer(256)
        self.metadata = self._model.metadata()
        self.embedding = embedding
        self.chat_template = self.metadata.get("tokenizer.chat_template") or None
        named = format_named(chat_format) if chat_format else None
        self.chat_format = None if named else chat_format  # a llama-cpp-python format name: it renders the prompt
        # how this family writes reasoning and tool calls: named by --chat-format, else found in the template
        self.format = named or detect_format(None if self.chat_format else self.chat_template)
        self._opening_checked = False
        self._special_pieces = self.format.special_text  # harmony's syntax is control tokens: render them
        self._template: ChatTemplate | None = None
        self._grammars: dict[str, str] = {}
        self.last_stats = GenerationStats()
        self._costs = DecodeCosts()  # what decodes of 1..17 tokens cost here: whether drafts pay
        # Drafts are verified by cutting the KV cache back past the rejected ones, which a recurrent state cannot do.
        model_ptr = self._model.model
        self.can_draft = not (llama_cpp.llama_model_is_recurrent(model_ptr) or llama_cpp.llama_model_is_hybrid(model_ptr))

    # -- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Text to token ids (special=True parses template markers like <|im_start|>)."""
        return self._model.tokenize(text.encode("utf-8"), add_bos, special)

    def count_tokens(self, text: str) -> int:
        """How many tokens the text costs."""
        return len(self.tokenize(text))

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Token ids back to text."""
        return b"".join(self._token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def _token_bytes(self, token: int, special: bool = False) -> bytes:
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            return buf.raw[:n]
        return self._piece.raw[:n]

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]:
        """Tokenize a prompt, BOS added unless the text has it; special=True parses template markers."""
        add_bos = bool(self._model.add_bos_token())
        bos = self._model.token_bos()
        if add_bos and bos >= 0:
            bos_text = self._model.token_get_text(bos)
            if bos_text and prompt.startswith(bos_text):
                add_bos = False
        return self.tokenize(prompt, add_bos=add_bos, special=special)

    # -- chat template --------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        """True when the model can be used for chat (own template or a chat_format override)."""
        return bool(self.chat_format or self.chat_template)

    @property
    def family(self) -> str | None:
        """The GGUF's pre-tokenizer name (it tells fine-tunes of one architecture apart), else its architecture."""
        pre = str(self.metadata.get("tokenizer.ggml.pre") or "")
        return pre if pre and pre != "default" else (str(self.metadata.get("general.architecture") or "") or None)

    def _render_template(self, messages: list[dict], add_generation_prompt: bool = True, **variables) -> str:
        """Render messages with the GGUF's template (sandboxed Jinja) or the chat_format override."""
        if not self.has_chat_template:
            raise NoChatTemplateError(self.name)
        if self.chat_format:
            formatter = _named_format(self.chat_format)
            try:
                return formatter(messages=messages).prompt
            except Exception as exc:  # llama-cpp-python's formatters fail on roles they do not know
                raise ChatllmError(f"the {self.chat_format} chat format failed: {type(exc).__name__}: {str(exc)[:200]}",
                                   "check the roles, or try another --chat-format") from None
        if self._template is None:
            self._template = ChatTemplate(
                self.chat_template or "", bos=self._special_text(self._model.token_bos()),
                eos=self._special_text(self._model.token_eos()), model=self.name,
                hint="pass --chat-format chatml (or llama-3, gemma, mistral-instruct, ...) to use a built-in format",
            )
        return self._template.render(messages, add_generation_prompt, **variables)

    def _special_text(self, token: int) -> str:
        return self._model.token_get_text(token) if token >= 0 else ""

    # -- evaluation -----------------------------------------------------------------------------

    def _eval(self, tokens: Sequence[int]) -> int:
        """Make the KV cache hold exactly `tokens`, evaluating only what differs; returns tokens reused."""
        keep = 0
        last = len(tokens) - 1
        limit = min(len(self._tokens), last)  # the last token is always re-run for its logits
        while keep < limit and self._tokens[keep] == tokens[keep]:
            keep += 1
        keep = self._rewind(keep)
        for start in range(keep, last, self.n_batch):
            chunk = tokens[start : min(start + self.n_batch, last)]
            self._decode(chunk, start, logits_from=len(chunk))
            self._tokens.extend(chunk)
        # The last token is always decoded alone, whether the rest was cached or not: llama.cpp's batched and
        # single-token kernels round differently, so logits taken from inside a batch would make the same prompt
        # and seed give another answer once the prompt sits in the cache (issue 21).
        self._decode(tokens[last:], last, logits_from=0)
        self._tokens.append(tokens[last])
        return keep

    def _rewind(self, keep: int) -> int:
        """Drop the KV cache after its first `keep` tokens (all of it if llama.cpp cannot); returns what is kept."""
        if not llama_cpp.llama_memory_seq_rm(self._ctx.memory, 0, keep, -1):
            llama_cpp.llama_memory_clear(self._ctx.memory, True)
            keep = 0
        del self._tokens[keep:]
        return keep

    def _decode(self, chunk: Sequence[int], pos: int, logits_from: int) -> None:
        batch = self._batch.batch
        n = len(chunk)
        batch.n_tokens = n
        for i, tok in enumerate(chunk):
            batch.token[i] = tok
            batch.pos[i] = pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i >= logits_from
        rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if rc != 0:
            if rc == 2:
                raise KeyboardInterrupt
            raise ChatllmError(f"llama.cpp failed to evaluate the prompt (code {rc})", "try a smaller --ctx or prompt")

    def _sampler(self, s: Sampling) -> internals.LlamaSampler:
        sampler = internals.LlamaSampler()
        if s.repeat_penalty and s.repeat_penalty != 1.0:
            if s.repeat_penalty > 1.0 and (s.top_k > 0 or s.temperature <= 0):
                # The penalty pass walks the whole vocabulary (1 ms/token on a 262k vocab). A penalty > 1 only lowers
                # the <= 64 recent tokens, so the best k after it are among the best k + 64 before: exact, and cheap.
                sampler.add_top_k((s.top_k if s.temperature > 0 else 1) + 64)
            sampler.add_penalties(self.n_vocab, 64, s.repeat_penalty, 0.0, 0.0)
        if s.temperature <= 0:
            sampler.add_greedy()
            return sampler
        if s.top_k > 0:
            sampler.add_top_k(s.top_k)
        if s.top_p < 1.0:
            sampler.add_top_p(s.top_p, 1)
        if s.min_p > 0:
            sampler.add_min_p(s.min_p, 1)
        sampler.add_temp(s.temperature)
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
        sampler.add_dist(seed & 0xFFFFFFFF)
        return sampler

    def _gbnf(self, schema: str) -> str:
        """The GBNF grammar for a JSON Schema, converted once per schema text."""
        if schema not in self._grammars:
            self._grammars[schema] = json_schema_grammar(schema)
        return self._grammars[schema]

    def _pieces(self, tokens: list[int], sampling: Sampling, steer: Steering) -> Generator[str, None, None]:
        """Raw text pieces as tokens arrive (multi-byte characters whole), a grammar started when `steer` says and
        tokens forced when it says; stats in last_stats."""
        if not tokens:
            raise ChatllmError("empty prompt", "give some text")
        max_tokens = min(sampling.max_tokens, self.n_ctx - len(tokens))
        check_fits(len(tokens), min(sampling.max_tokens, 1), self.n_ctx)
        stats = self.last_stats = GenerationStats(prompt_tokens=len(tokens), finish_reason="length")
        start = time.perf_counter()
        stats.cached_tokens = self._eval(tokens)
        sampler = self._sampler(sampling)
        constrained: GrammarSampler | None = None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopFilter(sampling.stop)
        ctx, smpl, vocab = self._ctx.ctx, sampler.sampler, self._vocab

        def pick(i: int) -> int:  # called once per reply token, in order, drafts included: `steer` sees every one
            nonlocal constrained
            if constrained is None and (spec := steer.grammar_due()) is not None:
                constrained = GrammarSampler(self._vocab, spec.gbnf, smpl, self.n_vocab, spec.triggers)
            token = steer.forced()
            if token is not None:
                if constrained:
                    constrained.accept(token)
                else:
                    llama_cpp.llama_sampler_accept(smpl, token)
            else:
                token = constrained.sample(ctx, i) if constrained else llama_cpp.llama_sampler_sample(smpl, ctx, i)
            steer.on_token(token)
            return token

        drafter = Drafter(tokens, self._costs) if sampling.draft == "auto" and self.can_draft else None
        produced = self._produce(pick, drafter, stats, max_tokens)
        try:
            for token in produced:
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    stats.finish_reason = "stop"
                    break
                stats.completion_tokens += 1
                if stats.completion_tokens == 1:
                    stats.first_token_seconds = time.perf_counter() - start
                text = stops.feed(decoder.decode(self._token_bytes(token, self._special_pieces)))
                if text:
                    yield text
                if stops.stopped:
                    stats.finish_reason = "stop"
                    break
                if len(self._tokens) + 1 >= self.n_ctx or stats.completion_tokens >= max_tokens:
                    break  # the last token's logits are never used: skip its decode (a next prompt re-feeds it)
            tail = stops.feed(decoder.decode(b"", final=True)) if not stops.stopped else ""
            tail += stops.flush() if not stops.stopped else ""
            if tail:
                yield tail
        except (KeyboardInterrupt, GeneratorExit):
            stats.finish_reason = "interrupted"
            raise
        finally:
            produced.close()
            stats.seconds = time.perf_counter() - start
            if constrained:
                constrained.close()
            sampler.close()

    def _produce(self, pick: Callable[[int], int], drafter: Drafter | None, stats: GenerationStats,
                 max_tokens: int) -> Generator[int, None, None]:
        """The reply's tokens as sampled, each decoded once the consumer asks for the next (the KV cache holds every
        token yielded but the last). With a drafter, a step may verify drafted tokens with it in one batch: each
        position's token is drawn from that position's logits with the same sampler and random stream as a plain
        step, and a draft counts only as far as it equals what was drawn (a grammar's veto included)."""
        mem = self._ctx.memory
        token = pick(-1)
        try:
            while True:
                yield token
                pos = len(self._tokens)
                draft: list[int] = []
                if drafter is not None:
                    drafter.push(token)
                    draft = drafter.propose(min(self.n_ctx - pos - 2, max_tokens - stats.completion_tokens - 1))
                began = time.perf_counter()
                self._decode((token, *draft), pos, 0)
                if drafter is not None:
                    self._costs.add(1 + len(draft), time.perf_counter() - began)
                self._tokens.append(token)
                token = pick(0)
                if not draft:
                    continue
                stats.drafted_tokens += len(draft)
                accepted = 0
                while accepted < len(draft) and token == draft[accepted]:
                    accepted += 1
                    stats.accepted_tokens += 1
                    yield token
                    drafter.push(token)  # type: ignore[union-attr]  # a draft implies a drafter
                    self._tokens.append(token)
                    token = pick(accepted)
                drafter.verified(len(draft), accepted)  # type: ignore[union-attr]
                if accepted < len(draft):
                    llama_cpp.llama_memory_seq_rm(mem, 0, len(self._tokens), -1)
        finally:  # the consumer stopped: drafted tokens it never took leave the cache
            llama_cpp.llama_memory_seq_rm(mem, 0, len(self._tokens), -1)

    def score_continuations(self, prefix: str | Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        """Log-probability of each token sequence following the prefix (the prefix stays cached)."""
        import numpy as np

        tokens = self.prompt_tokens(prefix) if isinstance(prefix, str) else list(prefix)
        longest = max((len(c) for c in continuations), default=0)
        check_fits(len(tokens) + longest, 0, self.n_ctx)
        self._eval(tokens)
        first = self._logprobs_at(-1, np)
        scores = []
        for cont in continuations:
            if not cont:
                scores.append(0.0)
                continue
            total = float(first[cont[0]])
            if len(cont) > 1:
                self._eval(tokens)
                body = list(cont[:-1])
                self._decode(body, len(tokens), 0)
                self._tokens.extend(body)
                for i, tok in enumerate(cont[1:]):
                    total += float(self._logprobs_at(i, np)[tok])
            scores.append(total)
        return scores

    def _logprobs_at(self, i: int, np):
        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, i)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        m = logits.max()
        return logits - (m + math.log(np.exp(logits - m).sum()))

    def generate_batch(self, prompts: Iterable[str | Sequence[int]], sampling: Sampling,
                       on_piece: Callable[[int, str], bool] | None = None) -> Iterator[BatchItem]:
        """Replies to many prompts, `parallel` sequences per decode, each yielded as it finishes (multi_sequence.py)."""
        return generate_batch(self, prompts, sampling, on_piece)

    def score_batch(self, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[list[float]]:
        """score_continuations for many (tokens, continuations) requests, several per decode (multi_sequence.py)."""
        return score_batch(self, requests)

    def state_key(self) -> dict | None:
        """What a saved KV state depends on; the model file is named by path here (the cache adds its sha256)."""
        defaults = llama_cpp.llama_context_default_params()  # the KV types are llama.cpp's defaults: never set here
        return {"engine": "llama.cpp", "llama_cpp_python": llama_cpp.__version__, "model_path": str(self.path.resolve()),
                "n_ctx": self.n_ctx, "n_batch": self.n_batch, "flash_attn": self.flash_attn, "backend": self.backend,
                "gpu_layers": self.gpu_layers, "repack": self.repack, "type_k": int(defaults.type_k),
                "type_v": int(defaults.type_v), "chat_format": self.chat_format,
                "chat_template": hashlib.sha256((self.chat_template or "").encode()).hexdigest()}

    def save_state(self, n_tokens: int | None = None) -> tuple[list[int], memoryview] | None:
        """The tokens the KV cache holds (what follows the first n_tokens is dropped) and llama.cpp's sequence state."""
        self._apply_shift()
        if n_tokens is not None and n_tokens < len(self._tokens):
            self._rewind(n_tokens)
        if not self._tokens:
            return None
        size = llama_cpp.llama_state_seq_get_size(self._ctx.ctx, 0)
        if size <= 0:
            return None
        # An anonymous mapping rather than the heap: freed, it goes back to the system. From the heap, glibc kept each
        # freed state of a new largest size, and a chat saving its state after every reply grew by megabytes each time.
        buf = (ctypes.c_uint8 * size).from_buffer(mmap.mmap(-1, size))
        n = llama_cpp.llama_state_seq_get_data(self._ctx.ctx, buf, size, 0)
        return (list(self._tokens), memoryview(buf).cast("B")[:n]) if n else None

    def load_state(self, tokens: Sequence[int], data: memoryview) -> int:
        """Make the KV cache hold `tokens` from saved state bytes; tokens restored (0 when llama.cpp refused them)."""
        self._rewind(0)
        llama_cpp.llama_memory_clear(self._ctx.memory, True)
        if not tokens or len(tokens) >= self.n_ctx or data.readonly:
            return 0
        arr = (ctypes.c_uint8 * len(data)).from_buffer(data)
        read = llama_cpp.llama_state_seq_set_data(self._ctx.ctx, arr, len(data), 0)
        # A state that does not hold exactly one cell per token (another context, another model) is refused whole.
        if read != len(data) or llama_cpp.llama_memory_seq_pos_max(self._ctx.memory, 0) != len(tokens) - 1:
            llama_cpp.llama_memory_clear(self._ctx.memory, True)
            return 0
        self._tokens = list(tokens)
        return len(tokens)

    def shift_out(self, held: Sequence[int], start: int, end: int) -> bool:
        """If the KV cache begins with `held`, remove positions [start, end) and shift what follows back, evaluating
        nothing (llama.cpp rotates the shifted keys at the next decode)."""
        n = len(held)
        if not (0 <= start < end <= n <= len(self._tokens)) or self._tokens[:n] != list(held):
            return False
        mem = self._ctx.memory
        if not llama_cpp.llama_memory_can_shift(mem) or not llama_cpp.llama_memory_seq_rm(mem, 0, start, end):
            return False
        llama_cpp.llama_memory_seq_add(mem, 0, end, -1, start - end)
        del self._tokens[start:end]
        self._shift_pending = bool(self._tokens)
        return True

    def _apply_shift(self) -> None:
        """Decode the last cached token again, alone: llama.cpp applies a pending shift first, so a state saved next
        does not pair new positions with keys not yet rotated (the next prompt's decode would do it anyway)."""
        if self._shift_pending and self._tokens:
            last = self._tokens[-1]
            self._rewind(len(self._tokens) - 1)
            self._decode((last,), len(self._tokens), 0)
            self._tokens.append(last)
        self._shift_pending = False

    def close(self) -> None:
        """Free the context and the model."""
        for part in ("_batch", "_ctx", "_model"):
            obj = getattr(self, part, None)
            if obj is not None:
                obj.close()
                setattr(self, part, None)

    def __enter__(self) -> "LlamaCppEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _named_format(name: str):
    func = getattr(llama_chat_format, "format_" + name.replace("-", "_").replace(".", ""), None)
    if func is None:
        for attr in dir(llama_chat_format):
            if attr.startswith("format_") and attr[7:].replace("_", "") == name.replace("-", "").replace("_", ""):
                func = getattr(llama_chat_format, attr)
    if func is None:
        raise ChatllmError(f"unknown chat format {name!r}", "try chatml, llama-3, gemma, mistral-instruct, qwen, zephyr")
    return func


def _last_error_line(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    return (errors or lines or [""])[-1][:300]
