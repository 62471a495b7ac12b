"""Upstream registries on loopback for pull-through cache tests.

- `Distribution`: the Debian `docker-registry` (CNCF distribution), optionally with htpasswd
  (HTTP Basic) authentication.
- `TokenFront`: an HTTP front end in front of a Distribution that behaves like Docker Hub's:
  `/v2/...` without a token answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,
  scope="repository:<name>:pull"`; `GET /token?service=&scope=` (HTTP Basic when users are set)
  issues a token valid for exactly the requested repository scopes. It counts the requests it
  proxies (`counts`, keyed by "METHOD path"), and can be told to answer every /v2/ request with a
  fixed status (`fail_with = 429`) or to be down (`stop()`), to wait before blob answers (`delay`)
  or to send blob bodies slowly (`chunk_delay` per 64 KiB); `finished` says when each body ended.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support import images
from tests.support.images import Content
from tests.support.services import free_port

__all__ = ["Distribution", "TokenFront", "push", "push_blob", "put_manifest"]


class Distribution:
    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.users = users or {}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Distribution:
        binary = shutil.which("docker-registry")
        assert binary, "apt-get install docker-registry"
        self.workdir.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            lines = []
            for user, password in self.users.items():
                out = subprocess.run(
                    ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
                ).stdout
                lines.append(out.strip())
            htpasswd.write_text("\n".join(lines) + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {htpasswd}\n"
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n  delete:\n    enabled: true\n"
            f"{auth}http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        log = (self.workdir / "registry.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start: " + (self.workdir / "registry.log").read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


class TokenFront:
    SERVICE = "registry.test"

    def __init__(self, backend: Distribution, *, users: dict[str, str] | None = None) -> None:
        self.backend = backend
        self.users = users or {}
        self.port = free_port()
        self.counts: Counter[str] = Counter()
        self.fail_with: int | None = None
        self.retry_after: str | None = None
        self.delay = 0.0  # seconds to sleep before each proxied blob response
        self.chunk_delay = 0.0  # seconds to sleep after each 64 KiB of a blob body (a slow upstream)
        self.finished: dict[str, float] = {}  # "METHOD path" -> time.monotonic() its body was sent
        self.tokens: dict[str, set[str]] = {}  # token -> repository names it may pull
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TokenFront:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _token(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if front.users:
                    header = self.headers.get("authorization", "")
                    ok = False
                    if header.startswith("Basic "):
                        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                        ok = front.users.get(user) == password
                    if not ok:
                        self._reply(401, b'{"details":"incorrect username or password"}')
                        return
                repos = set()
                for scope in query.get("scope", []):
                    parts = scope.split(":")
                    if len(parts) == 3 and parts[0] == "repository" and "pull" in parts[2].split(","):
                        repos.add(parts[1])
                token = secrets.token_hex(16)
                with front._lock:
                    front.tokens[token] = repos
                body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
                self._reply(200, body, {"content-type": "application/json"})

            def _proxy(self) -> None:
                path = urlsplit(self.path).path
                if front.fail_with is not None:
                    headers = {"retry-after": front.retry_after} if front.retry_after else {}
                    self._reply(front.fail_with, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}', headers)
                    return
                parts = path.split("/")
                name = "/".join(parts[2:-2]) if len(parts) > 4 else ""
                header = self.headers.get("authorization", "")
                allowed = front.tokens.get(header[7:], set()) if header.startswith("Bearer ") else None
                if allowed is None or (name and name not in allowed):
                    scope = f',scope="repository:{name}:pull"' if name else ""
                    challenge = f'Bearer realm="{front.url}/token",service="{front.SERVICE}"{scope}'
                    self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"www-authenticate": challenge})
                    return
                with front._lock:
                    front.counts[f"{self.command} {path}"] += 1
                if front.delay and "/blobs/" in path:
                    time.sleep(front.delay)
                conn = http.client.HTTPConnection("127.0.0.1", front.backend.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
                conn.request(self.command, self.path, headers=headers)
                response = conn.getresponse()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                        self.send_header(k, v)
                self.end_headers()
                sent = time.monotonic()
                if self.command != "HEAD":
                    while chunk := response.read(1 << 16):
                        self.wfile.write(chunk)
                        if front.chunk_delay and "/blobs/" in path:
                            self.wfile.flush()
                            sent = time.monotonic()  # the pause below comes after the bytes are out
                            time.sleep(front.chunk_delay)
                        else:
                            sent = time.monotonic()
                conn.close()
                with front._lock:
                    front.finished[f"{self.command} {path}"] = sent

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    self._token()
                elif self.path.startswith("/v2/"):
                    self._proxy()
                else:
                    self._reply(404, b"")

            def do_HEAD(self) -> None:
                self._proxy()

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def blob_fetches(self, digest: str) -> int:
        return sum(n for key, n in self.counts.items() if key.startswith("GET ") and key.endswith(f"/blobs/{digest}"))

    def blob_finished(self, digest: str) -> float | None:
        """When (time.monotonic()) the last GET of the blob's body was sent in full."""
        times = [t for key, t in self.finished.items() if key.startswith("GET ") and key.endswith(f"/blobs/{digest}")]
        return max(times) if times else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def push_blob(client: httpx.Client, name: str, data: bytes) -> str:
    """POST an upload then PUT its bytes (distribution does not take a monolithic POST)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = client.post(f"/v2/{name}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = start.headers["location"]
    separator = "&" if "?" in location else "?"
    done = client.put(f"{location}{separator}digest={digest}", content=data)
    assert done.status_code == 201, done.text
    return digest


def push(client: httpx.Client, name: str, tag: str, *, layers: int = 1, size: int = 512) -> Content:
    """A config, `layers` random layers and an OCI manifest over them, tagged `tag`."""
    config_blob = images.config()
    layer_blobs = [images.layer(size) for _ in range(layers)]
    for item in (config_blob, *layer_blobs):
        push_blob(client, name, item.data)
    manifest = images.oci_manifest(config_blob, layer_blobs)
    put_manifest(client, name, tag, manifest)
    return manifest


def put_manifest(client: httpx.Client, name: str, reference: str, manifest: Content) -> None:
    response = client.put(
        f"/v2/{name}/manifests/{reference}", content=manifest.data, headers={"content-type": manifest.media_type}
    )
    assert response.status_code == 201, response.text
