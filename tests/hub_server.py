"""A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub protocol for huggingface_hub.

It serves HEAD/GET on /{repo}/resolve/{rev}/{file} with the headers huggingface_hub reads (X-Repo-Commit,
X-Linked-Etag as the sha256, X-Linked-Size, ETag, Content-Length), honours Range requests as a CDN does (206 with
Content-Range, 416 past the end, If-Range), and answers /api/models/{repo}[/revision/{rev}] with the file listing.
It counts the body bytes it serves (bytes_served) and records each GET's Range header (ranges). Faults are switched
per test: drop each connection mid-file, an outage (the connection drops once drop_after bytes were served in all and
every later request is cut off until the fault is cleared), serve wrong bytes of the same size, answer 401, or stream
slowly.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class HubFile:
    """One file in a fake repo: its bytes come from a path on disk or from memory."""

    path: Path | None = None
    data: bytes | None = None
    sha256: str = ""

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path else len(self.data or b"")


@dataclass
class HubRepo:
    """A repo with one commit and some files."""

    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)


class FakeHub:
    """Start with FakeHub().start(); add repos with add_file(); read .url; set .fault to inject failures."""

    def __init__(self):
        self.repos: dict[str, HubRepo] = {}
        self.fault: str | None = None  # None | "drop" | "outage" | "corrupt" | "401" | "403" | "slow"
        self.drop_after = 1 << 20
        self.slow_delay = 0.05
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[str | None] = []  # the Range header of each GET of a file, None for a whole-file GET
        self.bytes_served = 0  # file body bytes written to sockets, over all requests
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def add_file(self, repo: str, name: str, *, path: Path | None = None, data: bytes | None = None,
                 commit: str | None = None) -> HubFile:
        """Publish a file in repo (the sha256 is computed now, as the Hub does for LFS files)."""
        commit = commit or hashlib.sha1(repo.encode()).hexdigest()
        entry = self.repos.setdefault(repo, HubRepo(commit=commit))
        digest = hashlib.sha256()
        if path is not None:
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
        else:
            digest.update(data or b"")
        hub_file = HubFile(path=path, data=data, sha256=digest.hexdigest())
        entry.files[name] = hub_file
        return hub_file

    @property
    def url(self) -> str:
        """The endpoint to pass as HF_ENDPOINT."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        """Serve on an ephemeral port of 127.0.0.1 in a daemon thread."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def served(self, n: int) -> None:
        """Count n body bytes as sent."""
        with self._lock:
            self.bytes_served += n

    @property
    def down(self) -> bool:
        """True while an outage has cut the hub off."""
        return self.fault == "outage" and self.bytes_served >= self.drop_after

    def count(self, method: str, needle: str = "") -> int:
        """How many requests of a method (whose path contains needle) were served."""
        return sum(1 for m, p in self.requests if m == method and needle in p)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send_json(self, status: int, obj: object, extra: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None, extra: dict | None = None) -> None:
        extra = {"X-Error-Message": message, **(extra or {})}
        if code:
            extra["X-Error-Code"] = code
        self._send_json(status, {"error": message}, extra)

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        hub = self.hub
        path = unquote(urlparse(self.path).path)
        hub.requests.append((self.command, path))
        if hub.down:  # no answer at all: the client sees the connection cut
            self._cut()
            return
        if self.headers.get("Authorization") and "hf_" in self.headers.get("Authorization", ""):
            hub.requests.append(("AUTH", path))
        if hub.fault in ("401", "403"):
            self._error(int(hub.fault), "Access to this model is restricted. You must accept the conditions.", "GatedRepo")
            return
        m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?/?$", path)
        if m:
            self._api_model(m.group(1), m.group(2) or "main")
            return
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            self._resolve(m.group(1), m.group(2), m.group(3))
            return
        self._error(404, "Not Found")

    def _repo(self, name: str, rev: str) -> HubRepo | None:
        repo = self.hub.repos.get(name)
        if repo is None:
            self._error(401, "Repository not found", "RepoNotFound")
            return None
        if rev not in ("main", repo.commit):
            self._error(404, "Invalid rev id", "RevisionNotFound")
            return None
        return repo

    def _api_model(self, name: str, rev: str) -> None:
        repo = self._repo(name, rev)
        if repo is None:
            return
        siblings = [{"rfilename": n, "size": f.size, "lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}}
                    for n, f in repo.files.items()]
        self._send_json(200, {"id": name, "modelId": name, "sha": repo.commit, "siblings": siblings, "private": False})

    def _resolve(self, name: str, rev: str, filename: str) -> None:
        repo = self._repo(name, rev)
        if repo is None:
            return
        hub_file = repo.files.get(filename)
        if hub_file is None:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        size = hub_file.size
        etag = f'"{hub_file.sha256}"'
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range") if self.command == "GET" else None
        if self.command == "GET":
            self.hub.ranges.append(rng)
        if rng and self.headers.get("If-Range", etag) != etag:
            rng = None  # the client's copy is of another version: the whole file, as RFC 9110 says
        if rng:
            byte_range = _parse_range(rng, size)
            if byte_range == "unsatisfiable":
                self._error(416, "Requested Range Not Satisfiable", extra={"Content-Range": f"bytes */{size}"})
                return
            if byte_range is not None:
                start, end = byte_range
                status = 206
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("X-Linked-Etag", etag)
        self.send_header("X-Linked-Size", str(size))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length if self.command == "GET" else size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        self._send_body(hub_file, start, length)

    def _send_body(self, hub_file: HubFile, start: int, length: int) -> None:
        hub = self.hub
        sent = 0
        try:
            for block in _blocks(hub_file, start, length):
                if hub.fault == "corrupt":
                    block = bytes(b ^ 0x5A for b in block[:64]) + block[64:]
                if hub.fault == "drop" and sent + len(block) > hub.drop_after:
                    block = block[: max(0, hub.drop_after - sent)]
                    self.wfile.write(block)
                    hub.served(len(block))
                    self._cut()
                    return
                if hub.fault == "outage" and hub.bytes_served + len(block) >= hub.drop_after:
                    block = block[: max(0, hub.drop_after - hub.bytes_served)]
                    self.wfile.write(block)
                    hub.served(len(block))
                    self._cut()
                    return
                self.wfile.write(block)
                hub.served(len(block))
                sent += len(block)
                if hub.fault == "slow":
                    time.sleep(hub.slow_delay)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single `bytes=` range, "unsatisfiable" past the end, or None to ignore it (serve 200)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or not (m.group(1) or m.group(2)):
        return None  # malformed or several ranges: a server may answer with the whole file
    if not m.group(1):  # bytes=-N: the last N bytes
        suffix = int(m.group(2))
        return (max(0, size - suffix), size - 1) if suffix and size else "unsatisfiable"
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if m.group(2) and int(m.group(2)) < start:
        return None  # an invalid range is ignored
    return (start, end) if start < size else "unsatisfiable"


def _blocks(hub_file: HubFile, start: int, length: int, size: int = 256 * 1024):
    if hub_file.data is not None:
        data = hub_file.data[start : start + length]
        for i in range(0, len(data), size):
            yield data[i : i + size]
        return
    with open(hub_file.path, "rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            block = fh.read(min(size, left))
            if not block:
                return
            left -= len(block)
            yield block
