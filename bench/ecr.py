#!/usr/bin/env python3
"""Moorage's ECR API vs moto's `moto_server` (ECR), side by side.

    python bench/ecr.py [--rounds 3] [--duration 5] [--clients 4] [--workers 1] [--quick] [--json PATH]

Both servers run at once on free loopback ports: Moorage in SigV4 mode (fresh temp data dir, root key
from MOORAGE_ROOT_ACCESS_KEY_ID / MOORAGE_ROOT_SECRET_ACCESS_KEY, `--workers` processes) and
`moto_server -H 127.0.0.1 -p PORT`. Every measurement alternates between them round by round (the
first server alternates too); reported numbers are medians over the rounds:

1. CreateRepository with a unique name per call.
2. PutImage of distinct tiny OCI manifests (config + one layer, a unique annotation and a unique
   imageTag per call) into one repository, a fresh one per round and server. The config and layer
   blobs are uploaded into that repository first, through InitiateLayerUpload / UploadLayerPart /
   CompleteLayerUpload; the same calls go to moto for symmetry (moto 5.2.1 does not implement them
   and answers HTTP 500; its PutImage does not check layers).
3. DescribeImages of one page (maxResults=100, no nextToken) of a repository holding 1,000 images
   (populated with PutImage before the rounds).
4. A full listing of those 1,000 images through boto3's DescribeImages paginator (PageSize 100),
   one client, listings back to back: wall time and server CPU per listing.

A third server, the floor (bench/ecr_floor_app.py, skip with `--no-floor`), takes the single-item
calls (CreateRepository, PutImage, DescribeRepositories, BatchGetImage): the same granian stack
checking SigV4 with Moorage's verifier and running one SQLite statement per call (a write commits
with one fsync), with no registry behind it. Its column is what any app on this stack pays at
least; beside moto's, it shows how much of the 1/5 budget the stack itself takes.

Load for 1-3 comes from `--clients` worker processes (not threads: no GIL ceiling on the client
side), each with one persistent `http.client.HTTPConnection` and its own raw SigV4 signer: every
call is a botocore AWSRequest signed by `SigV4Auth` and sent as is, without boto3's ~0.8 CPU-ms
of per-call overhead. Every response must be HTTP 200; the JSON is checked on every call for
CreateRepository and PutImage (name, tag, digest) and on every 10th call for DescribeImages (page
size). Client CPU per call (the worker processes' own CPU) is reported so a reader can see the
client is not the bottleneck.

Server CPU is utime+stime from /proc/<pid>/stat of the server process and all its descendants
(granian's workers). Clients and servers share the machine's cores: compare ratios and CPU per
call. `--quick` runs one round of 2 s load runs.

    python bench/ecr.py --growth [--quick] [--rounds 3] [--duration 5]

The growth series instead (Moorage only, embedded store): two servers, one over a store seeded
with 200 repositories and 200 images in one of them, one with 40,000 repositories and 100,000
images in one, both filled directly through the metadata store (not through HTTP). A full page
(100 items) of DescribeRepositories, DescribeImages and ListImages, the first page and the page
after half of the listing, each requested back to back; one table of median ms per page on each,
their ratio (large / small) and server CPU-ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from procstat import (
    CLK_TCK,
    BenchError,
    cpu_seconds,
    cpu_snapshot,
    free_port,
    granian_command,
    process_tree,
    source_revision,
)
from procstat import log as _log
from procstat import raise_on_sigterm as _raise_on_sigterm
from procstat import system_busy_ticks as _system_busy_ticks

REPO_ROOT = Path(__file__).resolve().parent.parent

ACCOUNT = "123456789012"  # Moorage's default account and moto's default account
REGION = "us-east-1"
KEY_ID = "AKIAMOORAGEBENCH0001"
SECRET = "moorage-bench-root-secret-0123456789abcdef"
TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
JSON_11 = "application/x-amz-json-1.1"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

PAGE_SIZE = 100
CHECK_EVERY = 10  # DescribeImages: parse and check every 10th response (a page is ~40 KB of JSON)
FLOOR = "floor"  # bench/ecr_floor_app.py: the stack floor, for the operations in FLOOR_OPERATIONS
SERVER_KEYS = ("moorage", "moto", FLOOR)
FLOOR_OPERATIONS = frozenset({"create", "put", "repos", "batchget"})


def _takes(server: str, operation: str) -> bool:
    """Whether `server` takes part in `operation` (the floor answers only FLOOR_OPERATIONS)."""
    return server != FLOOR or operation in FLOOR_OPERATIONS


HTTP_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------------
# Processes: CPU of a server and its descendants, CPU used by everything else
# --------------------------------------------------------------------------------------------------


class ForeignLoad:
    """CPU used on the machine by anything other than this script, its client workers and the
    servers: other people's work competing for the same cores, which makes a measurement noisy."""

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self.busy = _system_busy_ticks()
        self.own = self._own()
        self.servers = [cpu_snapshot(root) for root in self.roots]
        self.wall = time.monotonic()

    def _own(self) -> dict[int, int]:
        """This script and its client worker processes; the servers (also its children) apart."""
        servers = {pid for root in self.roots for pid in process_tree(root)}
        return {pid: ticks for pid, ticks in cpu_snapshot(os.getpid()).items() if pid not in servers}

    def cores(self) -> tuple[float, float]:
        """(foreign CPU-seconds, foreign cores on average) since construction."""
        busy = (_system_busy_ticks() - self.busy) / CLK_TCK
        own = cpu_seconds(self.own, self._own())
        servers = sum(
            cpu_seconds(before, cpu_snapshot(root)) for root, before in zip(self.roots, self.servers, strict=True)
        )
        foreign = max(busy - own - servers, 0.0)
        return foreign, foreign / max(time.monotonic() - self.wall, 1e-9)


def _warn_foreign(load: ForeignLoad, what: str) -> None:
    seconds, cores = load.cores()
    flag = "  <- other work competes for the CPUs: numbers are noisy" if cores > 0.2 else ""
    _log(f"{what}: other processes used {seconds:.1f} CPU-s ({cores:.2f} cores on average){flag}")


# --------------------------------------------------------------------------------------------------
# A raw SigV4-signed ECR client: botocore's signer, http.client, no boto3
# --------------------------------------------------------------------------------------------------


class SignedClient:
    """One persistent HTTP/1.1 connection; every call signed by botocore's SigV4Auth. A server
    that answers `Connection: close` (moto's werkzeug) gets a new connection per call, which
    http.client opens by itself; `connections` counts them."""

    def __init__(self, port: int, timeout: float = HTTP_TIMEOUT) -> None:
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}/"
        self.auth = SigV4Auth(Credentials(KEY_ID, SECRET), "ecr", REGION)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.connections = 0

    def connect(self) -> None:
        if self.conn.sock is None:
            self.conn.connect()
            self.connections += 1

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SignedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, operation: str, params: Mapping[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(params).encode()
        request = AWSRequest(
            method="POST",
            url=self.url,
            data=body,
            headers={"Host": self.host, "Content-Type": JSON_11, "X-Amz-Target": TARGET_PREFIX + operation},
        )
        self.auth.add_auth(request)
        if self.conn.sock is None:
            self.connections += 1
        try:
            self.conn.request("POST", "/", body, dict(request.headers.items()))
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            raise BenchError(f"{operation}: {type(exc).__name__}: {exc}") from exc
        return response.status, data

    def call_json(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        status, data = self.call(operation, params)
        if status != 200:
            raise BenchError(f"{operation}: HTTP {status}: {data[:300]!r}")
        try:
            parsed: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise BenchError(f"{operation}: response is not JSON: {data[:300]!r}") from exc
        return parsed


# --------------------------------------------------------------------------------------------------
# The image: one config and one layer blob, a manifest made unique by an annotation
# --------------------------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageBlobs:
    config: bytes
    layer: bytes

    @staticmethod
    def make() -> ImageBlobs:
        layer = os.urandom(1024)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
            },
            separators=(",", ":"),
        ).encode()
        return ImageBlobs(config, layer)

    def manifest(self, note: str) -> str:
        """A tiny OCI manifest; `note` (unique per call) makes its digest unique."""
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _sha(self.config), "size": len(self.config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": _sha(self.layer), "size": len(self.layer)}],
                "annotations": {"org.moorage.bench.id": note},
            },
            separators=(",", ":"),
        )


def seed_repository(client: SignedClient, repo: str, blobs: ImageBlobs, layers_required: bool) -> str:
    """Create `repo` and upload the image's config and layer into it through the ECR layer API.
    Returns a note when the server does not implement the layer API (moto) and `layers_required`
    is false."""
    created = client.call_json("CreateRepository", {"repositoryName": repo})
    if created.get("repository", {}).get("repositoryName") != repo:
        raise BenchError(f"CreateRepository {repo}: unexpected answer {created}")
    for blob in (blobs.config, blobs.layer):
        status, data = client.call("InitiateLayerUpload", {"repositoryName": repo})
        if status != 200:
            if layers_required:
                raise BenchError(f"InitiateLayerUpload: HTTP {status}: {data[:300]!r}")
            return f"InitiateLayerUpload answers HTTP {status} (not implemented); PutImage does not check layers"
        upload_id = json.loads(data)["uploadId"]
        part = client.call_json(
            "UploadLayerPart",
            {
                "repositoryName": repo,
                "uploadId": upload_id,
                "partFirstByte": 0,
                "partLastByte": len(blob) - 1,
                "layerPartBlob": base64.b64encode(blob).decode(),
            },
        )
        if part.get("lastByteReceived") != len(blob) - 1:
            raise BenchError(f"UploadLayerPart: unexpected answer {part}")
        done = client.call_json(
            "CompleteLayerUpload", {"repositoryName": repo, "uploadId": upload_id, "layerDigests": [_sha(blob)]}
        )
        if done.get("layerDigest") != _sha(blob):
            raise BenchError(f"CompleteLayerUpload: unexpected answer {done}")
    return ""


# --------------------------------------------------------------------------------------------------
# Client worker processes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One client's share of a load run: `kind` calls from `start_at` (time.time()) for
    `duration` seconds, or exactly `count` calls when given."""

    kind: str  # "create" | "put" | "describe" | "repos" | "batchget" | "list"
    port: int
    repo: str
    prefix: str  # unique per client and run: repository names, tags, annotations
    start_at: float
    duration: float
    count: int | None = None
    blobs: ImageBlobs | None = None


@dataclass
class TaskResult:
    calls: int = 0
    seconds: float = 0.0
    cpu: float = 0.0  # the worker process's own CPU-s during the run
    bad_status: int = 0
    check_failures: int = 0
    first_problem: str = ""
    connections: int = 0
    observed: Counter[str] = field(default_factory=Counter)
    crashed: str = ""


def _run_task(task: Task) -> TaskResult:
    result = TaskResult()
    client = SignedClient(task.port)
    blobs = task.blobs
    operation = {
        "create": "CreateRepository",
        "put": "PutImage",
        "describe": "DescribeImages",
        "repos": "DescribeRepositories",
        "batchget": "BatchGetImage",
        "list": "ListImages",
    }[task.kind]

    def params(index: int) -> dict[str, Any]:
        if task.kind == "create":
            return {"repositoryName": f"{task.prefix}-{index}"}
        if task.kind == "put":
            assert blobs is not None
            return {
                "repositoryName": task.repo,
                "imageManifest": blobs.manifest(f"{task.prefix}-{index}"),
                "imageTag": f"{task.prefix}-{index}",
            }
        if task.kind == "repos":
            return {"repositoryNames": [task.repo]}
        if task.kind == "batchget":  # the images the fill stored as fill-c0-<n>
            return {"repositoryName": task.repo, "imageIds": [{"imageTag": f"fill-c0-{index % BATCH_TAGS}"}]}
        return {"repositoryName": task.repo, "maxResults": PAGE_SIZE}

    def check(index: int, sent: dict[str, Any], body: bytes) -> tuple[str, str]:
        """(observation, problem) for one 200 response."""
        if task.kind == "create":
            repository = json.loads(body).get("repository") or {}
            if repository.get("repositoryName") != sent["repositoryName"]:
                return "", f"CreateRepository {sent['repositoryName']}: answered {body[:200]!r}"
            return "", ""
        if task.kind == "put":
            image = json.loads(body).get("image") or {}
            image_id = image.get("imageId") or {}
            if image_id.get("imageTag") != sent["imageTag"] or image.get("repositoryName") != task.repo:
                return "", f"PutImage {sent['imageTag']}: answered {body[:200]!r}"
            exact = image_id.get("imageDigest") == _sha(sent["imageManifest"].encode())
            return ("digest = sha256(manifest)" if exact else "digest != sha256(manifest)"), ""
        if index % CHECK_EVERY:
            return "", ""
        if task.kind in ("repos", "batchget", "list"):
            found = json.loads(body)
            key = {"repos": "repositories", "batchget": "images", "list": "imageIds"}[task.kind]
            if not found.get(key) or found.get("failures"):
                return "", f"{operation}: answered {body[:200]!r}"
            return "", ""
        page = json.loads(body)
        details = page.get("imageDetails")
        if not isinstance(details, list) or not details or "imageDigest" not in details[0]:
            return "", f"DescribeImages: answered {body[:200]!r}"
        return f"{len(details)} images per page{', nextToken' if page.get('nextToken') else ''}", ""

    try:
        client.connect()
        time.sleep(max(0.0, task.start_at - time.time()))
        cpu_before = time.process_time()
        began = time.perf_counter()
        deadline = began + task.duration
        index = 0
        while (index < task.count) if task.count is not None else (time.perf_counter() < deadline):
            sent = params(index)
            try:
                status, body = client.call(operation, sent)
            except BenchError as exc:
                result.bad_status += 1
                result.first_problem = result.first_problem or str(exc)
                index += 1
                continue
            if status != 200:
                result.bad_status += 1
                result.first_problem = result.first_problem or f"{operation}: HTTP {status}: {body[:300]!r}"
            else:
                try:
                    seen, problem = check(index, sent, body)
                except ValueError as exc:
                    seen, problem = "", f"{operation}: bad JSON ({exc}): {body[:200]!r}"
                if seen:
                    result.observed[seen] += 1
                if problem:
                    result.check_failures += 1
                    result.first_problem = result.first_problem or problem
            index += 1
        result.seconds = time.perf_counter() - began
        result.cpu = time.process_time() - cpu_before
        result.calls = index
        result.connections = client.connections
    finally:
        client.close()
    return result


def _worker_main(conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (Ctrl-C)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            result = _run_task(task)
        except Exception as exc:  # reported to the parent, which fails the measurement
            result = TaskResult(crashed=f"{type(exc).__name__}: {exc}")
        conn.send(result)


class ClientPool:
    """`size` forked worker processes, each running one Task at a time."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("fork")
        self.workers: list[tuple[BaseProcess, Connection]] = []
        for index in range(size):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker_main, args=(child_end,), name=f"ecr-client-{index}", daemon=True)
            process.start()
            child_end.close()
            self.workers.append((process, parent_end))

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self.workers if process.pid is not None]

    def run(self, tasks: Sequence[Task], timeout: float) -> list[TaskResult]:
        if len(tasks) > len(self.workers):
            raise BenchError(f"{len(tasks)} tasks for {len(self.workers)} client processes")
        for (_, conn), task in zip(self.workers, tasks, strict=False):
            conn.send(task)
        results: list[TaskResult] = []
        deadline = time.monotonic() + timeout
        for process, conn in self.workers[: len(tasks)]:
            while not conn.poll(0.2):
                if not process.is_alive():
                    raise BenchError(f"client process {process.name} died (exit code {process.exitcode})")
                if time.monotonic() > deadline:
                    raise BenchError(f"client process {process.name} did not finish in {timeout:.0f} s")
            result: TaskResult = conn.recv()
            if result.crashed:
                raise BenchError(f"client process {process.name} failed: {result.crashed}")
            results.append(result)
        return results

    def close(self) -> None:
        for _process, conn in self.workers:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for process, conn in self.workers:
            process.join(2)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()
        self.workers = []


# --------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------


@dataclass
class Server:
    key: str
    title: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    layers_required: bool

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return re.sub(r"(?i)(secret[a-z_]*\s*[=:]\s*)\S+", r"\1<redacted>", tail)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"{self.title} exited with status {self.process.returncode}; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the process group this script created for it (start_new_session),
        which holds the server and any worker it spawned."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def _wait_ready(server: Server, timeout: float) -> None:
    """Until a signed DescribeRepositories answers 200."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with SignedClient(server.port, timeout=5) as client:
                status, body = client.call("DescribeRepositories", {})
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except BenchError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{server.title} not ready after {timeout:.0f}s ({last}); log tail:\n{server.log_tail()}")


def _started(
    key: str,
    title: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    log_path: Path,
    layers_required: bool,
    timeout: float,
) -> Server:
    """`command` started in its own session (its output to `log_path`), once it answers a signed call."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(key, title, port, process, log_path, layers_required=layers_required)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def start_moorage(workdir: Path, workers: int, source: Path, timeout: float = 90.0) -> Server:
    data_dir = workdir / "moorage-data"
    port = free_port()
    log_path = workdir / "moorage.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["MOORAGE_ROOT_ACCESS_KEY_ID"] = KEY_ID
    env["MOORAGE_ROOT_SECRET_ACCESS_KEY"] = SECRET
    # Benchmark this working tree's sources (or --moorage-src), whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "moorage",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--auth",
        "sigv4",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    title = f"moorage ({workers} worker{'s' if workers != 1 else ''}, sigv4)"
    return _started("moorage", title, command, env, port, log_path, True, timeout)


def start_moto(workdir: Path, binary: str, timeout: float = 60.0) -> Server:
    if shutil.which(binary) is None:
        raise BenchError(f"{binary!r} not found (pip install 'moto[server]')")
    port = free_port()
    log_path = workdir / "moto.log"  # werkzeug logs every request here, as moto_server does by default
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    command = [binary, "-H", "127.0.0.1", "-p", str(port)]
    return _started("moto", "moto_server", command, env, port, log_path, False, timeout)


def start_floor(workdir: Path, source: Path, timeout: float = 30.0) -> Server:
    """bench/ecr_floor_app.py under granian exactly as `moorage serve` runs (ASGI, uvloop, 1 worker):
    the HTTP stack, Moorage's SigV4 check and one fsynced SQLite commit per write, no registry."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env["MOORAGE_BENCH_FLOOR_DIR"] = str(workdir / "floor-data")
    env["MOORAGE_ROOT_SECRET_ACCESS_KEY"] = SECRET
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, str(source), env.get("PYTHONPATH")]))
    title = "floor (granian ASGI, SigV4 check + one fsynced SQLite statement, no registry)"
    command = granian_command("ecr_floor_app:app", port)
    return _started(FLOOR, title, command, env, port, workdir / "floor.log", False, timeout)


def moto_version() -> str:
    try:
        from importlib.metadata import version

        return f"moto {version('moto')}"
    except Exception:
        return "moto (unknown version)"


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    calls: int
    seconds: float
    rate: float
    server_cpu_us: float  # per call
    client_cpu_us: float  # per call
    server_cores: float
    client_cores: float
    connections_per_call: float
    observed: Counter[str]
    problems: str


def run_load(
    pool: ClientPool,
    server: Server,
    kind: str,
    repo: str,
    prefix: str,
    clients: int,
    duration: float,
    blobs: ImageBlobs | None = None,
    total: int | None = None,
) -> LoadResult:
    """`clients` worker processes calling `kind` at once for `duration` seconds (or `total` calls
    in all); server CPU over the window."""
    server.check_alive()
    counts: list[int | None] = [None] * clients
    if total is not None:
        counts = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    start_at = time.time() + 0.3  # every client connects first, then all start together
    tasks = [
        Task(kind, server.port, repo, f"{prefix}-c{i}", start_at, duration, counts[i], blobs) for i in range(clients)
    ]
    before = cpu_snapshot(server.pid)
    results = pool.run(tasks, timeout=(duration if total is None else 0) + 600)
    cpu = cpu_seconds(before, cpu_snapshot(server.pid))
    calls = sum(r.calls for r in results)
    seconds = max(r.seconds for r in results)
    bad = sum(r.bad_status + r.check_failures for r in results)
    first = next((r.first_problem for r in results if r.first_problem), "")
    if calls == 0:
        raise BenchError(f"{server.key} {kind}: no calls completed ({first})")
    if bad > max(calls // 100, 0) or (total is not None and bad):
        raise BenchError(f"{server.key} {kind}: {bad} of {calls} calls failed; first: {first}")
    observed: Counter[str] = Counter()
    for r in results:
        observed.update(r.observed)
    client_cpu = sum(r.cpu for r in results)
    return LoadResult(
        calls=calls,
        seconds=seconds,
        rate=calls / seconds,
        server_cpu_us=cpu * 1e6 / calls,
        client_cpu_us=client_cpu * 1e6 / calls,
        server_cores=cpu / seconds,
        client_cores=client_cpu / seconds,
        connections_per_call=sum(r.connections for r in results) / calls,
        observed=observed,
        problems=f"{bad} failed calls; first: {first}" if bad else "",
    )


@dataclass
class ListingResult:
    listings: int
    seconds: float
    pages: int
    server_cpu_us: float  # per listing
    client_cpu_us: float  # per listing


def boto3_client(port: int) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name=REGION)
    return session.client(
        "ecr",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=HTTP_TIMEOUT),
    )


def list_all(client: Any, repo: str, images: int) -> tuple[int, int]:
    """One full DescribeImages listing through the paginator: (pages, distinct digests)."""
    paginator = client.get_paginator("describe_images")
    digests: set[str] = set()
    pages = 0
    count = 0
    for page in paginator.paginate(repositoryName=repo, PaginationConfig={"PageSize": PAGE_SIZE}):
        pages += 1
        for detail in page["imageDetails"]:
            digests.add(detail["imageDigest"])
            count += 1
    if count != images:
        raise BenchError(f"full listing returned {count} images, expected {images}")
    return pages, len(digests)


def run_listing(server: Server, client: Any, repo: str, images: int, duration: float) -> ListingResult:
    """Full listings back to back for `duration` seconds (at least 3) by one boto3 client."""
    server.check_alive()
    before = cpu_snapshot(server.pid)
    cpu_before = time.process_time()
    began = time.perf_counter()
    listings = 0
    pages = 0
    try:
        while listings < 3 or time.perf_counter() - began < duration:
            pages, _ = list_all(client, repo, images)
            listings += 1
    except BenchError:
        raise
    except Exception as exc:  # botocore errors
        raise BenchError(f"{server.key} full listing: {type(exc).__name__}: {exc}") from exc
    seconds = time.perf_counter() - began
    client_cpu = time.process_time() - cpu_before
    cpu = cpu_seconds(before, cpu_snapshot(server.pid))
    return ListingResult(listings, seconds, pages, cpu * 1e6 / listings, client_cpu * 1e6 / listings)


# --------------------------------------------------------------------------------------------------
# Results and the report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    key: str
    label: str
    unit: str  # what one "call" is in this row


OPERATIONS = (
    Operation("create", "CreateRepository", "call"),
    Operation("put", "PutImage", "call"),
    Operation("describe", f"DescribeImages, 1 page of {PAGE_SIZE}", "call"),
    Operation("repos", "DescribeRepositories, 1 by name", "call"),
    Operation("batchget", "BatchGetImage, 1 by tag", "call"),
    Operation("list", f"ListImages, 1 page of {PAGE_SIZE}", "call"),
    Operation("listing", "DescribeImages, all {images} (paginator)", "listing"),
)
METRIC_KINDS = ("rate", "cpu", "client", "server_cores", "client_cores", "conn", "ms", "pages")
BATCH_TAGS = 10  # BatchGetImage cycles through this many tags of the filled repository
CPU_TARGET = 0.2  # server CPU per call <= 1/5 of moto's


@dataclass
class Metric:
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in SERVER_KEYS})
    errors: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in SERVER_KEYS})

    def median(self, server: str) -> float | None:
        values = self.samples[server]
        return statistics.median(values) if values else None

    def ratio(self, server: str = "moorage") -> float | None:
        """`server`'s median over moto's."""
        ours, theirs = self.median(server), self.median("moto")
        if ours is None or theirs is None or theirs == 0:
            return None
        return ours / theirs


class Results:
    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {f"{op.key}_{kind}": Metric() for op in OPERATIONS for kind in METRIC_KINDS}
        self.notes: dict[str, set[str]] = {k: set() for k in SERVER_KEYS}

    def get(self, op: str, kind: str) -> Metric:
        return self.metrics[f"{op}_{kind}"]

    def record(self, op: str, server: str, values: Mapping[str, float]) -> None:
        for kind, value in values.items():
            self.get(op, kind).samples[server].append(value)

    def fail(self, op: str, server: str, error: str) -> None:
        for kind in METRIC_KINDS:
            self.get(op, kind).errors[server].append(error)

    def met(self, op: str) -> bool | None:
        ratio = self.get(op, "cpu").ratio()
        return None if ratio is None else ratio <= CPU_TARGET

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, metric in self.metrics.items():
            if not any(metric.samples.values()) and not any(metric.errors.values()):
                continue
            out[key] = {
                "moorage": metric.median("moorage"),
                "moto": metric.median("moto"),
                "floor": metric.median(FLOOR),
                "ratio": metric.ratio(),
                "floor_ratio": metric.ratio(FLOOR),
                "samples": metric.samples,
                "errors": {k: v for k, v in metric.errors.items() if v},
            }
        for op in OPERATIONS:
            out[f"{op.key}_cpu"]["target"] = f"<= {CPU_TARGET:.2f}x moto"
            out[f"{op.key}_cpu"]["met"] = self.met(op.key)
        return out


def _fmt(value: float | None, spec: str = "{:,.0f}") -> str:
    return "-" if value is None else spec.format(value)


def _cell(metric: Metric, server: str, spec: str = "{:,.0f}") -> str:
    value = metric.median(server)
    if value is None:
        return "error" if metric.errors[server] else "-"
    return spec.format(value)


def print_report(results: Results, images: int, header: str, footnotes: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(240, shutil.get_terminal_size().columns))
    console.print(header, markup=False, highlight=False)
    table = Table(title="calls per second and server CPU per call (medians; the last row counts listings, not calls)")
    for name, justify in (
        ("operation", "left"),
        ("moorage calls/s", "right"),
        ("moto calls/s", "right"),
        ("ratio", "right"),
        ("moorage CPU-µs/call", "right"),
        ("moto CPU-µs/call", "right"),
        ("CPU ratio", "right"),
        ("≤ 1/5 moto", "left"),
        ("floor CPU-µs/call", "right"),
        ("floor / moto", "right"),
        ("client CPU-µs/call m / moto", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for op in OPERATIONS:
        rate, cpu, client = results.get(op.key, "rate"), results.get(op.key, "cpu"), results.get(op.key, "client")
        met = results.met(op.key)
        status = "[yellow]n/a[/yellow]" if met is None else ("[green]met[/green]" if met else "[red]MISSED[/red]")
        rate_ratio, cpu_ratio = rate.ratio(), cpu.ratio()
        marked = op.key == "describe" and any("ignores maxResults" in note for note in results.notes["moto"])
        table.add_row(
            op.label.format(images=f"{images:,}") + (" *" if marked else ""),
            _cell(rate, "moorage", "{:,.1f}" if op.unit != "call" else "{:,.0f}"),
            _cell(rate, "moto", "{:,.1f}" if op.unit != "call" else "{:,.0f}"),
            _fmt(rate_ratio, "{:.2f}x"),
            _cell(cpu, "moorage"),
            _cell(cpu, "moto"),
            _fmt(cpu_ratio, "{:.3f}x"),
            status,
            _cell(cpu, FLOOR),
            _fmt(cpu.ratio(FLOOR), "{:.3f}x"),
            f"{_cell(client, 'moorage')} / {_cell(client, 'moto')}",
        )
    console.print(table)

    detail = Table(title="where the cores went (medians; 'cores' = CPU-s per wall second)")
    for name in ("operation", "server", "server cores", "client cores", "TCP connections/call", "wall ms/listing"):
        detail.add_column(name, justify="left" if name in ("operation", "server") else "right")
    for op in OPERATIONS:
        for server in (s for s in SERVER_KEYS if _takes(s, op.key)):
            detail.add_row(
                op.label.format(images=f"{images:,}"),
                server,
                _cell(results.get(op.key, "server_cores"), server, "{:.2f}"),
                _cell(results.get(op.key, "client_cores"), server, "{:.2f}"),
                _cell(results.get(op.key, "conn"), server, "{:.2f}") if op.unit == "call" else "-",
                _cell(results.get(op.key, "ms"), server, "{:,.1f}") if op.unit != "call" else "-",
            )
    console.print(detail)

    verdicts = []
    for op in OPERATIONS:
        met = results.met(op.key)
        verdict = "n/a" if met is None else ("met" if met else "MISSED")
        ratio = _fmt(results.get(op.key, "cpu").ratio(), "{:.3f}x")
        verdicts.append(f"{op.label.format(images=f'{images:,}')}: {verdict} ({ratio})")
    console.print("target: server CPU per call ≤ 1/5 of moto's — " + "; ".join(verdicts), markup=False, highlight=False)
    for key, metric in results.metrics.items():
        if not key.endswith("_rate"):
            continue
        for server in SERVER_KEYS:
            for error in dict.fromkeys(metric.errors[server]):
                console.print(f"[red]error[/red] {key[:-5]} ({server}): {error}", markup=True, highlight=False)
    for server in SERVER_KEYS:
        for note in sorted(results.notes[server]):
            console.print(f"note ({server}): {note}", markup=False, highlight=False)
    for footnote in footnotes:
        console.print(footnote, markup=False, highlight=False)


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


@dataclass
class Options:
    rounds: int
    duration: float
    clients: int
    workers: int
    images: int
    json_path: Path | None
    tmp_dir: Path | None
    quick: bool
    keep_tmp: bool
    moorage_src: Path
    moto_binary: str
    floor: bool = True
    growth: bool = False
    growth_small: tuple[int, int] = (200, 200)
    growth_large: tuple[int, int] = (40_000, 100_000)


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description="Benchmark Moorage's ECR API against moto_server side by side.")
    parser.add_argument("--rounds", type=int, default=None, help="rounds to take medians over [3; 1 with --quick]")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load run [5; 2 with --quick]")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes [4]")
    parser.add_argument("--workers", type=int, default=1, help="Moorage worker processes [1]")
    parser.add_argument("--images", type=int, default=1000, help="images in the DescribeImages repository [1000]")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp dir goes [system default]")
    parser.add_argument(
        "--moorage-src",
        type=Path,
        default=REPO_ROOT / "src",
        help="directory holding the moorage package to benchmark [this checkout's src]",
    )
    parser.add_argument("--moto-binary", default="moto_server")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (server logs, data)")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s load runs")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor column (bench/ecr_floor_app.py: the same HTTP stack checking SigV4 and "
        "committing one fsynced SQLite statement per write, with no registry)",
    )
    parser.add_argument(
        "--growth",
        action="store_true",
        help="instead: the growth series, a full page at 200 vs 40,000 repositories / 200 vs 100,000 images",
    )
    args = parser.parse_args(argv)
    quick: bool = args.quick
    options = Options(
        rounds=args.rounds if args.rounds is not None else (1 if quick else 3),
        duration=args.duration if args.duration is not None else (2.0 if quick else 5.0),
        clients=args.clients,
        workers=args.workers,
        images=args.images,
        json_path=args.json,
        tmp_dir=args.tmp_dir,
        quick=quick,
        keep_tmp=args.keep_tmp,
        moorage_src=args.moorage_src.resolve(),
        moto_binary=args.moto_binary,
        floor=not args.no_floor,
        growth=args.growth,
    )
    if not (options.moorage_src / "moorage" / "__init__.py").is_file():
        parser.error(f"--moorage-src {options.moorage_src}: no moorage package there")
    for name in ("rounds", "clients", "workers", "images"):
        if getattr(options, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if options.duration <= 0:
        parser.error("--duration must be positive")
    return options


def _load_values(load: LoadResult) -> dict[str, float]:
    return {
        "rate": load.rate,
        "cpu": load.server_cpu_us,
        "client": load.client_cpu_us,
        "server_cores": load.server_cores,
        "client_cores": load.client_cores,
        "conn": load.connections_per_call,
    }


def _describe_note(results: Results, server: str, observed: Counter[str]) -> None:
    for seen in observed:
        if seen.endswith("per page") and not seen.startswith(f"{PAGE_SIZE} "):
            results.notes[server].add(
                f"DescribeImages ignores maxResults={PAGE_SIZE}: a 'page' is {seen.split()[0]} images, no nextToken"
            )
        elif seen.startswith("digest !="):
            results.notes[server].add("PutImage answers an imageDigest that is not sha256 of the manifest sent")


def measure(options: Options, pool: ClientPool, servers: list[Server]) -> Results:
    results = Results()
    blobs = ImageBlobs.make()
    clients = options.clients
    describe_repo = "bench/describe"
    listing_clients: dict[str, Any] = {}

    for server in servers:
        with SignedClient(server.port) as client:
            note = seed_repository(client, describe_repo, blobs, server.layers_required)
            if note and server.key != FLOOR:
                results.notes[server.key].add(note)
            seed_repository(client, "bench/put-warmup", blobs, server.layers_required)
        _log(f"{server.key}: populating {describe_repo} with {options.images:,} images (PutImage)")
        fill = run_load(pool, server, "put", describe_repo, "fill", clients, 0.0, blobs=blobs, total=options.images)
        _log(f"  {server.key:7} {fill.calls:,} PutImage in {fill.seconds:.1f} s")
        if not _takes(server.key, "listing"):
            continue
        listing_clients[server.key] = boto3_client(server.port)
        pages, distinct = list_all(listing_clients[server.key], describe_repo, options.images)
        if distinct != options.images:
            results.notes[server.key].add(
                f"the {options.images:,} images PutImage stored carry {distinct:,} distinct imageDigest(s) "
                "(derived from the layer digests, not the manifest)"
            )
        if pages != -(-options.images // PAGE_SIZE):
            results.notes[server.key].add(
                f"the paginator's full listing of {options.images:,} images takes {pages} page(s) "
                f"of PageSize {PAGE_SIZE}"
            )

    warm = 0.5 if options.quick else 1.0
    _log(f"warm-up: {warm:g} s of each load per server")
    for server in servers:
        run_load(pool, server, "create", "", "bench/warm", clients, warm)
        run_load(pool, server, "put", "bench/put-warmup", "warm", clients, warm, blobs=blobs)
        for kind in ("describe", "repos", "batchget", "list"):
            if _takes(server.key, kind):
                run_load(pool, server, kind, describe_repo, "warm", clients, warm)
        if _takes(server.key, "listing"):
            run_listing(server, listing_clients[server.key], describe_repo, options.images, 0.0)

    pids = [server.pid for server in servers]
    round_load = ForeignLoad(pids)
    for round_index in range(options.rounds):
        if round_index:
            _warn_foreign(round_load, f"round {round_index}")
            round_load = ForeignLoad(pids)
        order = servers if round_index % 2 == 0 else servers[::-1]
        _log(f"round {round_index + 1}/{options.rounds} (first: {order[0].key})")
        put_repo = f"bench/put-r{round_index}"
        for server in order:
            with SignedClient(server.port) as client:
                seed_repository(client, put_repo, blobs, server.layers_required)
        for op in OPERATIONS:
            for server in (s for s in order if _takes(s.key, op.key)):
                server.check_alive()
                try:
                    if op.key == "listing":
                        listing = run_listing(
                            server, listing_clients[server.key], describe_repo, options.images, options.duration
                        )
                        results.record(
                            op.key,
                            server.key,
                            {
                                "rate": listing.listings / listing.seconds,
                                "cpu": listing.server_cpu_us,
                                "client": listing.client_cpu_us,
                                "server_cores": listing.server_cpu_us * listing.listings / 1e6 / listing.seconds,
                                "client_cores": listing.client_cpu_us * listing.listings / 1e6 / listing.seconds,
                                "ms": listing.seconds * 1000 / listing.listings,
                                "pages": listing.pages,
                            },
                        )
                        _log(
                            f"  {server.key:7} {'listing':8} {listing.seconds * 1000 / listing.listings:8,.1f} "
                            f"ms/listing ({listing.pages} pages)  {listing.server_cpu_us:9,.0f} server CPU-µs/listing "
                            f"(client {listing.client_cpu_us:,.0f})"
                        )
                        continue
                    repo = {"create": "", "put": put_repo}.get(op.key, describe_repo)
                    prefix = f"bench/create-r{round_index}" if op.key == "create" else f"r{round_index}"
                    load = run_load(pool, server, op.key, repo, prefix, clients, options.duration, blobs=blobs)
                except BenchError as exc:
                    server.check_alive()
                    results.fail(op.key, server.key, str(exc))
                    _log(f"  {server.key} {op.key} FAILED: {exc}")
                    continue
                results.record(op.key, server.key, _load_values(load))
                _describe_note(results, server.key, load.observed)
                _log(
                    f"  {server.key:7} {op.key:8} {load.rate:8,.0f} calls/s  {load.server_cpu_us:9,.0f} server "
                    f"CPU-µs/call (client {load.client_cpu_us:,.0f}; cores: server {load.server_cores:.2f}, "
                    f"clients {load.client_cores:.2f}; {load.connections_per_call:.2f} conn/call)"
                    + (f"  [{load.problems}]" if load.problems else "")
                )
    _warn_foreign(round_load, f"round {options.rounds}")
    return results


# --------------------------------------------------------------------------------------------------
# The growth series: a full page at a small and at a large registry (`--growth`)
# --------------------------------------------------------------------------------------------------

GROWTH_IMAGES_REPO = "growth/images"


@dataclass(frozen=True)
class GrowthScale:
    key: str
    repositories: int  # including GROWTH_IMAGES_REPO
    images: int  # in GROWTH_IMAGES_REPO


@dataclass(frozen=True)
class GrowthCase:
    label: str
    operation: str
    params: Mapping[str, Any]
    items: str  # the response's list of items


GROWTH_CASES = (
    GrowthCase("DescribeRepositories", "DescribeRepositories", {}, "repositories"),
    GrowthCase("DescribeImages", "DescribeImages", {"repositoryName": GROWTH_IMAGES_REPO}, "imageDetails"),
    GrowthCase("ListImages", "ListImages", {"repositoryName": GROWTH_IMAGES_REPO}, "imageIds"),
)


def seed_growth(data_dir: Path, source: Path, scale: GrowthScale) -> float:
    """Migrate a fresh embedded store in `data_dir` and fill it through the metadata store itself
    (not 100,000 HTTP calls): `scale.repositories` repositories, one of them holding `scale.images`
    images, four in five with one tag. Returns the seconds it took."""
    if str(source) not in sys.path:
        sys.path.insert(0, str(source))
    began = time.perf_counter()
    asyncio.run(_seed_growth(data_dir, scale))
    return time.perf_counter() - began


async def _seed_growth(data_dir: Path, scale: GrowthScale) -> None:
    from datetime import UTC, datetime

    from moorage.config import MetadataSettings
    from moorage.metadata.migrate import upgrade
    from moorage.metadata.sql import SqlMetadataStore
    from moorage.model import Digest, Image, RegistryRef, Repository, RepositoryName

    url = MetadataSettings().effective_url(data_dir)
    await upgrade(url)
    store = SqlMetadataStore.open(url)
    registry = RegistryRef(ACCOUNT, REGION)
    now = datetime.now(UTC)
    batch = 2000
    try:
        names = [GROWTH_IMAGES_REPO] + [f"growth/r{i:06d}" for i in range(scale.repositories - 1)]
        repo_id = 0
        for start in range(0, len(names), batch):
            async with store.transaction(write=True) as tx:
                for name in names[start : start + batch]:
                    repo = await tx.repositories.create(Repository(registry, RepositoryName(name), now))
                    repo_id = repo_id or repo.id
        blobs = ImageBlobs.make()
        for start in range(0, scale.images, batch):
            async with store.transaction(write=True) as tx:
                for i in range(start, min(start + batch, scale.images)):
                    body = blobs.manifest(f"growth-{i}").encode()
                    image = Image(
                        registry,
                        RepositoryName(GROWTH_IMAGES_REPO),
                        Digest.parse(_sha(body)),
                        OCI_MANIFEST,
                        len(body),
                        now,
                        config_media_type=OCI_CONFIG,
                        image_size=len(blobs.config) + len(blobs.layer),
                    )
                    await tx.images.put(repo_id, image, body, [])
                    if i % 5:
                        await tx.images.set_tag(repo_id, f"t{i:06d}", image.digest, now)
    finally:
        await store.close()


@dataclass
class GrowthTiming:
    ms: float  # median wall time of one page
    cpu_ms: float  # server CPU per page


def _growth_params(client: SignedClient, case: GrowthCase, skip: int) -> dict[str, Any]:
    """The request for a full page starting after the first `skip` items (walked to in pages of
    1,000: page tokens are signed, so the only way to a page deep in a listing is to walk there)."""
    client.close()  # a fresh connection: the server may have closed an idle one
    params = dict(case.params)
    walked = 0
    while walked < skip:
        answer = client.call_json(case.operation, {**params, "maxResults": min(1000, skip - walked)})
        walked += len(answer[case.items])
        if "nextToken" not in answer:
            raise BenchError(f"{case.operation}: the listing ended after {walked} items, wanted {skip}")
        params["nextToken"] = answer["nextToken"]
    return {**params, "maxResults": PAGE_SIZE}


def time_growth_page(
    server: Server, client: SignedClient, case: GrowthCase, params: Mapping[str, Any], duration: float
) -> GrowthTiming:
    """The same page requested back to back for `duration` seconds (at least 10 calls)."""
    server.check_alive()
    client.close()  # a fresh connection: the server may have closed an idle one (not timed below)
    client.connect()
    times: list[float] = []
    before = cpu_snapshot(server.pid)
    began = time.perf_counter()
    while len(times) < 10 or time.perf_counter() - began < duration:
        start = time.perf_counter()
        status, data = client.call(case.operation, params)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise BenchError(f"{case.operation}: HTTP {status}: {data[:300]!r}")
        if len(times) == 1 and len(json.loads(data)[case.items]) != PAGE_SIZE:
            raise BenchError(f"{case.operation}: a page of {len(json.loads(data)[case.items])} items, not {PAGE_SIZE}")
    cpu = cpu_seconds(before, cpu_snapshot(server.pid))
    return GrowthTiming(statistics.median(times) * 1000, cpu * 1000 / len(times))


def run_growth(options: Options, workdir: Path) -> int:
    scales = (
        GrowthScale("small", options.growth_small[0], options.growth_small[1]),
        GrowthScale("large", options.growth_large[0], options.growth_large[1]),
    )
    servers: dict[str, Server] = {}
    try:
        for scale in scales:
            data_dir = workdir / scale.key / "moorage-data"
            _log(f"seeding {scale.key}: {scale.repositories:,} repositories, {scale.images:,} images in one")
            took = seed_growth(data_dir, options.moorage_src, scale)
            _log(f"  seeded in {took:.1f} s")
            servers[scale.key] = start_moorage(workdir / scale.key, options.workers, options.moorage_src)
        clients = {key: SignedClient(server.port) for key, server in servers.items()}
        # Pages: the first, and one in the middle of the listing (after half of the items).
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for case in GROWTH_CASES:
            for where in ("first", "middle"):
                params: dict[str, Any] = {}
                for scale in scales:
                    total = scale.repositories if case.operation == "DescribeRepositories" else scale.images
                    skip = 0 if where == "first" else total // 2
                    params[scale.key] = _growth_params(clients[scale.key], case, skip)
                rows.append((case.label, where, params))
        for label, _, params in rows:  # warm-up: caches, statement compilation
            case = next(c for c in GROWTH_CASES if c.label == label)
            for scale in scales:
                time_growth_page(servers[scale.key], clients[scale.key], case, params[scale.key], 0.2)
        timings: dict[tuple[str, str, str], list[GrowthTiming]] = {}
        for round_index in range(options.rounds):
            order = scales if round_index % 2 == 0 else scales[::-1]
            _log(f"growth round {round_index + 1}/{options.rounds} (first: {order[0].key})")
            for label, where, params in rows:
                case = next(c for c in GROWTH_CASES if c.label == label)
                for scale in order:
                    timing = time_growth_page(
                        servers[scale.key], clients[scale.key], case, params[scale.key], options.duration
                    )
                    timings.setdefault((label, where, scale.key), []).append(timing)
        small, large = scales
        print()
        print(
            f"moorage ({source_revision(options.moorage_src)}, --workers {options.workers}, sigv4, embedded store) — "
            f"a full page ({PAGE_SIZE} items) as the registry grows; {options.rounds} round(s) of "
            f"{options.duration:g} s per page, one client, medians"
        )
        header = (
            f"{'operation':22} {'page':7} {'ms/page at ' + small.key:>17} {'ms/page at ' + large.key:>17} "
            f"{'ratio':>7} {'CPU-ms ' + small.key:>15} {'CPU-ms ' + large.key:>15}"
        )
        print(header)
        print("-" * len(header))
        document: list[dict[str, Any]] = []
        for label, where, _ in rows:
            ms = {s.key: statistics.median(t.ms for t in timings[label, where, s.key]) for s in scales}
            cpu = {s.key: statistics.median(t.cpu_ms for t in timings[label, where, s.key]) for s in scales}
            ratio = ms[large.key] / ms[small.key]
            print(
                f"{label:22} {where:7} {ms[small.key]:17.2f} {ms[large.key]:17.2f} {ratio:6.2f}x "
                f"{cpu[small.key]:15.2f} {cpu[large.key]:15.2f}"
            )
            document.append({"operation": label, "page": where, "ms": ms, "server_cpu_ms": cpu, "ratio": ratio})
        print(
            f"small = {small.repositories:,} repositories / {small.images:,} images in {GROWTH_IMAGES_REPO}; "
            f"large = {large.repositories:,} / {large.images:,}; ratio = large / small (target ≤ 1.5x); "
            "'middle' = the page after half of the listing; four in five images carry one tag"
        )
        if options.json_path is not None:
            options.json_path.write_text(json.dumps({"growth": document}, indent=2) + "\n")
            _log(f"wrote {options.json_path}")
        for client in clients.values():
            client.close()
        return 0
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for server in servers.values():
            tail = server.log_tail(40)
            if tail:
                print(f"--- {server.title} log tail ({server.log_path}) ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        for server in servers.values():
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(list(sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored

    workdir = Path(tempfile.mkdtemp(prefix="moorage-bench-ecr-", dir=options.tmp_dir))
    if options.growth:
        try:
            return run_growth(options, workdir)
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            return 130
        finally:
            if options.keep_tmp:
                _log(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    servers: list[Server] = []
    pool: ClientPool | None = None
    try:
        # Fork the client processes first: they inherit nothing of the servers.
        pool = ClientPool(options.clients)
        _log(f"workdir {workdir}; starting moorage and moto_server; {options.clients} client processes")
        servers.append(start_moorage(workdir, options.workers, options.moorage_src))
        servers.append(start_moto(workdir, options.moto_binary))
        if options.floor:
            servers.append(start_floor(workdir, options.moorage_src))
        for server in servers:
            _log(f"  {server.title}: http://127.0.0.1:{server.port} (pid {server.pid})")
        load_before = os.getloadavg()[0]
        if load_before > 1.0:
            _log(f"warning: load average is {load_before:.1f} before the run (other work on this machine)")
        started = time.monotonic()
        foreign = ForeignLoad([server.pid for server in servers])
        results = measure(options, pool, servers)
        took = time.monotonic() - started
        foreign_seconds, foreign_cores = foreign.cores()
        header = (
            f"moorage ({source_revision(options.moorage_src)}, --workers {options.workers}, sigv4) vs "
            f"{moto_version()} moto_server — {options.rounds} round(s), medians; {options.duration:g} s load runs, "
            f"{options.clients} client processes (raw SigV4, botocore signer + http.client); "
            f"{os.cpu_count()} CPUs, took {took:.0f} s"
        )
        footnotes = [
            "CPU = utime+stime of the server process and its workers per call; ratios = moorage / moto; "
            "client CPU = the client processes' own CPU per call (signing, JSON, http.client)",
            "PutImage: a fresh repository per round and server (moto scans a repository's images on every "
            "PutImage, so its cost would otherwise grow across rounds)",
            "full listing: boto3 paginator, PageSize 100, one client; 'calls/s' = listings/s, CPU per listing",
            f"other processes on the machine used {foreign_cores:.2f} cores on average during the run "
            f"(load average {load_before:.1f} at start)"
            + ("  <- numbers are noisy, compare ratios only" if foreign_cores > 0.2 else ""),
        ]
        if options.floor:
            footnotes.append(
                "floor: bench/ecr_floor_app.py on the same stack (granian ASGI, uvloop, 1 worker): Moorage's "
                "SigV4 check, JSON decode, one SQLite statement (a write commits with one fsync: WAL, "
                "synchronous=FULL), an orjson answer; no validation, authorization, events or image model: "
                "the least any app on this stack pays for the call"
            )
        describe_m = results.get("describe", "cpu")
        page_sizes = {"moorage": float(PAGE_SIZE), "moto": float(PAGE_SIZE)}
        if any("ignores maxResults" in note for note in results.notes["moto"]):
            page_sizes["moto"] = float(options.images)
        per_image = {k: (describe_m.median(k) or 0.0) / size for k, size in page_sizes.items()}
        if all(per_image.values()):
            lead = (
                "* moto ignores maxResults, so each of its 'pages' holds all images; "
                if page_sizes["moto"] != PAGE_SIZE
                else "DescribeImages "
            )
            footnotes.append(
                f"{lead}per image described: moorage "
                f"{per_image['moorage']:,.1f} CPU-µs, moto {per_image['moto']:,.1f} CPU-µs "
                f"({per_image['moorage'] / per_image['moto']:.3f}x)"
            )
        print_report(results, options.images, header, footnotes)
        if options.json_path is not None:
            document = {
                "config": {
                    "rounds": options.rounds,
                    "duration_s": options.duration,
                    "clients": options.clients,
                    "workers": options.workers,
                    "images": options.images,
                    "page_size": PAGE_SIZE,
                    "moto": moto_version(),
                    "moorage_src": str(options.moorage_src),
                    "moorage_revision": source_revision(options.moorage_src),
                    "quick": options.quick,
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "seconds": took,
                    "foreign_cpu_seconds": foreign_seconds,
                    "foreign_cores_avg": foreign_cores,
                    "load_average_at_start": load_before,
                    "client": "raw SigV4 (botocore SigV4Auth) over http.client, one process per client",
                },
                "metrics": results.as_json(),
                "notes": {k: sorted(v) for k, v in results.notes.items()},
            }
            options.json_path.write_text(json.dumps(document, indent=2) + "\n")
            _log(f"wrote {options.json_path}")
        return 0
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for server in servers:
            tail = server.log_tail(40)
            if tail:
                print(f"--- {server.title} log tail ({server.log_path}) ---\n{tail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; stopping the servers", file=sys.stderr)
        return 130
    except SystemExit:
        print("terminated; stopping the servers", file=sys.stderr)
        raise
    finally:
        if pool is not None:
            pool.close()
        for server in servers:
            server.stop()
        if options.keep_tmp:
            _log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
