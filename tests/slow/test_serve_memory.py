"""Memory of the serving processes while one large blob streams in and another streams out.

Issue 16's target: every process of `moorage serve` (the parent and each worker) stays under
200 MiB RSS while a 4 GiB blob is uploaded and another 4 GiB blob is downloaded at the same time,
on the embedded store (SQLite + filesystem) and on PostgreSQL + SeaweedFS S3.

The test never holds a blob in memory: block `i` (1 MiB) is one fixed random block with `i`
written over its first 8 bytes, generated as it is sent. Blob A is uploaded first (streamed PATCH,
then PUT ?digest=), then blob B is uploaded while A is downloaded; the downloaded bytes must hash
to A's digest. VmRSS of the server's whole process tree is read from /proc every 100 ms from the
start of A's upload to the end of both transfers.

MOORAGE_MEMTEST_SIZE (bytes; default 4 GiB) sets the blob size, for machines without ~9 GiB free
per backend in /tmp.

Measured on the 2-core dev machine at 4 GiB (peak VmRSS): embedded, 1 worker: parent 31.7 MiB,
worker 113.7 MiB; embedded, 2 workers: 31.8 / 109.5 / 110.6 MiB; PostgreSQL + SeaweedFS, 1 worker:
parent 31.8 MiB, worker 150.8 and 158.4 MiB in two runs (an idle worker is ~107 MiB). About 4.5
minutes for all three.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.live import LiveServer
from tests.support.procs import rss_tree
from tests.support.seaweed import SeaweedS3
from tests.support.services import PostgresServer

pytestmark = [pytest.mark.slow]

MiB = 1024 * 1024
GiB = 1024 * MiB
LIMIT = 200 * MiB
SIZE = int(os.environ.get("MOORAGE_MEMTEST_SIZE", str(4 * GiB)))
BLOCK = MiB
SEND_CHUNK = 4 * BLOCK
_BASE = os.urandom(BLOCK)


def blocks(seed: int, size: int) -> Iterator[bytes]:
    """The blob `seed` of `size` bytes, in chunks of SEND_CHUNK (never held whole)."""
    sent = 0
    index = 0
    while sent < size:
        chunk = bytearray()
        while len(chunk) < SEND_CHUNK and sent + len(chunk) < size:
            chunk += seed.to_bytes(4, "big") + index.to_bytes(4, "big") + _BASE[8:]
            index += 1
        piece = bytes(chunk[: size - sent])
        sent += len(piece)
        yield piece


@dataclass
class Sampler:
    """Peak RSS per process of a server's tree, sampled every 100 ms in a thread."""

    root: int
    peaks: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, rss in rss_tree(self.root).items():
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
            self.samples += 1
            self._stop.wait(0.1)


def upload(client: httpx.Client, repo: str, seed: int) -> str:
    hasher = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for chunk in blocks(seed, SIZE):
            hasher.update(chunk)
            yield chunk

    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["location"]
    patched = client.patch(location, content=body(), headers={"content-type": "application/octet-stream"})
    assert patched.status_code == 202, patched.text
    digest = f"sha256:{hasher.hexdigest()}"
    done = client.put(patched.headers["location"], params={"digest": digest})
    assert done.status_code == 201, done.text
    return digest


def download(client: httpx.Client, repo: str, digest: str) -> tuple[str, int]:
    hasher = hashlib.sha256()
    received = 0
    with client.stream("GET", f"/v2/{repo}/blobs/{digest}") as response:
        assert response.status_code == 200, response.read()[:500]
        for chunk in response.iter_bytes(MiB):
            hasher.update(chunk)
            received += len(chunk)
    return f"sha256:{hasher.hexdigest()}", received


def _backend_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "embedded":
        return {}
    postgres: PostgresServer = request.getfixturevalue("postgres")
    s3: SeaweedS3 = request.getfixturevalue("seaweed")
    name = f"mem_{uuid.uuid4().hex[:10]}"
    return {
        "MOORAGE_METADATA__URL": postgres.create_database(name),
        "MOORAGE_STORAGE__BACKEND": "s3",
        "MOORAGE_STORAGE__S3__BUCKET": s3.create_bucket("mem"),
        "MOORAGE_STORAGE__S3__PREFIX": name.replace("_", "-"),
        "MOORAGE_STORAGE__S3__ENDPOINT_URL": s3.endpoint_url,
        "MOORAGE_STORAGE__S3__REGION": s3.region,
        "MOORAGE_STORAGE__S3__ACCESS_KEY_ID": s3.access_key,
        "MOORAGE_STORAGE__S3__SECRET_ACCESS_KEY": s3.secret_key,
    }


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    ("backend", "workers"),
    [("embedded", 1), ("embedded", 2), ("pg-s3", 1)],
    ids=["embedded", "embedded-2-workers", "pg-s3"],
)
def test_serving_processes_stay_under_200_mib(
    backend: str, workers: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    need = 2 * SIZE + GiB  # two blobs at rest, and the S3 staging of one (SeaweedFS is under /tmp too)
    free = shutil.disk_usage("/tmp").free
    if free < need:
        pytest.fail(f"{free / GiB:.1f} GiB free in /tmp, {need / GiB:.1f} GiB needed: set MOORAGE_MEMTEST_SIZE")
    env = _backend_env(backend, request)
    server = LiveServer(tmp_path / "data", args=["--workers", str(workers)], env=env)
    # The blobs go as soon as the server stops: pytest keeps tmp dirs, and the next case needs the room.
    request.addfinalizer(lambda: shutil.rmtree(server.data_dir, ignore_errors=True))
    with server:
        server.ecr().create_repository(repositoryName="mem/big")
        assert server.process is not None
        timeout = httpx.Timeout(600.0, connect=10.0)
        with (
            httpx.Client(base_url=server.url, auth=server.auth, timeout=timeout) as up,
            httpx.Client(base_url=server.url, auth=server.auth, timeout=timeout) as down,
            Sampler(server.process.pid) as sampler,
        ):
            began = time.monotonic()
            first = upload(up, "mem/big", 1)
            stored = time.monotonic()
            with ThreadPoolExecutor(2) as pool:
                second = pool.submit(upload, up, "mem/big", 2)
                fetched = pool.submit(download, down, "mem/big", first)
                digest, received = fetched.result()
                second.result()
            ended = time.monotonic()
    report = ", ".join(f"pid {pid}: {rss / MiB:.1f} MiB" for pid, rss in sorted(sampler.peaks.items()))
    print(
        f"\n{backend} ({workers} worker(s)), {SIZE / GiB:.2f} GiB blobs: first upload {stored - began:.1f} s, "
        f"upload + download {ended - stored:.1f} s, {sampler.samples} samples; peak RSS {report}"
    )
    assert received == SIZE
    assert digest == first
    assert len(sampler.peaks) >= workers + 1, f"expected the parent and {workers} worker(s): {sampler.peaks}"
    over = {pid: rss for pid, rss in sampler.peaks.items() if rss >= LIMIT}
    assert not over, f"processes over {LIMIT // MiB} MiB RSS: {report}"
