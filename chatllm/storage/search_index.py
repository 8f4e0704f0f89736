"""The full-text index behind `ask -f` past the window: SQLite FTS5 (BM25), chunks keyed by file content sha256.

One database (CHATLLM_HOME/index.db) holds every file ever indexed, keyed by the sha256 of its bytes: a second
question over the same files reads nothing again (a stat memo maps path + size + mtime to the hash), and a changed
file gets a new hash and new chunks. It implements storage/passage_index.py's PassageIndex, which is all that
tasks/retrieval sees of it.

Two tokenizer schemes: "words" (unicode61 + porter stemming for alphabetic text, every CJK run rewritten as its
characters and overlapping bigrams, so 1- and 2-character Chinese queries match) and "trigram" (FTS5's own trigram
tokenizer, which cannot match terms under 3 characters). bench/eval_qa.py measures both; "words" is the default.

With an embedding model, each chunk's vector is stored beside it (float32, keyed by chunk and model), computed once,
and the nearest chunks are found by a dot product over the stored vectors, scanned in blocks (bounded memory).
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Sequence

from chatllm.storage.file_hashes import sha256_file
from chatllm.storage.passage_index import STOPWORDS, Hit
from chatllm.storage.sqlite_store import (
    Step,
    StoreBusyError,
    StoreFile,
    StoreUnreadableError,
    damage,
    immediate_transaction,
    open_store,
)

SCHEMES = ("words", "trigram")
DEFAULT_SCHEME = "words"
SCHEMA_VERSION = 2  # 2: chunk vectors
TABLES = ("vectors", "chunks_fts", "chunks", "files", "stats", "meta")
VECTOR_BLOCK = 4096  # vectors scored per step of a nearest-chunk scan
BUSY_SECONDS = 30.0
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
def _cjk_terms(run: str) -> list[str]:
    """A CJK run as overlapping bigrams (the run itself when it is one character)."""
    return [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]


def index_text(text: str, scheme: str) -> str:
    """The text FTS5 indexes for a chunk: unchanged for trigram; CJK runs spelled out as characters + bigrams for words."""
    if scheme == "trigram":
        return text
    return _CJK.sub(lambda m: " " + " ".join(list(m.group()) + _cjk_terms(m.group())) + " ", text)


def query_terms(question: str, scheme: str) -> list[str]:
    """The search terms of a question, deduplicated in order; an empty list when nothing in it can be matched."""
    terms: list[str] = []
    for m in re.finditer(f"{_CJK.pattern}|{_WORD.pattern}", question):
        token = m.group()
        if _CJK.fullmatch(token):
            terms += _cjk_terms(token) if scheme == "words" else [token[i:i + 3] for i in range(max(len(token) - 2, 0))]
        elif token.lower() not in STOPWORDS and (scheme == "words" or len(token) >= 3):
            terms.append(token.lower())
    if not terms and scheme == "words":  # a question of stopwords only: search them rather than nothing
        terms = [m.group().lower() for m in _WORD.finditer(question)]
    return list(dict.fromkeys(terms))


def match_expression(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression: any of the terms, each quoted so no word is read as query syntax."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class SearchIndex:
    """An FTS5 index file: open (checked, rebuilt if corrupt), index chunks by content hash, search with BM25."""

    def __init__(self, path: Path, *, scheme: str = DEFAULT_SCHEME, fingerprint: str = "",
                 warn: Callable[[str], None] | None = None, busy_seconds: float = BUSY_SECONDS):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
        self.path = Path(path)
        self.scheme = scheme
        self.fingerprint = f"{scheme}|{fingerprint}"  # what chunks depend on: another value means a fresh index
        self.warn = warn
        self._file = StoreFile(self.path, "the search index", f"move {self.path} aside (chatllm builds a new one)",
                               busy_seconds)
        try:
            self.db = self._open()
        except StoreUnreadableError as exc:
            if warn:
                warn(f"{exc.message}; rebuilding it")
            self._delete_damaged()
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        # verify: a damaged index is rebuilt, not reported; reset: one built by another chunker is dropped.
        return open_store(self._file, self._migrations(), verify=True, reset=self._reset)

    def _delete_damaged(self) -> None:
        """Delete the index's files, unless another process rebuilt them since this one found them damaged."""
        from filelock import FileLock, Timeout

        try:
            with FileLock(f"{self.path}.lock", timeout=self._file.busy_seconds):
                if damage(self.path, self._file.busy_seconds) is not None:
                    for suffix in ("", "-wal", "-shm", "-journal"):
                        Path(str(self.path) + suffix).unlink(missing_ok=True)
        except Timeout:
            raise StoreBusyError(f"the search index {self.path} is busy: another chatllm is rebuilding it; try again",
                                 f"it held the lock for over {self._file.busy_seconds:g} s") from None

    def _migrations(self) -> tuple[Step, ...]:
        """The schema, step by step; the first step records the fingerprint the chunks are made under."""
        tokenize = "trigram" if self.scheme == "trigram" else "porter unicode61 remove_diacritics 2"

        def tables(db: sqlite3.Connection) -> None:
            for statement in (
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS files (sha TEXT PRIMARY KEY, chars INTEGER NOT NULL, n_chunks INTEGER NOT NULL)",
                "CREATE TABLE IF NOT EXISTS stats (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                "ctime_ns INTEGER, ino INTEGER, sha TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, sha TEXT NOT NULL, seq INTEGER NOT NULL, "
                "start_line INTEGER NOT NULL, end_line INTEGER NOT NULL, text TEXT NOT NULL)",
                "CREATE INDEX IF NOT EXISTS chunks_sha ON chunks (sha, seq)",
                f"CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(body, tokenize = '{tokenize}')",
            ):
                db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (self.fingerprint,))

        def vectors(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE IF NOT EXISTS vectors (chunk_id INTEGER NOT NULL, model TEXT NOT NULL, "
                       "vec BLOB NOT NULL, PRIMARY KEY (chunk_id, model)) WITHOUT ROWID")

        steps = (tables, vectors)
        assert len(steps) == SCHEMA_VERSION
        return steps

    def _reset(self, db: sqlite3.Connection, version: int) -> int:
        """Under the write lock: drop an index made under another fingerprint; the version to migrate from."""
        if version:
            row = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if row is not None and row[0] == self.fingerprint:
                return version
        for table in TABLES:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        return 0

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    # -- files ------------------------------------------------------------------------------------

    def file_sha(self, path: Path) -> tuple[str, bool]:
        """(sha256 of the file's bytes, whether the stat memo knew it): an unchanged file is not read again."""
        st = os.stat(path)
        key = str(Path(path).resolve())
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        row = self.db.execute("SELECT size, mtime_ns, ctime_ns, ino, sha FROM stats WHERE path = ?", (key,)).fetchone()
        if row and tuple(row[:4]) == stamp:
            return row[4], True
        sha = sha256_file(path)
        self.db.execute("INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?, ?)", (key, *stamp, sha))
        if row and row[4] != sha:
            self._forget_unused(row[4])
        return sha, False

    def _forget_unused(self, sha: str) -> None:
        """Drop a hash's chunks once no known path has that content any more (a file that changed)."""
        if self.db.execute("SELECT 1 FROM stats WHERE sha = ?", (sha,)).fetchone():
            return
        with immediate_transaction(self.db, self._file.error) as db:
            db.execute("DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE sha = ?)", (sha,))
            db.execute("DELETE FROM vectors WHERE chunk_id IN (SELECT id FROM chunks WHERE sha = ?)", (sha,))
            db.execute("DELETE FROM chunks WHERE sha = ?", (sha,))
            db.execute("DELETE FROM files WHERE sha = ?", (sha,))

    def is_indexed(self, sha: str) -> bool:
        """True when the content with this hash has its chunks in the index."""
        return self.db.execute("SELECT 1 FROM files WHERE sha = ?", (sha,)).fetchone() is not None

    def add(self, sha: str, chars: int, chunks: Iterable[tuple[int, int, str]]) -> int:
        """Index one content's chunks (start_line, end_line, text) in one transaction; a no-op if another process won."""
        with immediate_transaction(self.db, self._file.error) as db:
            if self.is_indexed(sha):  # two processes indexing the same new file: the second finds it done
                return 0
            n = 0
            for seq, (start, end, text) in enumerate(chunks):
                cur = db.execute("INSERT INTO chunks (sha, seq, start_line, end_line, text) VALUES (?, ?, ?, ?, ?)",
                                 (sha, seq, start, end, text))
                db.execute("INSERT INTO chunks_fts (rowid, body) VALUES (?, ?)", (cur.lastrowid, index_text(text, self.scheme)))
                n += 1
            db.execute("INSERT INTO files VALUES (?, ?, ?)", (sha, chars, n))
        return n

    def chunks(self, sha: str) -> list[Hit]:
        """Every chunk of one content, in file order (score 0)."""
        rows = self.db.execute("SELECT sha, seq, start_line, end_line, text FROM chunks WHERE sha = ? ORDER BY seq", (sha,))
        return [Hit(s, seq, start, end, text, 0.0) for s, seq, start, end, text in rows]

    # -- search -----------------------------------------------------------------------------------

    def search(self, question: str, shas: Sequence[str], k: int) -> list[Hit]:
        """The k chunks of these contents that best match the question, best first (BM25 over the whole index)."""
        if not shas or k < 1:
            return []
        terms = query_terms(question, self.scheme)
        marks = ",".join("?" * len(shas))
        if terms:
            rows = self.db.execute(
                "SELECT c.sha, c.seq, c.start_line, c.end_line, c.text, -bm25(chunks_fts) AS score "
                f"FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid WHERE chunks_fts MATCH ? AND c.sha IN ({marks}) "
                "ORDER BY score DESC, c.sha, c.seq LIMIT ?", (match_expression(terms), *shas, k)).fetchall()
            return [Hit(*row) for row in rows]
        return self._scan(question, shas, k)

    def _scan(self, question: str, shas: Sequence[str], k: int) -> list[Hit]:
        """Terms FTS5 cannot match (under 3 characters, trigram scheme): count substring hits chunk by chunk."""
        words = list(dict.fromkeys(m.group().lower() for m in re.finditer(f"{_CJK.pattern}|{_WORD.pattern}", question)))
        if not words:
            return []
        marks = ",".join("?" * len(shas))
        hits = []
        for sha, seq, start, end, text in self.db.execute(
                f"SELECT sha, seq, start_line, end_line, text FROM chunks WHERE sha IN ({marks})", shas):
            score = float(sum(text.lower().count(w) for w in words))
            if score:
                hits.append(Hit(sha, seq, start, end, text, score))
        hits.sort(key=lambda h: (-h.score, h.sha, h.seq))
        return hits[:k]

    # -- vectors ----------------------------------------------------------------------------------

    def vector_gaps(self, shas: Sequence[str], model: str) -> list[tuple[int, str]]:
        """(chunk id, text) of the chunks of these contents with no vector from this model yet, in file order."""
        marks = ",".join("?" * len(shas))
        return self.db.execute(
            f"SELECT c.id, c.text FROM chunks c WHERE c.sha IN ({marks}) AND NOT EXISTS "
            "(SELECT 1 FROM vectors v WHERE v.chunk_id = c.id AND v.model = ?) ORDER BY c.sha, c.seq", (*shas, model)).fetchall()

    def add_vectors(self, model: str, rows: Sequence[tuple[int, Sequence[float]]]) -> None:
        """Store chunk vectors of one model in one transaction (float32); a vector already stored is kept."""
        import numpy as np

        with immediate_transaction(self.db, self._file.error) as db:
            db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)",
                           [(chunk_id, model, np.asarray(vec, dtype="<f4").tobytes()) for chunk_id, vec in rows])

    def nearest(self, query: Sequence[float], shas: Sequence[str], model: str, k: int) -> list[Hit]:
        """The k chunks of these contents whose vectors are nearest the query (cosine of unit vectors), best first."""
        import numpy as np

        if not shas or k < 1:
            return []
        q = np.asarray(query, dtype=np.float32)
        marks = ",".join("?" * len(shas))
        cursor = self.db.execute(f"SELECT v.chunk_id, v.vec FROM vectors v JOIN chunks c ON c.id = v.chunk_id "
                                 f"WHERE v.model = ? AND c.sha IN ({marks})", (model, *shas))
        best: list[tuple[float, int]] = []
        while rows := cursor.fetchmany(VECTOR_BLOCK):
            blobs = [blob for _, blob in rows if len(blob) == q.nbytes]  # another dimension: not this model's vector
            if not blobs:
                continue
            ids = [chunk_id for chunk_id, blob in rows if len(blob) == q.nbytes]
            scores = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1) @ q
            best += [(float(s), i) for s, i in zip(scores, ids)]
            best = sorted(best, key=lambda pair: (-pair[0], pair[1]))[:k]
        if not best:
            return []
        score_of = dict((i, s) for s, i in best)
        found = self.db.execute(f"SELECT id, sha, seq, start_line, end_line, text FROM chunks WHERE id IN "
                                f"({','.join('?' * len(best))})", [i for _, i in best]).fetchall()
        hits = {i: Hit(sha, seq, start, end, text, score_of[i]) for i, sha, seq, start, end, text in found}
        return [hits[i] for _, i in best if i in hits]
