"""Fixtures and helpers for the end-to-end tier: real skopeo / podman / buildah against a live server.

Every client runs as a subprocess with a timeout; a failure shows the command, its exit status and
its output. podman and buildah get a private vfs store (`--root`, `--runroot`) under the test's
tmp dir, so no test touches the machine's container storage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer

REPO_ROOT = Path(__file__).resolve().parents[2]
_TOOL = Path("tools") / "make_oci_image.py"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])

# Clients push to repositories nobody created first, as with `docker push` to a plain registry.
SERVER_ENV = {"MOORAGE_CREATE_ON_PUSH": "true"}


class CommandError(AssertionError):
    """A client command failed; the message carries everything needed to diagnose it."""


def _describe(cmd: Sequence[str], code: int | str, stdout: str, stderr: str) -> str:
    return (
        f"command failed ({code}): {' '.join(cmd)}\n--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}"
    )


def run(
    cmd: Sequence[str],
    *,
    timeout: float = 120.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a client command; raise CommandError (an AssertionError) with its output on failure."""
    full_env = {**os.environ, "REGISTRY_AUTH_FILE": str(AUTH_FILE), **(env or {})}
    try:
        done = subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as exc:

        def text(raw: bytes | str | None) -> str:
            return raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")

        raise CommandError(_describe(cmd, f"timed out after {timeout}s", text(exc.stdout), text(exc.stderr))) from None
    if check and done.returncode != 0:
        raise CommandError(_describe(cmd, done.returncode, done.stdout, done.stderr))
    return done


# One containers auth file for every client command of the session (as `skopeo login` /
# `podman login` would write it): each live server's address with an ECR registry password.
AUTH_FILE = Path(tempfile.mkdtemp(prefix="e2e-auth-")) / "auth.json"


def login(server: LiveServer) -> LiveServer:
    """Store `AWS:<password from GetAuthorizationToken>` for the server in the session auth file."""
    entries: dict[str, Any] = json.loads(AUTH_FILE.read_text()) if AUTH_FILE.exists() else {"auths": {}}
    entries["auths"][server.address] = {"auth": base64.b64encode(server.creds.encode()).decode()}
    AUTH_FILE.write_text(json.dumps(entries))
    return server


def moorage_cli(live: LiveServer, *args: str) -> str:
    """Run `moorage <args> --data-dir <the server's>` (as an operator would beside the server);
    its stdout, asserting exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "moorage", *args, "--data-dir", str(live.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"moorage {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"not installed (bin/test installs it): {', '.join(missing)}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# OCI image layouts
# --------------------------------------------------------------------------------------------------


def make_oci_tool() -> Path:
    """shared/tools/make_oci_image.py: beside the work tree (CI lays shared/ next to the clone)."""
    for base in (REPO_ROOT.parent / "shared", Path("/work/shared")):
        if (base / _TOOL).is_file():
            return base / _TOOL
    pytest.fail(f"shared/{_TOOL} not found beside {REPO_ROOT}")


def make_image(
    out: Path,
    tag: str,
    *,
    layers: int = 3,
    layer_size_mb: float = 1.0,
    seed: int = 1,
    platforms: str = "linux/amd64",
) -> str:
    """Build (or extend) an OCI layout; returns the digest that `tag` names."""
    done = run(
        [
            sys.executable,
            str(make_oci_tool()),
            "--out",
            str(out),
            "--tag",
            tag,
            "--layers",
            str(layers),
            "--layer-size-mb",
            str(layer_size_mb),
            "--platforms",
            platforms,
            "--seed",
            str(seed),
        ],
        timeout=120,
    )
    digest: str = json.loads(done.stdout)["digest"]
    return digest


@dataclass(frozen=True)
class Layout:
    """Read access to an OCI image layout directory."""

    root: Path

    def index(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.root / "index.json").read_text())
        return loaded

    def digest_of(self, tag: str) -> str:
        for entry in self.index()["manifests"]:
            if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                digest: str = entry["digest"]
                return digest
        raise AssertionError(f"tag {tag!r} not in {self.root}/index.json: {self.index()}")

    def blob_path(self, digest: str) -> Path:
        algorithm, hex_ = digest.split(":", 1)
        return self.root / "blobs" / algorithm / hex_

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def json_blob(self, digest: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.blob(digest))
        return loaded

    def closure(self, digest: str) -> list[str]:
        """`digest` and every digest it references (index -> manifests -> config + layers)."""
        document = self.json_blob(digest)
        out = [digest]
        for child in document.get("manifests", []):
            out += self.closure(child["digest"])
        if "config" in document:
            out.append(document["config"]["digest"])
        out += [layer["digest"] for layer in document.get("layers", [])]
        return out

    def verify(self, digest: str) -> list[str]:
        """Check every blob of the closure hashes to its name; returns the closure."""
        closure = self.closure(digest)
        for blob in closure:
            path = self.blob_path(blob)
            assert path.is_file(), f"{self.root}: blob {blob} missing"
            assert sha256_file(path) == blob, f"{self.root}: blob {blob} content does not match its digest"
        return closure


# --------------------------------------------------------------------------------------------------
# skopeo and the registry
# --------------------------------------------------------------------------------------------------


def skopeo(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["skopeo", "--command-timeout", f"{int(timeout)}s", *args], timeout=timeout + 10, check=check)


def push(source: str, server: LiveServer, ref: str, *extra: str) -> None:
    skopeo("copy", "--quiet", "--dest-tls-verify=false", *extra, source, f"docker://{server.address}/{ref}")


def pull(server: LiveServer, ref: str, dest: str, *extra: str) -> None:
    skopeo("copy", "--quiet", "--src-tls-verify=false", *extra, f"docker://{server.address}/{ref}", dest)


def inspect_raw(server: LiveServer, ref: str) -> bytes:
    done = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{server.address}/{ref}")
    return done.stdout.encode()


def inspect(server: LiveServer, ref: str, *extra: str) -> dict[str, Any]:
    done = skopeo("inspect", "--tls-verify=false", *extra, f"docker://{server.address}/{ref}")
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def get_manifest(server: LiveServer, name: str, reference: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v2/{name}/manifests/{reference}", headers={"Accept": ACCEPT_ALL}, auth=server.auth, timeout=30
    )


def fetch_verified_blob(server: LiveServer, name: str, digest: str) -> bytes:
    """GET a blob and check that its content matches its digest."""
    response = httpx.get(f"{server.url}/v2/{name}/blobs/{digest}", auth=server.auth, timeout=60)
    assert response.status_code == 200, f"GET blob {name}@{digest}: {response.status_code} {response.text}"
    actual = "sha256:" + sha256_hex(response.content)
    assert actual == digest, f"registry served blob {name}@{digest} with content hashing to {actual}"
    return response.content


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server shared by the tests that use distinct repositories."""
    need("skopeo")
    server = LiveServer(tmp_path_factory.mktemp("e2e-registry") / "data", env=SERVER_ENV)
    login(server.start())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """An OCI layout with tag `v1`: 3 layers of 1 MiB."""
    root = tmp_path_factory.mktemp("small-image") / "layout"
    make_image(root, "v1", layers=3, layer_size_mb=1, seed=11)
    return Layout(root)


@dataclass(frozen=True)
class Engine:
    """podman or buildah with a private vfs store."""

    binary: str
    root: Path
    runroot: Path
    tmpdir: Path

    def __call__(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        flags = ["--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "vfs"]
        if self.binary == "podman":
            flags += ["--tmpdir", str(self.tmpdir), "--events-backend", "none"]
        return run([self.binary, *flags, *args], timeout=timeout, env={"TMPDIR": str(self.tmpdir)})


@contextmanager
def _engine(binary: str, base: Path) -> Iterator[Engine]:
    """An engine whose store lives under `base`. podman refuses a runroot longer than 50 characters,
    so the runroot is a short private directory under the system temp dir, removed afterwards."""
    need(binary)
    runroot = Path(tempfile.mkdtemp(prefix=f"e2e-{binary}-"))
    engine = Engine(binary, base / "root", runroot, base / "tmp")
    engine.tmpdir.mkdir(parents=True)
    try:
        yield engine
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Engine]:
    with _engine("podman", tmp_path / "podman") as engine:
        yield engine


@pytest.fixture
def buildah(tmp_path: Path) -> Iterator[Engine]:
    with _engine("buildah", tmp_path / "buildah") as engine:
        yield engine
