"""A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub protocol for huggingface_hub.

It serves HEAD/GET on /{repo}/resolve/{rev}/{file} with the headers huggingface_hub reads (X-Repo-Commit,
X-Linked-Etag as the sha256, X-Linked-Size, ETag, Content-Length), honours Range requests, and answers
/api/models/{repo}[/revision/{rev}] with the file listing. Faults are switched per test: drop the connection
mid-file, serve wrong bytes of the same size, answer 401, or stream slowly.
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
        self.fault: str | None = None  # None | "drop" | "corrupt" | "401" | "403" | "slow"
        self.drop_after = 1 << 20
        self.slow_delay = 0.05
        self.requests: list[tuple[str, str]] = []
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

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        extra = {"X-Error-Message": message}
        if code:
            extra["X-Error-Code"] = code
        self._send_json(status, {"error": message}, extra)

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        hub = self.hub
        path = unquote(urlparse(self.path).path)
        hub.requests.append((self.command, path))
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
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng and self.command == "GET":
            m = re.match(r"bytes=(\d+)-(\d*)", rng)
            if m:
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
                status = 206
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("ETag", f'"{hub_file.sha256}"')
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
                    self.wfile.write(block[: max(0, hub.drop_after - sent)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(block)
                sent += len(block)
                if hub.fault == "slow":
                    time.sleep(hub.slow_delay)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


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
