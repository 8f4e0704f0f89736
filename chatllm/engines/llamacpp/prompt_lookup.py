"""Drafts from the prompt (prompt-lookup speculative decoding): what to propose, and when proposing pays.

Pure logic, no llama.cpp: the engine's decode loop asks `Drafter.propose()` for up to k tokens copied from the
prompt or the reply so far, verifies them in one batch, and tells the drafter what it learned (`verified`,
`decoded`). As llama.cpp's examples/lookup and common/ngram-map do, a draft is the continuation of the latest
earlier place where the last few tokens (an n-gram, the longest of MAX_NGRAM..MIN_NGRAM that occurs) were seen.

Verifying k drafted tokens costs one decode of k + 1 tokens, which on a CPU is far from free: on 2 cores a batch of
8 costs 5-7 single steps (SmolLM2-135M, Qwen2.5-0.5B). Drafting pays only when the expected tokens per verify
outrun that cost, so the drafter keeps two estimates: what a decode of n tokens costs on this engine (`DecodeCosts`,
measured as it runs, kept for the engine's life) and how often this reply's drafts hold (per token, recent drafts
weighing most). It drafts the k that maximises expected tokens per second, and not at all when no k beats a plain
step by MARGIN: chat that copies nothing proposes nothing, and a model whose batches cost as much as their steps
stops after a probe or two. While it does not draft it still checks what it would have proposed against what the
model then wrote, so acceptance is known for free and drafting resumes where the reply starts to copy.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_NGRAM = 2  # a single token matches almost anywhere: its drafts are mostly wrong
MAX_NGRAM = 4
MAX_DRAFT = 16  # tokens proposed at most in one verify
MARGIN = 1.05  # a draft must promise this much more than a plain step, or none is made (timing noise, overhead)
PRIOR_SLOPE = 0.6  # a decode of n tokens is guessed at 1 + PRIOR_SLOPE * (n - 1) single steps until measured
PRIOR_ACCEPT = (2.0, 1.0)  # pseudo-counts (accepted, rejected) behind a reply's acceptance before any evidence
DECAY = 0.8  # the weight an older verify keeps at each new one: acceptance follows what the reply does now
COST_EMA = 0.3  # how fast a measured decode time replaces the estimate
SHADOW = 8  # tokens of an unverified draft checked against the reply (long enough to show copying, short to learn soon)


class NgramIndex:
    """The tokens so far, and for every n-gram (MIN_NGRAM..MAX_NGRAM) the position right after its latest occurrence."""

    def __init__(self, tokens: list[int]):
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """One more token at the end (prompt or reply)."""
        toks = self.tokens
        end = len(toks)
        for n in range(MIN_NGRAM, MAX_NGRAM + 1):
            if end >= n:
                self._after[tuple(toks[end - n:end])] = end  # the n-gram ending here is followed by `token`
        toks.append(token)

    def propose(self, limit: int) -> tuple[list[int], int]:
        """Up to `limit` tokens that followed the longest n-gram the text ends with, earlier on; and that n (0: none)."""
        toks = self.tokens
        end = len(toks)
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if end < n:
                continue
            pos = self._after.get(tuple(toks[end - n:]))
            if pos is not None:
                return toks[pos:pos + limit], n
        return [], 0


class DecodeCosts:
    """Seconds a decode of n tokens takes on one engine, learned from the decodes it runs (kept across replies)."""

    def __init__(self) -> None:
        self._seconds: dict[int, float] = {}

    def add(self, n: int, seconds: float) -> None:
        """A decode of n tokens took `seconds`."""
        old = self._seconds.get(n)
        self._seconds[n] = seconds if old is None else old + COST_EMA * (seconds - old)

    def single(self) -> float | None:
        """A one-token step, once one has been timed."""
        return self._seconds.get(1)

    def estimate(self, n: int) -> float | None:
        """A decode of n tokens: measured, else interpolated between measured sizes, else the prior slope."""
        if n in self._seconds:
            return self._seconds[n]
        one = self._seconds.get(1)
        if one is None:
            return None
        below = max((m for m in self._seconds if m < n), default=1)
        above = min((m for m in self._seconds if m > n), default=None)
        t_below = self._seconds.get(below, one)
        if above is not None:
            t_above = self._seconds[above]
            return t_below + (t_above - t_below) * (n - below) / (above - below)
        # Beyond the largest measured size: its own slope per token, but never above the prior's, so a larger draft
        # is tried once (the first drafted tokens cost the most: Qwen on 1 CPU thread, 2 tokens 2.5 steps, 9 only 7.2).
        slope = (t_below - one) / (below - 1) if below > 1 else PRIOR_SLOPE * one
        return t_below + max(min(slope, PRIOR_SLOPE * one), 0.25 * one) * (n - below)

    def ratio(self, n: int) -> float | None:
        """A decode of n tokens in single steps."""
        one, cost = self.single(), self.estimate(n)
        return cost / one if one and cost is not None else None


@dataclass
class _Shadow:
    """A draft that was not verified, checked against the tokens the model then wrote."""

    tokens: list[int]
    matched: int = 0


class Drafter:
    """One reply's drafts: proposes, learns how often they hold, and decides whether and how far to draft."""

    def __init__(self, history: list[int], costs: DecodeCosts, *, max_draft: int = MAX_DRAFT):
        self.index = NgramIndex(history)
        self.costs = costs
        self.max_draft = max_draft
        self._accepted = 0.0
        self._rejected = 0.0
        self._shadow: _Shadow | None = None

    @property
    def acceptance(self) -> float:
        """The chance a drafted token holds, given the one before it did (recent drafts weigh most)."""
        a, r = PRIOR_ACCEPT
        return (self._accepted + a) / (self._accepted + self._rejected + a + r)

    def push(self, token: int) -> None:
        """A token of the reply was produced (by a plain step or a verify): extend the index, check a shadow draft."""
        self.index.append(token)
        shadow = self._shadow
        if shadow is not None:
            if shadow.tokens[shadow.matched] == token:
                shadow.matched += 1
                if shadow.matched == len(shadow.tokens):
                    self._learn(shadow.matched, rejected=False)
                    self._shadow = None
            else:
                self._learn(shadow.matched, rejected=True)
                self._shadow = None

    def propose(self, room: int) -> list[int]:
        """The tokens to verify with the next step ([] for a plain step); room: how many the reply and window allow."""
        limit = min(self.max_draft, room)
        if limit <= 0:
            return []
        draft, _ = self.index.propose(limit)
        if not draft:
            return []
        k = self._best_length(len(draft))
        if k == 0:
            if self._shadow is None:  # learn from it for free: what would the model have accepted?
                self._shadow = _Shadow(draft[:SHADOW])
            return []
        self._shadow = None
        return draft[:k]

    def verified(self, drafted: int, accepted: int) -> None:
        """A verify of `drafted` tokens kept the first `accepted` of them."""
        self._learn(accepted, rejected=accepted < drafted)

    def _learn(self, accepted: int, rejected: bool) -> None:
        self._accepted = self._accepted * DECAY + accepted
        self._rejected = self._rejected * DECAY + (1 if rejected else 0)

    def _best_length(self, available: int) -> int:
        """The draft length with the most expected tokens per second, or 0 when none beats a plain step by MARGIN."""
        one = self.costs.single()
        if one is None:
            return 0  # no plain step timed yet: nothing to compare a verify with
        a = self.acceptance
        best_k, best_rate = 0, MARGIN / one
        expected = 1.0  # tokens a verify of k drafts yields: 1 + a + a^2 + ... + a^k
        term = 1.0
        for k in range(1, available + 1):
            term *= a
            expected += term
            cost = self.costs.estimate(k + 1)
            if cost is None:
                break
            rate = expected / cost
            if rate > best_rate:
                best_k, best_rate = k, rate
        return best_k
