"""Questions over files past the window: chunk with line spans, index, retrieve (BM25), prompt with numbered sources,
answer, and map the model's [n] citations back to `file:line-line` spans.

Chunks are cut with a model-free token estimate (`approx_tokens`), so one index serves every model; the chunks
chosen for a prompt are then counted with the engine's own tokenizer. `search` is the one retrieval function:
it returns ranked passages with scores. With an embedding engine it is hybrid: the BM25 ranking and the ranking by
vector similarity are fused by reciprocal rank (Cormack et al., SIGIR 2009), which needs no tuning of one score's
scale against the other's; chunk vectors are computed once and kept in the index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from chatllm.engines.contract import Embedder, Engine, as_embedder
from chatllm.settings import Sampling
from chatllm.storage.passage_index import STOPWORDS, Hit, PassageIndex
from chatllm.tasks.ask import oneshot
from chatllm.tasks.ask.structured_output import JsonSpec
from chatllm.tasks.text.chunking import chunk_text, hard_split

CHUNK_TOKENS = 192  # estimated tokens per chunk: a paragraph or two, so a citation stays a few lines wide
CHUNKER = f"approx-{CHUNK_TOKENS}-v1"  # stored in the index: chunks made another way mean a fresh index
TOP_K = 24  # candidates fetched; as many as fit the budget are used
RRF_K = 60  # reciprocal-rank fusion constant: the usual value, which damps the weight of the very first ranks
# The vector ranking counts half of BM25's: on SQuAD with all-MiniLM-L6-v2 an equal weight lost 4.5 points of
# recall@1 to BM25 alone and a half weight kept recall@5 while gaining at @10 (bench/eval_qa.py, docs/BENCHMARKS.md).
VECTOR_WEIGHT = 0.5
NOT_FOUND = "not found in the files"
SYSTEM = ("You answer questions using only the numbered sources you are given. Answer in a few words, then cite the "
          "source you used in brackets, like [2]. If the sources do not contain the answer, reply exactly: "
          f"{NOT_FOUND}.")
_APPROX = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+|[^\w\s]", re.UNICODE)
_CITE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_WORDS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W_]+", re.UNICODE)


def approx_tokens(text: str) -> int:
    """A model-free token estimate: a CJK character or punctuation mark is one, a word one per 5 letters."""
    return sum(1 if len(t) < 6 else (len(t) + 4) // 5 for t in _APPROX.findall(text))


@dataclass
class Doc:
    """One input: its display name, content hash and (when read) its text."""

    name: str
    sha: str
    text: str | None = None


@dataclass
class Passage:
    """A chunk of a file put before the model: where it is, its text, score and real token count."""

    file: str
    start_line: int
    end_line: int
    text: str
    score: float
    tokens: int = 0

    @property
    def span(self) -> str:
        """`file:start-end`."""
        return f"{self.file}:{self.start_line}-{self.end_line}"

    def as_dict(self, n: int, with_text: bool = False) -> dict:
        """The --json form of source number n."""
        record = {"source": n, "file": self.file, "start_line": self.start_line, "end_line": self.end_line,
                  "score": round(self.score, 4), "tokens": self.tokens}
        return {**record, "text": self.text} if with_text else record


@dataclass
class Citation:
    """A span the answer rests on: the source number, its file and lines, and how it was found."""

    source: int
    file: str
    start_line: int
    end_line: int
    score: float
    how: str  # cited: the model named it and the text agrees; unverified: named, but it shares no answer words;
    # inferred: the model named none, and this source holds the answer's words

    @property
    def span(self) -> str:
        """`file:start-end`."""
        return f"{self.file}:{self.start_line}-{self.end_line}"

    def as_dict(self) -> dict:
        """The --json form."""
        return {"source": self.source, "file": self.file, "start_line": self.start_line, "end_line": self.end_line,
                "score": round(self.score, 4), "how": self.how}


@dataclass
class RetrievalAnswer:
    """The answer over retrieved passages, the passages used and the citations mapped back to files."""

    answer: oneshot.Answer
    passages: list[Passage]
    citations: list[Citation] = field(default_factory=list)
    indexed: int = 0  # files chunked and indexed for this question (0: every one was cached)
    index_seconds: float = 0.0
    retrieval: str = "bm25"  # or "hybrid": BM25 fused with an embedding model's vectors

    @property
    def not_found(self) -> bool:
        """True when the model said the files do not hold the answer."""
        return is_not_found(self.answer.text)

    def as_dict(self, with_text: bool = False) -> dict:
        """The --json record: the usual answer fields plus answer, citations and sources."""
        return {**self.answer.as_dict(), "mode": "retrieval", "answer": self.answer.text, "not_found": self.not_found,
                "citations": [c.as_dict() for c in self.citations],
                "sources": [p.as_dict(i, with_text) for i, p in enumerate(self.passages, 1)],
                "indexed_files": self.indexed, "retrieval": self.retrieval}


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
           on_status: Callable[[str], None] | None = None) -> RetrievalAnswer:
    """Index what is new, retrieve the passages that fit the window, answer from them and map its citations."""
    started = time.perf_counter()
    vectors = as_embedder(embedder, "hybrid retrieval") if embedder is not None else None
    indexed = ensure_indexed(index, docs, read)
    if vectors is not None:
        ensure_vectors(index, vectors, [d.sha for d in docs], on_status)
    index_seconds = time.perf_counter() - started
    ranked = search(index, docs, question, embedder=vectors)
    room = reserve if reserve is not None else answer_reserve(engine.n_ctx, sampling.max_tokens)
    budget = engine.n_ctx - room - prompt_overhead(engine, question, system) - 8
    passages = select(ranked, engine.count_tokens, budget)
    message = sources_message(question, passages)
    if compose is not None:
        message = compose(message)
    result = oneshot.ask(engine, message, sampling, system=_system(system), on_text=on_text, spec=spec)
    return RetrievalAnswer(result, passages, cite(result.text, passages), indexed, index_seconds,
                           "hybrid" if embedder is not None else "bm25")


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
              on_status: Callable[[str], None] | None = None) -> oneshot.Answer | RetrievalAnswer:
    """A question over files: asked with the whole text when every doc was read and it fits the window, else
    answered from the retrieved passages with citations."""
    if all(d.text is not None for d in docs):
        whole = "\n\n".join(t for t in [question, *(d.text or "" for d in docs)] if t.strip())
        whole = compose(whole) if compose is not None else whole
        if fits_whole(engine, whole, system, sampling.max_tokens):
            return oneshot.ask(engine, whole, sampling, system=system, on_text=on_text, spec=spec)
    return answer(engine, index, docs, question, sampling, read=read, system=system, on_text=on_text, spec=spec,
                  compose=compose, embedder=embedder, on_status=on_status)


def answer_reserve(n_ctx: int, max_tokens: int) -> int:
    """Tokens kept free for the answer: --max-tokens, but never more than half the window."""
    return min(max_tokens, n_ctx // 2)


def is_not_found(text: str) -> bool:
    """True when an answer says the files do not hold it."""
    return "not found in the file" in " ".join(text.lower().split())


def words_of(text: str) -> list[str]:
    """Lowercased words (a CJK character is a word), citation markers left out."""
    return _WORDS.findall(_CITE.sub(" ", text).lower())


def overlap(answer_text: str, passage_text: str) -> float:
    """The share of the answer's words (stopwords aside) found in the passage."""
    words = [w for w in words_of(answer_text) if w not in STOPWORDS] or words_of(answer_text)
    if not words:
        return 0.0
    have = set(words_of(passage_text))
    return sum(w in have for w in words) / len(words)


def narrow(p: Passage, answer_text: str) -> tuple[int, int]:
    """The lines of a passage that hold the answer: the best line when one holds most of it, else the whole span."""
    lines = p.text.split("\n")
    if len(lines) == 1:
        return p.start_line, p.end_line
    scores = [overlap(answer_text, line) if line.strip() else 0.0 for line in lines]
    best = max(range(len(lines)), key=lambda i: scores[i])
    if scores[best] >= 0.6:
        return p.start_line + best, p.start_line + best
    return p.start_line, p.end_line


def cite(answer_text: str, passages: Sequence[Passage]) -> list[Citation]:
    """The spans the answer cites as [n] (checked against the passages), else the one that holds its words."""
    if is_not_found(answer_text) or not passages:
        return []
    numbers: list[int] = []
    for m in _CITE.finditer(answer_text):
        numbers += [int(n) for n in re.split(r"\s*[,;]\s*", m.group(1))]
    out = []
    for n in dict.fromkeys(numbers):
        if 1 <= n <= len(passages):  # a number outside the sources is an invented citation: dropped
            p = passages[n - 1]
            agrees = overlap(answer_text, p.text) > 0
            start, end = narrow(p, answer_text) if agrees else (p.start_line, p.end_line)
            out.append(Citation(n, p.file, start, end, p.score, "cited" if agrees else "unverified"))
    if not any(c.how == "cited" for c in out):
        best = max(range(len(passages)), key=lambda i: overlap(answer_text, passages[i].text))
        if overlap(answer_text, passages[best].text) >= 0.5:
            start, end = narrow(passages[best], answer_text)
            out.append(Citation(best + 1, passages[best].file, start, end, passages[best].score, "inferred"))
    return out
