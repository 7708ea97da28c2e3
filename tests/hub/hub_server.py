"""A small Hub-compatible HTTP server for the tests: what `huggingface_hub` (2.x, Xet off) calls to push and download.

Run as its own process (the ``hub_server`` fixture in ``conftest.py`` does)::

    python hub_server.py --token hf_secret [--port 0]

It prints ``PORT <n>`` once it listens on 127.0.0.1. Implemented (model repos only):

* ``POST /api/repos/create``, ``GET /api/models/{repo}[/revision/{rev}]``, ``GET /api/models/{repo}/refs``,
  ``POST /api/models/{repo}/branch/{branch}``, ``GET /api/models/{repo}/tree/{rev}[/{path}]``,
  ``POST /api/validate-yaml``, ``GET /api/whoami-v2``;
* the push: ``POST /api/models/{repo}/preupload/{rev}`` (regular vs LFS), ``POST /{repo}.git/info/lfs/objects/batch``,
  the basic-transfer ``PUT`` of each LFS object and its ``verify`` call, then ``POST /api/models/{repo}/commit/{rev}``
  (NDJSON; atomic: a commit that fails leaves every ref as it was);
* downloads: ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag`` and
  ``X-Linked-Size`` as the client expects;
* auth: ``Authorization: Bearer <token>``; a wrong token gets 401 everywhere, writes need the token, private repos
  are invisible (404 ``RepoNotFound``) without it;
* for the tests: ``GET /_debug/state`` (repos, commits, LFS objects, every LFS upload, a request log without
  headers), ``POST /_debug/fault`` (answer matching requests with an error status: ``{"method", "path" (regex),
  "status", "skip", "count"}``) and ``DELETE /_debug/fault``.

State lives in memory, behind one lock.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

USER = "hub-tester"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".msgpack", ".h5", ".npz", ".npy")
LFS_MIN_SIZE = 10 * 1024 * 1024
REPO = r"(?P<repo>[^/]+/[^/]+)"
REV = r"(?P<rev>[^/]+)"


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    """A file in a commit's tree: inline content, or a pointer to an LFS object."""

    size: int
    blob_oid: str  # git oid of the content (regular) or of the LFS pointer
    content: bytes | None = None
    lfs_oid: str | None = None  # sha256 of the content

    def entry(self, path: str) -> dict[str, Any]:
        info: dict[str, Any] = {"type": "file", "oid": self.blob_oid, "size": self.size, "path": path}
        if self.lfs_oid is not None:
            info["lfs"] = {
                "oid": self.lfs_oid,
                "size": self.size,
                "pointerSize": len(lfs_pointer(self.lfs_oid, self.size)),
            }
        return info

    @property
    def remote_oid(self) -> str:
        """What preupload reports: the client compares it with sha256 (LFS) or the git sha1 (regular)."""
        return self.lfs_oid or self.blob_oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # commit oids in creation order
    pull_requests: int = 0

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        return self.commits.get(revision)


class HubState:
    def __init__(self, token: str):
        self.token = token
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_uploads: list[str] = []
        self.faults: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []

    def new_commit(self, repo: Repo, ref: str, parent: str | None, message: str, files: dict[str, StoredFile]) -> str:
        digest = hashlib.sha1(json.dumps([repo.repo_id, ref, parent, message, len(repo.history)]).encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].blob_oid}".encode())
        oid = digest.hexdigest()
        repo.commits[oid] = Commit(oid, parent, message, files)
        repo.history.append(oid)
        repo.refs[ref] = oid
        return oid

    def snapshot(self) -> dict[str, Any]:
        repos = {}
        for repo_id, repo in self.repos.items():
            commits = []
            for oid in repo.history:
                commit = repo.commits[oid]
                files = {
                    p: {"size": f.size, "lfs": f.lfs_oid is not None, "oid": f.remote_oid}
                    for p, f in commit.files.items()
                }
                commits.append({"oid": oid, "parent": commit.parent, "message": commit.message, "files": files})
            repos[repo_id] = {"private": repo.private, "refs": dict(repo.refs), "commits": commits}
        return {
            "repos": repos,
            "lfs_objects": sorted(self.lfs),
            "lfs_uploads": list(self.lfs_uploads),
            "faults": [dict(f) for f in self.faults],
            "log": list(self.log),
        }


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository {repo_id} not found", "RepoNotFound")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TinyHub/1.0"
    state: HubState  # set on the class by `serve`

    # ----- plumbing --------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # the request log lives in the state, not on stderr
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
        payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        content_type = "application/octet-stream" if raw is not None else "application/json"
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self._status = status

    def _authenticated(self) -> bool:
        """True with the valid token, False without any; a wrong token is refused outright."""
        header = self.headers.get("Authorization")
        if header is None:
            return False
        if header != f"Bearer {self.state.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        authenticated = self._authenticated()
        if write and not authenticated:
            raise HubError(401, "You must be authenticated to write to a repository")
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not authenticated):
            raise _repo_not_found(repo_id)
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _fault(self, path: str) -> dict[str, Any] | None:
        for fault in self.state.faults:
            if fault.get("method", self.command) != self.command or not re.search(fault["path"], path):
                continue
            if fault.get("skip", 0) > 0:
                fault["skip"] -= 1
                continue
            if fault.get("count", 1) == 0:
                continue
            fault["count"] = fault.get("count", 1) - 1
            fault["hits"] = fault.get("hits", 0) + 1
            return fault
        return None

    def _handle(self) -> None:
        self._status, self._commit_oid = 0, None
        url = urlsplit(self.path)
        body = self._read_body()  # always read, so a keep-alive connection stays in sync after an error
        try:
            if url.path.startswith("/_debug/"):
                self._debug(url.path, body)
                return
            with self.state.lock:
                fault = self._fault(url.path)
                if fault is not None:
                    raise HubError(fault.get("status", 500), "Injected fault (test)")
                self._route(url.path, parse_qs(url.query), body)
        except HubError as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            if error.code == "EntryNotFound" and self._commit_oid:
                headers["X-Repo-Commit"] = self._commit_oid
            self._send(error.status, {"error": error.message, **error.extra}, headers)
        finally:
            if not url.path.startswith("/_debug/"):
                with self.state.lock:
                    self.state.log.append({"method": self.command, "path": url.path, "status": self._status})

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

    # ----- routing ---------------------------------------------------------------------------------------------
    def _route(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        routes = (
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", lambda: self._send(200, {"errors": [], "warnings": []})),
            ("GET", r"/api/whoami-v2", self._whoami),
            ("GET", r"/api/agent-harnesses", lambda: self._send(200, {"standardEnvVars": [], "harnesses": {}})),
            ("GET", rf"/api/models/{REPO}", self._repo_info),
            ("GET", rf"/api/models/{REPO}/revision/{REV}", self._repo_info),
            ("GET", rf"/api/models/{REPO}/refs", self._refs),
            ("POST", rf"/api/models/{REPO}/branch/(?P<branch>[^/]+)", self._create_branch),
            ("GET", rf"/api/models/{REPO}/tree/{REV}(?:/(?P<tree_path>.*))?", self._tree),
            ("POST", rf"/api/models/{REPO}/preupload/{REV}", self._preupload),
            ("POST", rf"/api/models/{REPO}/commit/{REV}", self._create_commit),
            ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", self._lfs_verify),
            ("GET", rf"/{REPO}/resolve/{REV}/(?P<file_path>.+)", self._resolve),
            ("HEAD", rf"/{REPO}/resolve/{REV}/(?P<file_path>.+)", self._resolve),
        )
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and method == self.command:
                self._query, self._body = query, body
                handler(**{key: unquote(value) for key, value in match.groupdict().items() if value is not None})
                return
        raise HubError(404, f"No route for {self.command} {path}")

    def _json(self) -> Any:
        try:
            return json.loads(self._body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Malformed JSON body: {error}") from None

    @property
    def _base(self) -> str:
        return f"http://{self.headers.get('Host')}"

    # ----- repos and refs --------------------------------------------------------------------------------------
    def _whoami(self) -> None:
        if not self._authenticated():
            raise HubError(401, "Unauthorized")
        self._send(200, {"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token"}})

    def _create_repo(self) -> None:
        if not self._authenticated():
            raise HubError(401, "You must be authenticated to create a repository")
        payload = self._json()
        if payload.get("type", "model") != "model":
            raise HubError(400, "This test Hub only hosts model repos")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        if repo_id in self.state.repos:
            raise HubError(409, "You already created this model repo", url=f"{self._base}/{repo_id}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.state.repos[repo_id] = Repo(repo_id, private)
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        files = {".gitattributes": StoredFile(len(attributes), git_blob_oid(attributes), content=attributes)}
        self.state.new_commit(repo, "main", None, "initial commit", files)
        self._send(200, {"url": f"{self._base}/{repo_id}", "name": repo_id})

    def _repo_info(self, repo: str, rev: str = "main") -> None:
        found = self._repo(repo)
        commit = self._commit(found, rev)
        self._send(
            200,
            {
                "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
                "id": repo,
                "modelId": repo,
                "author": repo.split("/")[0],
                "sha": commit.oid,
                "private": found.private,
                "gated": False,
                "disabled": False,
                "tags": [],
                "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            },
        )

    def _refs(self, repo: str) -> None:
        found = self._repo(repo)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
            for name, oid in found.refs.items()
            if not name.startswith("refs/")
        ]
        self._send(200, {"branches": branches, "converts": [], "tags": []})

    def _create_branch(self, repo: str, branch: str) -> None:
        found = self._repo(repo, write=True)
        if branch in found.refs:
            raise HubError(409, f"Reference {branch} already exists")
        start = self._json().get("startingPoint") or "main"
        found.refs[branch] = self._commit(found, start).oid
        self._send(200, {})

    def _tree(self, repo: str, rev: str, tree_path: str = "") -> None:
        commit = self._commit(self._repo(repo), rev)
        recursive = self._query.get("recursive", ["false"])[0].lower() == "true"
        prefix = tree_path.strip("/") + "/" if tree_path.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, stored in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(
                    folder, {"type": "directory", "oid": git_blob_oid(folder.encode()), "size": 0, "path": folder}
                )
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[path] = stored.entry(path)
        if prefix and not entries:
            self._commit_oid = commit.oid
            raise HubError(404, f"{tree_path} does not exist on {rev}", "EntryNotFound")
        self._send(200, list(entries.values()))

    # ----- the push --------------------------------------------------------------------------------------------
    def _preupload(self, repo: str, rev: str) -> None:
        commit = self._commit(self._repo(repo, write=True), rev)
        files = []
        for item in self._json().get("files", []):
            path, size, sample = item["path"], int(item["size"]), base64.b64decode(item["sample"])
            lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample
            existing = commit.files.get(path)
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.remote_oid if existing else None,
                }
            )
        self._send(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo: str) -> None:
        self._repo(repo, write=True)
        payload = self._json()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only uploads are supported")
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.state.lfs:  # objects already stored need no upload
                href = f"{self._base}/_lfs/{oid}"
                answer["actions"] = {
                    "upload": {"href": href, "header": {}},
                    "verify": {"href": f"{href}/verify", "header": {}},
                }
            objects.append(answer)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self._body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match its oid {oid}")
        self.state.lfs[oid] = self._body
        self.state.lfs_uploads.append(oid)
        self._send(200, raw=b"")

    def _lfs_verify(self, oid: str) -> None:
        if not self._authenticated():
            raise HubError(401, "You must be authenticated to verify an upload")
        payload = self._json()
        if oid not in self.state.lfs or len(self.state.lfs[oid]) != int(payload.get("size", -1)):
            raise HubError(404, f"LFS object {oid} was not uploaded")
        self._send(200, {})

    def _create_commit(self, repo: str, rev: str) -> None:
        found = self._repo(repo, write=True)
        head = self._commit(found, rev)
        lines = [json.loads(line) for line in self._body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit starts with its header line")
        header = lines[0]["value"]
        parent_commit = header.get("parentCommit")
        if parent_commit and not head.oid.startswith(parent_commit):
            raise HubError(412, "A commit has happened since; parentCommit is not the head")
        files = dict(head.files)  # built aside: nothing changes unless every operation is valid
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                content = base64.b64decode(value["content"])
                files[value["path"]] = StoredFile(len(content), git_blob_oid(content), content=content)
            elif key == "lfsFile":
                oid = value["oid"]
                if oid not in self.state.lfs:
                    raise HubError(422, f"LFS object {oid} for {value['path']} was never uploaded")
                size = len(self.state.lfs[oid])
                files[value["path"]] = StoredFile(size, git_blob_oid(lfs_pointer(oid, size)), lfs_oid=oid)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: stored for path, stored in files.items() if not path.startswith(folder)}
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        message = header.get("summary") or ""
        pull_request_url = None
        ref = rev
        if self._query.get("create_pr", ["0"])[0] == "1":
            found.pull_requests += 1
            ref = f"refs/pr/{found.pull_requests}"
            pull_request_url = f"{self._base}/{repo}/discussions/{found.pull_requests}"
        oid = self.state.new_commit(found, ref, head.oid, message, files)
        self._send(
            200,
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self._base}/{repo}/commit/{oid}",
                "pullRequestUrl": pull_request_url,
            },
        )

    # ----- downloads -------------------------------------------------------------------------------------------
    def _resolve(self, repo: str, rev: str, file_path: str) -> None:
        commit = self._commit(self._repo(repo), rev)
        stored = commit.files.get(file_path)
        if stored is None:
            self._commit_oid = commit.oid
            raise HubError(404, f"Entry not found: {file_path}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "none"}
        if stored.lfs_oid is not None:
            content = self.state.lfs[stored.lfs_oid]
            headers.update(
                {
                    "ETag": f'"{stored.lfs_oid}"',
                    "X-Linked-Etag": f'"{stored.lfs_oid}"',
                    "X-Linked-Size": str(stored.size),
                }
            )
        else:
            content = stored.content or b""
            headers["ETag"] = f'"{stored.blob_oid}"'
        self._send(200, headers=headers, raw=content)

    # ----- test hooks ------------------------------------------------------------------------------------------
    def _debug(self, path: str, body: bytes) -> None:
        with self.state.lock:
            if path == "/_debug/state" and self.command == "GET":
                self._send(200, self.state.snapshot())
            elif path == "/_debug/fault" and self.command == "POST":
                fault = json.loads(body)
                re.compile(fault["path"])
                self.state.faults.append(fault)
                self._send(200, {"faults": len(self.state.faults)})
            elif path == "/_debug/fault" and self.command == "DELETE":
                self.state.faults.clear()
                self._send(200, {"faults": 0})
            else:
                self._send(404, {"error": f"No debug route {self.command} {path}"})


def serve(port: int, token: str) -> None:
    Handler.state = HubState(token)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed on stdout)")
    parser.add_argument("--token", required=True, help="the one valid access token")
    args = parser.parse_args(argv)
    serve(args.port, args.token)


if __name__ == "__main__":
    sys.exit(main())
