"""The real `moorage serve` process on a free loopback port, for protocol and end-to-end tests."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import httpx

from tests.support.services import free_port

__all__ = ["ROOT_ACCESS_KEY_ID", "ROOT_SECRET_ACCESS_KEY", "LiveServer", "free_port"]

# The root key every test server of the default account starts with (sigv4 mode).
ROOT_ACCESS_KEY_ID = "AKIAMOORAGETESTROOT1"
ROOT_SECRET_ACCESS_KEY = "moorage-test-root-secret-0123456789abcdef"


class LiveServer:
    running: set[LiveServer] = set()
    """`moorage serve --data-dir D --port P` as a child process, in SigV4 mode with a known root
    key unless `args` say otherwise.

    `start()` waits until /healthz answers 200; `stop()` ends it with SIGTERM, `kill()` with
    SIGKILL (crash tests). The same data dir can be served again after a stop or a kill.
    The server runs in a process group of its own, which `stop()` and `kill()` leave empty: no
    worker outlives them. `LiveServer.running` holds every server started and not yet stopped
    (tests/conftest.py stops and reports any left at the end of the session).
    `ecr()` is a boto3 client for it; `password()` a registry password from GetAuthorizationToken,
    `creds` the `AWS:<password>` pair skopeo/podman take and `auth` the same for httpx.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.args = list(args)
        self.env = {
            "MOORAGE_ROOT_ACCESS_KEY_ID": ROOT_ACCESS_KEY_ID,
            "MOORAGE_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET_ACCESS_KEY,
            **(env or {}),
        }
        self._passwords: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def client(
        self,
        service: str,
        region: str = "us-east-1",
        *,
        access_key_id: str = ROOT_ACCESS_KEY_ID,
        secret_access_key: str = ROOT_SECRET_ACCESS_KEY,
    ) -> Any:
        """A boto3 client of one of the AWS faces this server answers on its one port (ecr,
        secretsmanager, signer)."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
        )

    def ecr(
        self,
        region: str = "us-east-1",
        *,
        access_key_id: str = ROOT_ACCESS_KEY_ID,
        secret_access_key: str = ROOT_SECRET_ACCESS_KEY,
    ) -> Any:
        return self.client("ecr", region, access_key_id=access_key_id, secret_access_key=secret_access_key)

    def secretsmanager(
        self,
        region: str = "us-east-1",
        *,
        access_key_id: str = ROOT_ACCESS_KEY_ID,
        secret_access_key: str = ROOT_SECRET_ACCESS_KEY,
    ) -> Any:
        return self.client("secretsmanager", region, access_key_id=access_key_id, secret_access_key=secret_access_key)

    def password(self, region: str = "us-east-1") -> str:
        if region not in self._passwords:
            data = self.ecr(region).get_authorization_token()["authorizationData"][0]
            self._passwords[region] = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]
        return self._passwords[region]

    @property
    def creds(self) -> str:
        return f"AWS:{self.password()}"

    @property
    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth("AWS", self.password())

    def start(self, timeout: float = 30.0) -> LiveServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
        env.update(self.env)
        command = [
            sys.executable,
            "-m",
            "moorage",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            *self.args,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        LiveServer.running.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.kill()  # whatever it started before it exited
                raise RuntimeError(f"moorage serve exited with {code}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"moorage serve did not become healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _signal(self, sig: signal.Signals, wait: float) -> None:
        process, self.process = self.process, None
        LiveServer.running.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        # The group is the server's own (start_new_session): whatever is left in it goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, 15)

    def kill(self) -> None:
        """SIGKILL the server and every process it started (its workers share its process group)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self._signal(signal.SIGKILL, 10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
