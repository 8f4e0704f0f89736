"""What a job sees of the passage index: the found chunk (`Hit`), the search's stopwords, and the index's
operations as a Protocol. storage/search_index.py implements it on SQLite FTS5; tasks/retrieval uses only this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

# Question words and glue: they match nearly every chunk, so they only slow an OR query down and blur its ranking.
STOPWORDS = frozenset("""a an and are as at be by did do does for from had has have how i in into is it its of on or
that the their them then there these they this to was were what when where which who whom whose why will with
""".split())


@dataclass
class Hit:
    """One chunk found by a search: where it is in its file, its text and its score (higher is better)."""

    sha: str
    seq: int
    start_line: int
    end_line: int
    text: str
    score: float


class PassageIndex(Protocol):
    """Chunks of files kept by content hash, searched by words (BM25) and, with vectors, by similarity."""

    def file_sha(self, path: Path) -> tuple[str, bool]:
        """(sha256 of the file's bytes, whether it was known unchanged without reading it)."""
        ...

    def is_indexed(self, sha: str) -> bool:
        """True when the content with this hash is chunked and indexed."""
        ...

    def add(self, sha: str, chars: int, chunks: Iterable[tuple[int, int, str]]) -> int:
        """Index a content's chunks (start_line, end_line, text); how many were added."""
        ...

    def search(self, question: str, shas: Sequence[str], k: int) -> list[Hit]:
        """The k chunks of these contents that best match the question's words, best first."""
        ...

    def vector_gaps(self, shas: Sequence[str], model: str) -> list[tuple[int, str]]:
        """(chunk id, text) of the chunks of these contents with no vector from this model yet."""
        ...

    def add_vectors(self, model: str, rows: Sequence[tuple[int, Sequence[float]]]) -> None:
        """Keep each chunk's vector from this model."""
        ...

    def nearest(self, query: Sequence[float], shas: Sequence[str], model: str, k: int) -> list[Hit]:
        """The k chunks of these contents whose vectors are nearest the query vector, best first."""
        ...
