"""Several sequences per llama_decode for LlamaCppEngine: batches of generations and of label scores.

Sequence 0 is the engine's own cache (what `_eval` keeps for the plain path). A batch first makes it hold the
prefix its first prompts share (a system prompt, an instruction, the classifier's examples), evaluated once; each
item then gets a sequence id of its own, starts as a copy of that prefix (llama_memory_seq_cp: with the unified KV
cache the cells are shared, not duplicated) and evaluates only its own tokens. Every decode step carries one token
for each item that is generating and fills the rest of the batch with the prompt tokens of items still reading
theirs, so generation rides along with prompt processing (continuous batching, as llama-server schedules its slots).

The KV cache keeps its single-sequence size: an item is admitted only while the cells it may need (its own prompt
tokens and its max_tokens) fit beside the others', so N sequences live within the memory one run uses; a long item
waits for room instead of failing. Which items share a decode depends only on the prompts, their lengths and N, so a
batch gives the same answers run after run; against the plain path (one sequence, the last prompt token decoded
alone) batch rounding may flip a near-tie (docs/ask.md, "What is reproducible").
"""

from __future__ import annotations

import codecs
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import llama_cpp

from chatllm.engines.chat_templates import check_fits
from chatllm.engines.contract import BatchItem, GenerationStats
from chatllm.engines.llamacpp.grammar_sampling import GrammarSampler
from chatllm.engines.stop_strings import StopFilter
from chatllm.errors import ChatllmError
from chatllm.settings import Sampling

MAX_SEQS = 64  # sequence ids a context with several sequences has (the scorer packs up to MAX_SEQS - 1 items)
# In the unified KV cache every token's attention spans the cells of every sequence (masked, but computed): long items
# together cost more than one after another (summarize's 2048-token parts ran at 0.57x with 4 together on SmolLM2).
# So items run together only while their own prompt tokens add up to at most this; a longer one runs alone.
OWN_SPAN = 2048


class _Host(Protocol):
    """What batching needs of the engine it belongs to: its llama.cpp objects, sequence 0's tokens and helpers."""

    name: str
    n_ctx: int
    n_batch: int
    n_vocab: int
    parallel: int
    last_stats: GenerationStats
    _ctx: Any
    _batch: Any
    _vocab: Any
    _tokens: list[int]

    def prompt_tokens(self, prompt: str, special: bool = True) -> list[int]:
        """A prompt's tokens."""
        ...

    def _rewind(self, keep: int) -> int: ...

    def _decode(self, chunk: Sequence[int], pos: int, logits_from: int) -> None: ...

    def _sampler(self, s: Sampling) -> Any: ...

    def _gbnf(self, schema: str) -> str: ...

    def _token_bytes(self, token: int) -> bytes: ...

    def _logprobs_at(self, i: int, np: Any) -> Any: ...


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The tokens every prompt starts with, leaving each at least its last token to evaluate."""
    if not prompts:
        return []
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = min(n, common_length(first, p))
    return list(first[: max(n, 0)])


def hold_prefix(host: _Host, prefix: Sequence[int]) -> int:
    """Make sequence 0 hold exactly `prefix` (evaluating only what it lacks, no logits); the tokens evaluated."""
    keep = host._rewind(common_length(host._tokens, prefix))
    for start in range(keep, len(prefix), host.n_batch):
        chunk = prefix[start:start + host.n_batch]
        host._decode(chunk, start, logits_from=len(chunk))
        host._tokens.extend(chunk)
    return len(prefix) - keep


def _decode(host: _Host, n: int, what: str) -> None:
    batch = host._batch.batch
    batch.n_tokens = n
    rc = llama_cpp.llama_decode(host._ctx.ctx, batch)
    if rc != 0:
        if rc == 2:
            raise KeyboardInterrupt
        if rc == 1:
            raise ChatllmError(f"llama.cpp found no room in the KV cache for {what}",
                               "lower --parallel or raise --ctx")
        raise ChatllmError(f"llama.cpp failed to evaluate {what} (code {rc})", "try --parallel 1 or a smaller --ctx")


def _add(batch, n: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[n] = token
    batch.pos[n] = pos
    batch.n_seq_id[n] = 1
    batch.seq_id[n][0] = seq
    batch.logits[n] = logits


# -- generation -------------------------------------------------------------------------------------


@dataclass
class _Item:
    index: int
    seq: int
    tokens: list[int]
    shared: int  # its leading tokens copied from sequence 0
    pos: int  # the next position to write in its sequence (its prompt tokens before it are in the KV cache)
    max_tokens: int
    reserve: int  # KV cells it may take beyond the shared prefix
    sampler: Any
    constrained: GrammarSampler | None
    stats: GenerationStats
    start: float
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    stops: StopFilter = field(default_factory=lambda: StopFilter(()))
    parts: list[str] = field(default_factory=list)
    next_token: int | None = None  # sampled, to be decoded at `pos` in the next step
    out: int = -1  # its logits' index in the batch just decoded, -1 when it has none there


class _Generation:
    """The state of one generate_batch call: items reading or generating, and the room they hold."""

    def __init__(self, host: _Host, sampling: Sampling, on_piece: Callable[[int, str], bool] | None):
        self.host = host
        self.sampling = sampling
        self.on_piece = on_piece
        self.parallel = max(1, min(host.parallel, MAX_SEQS - 1))
        self.free_seqs = list(range(self.parallel, 0, -1))
        self.active: list[_Item] = []
        self.done: list[BatchItem] = []
        self.gbnf = host._gbnf(sampling.json_schema) if sampling.json_schema else None
        self.prefix_fresh = 0  # tokens evaluated into sequence 0 for this batch, counted to the first item
        self.totals = GenerationStats(finish_reason="stop")

    # admission -----------------------------------------------------------------------------------

    def used(self) -> int:
        return len(self.host._tokens) + sum(item.reserve for item in self.active)

    def admit(self, index: int, tokens: list[int]) -> bool:
        """Start the item if its cells fit beside the running ones (else False: it waits); a bad prompt ends it."""
        host = self.host
        try:
            if not tokens:
                raise ChatllmError("empty prompt", "give some text")
            check_fits(len(tokens), min(self.sampling.max_tokens, 1), host.n_ctx)
        except ChatllmError as err:
            self.done.append(BatchItem(index, error=err, stats=GenerationStats(prompt_tokens=len(tokens))))
            return True
        shared = min(common_length(host._tokens, tokens), len(tokens) - 1)
        max_tokens = min(self.sampling.max_tokens, host.n_ctx - len(tokens))
        reserve = len(tokens) - shared + max_tokens
        own = sum(len(item.tokens) - item.shared for item in self.active) + len(tokens) - shared
        if self.active and own > OWN_SPAN:
            return False
        if self.used() + reserve > host.n_ctx:
            if self.active:
                return False
            host._rewind(shared)  # alone it always fits, once sequence 0 keeps only what this prompt shares
        seq = self.free_seqs.pop()
        mem = host._ctx.memory
        llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1)
        if shared:
            llama_cpp.llama_memory_seq_cp(mem, 0, seq, 0, shared)
        sampler = host._sampler(self.sampling)
        constrained = None
        if self.gbnf is not None:
            try:
                constrained = GrammarSampler(host._vocab, self.gbnf, sampler.sampler, host.n_vocab)
            except BaseException:
                sampler.close()
                self.free_seqs.append(seq)
                raise
        cached = max(0, shared - self.prefix_fresh)
        self.prefix_fresh = 0
        stats = GenerationStats(prompt_tokens=len(tokens), cached_tokens=cached, finish_reason="length")
        item = _Item(index, seq, tokens, shared, shared, max_tokens, reserve, sampler, constrained, stats, time.perf_counter(),
                     stops=StopFilter(self.sampling.stop))
        self.active.append(item)
        return True

    # one step ------------------------------------------------------------------------------------

    def step(self) -> None:
        """One llama_decode: a token for each generating item, then prompt tokens of the reading ones."""
        host = self.host
        batch = host._batch.batch
        n = 0
        for item in self.active:
            item.out = -1
            if item.next_token is not None:
                _add(batch, n, item.next_token, item.pos, item.seq, True)
                item.out = n
                n += 1
        for item in self.active:
            if item.next_token is not None or n >= host.n_batch:
                continue
            take = min(host.n_batch - n, len(item.tokens) - item.pos)
            for i in range(take):
                last = item.pos + i == len(item.tokens) - 1
                _add(batch, n, item.tokens[item.pos + i], item.pos + i, item.seq, last)
                if last:
                    item.out = n
                n += 1
            item.pos += take
        _decode(host, n, f"a batch of {len(self.active)} prompts")
        ctx = host._ctx.ctx
        for item in list(self.active):
            if item.out < 0:
                continue
            if item.next_token is not None:
                item.pos += 1
                item.next_token = None
            token = (item.constrained.sample(ctx, item.out) if item.constrained
                     else llama_cpp.llama_sampler_sample(item.sampler.sampler, ctx, item.out))
            self.take(item, token)

    def take(self, item: _Item, token: int) -> None:
        """What a sampled token does to its item: ends it, or becomes text and the next token to decode."""
        host, stats = self.host, item.stats
        if llama_cpp.llama_vocab_is_eog(host._vocab, token):
            self.finish(item, "stop")
            return
        stats.completion_tokens += 1
        if stats.completion_tokens == 1:
            stats.first_token_seconds = time.perf_counter() - item.start
        text = item.stops.feed(item.decoder.decode(host._token_bytes(token)))
        if text and self.piece(item, text):
            self.finish(item, "stop", cut=True)
            return
        if item.stops.stopped:
            self.finish(item, "stop", cut=True)
            return
        if stats.completion_tokens >= item.max_tokens or item.pos + 1 >= host.n_ctx:
            self.finish(item, "length")
            return
        item.next_token = token

    def piece(self, item: _Item, text: str) -> bool:
        item.parts.append(text)
        return bool(self.on_piece is not None and self.on_piece(item.index, text))

    def finish(self, item: _Item, reason: str, cut: bool = False) -> None:
        """The item is done: its text's tail flushed, its sequence and samplers freed, its result queued."""
        if not cut:
            tail = item.stops.feed(item.decoder.decode(b"", final=True)) + item.stops.flush()
            if tail:
                self.piece(item, tail)
        item.stats.finish_reason = reason
        self.release(item)
        self.done.append(BatchItem(item.index, text="".join(item.parts), pieces=item.parts, stats=item.stats))

    def release(self, item: _Item) -> None:
        item.stats.seconds = time.perf_counter() - item.start
        llama_cpp.llama_memory_seq_rm(self.host._ctx.memory, item.seq, -1, -1)
        if item.constrained is not None:
            item.constrained.close()
        item.sampler.close()
        self.active.remove(item)
        self.free_seqs.append(item.seq)
        t = self.totals
        t.prompt_tokens += item.stats.prompt_tokens
        t.cached_tokens += item.stats.cached_tokens
        t.completion_tokens += item.stats.completion_tokens

    def close(self, interrupted: bool) -> None:
        for item in list(self.active):
            item.stats.finish_reason = "interrupted" if interrupted else item.stats.finish_reason
            self.release(item)


def generate_batch(host: _Host, prompts: Iterable[str | Sequence[int]], sampling: Sampling,
                   on_piece: Callable[[int, str], bool] | None = None) -> Iterator[BatchItem]:
    """Generate for every prompt, up to host.parallel sequences per decode; each item is yielded as it finishes
    (index = its place in `prompts`), a prompt that cannot run as an item with its error. on_piece(index, text) is
    called with each text piece as it is generated; returning True ends that item there."""
    run = _Generation(host, sampling, on_piece)
    source = iter(enumerate(prompts))
    waiting: list[tuple[int, list[int]]] = []
    exhausted = False
    start = time.perf_counter()

    def pull(n: int) -> None:
        nonlocal exhausted
        while not exhausted and len(waiting) < n:
            try:
                index, prompt = next(source)
            except StopIteration:
                exhausted = True
                return
            tokens = host.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)
            waiting.append((index, tokens))

    interrupted = True
    try:
        pull(run.parallel)  # the first wave: the prefix they share goes into sequence 0 once
        if len(waiting) > 1:
            run.prefix_fresh = hold_prefix(host, shared_prefix([t for _, t in waiting if t]))
        while True:
            while len(run.active) < run.parallel:
                pull(1)
                if not waiting or not run.admit(*waiting[0]):
                    break
                waiting.pop(0)
            if run.active:
                run.step()
            if run.done:
                finished, run.done = run.done, []
                yield from finished
            if not run.active and not waiting and exhausted:
                break
        interrupted = False
    finally:
        run.close(interrupted)
        totals = run.totals
        totals.seconds = time.perf_counter() - start
        totals.finish_reason = "interrupted" if interrupted else "stop"
        host.last_stats = totals


# -- label scoring ----------------------------------------------------------------------------------


def score_batch(host: _Host, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[list[float]]:
    """Each request's continuation log-probabilities after its tokens, many requests per decode (see LabelScorer)."""
    import numpy as np

    results: list[list[float]] = [[] for _ in requests]
    if not requests:
        return results
    hold_prefix(host, shared_prefix([list(t) for t, _ in requests if t]))
    base = list(host._tokens)
    max_seqs = MAX_SEQS - 1
    i = 0
    while i < len(requests):
        group: list[tuple[int, int, int]] = []  # (request, its sequence, tokens it shares with sequence 0)
        tokens = seqs = 0
        cells = len(base)
        while i < len(requests):
            toks, conts = requests[i]
            check_fits(len(toks) + max((len(c) for c in conts), default=0), 0, host.n_ctx)
            shared = min(common_length(base, toks), len(toks) - 1)
            branches = [c for c in conts if len(c) > 1]
            own = len(toks) - shared + sum(len(c) - 1 for c in branches)
            need_seqs = 1 + len(branches)
            if group and (tokens + own > host.n_batch or seqs + need_seqs > max_seqs or cells + own > host.n_ctx):
                break
            if own > host.n_batch or need_seqs > max_seqs:  # too big for one decode: the plain way, alone
                if group:
                    break
                results[i] = _score_alone(host, toks, conts)
                hold_prefix(host, base)
                i += 1
                continue
            group.append((i, seqs + 1, shared))
            tokens += own
            seqs += need_seqs
            cells += own
            i += 1
        if group:
            _score_group(host, requests, group, results, np)
    return results


def _score_alone(host: _Host, toks: Sequence[int], conts: Sequence[Sequence[int]]) -> list[float]:
    score = getattr(host, "score_continuations")
    return list(score(list(toks), conts))


def _score_group(host: _Host, requests, group: list[tuple[int, int, int]], results: list[list[float]], np) -> None:
    """Evaluate a group of requests (one sequence each) in one decode, then their longer continuations in another."""
    mem, batch = host._ctx.memory, host._batch.batch
    used: list[int] = []
    try:
        n = 0
        last: dict[int, int] = {}
        for req, seq, shared in group:
            toks = requests[req][0]
            used.append(seq)
            llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1)
            if shared:
                llama_cpp.llama_memory_seq_cp(mem, 0, seq, 0, shared)
            for pos in range(shared, len(toks)):
                _add(batch, n, toks[pos], pos, seq, pos == len(toks) - 1)
                n += 1
            last[req] = n - 1
        _decode(host, n, f"{len(group)} items")
        branch_of: list[tuple[int, int, Sequence[int], int]] = []  # (request, continuation index, tokens, first logit)
        n = 0
        for req, seq, _ in group:
            conts = requests[req][1]
            first = host._logprobs_at(last[req], np)
            results[req] = [float(first[c[0]]) if c else 0.0 for c in conts]
            branch = seq
            for ci, cont in enumerate(conts):
                if len(cont) < 2:
                    continue
                branch += 1  # the sequence ids after the request's own are its branches (counted in admission)
                used.append(branch)
                llama_cpp.llama_memory_seq_rm(mem, branch, -1, -1)
                llama_cpp.llama_memory_seq_cp(mem, seq, branch, -1, -1)
                start = len(requests[req][0])
                for j, tok in enumerate(cont[:-1]):
                    _add(batch, n + j, tok, start + j, branch, True)
                branch_of.append((req, ci, cont, n))
                n += len(cont) - 1
        if n:
            _decode(host, n, "the labels' later tokens")
            for req, ci, cont, at in branch_of:
                results[req][ci] += sum(float(host._logprobs_at(at + j, np)[tok]) for j, tok in enumerate(cont[1:]))
    finally:
        for seq in used:
            llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1)


def default_parallel(gpu_layers: int, cores: int | None = None) -> int:
    """Sequences per decode when --parallel is not given: 16 on a GPU, else twice the cores, between 2 and 8."""
    if gpu_layers != 0:
        return 16
    cores = cores or os.cpu_count() or 1
    return max(2, min(8, 2 * cores))
