"""The records of questions over files: an input (`Doc`), a retrieved chunk (`Passage`), and the model-free token
estimate and word splitting every retrieval module shares."""

from __future__ import annotations

import re
from dataclasses import dataclass

_APPROX = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+|[^\w\s]", re.UNICODE)
CITE_MARK = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_WORDS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|[^\W_\u3400-\u4dbf\u4e00-\u9fff]+", re.UNICODE)


def approx_tokens(text: str) -> int:
    """A model-free token estimate: a CJK character or punctuation mark is one, a word one per 5 letters."""
    return sum(1 if len(t) < 6 else (len(t) + 4) // 5 for t in _APPROX.findall(text))


def words_of(text: str) -> list[str]:
    """Lowercased words (a CJK character is a word), citation markers left out."""
    return _WORDS.findall(CITE_MARK.sub(" ", text).lower())


@dataclass
class Doc:
    """One input: its display name, content hash and (when read) its text."""

    name: str
    sha: str
    text: str | None = None


@dataclass
class Passage:
    """A chunk of a file put before the model: where it is, its text, its search score and real token count; after
    reranking, the window of it the model judged (its text and lines) and its relevance."""

    file: str
    start_line: int
    end_line: int
    text: str
    score: float
    tokens: int = 0
    window: str | None = None  # the sentences of the passage that the reranker and the answer saw
    relevance: float | None = None  # how much the window raises the question's likelihood (rerank.py)
    window_lines: tuple[int, int] | None = None  # the file lines the window spans
    span_in_text: tuple[int, int] | None = None  # the window's character offsets in text

    @property
    def span(self) -> str:
        """`file:start-end`."""
        return f"{self.file}:{self.start_line}-{self.end_line}"

    def as_dict(self, n: int, with_text: bool = False) -> dict:
        """The --json form of source number n."""
        record: dict = {"source": n, "file": self.file, "start_line": self.start_line, "end_line": self.end_line,
                        "score": round(self.score, 4), "tokens": self.tokens}
        if self.relevance is not None:
            record["relevance"] = round(self.relevance, 4)
        if with_text:
            record["text"] = self.text
            if self.window is not None:
                record["window"] = self.window
        if self.window_lines is not None:
            record["window_lines"] = list(self.window_lines)
        return record
