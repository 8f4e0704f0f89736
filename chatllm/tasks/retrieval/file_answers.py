"""Questions over files past the window: chunk with line spans, index, retrieve (BM25), rerank with the model,
answer from the best passages, and cite the `file:line-line` span (and sentence) the answer rests on.

Chunks are cut with a model-free token estimate (`approx_tokens`), so one index serves every model; the chunks
chosen for a prompt are then counted with the engine's own tokenizer. `search` is the one retrieval function:
it returns ranked passages with scores. With an embedding engine it is hybrid: the BM25 ranking and the ranking by
vector similarity are fused by reciprocal rank (Cormack et al., SIGIR 2009), which needs no tuning of one score's
scale against the other's; chunk vectors are computed once and kept in the index.

With an engine that scores continuations (`LabelScorer`), the best few passages are reranked by the model itself
(rerank.py) on a short window of each (windows.py); the answer is written from the best one to three windows, and
"not found in the files" is said, without asking the model, when even the best window leaves the question unlikely
(`Rerank.min_relevance`). A question then costs a few hundred prompt tokens whatever the window size. An engine
without the capability (a chat-only server), or `rerank=None`, gets every passage that fits, numbered, and the
model decides. Either way citations.py maps the answer back to the passage it rests on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from chatllm.engines.contract import Embedder, Engine, GenerationStats, LabelScorer, as_embedder
from chatllm.errors import ChatllmError, ContextOverflowError, EngineUnavailable
from chatllm.settings import Sampling
from chatllm.storage.passage_index import Hit, PassageIndex
from chatllm.tasks.ask import oneshot
from chatllm.tasks.ask.structured_output import JsonSpec
from chatllm.tasks.retrieval import windows
from chatllm.tasks.retrieval.citations import NOT_FOUND, Citation, cite, is_not_found, support
from chatllm.tasks.retrieval.passages import Doc, Passage, approx_tokens
from chatllm.tasks.retrieval.rerank import Reranker, answer_message
from chatllm.tasks.text.chunking import chunk_text, hard_split
from chatllm.tasks.text.text_rules import detect_language

CHUNK_TOKENS = 192  # estimated tokens per chunk: a paragraph or two, so a citation stays a few lines wide
CHUNKER = f"approx-{CHUNK_TOKENS}-v1"  # stored in the index: chunks made another way mean a fresh index
TOP_K = 24  # candidates fetched; as many as fit the budget are used
RRF_K = 60  # reciprocal-rank fusion constant: the usual value, which damps the weight of the very first ranks
# The vector ranking counts half of BM25's: on SQuAD with all-MiniLM-L6-v2 an equal weight lost 4.5 points of
# recall@1 to BM25 alone and a half weight kept recall@5 while gaining at @10 (bench/eval_qa.py, docs/BENCHMARKS.md).
VECTOR_WEIGHT = 0.5


@dataclass(frozen=True)
class Rerank:
    """How the model reranks and when it says "not found" (tuned on the SQuAD and CMRC tuning splits with
    Qwen2.5-Coder-0.5B: docs/BENCHMARKS_HISTORY.md, issue 37). Relevance is the question's mean log-probability per
    token given a window, minus the same without one (rerank.py)."""

    k: int = 3  # passages the model judges: BM25 has the gold paragraph in its top 3 for 93 % of questions
    window_tokens: int = 64  # model tokens of each judged window: the sentences around the question's rarer words
    answer_tokens: int = 128  # the best passage's window as the answer reads it: wider, so the answer is in it
    passages: int = 3  # at most this many windows go into the answer, each one scoring close to the best
    min_support: float = 0.5  # an answer whose added words are mostly in none of its windows is withheld: "not found"
    margin: float = 0.5  # how far below the best relevance a window may be and still go into the answer
    rank_prior: float = 0.3  # each place lower in the search's ranking costs this much relevance when ordering
    min_relevance: float = 1.0  # below this, even the best window does not answer the question: "not found"
    # A Chinese question needs more: its tokens are fewer and each carries more, so a window raises each one's
    # log-probability further (CMRC answerable 2.0-7.0, questions about articles not in the file 0.1-2.9).
    min_relevance_zh: float = 2.0

    def line(self, question: str) -> float:
        """The relevance under which a question is not found: by the question's language."""
        return self.min_relevance_zh if detect_language(question) == "zh" else self.min_relevance


RERANK = Rerank()
SYSTEM = ("You answer questions using only the numbered sources you are given. Answer in a few words, then cite the "
          "source you used in brackets, like [2]. If the sources do not contain the answer, reply exactly: "
          f"{NOT_FOUND}.")


@dataclass
class Reranking:
    """What the reranking did: every passage judged (best first), the question's own baseline, tokens and time."""

    judged: list[Passage]
    baseline: float
    tokens: int
    seconds: float
    min_relevance: float = RERANK.min_relevance

    def as_dict(self) -> dict:
        """The --json form."""
        return {"passages": len(self.judged), "tokens": self.tokens, "seconds": round(self.seconds, 3),
                "baseline": round(self.baseline, 4), "min_relevance": self.min_relevance,
                "judged": [{"file": p.file, "start_line": p.start_line, "end_line": p.end_line,
                            "score": round(p.score, 4), "relevance": round(p.relevance or 0.0, 4)} for p in self.judged]}


@dataclass
class RetrievalAnswer:
    """The answer over retrieved passages, the passages used and the citations mapped back to files."""

    answer: oneshot.Answer
    passages: list[Passage]
    citations: list[Citation] = field(default_factory=list)
    indexed: int = 0  # files chunked and indexed for this question (0: every one was cached)
    index_seconds: float = 0.0
    retrieval: str = "bm25"  # or "hybrid": BM25 fused with an embedding model's vectors
    reranking: Reranking | None = None  # None: the model was given every passage that fits and decided itself
    withheld: str | None = None  # the model's answer, not shown: its words were in none of the passages it read

    @property
    def not_found(self) -> bool:
        """True when the answer is that the files do not hold it (the reranking's verdict, or the model's words)."""
        return is_not_found(self.answer.text)

    def as_dict(self, with_text: bool = False) -> dict:
        """The --json record: the usual answer fields plus answer, citations, sources and the reranking."""
        record = {**self.answer.as_dict(), "mode": "retrieval", "answer": self.answer.text, "not_found": self.not_found,
                  "citations": [c.as_dict() for c in self.citations],
                  "sources": [p.as_dict(i, with_text) for i, p in enumerate(self.passages, 1)],
                  "indexed_files": self.indexed, "retrieval": self.retrieval}
        if self.reranking is not None:
            record["rerank"] = self.reranking.as_dict()
        if self.withheld is not None:
            record["withheld"] = self.withheld
        return record


def line_chunks(text: str, budget: int = CHUNK_TOKENS) -> list[tuple[int, int, str]]:
    """(start_line, end_line, text) of each chunk the chunker cuts, lines counted from 1."""
    out = []
    cursor, line = 0, 1
    for chunk in chunk_text(text, approx_tokens, budget):
        at = text.find(chunk.text, cursor)
        if at < 0:  # cannot happen while chunks are stripped runs of the text; stay correct if that ever changes
            at = cursor
        line += text.count("\n", cursor, at)
        out.append((line, line + chunk.text.count("\n"), chunk.text))
        line += text.count("\n", at, at + len(chunk.text))
        cursor = at + len(chunk.text)
    return out


def ensure_indexed(index: PassageIndex, docs: Sequence[Doc], read: Callable[[Doc], str]) -> int:
    """Chunk and index every doc the index does not hold yet (read only those); how many were indexed."""
    n = 0
    for doc in docs:
        if index.is_indexed(doc.sha):
            continue
        text = doc.text if doc.text is not None else read(doc)
        index.add(doc.sha, len(text), line_chunks(text))
        n += 1
    return n


def search(index: PassageIndex, docs: Sequence[Doc], question: str, k: int = TOP_K, *,
           embedder: Embedder | None = None, on_status: Callable[[str], None] | None = None) -> list[Passage]:
    """The k passages of these docs that best match the question, best first: BM25 scores, or with an embedding
    engine the reciprocal-rank fusion of BM25 and vector similarity."""
    names: dict[str, str] = {}
    for doc in docs:
        names.setdefault(doc.sha, doc.name)  # the same content under two names: cite the first
    hits = index.search(question, list(names), k)
    if embedder is not None:
        ensure_vectors(index, embedder, list(names), on_status)
        dense = index.nearest(embedder.embed([question])[0], list(names), embedder.name, k)
        hits = fuse([hits, dense], k, weights=(1.0, VECTOR_WEIGHT))
    return [Passage(names[h.sha], h.start_line, h.end_line, h.text, h.score) for h in hits]


def ensure_vectors(index: PassageIndex, embedder: Embedder, shas: Sequence[str],
                   on_status: Callable[[str], None] | None = None, batch: int = 32) -> int:
    """Embed the chunks of these contents that have no vector from this model yet; how many were embedded."""
    gaps = index.vector_gaps(shas, embedder.name)
    if gaps and on_status is not None:
        on_status(f"embedding {len(gaps)} chunks with {embedder.name} (once: the vectors are kept in the index)")
    for start in range(0, len(gaps), batch):
        part = gaps[start:start + batch]
        index.add_vectors(embedder.name, list(zip([i for i, _ in part], embedder.embed([t for _, t in part]))))
    return len(gaps)


def fuse(rankings: Sequence[Sequence[Hit]], k: int = TOP_K, weights: Sequence[float] | None = None) -> list[Hit]:
    """Reciprocal-rank fusion: each chunk scores the sum of weight / (RRF_K + rank) over the rankings it is in."""
    score: dict[tuple[str, int], float] = {}
    hit_of: dict[tuple[str, int], Hit] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, hit in enumerate(ranking, 1):
            key = (hit.sha, hit.seq)
            score[key] = score.get(key, 0.0) + weight / (RRF_K + rank)
            hit_of.setdefault(key, hit)
    order = sorted(score, key=lambda key: (-score[key], key))[:k]
    return [dataclasses.replace(hit_of[key], score=score[key]) for key in order]


def select(passages: Sequence[Passage], count: Callable[[str], int], budget: int) -> list[Passage]:
    """The best passages whose text fits the token budget together (each costs its text plus a label line)."""
    chosen, used = [], 0
    for p in passages:
        cost = count(p.text) + 6
        if used + cost <= budget:
            p.tokens = cost - 6
            chosen.append(p)
            used += cost
    if not chosen and passages and budget > 8:  # a window too small for any whole chunk: the best one, cut to fit
        p = passages[0]
        head, _ = next(iter(hard_split(p.text, count, budget - 6)))
        chosen = [Passage(p.file, p.start_line, p.start_line + head.count("\n"), head, p.score, count(head))]
    return chosen


def sources_message(question: str, passages: Sequence[Passage]) -> str:
    """The user message: numbered sources, then the question."""
    blocks = [f"[{i}]\n{p.text}" for i, p in enumerate(passages, 1)]
    return ("Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\n"
            f"Answer briefly from the sources and cite [n], or say: {NOT_FOUND}.")


def prompt_overhead(engine: Engine, question: str, system: str | None) -> int:
    """Tokens the prompt costs besides the passages: template, instructions, question."""
    messages = [{"role": "system", "content": _system(system)}, {"role": "user", "content": sources_message(question, [])}]
    return len(engine.prompt_tokens(engine.render_chat(messages)))


def _system(system: str | None) -> str:
    return f"{SYSTEM}\n\n{system}" if system else SYSTEM


def answer(engine: Engine, index: PassageIndex, docs: Sequence[Doc], question: str, sampling: Sampling, *,
           read: Callable[[Doc], str], system: str | None = None, on_text: Callable[[str], None] | None = None,
           spec: JsonSpec | None = None, compose: Callable[[str], str] | None = None,
           reserve: int | None = None, embedder: Engine | None = None,
           on_status: Callable[[str], None] | None = None, rerank: Rerank | None = RERANK) -> RetrievalAnswer:
    """Index what is new, retrieve, rerank with the model (when it can score), answer from the best passages and
    cite them; without reranking, answer from every passage that fits the window."""
    started = time.perf_counter()
    vectors = as_embedder(embedder, "hybrid retrieval") if embedder is not None else None
    indexed = ensure_indexed(index, docs, read)
    if vectors is not None:
        ensure_vectors(index, vectors, [d.sha for d in docs], on_status)
    index_seconds = time.perf_counter() - started
    ranked = search(index, docs, question, embedder=vectors)
    how = "hybrid" if embedder is not None else "bm25"
    if rerank is not None and isinstance(engine, LabelScorer):
        try:
            reranking = rerank_passages(engine, engine, question, ranked[:rerank.k], system=system, options=rerank)
        except (EngineUnavailable, ContextOverflowError):
            raise
        except ChatllmError as exc:  # a server that cannot give log-probabilities: the model decides, as before
            if on_status is not None:
                on_status(f"answering from every passage that fits: {exc}")
        else:
            best = answer_best(engine, question, reranking, sampling, system=system, on_text=on_text, spec=spec,
                               compose=compose, options=rerank)
            best.indexed, best.index_seconds, best.retrieval = indexed, index_seconds, how
            return best
    room = reserve if reserve is not None else answer_reserve(engine.n_ctx, sampling.max_tokens)
    budget = engine.n_ctx - room - prompt_overhead(engine, question, system) - 8
    passages = select(ranked, engine.count_tokens, budget)
    message = sources_message(question, passages)
    if compose is not None:
        message = compose(message)
    result = oneshot.ask(engine, message, sampling, system=_system(system), on_text=on_text, spec=spec)
    return RetrievalAnswer(result, passages, cite(result.text, passages), indexed, index_seconds, how)


def rerank_passages(engine: Engine, scorer: LabelScorer, question: str, candidates: Sequence[Passage], *,
                    system: str | None = None, options: Rerank = RERANK) -> Reranking:
    """Each candidate's best window judged by the model; the candidates back with `window` and `relevance` set
    (the question's mean log-probability per token given the window, above its baseline), best first."""
    started = time.perf_counter()
    if not candidates:  # no passage shares a word with the question: nothing to judge
        return Reranking([], 0.0, 0, 0.0, options.line(question))
    weight = windows.weights(question, [p.text for p in candidates])
    judged = []
    for p in candidates:
        w = windows.best_window(p.text, weight, options.window_tokens, engine.count_tokens)
        judged.append(dataclasses.replace(p, window=w.text_of(p.text), tokens=w.tokens, span_in_text=(w.start, w.end),
                                          window_lines=windows.line_span(p.text, w.start, w.end, p.start_line)))
    reranker = Reranker(engine, scorer, question, system=system)
    baseline = reranker.baseline()
    # The best BM25 passage is scored last: it is most often the winner, and the answer prompt then finds its
    # window still in the engine's KV cache.
    order = list(range(len(judged)))[::-1]
    scores = reranker.score([judged[i].window or "" for i in order])
    for i, s in zip(order, scores):
        judged[i].relevance = s - baseline
    # The search's order still counts a little: on SQuAD the model alone moved the gold paragraph down as often as up.
    ranks = {id(p): i for i, p in enumerate(judged)}
    judged.sort(key=lambda p: -((p.relevance or 0.0) - options.rank_prior * ranks[id(p)]))
    return Reranking(judged, baseline, reranker.evaluated, time.perf_counter() - started, options.line(question))


def best_passages(reranking: Reranking, options: Rerank = RERANK) -> list[Passage]:
    """The passages the answer is written from: the best, and up to `options.passages - 1` more that score within
    `options.margin` of it (and above the not-found line)."""
    judged = reranking.judged
    if not judged:
        return []
    floor = max(reranking.min_relevance, (judged[0].relevance or 0.0) - options.margin)
    return [p for p in judged[:options.passages] if (p.relevance or 0.0) >= floor] or judged[:1]


def answer_best(engine: Engine, question: str, reranking: Reranking, sampling: Sampling, *,
                system: str | None = None, on_text: Callable[[str], None] | None = None,
                spec: JsonSpec | None = None, compose: Callable[[str], str] | None = None,
                options: Rerank = RERANK) -> RetrievalAnswer:
    """The answer from the best windows, cited from them; "not found in the files" when the best window scores under
    the line, or when the answer adds words none of its windows holds (it was not read there). The answer is shown
    once checked, so a withheld one never reaches on_text. With a schema the model always fills it from the best
    windows."""
    chosen = best_passages(reranking, options)
    best = max((p.relevance or 0.0 for p in reranking.judged), default=None)
    if spec is None and (best is None or best < reranking.min_relevance):
        return _not_found(engine, reranking, chosen, on_text, GenerationStats())
    span = chosen[0].span_in_text if chosen else None
    if span is not None:  # the best window widened, its start kept (the engine's cache may hold its tokens)
        top = chosen[0]
        wide = windows.widen(top.text, windows.Window(span[0], span[1], top.tokens), options.answer_tokens,
                             engine.count_tokens)
        chosen[0] = dataclasses.replace(top, window=wide.text_of(top.text), tokens=wide.tokens,
                                        window_lines=windows.line_span(top.text, wide.start, wide.end, top.start_line))
    read = [p.window or p.text for p in chosen]
    message = answer_message(question, read)
    if compose is not None:
        message = compose(message)
    result = oneshot.ask(engine, message, sampling, system=system, spec=spec)
    if spec is None and support(result.text, question, read) < options.min_support:
        return _not_found(engine, reranking, chosen, on_text, result.stats, withheld=result.text)
    if on_text is not None and result.text:
        on_text(result.text)
    result = dataclasses.replace(result, stats=_after(reranking, result.stats))
    # cited from what the model read: the windows, with their own lines
    shown = [Passage(p.file, *(p.window_lines or (p.start_line, p.end_line)), p.window or p.text, p.score) for p in chosen]
    return RetrievalAnswer(result, chosen, cite(result.text, shown, fallback=0), reranking=reranking)


def _after(reranking: Reranking, stats: GenerationStats) -> GenerationStats:
    """The answer's stats with the reranking's time counted in: the first token came after it."""
    return dataclasses.replace(stats, first_token_seconds=stats.first_token_seconds + reranking.seconds,
                               seconds=stats.seconds + reranking.seconds)


def _not_found(engine: Engine, reranking: Reranking, chosen: list[Passage], on_text: Callable[[str], None] | None,
               stats: GenerationStats, withheld: str | None = None) -> RetrievalAnswer:
    text = f"{NOT_FOUND}."
    if on_text is not None:
        on_text(text)
    answer = oneshot.Answer(engine.name, text, _after(reranking, stats))
    return RetrievalAnswer(answer, chosen, [], reranking=reranking, withheld=withheld)


def file_docs(index: PassageIndex, paths: Sequence[Path], texts: Sequence[str] | None, piped: str) -> list[Doc]:
    """The inputs of a question: each file by its content hash (and text when read), piped stdin last."""
    docs = [Doc(str(p), index.file_sha(p)[0], texts[i] if texts is not None else None) for i, p in enumerate(paths)]
    if piped.strip():
        docs.append(Doc("stdin", hashlib.sha256(piped.encode("utf-8")).hexdigest(), piped))
    return docs


def fits_whole(engine: Engine, text: str, system: str | None, max_tokens: int) -> bool:
    """True when the whole prompt leaves room for the answer in the window (counted with the model's tokenizer)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    used = len(engine.prompt_tokens(engine.render_chat(messages)))
    return used + answer_reserve(engine.n_ctx, max_tokens) <= engine.n_ctx


def ask_files(engine: Engine, index: PassageIndex, docs: Sequence[Doc], question: str, sampling: Sampling, *,
              read: Callable[[Doc], str], system: str | None = None, on_text: Callable[[str], None] | None = None,
              spec: JsonSpec | None = None, compose: Callable[[str], str] | None = None, embedder: Engine | None = None,
              on_status: Callable[[str], None] | None = None,
              rerank: Rerank | None = RERANK) -> oneshot.Answer | RetrievalAnswer:
    """A question over files: asked with the whole text when every doc was read and it fits the window, else
    answered from the retrieved (and, when the engine can score, reranked) passages with citations."""
    if all(d.text is not None for d in docs):
        whole = "\n\n".join(t for t in [question, *(d.text or "" for d in docs)] if t.strip())
        whole = compose(whole) if compose is not None else whole
        if fits_whole(engine, whole, system, sampling.max_tokens):
            return oneshot.ask(engine, whole, sampling, system=system, on_text=on_text, spec=spec)
    return answer(engine, index, docs, question, sampling, read=read, system=system, on_text=on_text, spec=spec,
                  compose=compose, embedder=embedder, on_status=on_status, rerank=rerank)


def answer_reserve(n_ctx: int, max_tokens: int) -> int:
    """Tokens kept free for the answer: --max-tokens, but never more than half the window."""
    return min(max_tokens, n_ctx // 2)
