"""Start-up failures a user can cause, through the real `moorage serve`: each is one clear line on
stderr naming the setting, exit code 2, and no traceback (unless `--log-level debug`).

Also: one server per port (a second `serve` on a port in use fails, even beside a listener that
allows port sharing), and workers die with their parent."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.live import LiveServer, free_port
from tests.support.tls import self_signed


@dataclass
class Outcome:
    code: int
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def serve(data_dir: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> Outcome:
    """Run `moorage serve` expecting it to exit by itself; a server that starts instead is stopped
    (with everything it started) and fails the test."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    environ.update(env or {})
    command = [sys.executable, "-m", "moorage", "serve", "--data-dir", str(data_dir), *args]
    if "--port" not in args:
        command += ["--port", str(free_port())]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"moorage serve {' '.join(args)} did not exit within {timeout}s: it started")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return Outcome(process.returncode, stderr.decode(errors="replace"))


def assert_one_line(outcome: Outcome, *expected: str) -> str:
    assert outcome.code == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert len(outcome.lines) == 1, outcome.stderr
    line = outcome.lines[0]
    for text in expected:
        assert text in line, line
    return line


def test_unreachable_postgresql(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://moorage:hunter2@127.0.0.1:{port}/moorage"
    line = assert_one_line(serve(tmp_path / "data", env={"MOORAGE_METADATA__URL": url}), "metadata.url")
    assert f"127.0.0.1:{port}" in line
    assert "hunter2" not in line


def test_debug_log_level_shows_the_traceback(tmp_path: Path) -> None:
    url = f"postgresql://moorage@127.0.0.1:{free_port()}/moorage"
    outcome = serve(tmp_path / "data", "--log-level", "debug", env={"MOORAGE_METADATA__URL": url})
    assert outcome.code == 2, outcome.stderr
    assert "Traceback" in outcome.stderr
    assert "metadata.url" in outcome.lines[-1]


def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    assert_one_line(serve(blocker / "data"), "data_dir", str(blocker / "data"))


def test_unreachable_s3_endpoint(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {
        "MOORAGE_STORAGE__BACKEND": "s3",
        "MOORAGE_STORAGE__S3__BUCKET": "moorage-blobs",
        "MOORAGE_STORAGE__S3__ENDPOINT_URL": endpoint,
        "MOORAGE_STORAGE__S3__REGION": "us-east-1",
        "MOORAGE_STORAGE__S3__ACCESS_KEY_ID": "AKIDEXAMPLE",
        "MOORAGE_STORAGE__S3__SECRET_ACCESS_KEY": "s3-secret-not-shown",
    }
    line = assert_one_line(serve(tmp_path / "data", env=env), "storage.s3", "moorage-blobs", endpoint)
    assert "s3-secret-not-shown" not in line
    assert not (tmp_path / "data" / "credentials").exists(), "a root key was shown for a server that never ran"


@pytest.mark.parametrize("problem", ["missing cert", "cert is a directory", "key not PEM", "key of another cert"])
def test_bad_tls_files(tmp_path: Path, problem: str) -> None:
    cert, key = self_signed(tmp_path, "one", "localhost")
    _, other_key = self_signed(tmp_path, "two", "localhost")
    setting = "http.tls_key"
    if problem == "missing cert":
        cert, setting = tmp_path / "nowhere.crt", "http.tls_cert"
    elif problem == "cert is a directory":
        cert, setting = tmp_path, "http.tls_cert"
    elif problem == "key not PEM":
        key.write_text("this is not a key\n")
    else:
        key = other_key
    shown = cert if setting == "http.tls_cert" else key
    env = {"MOORAGE_HTTP__TLS_CERT": str(cert), "MOORAGE_HTTP__TLS_KEY": str(key)}
    assert_one_line(serve(tmp_path / "data", env=env), setting, str(shown))


def _master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def test_replicas_with_different_master_keys(tmp_path: Path) -> None:
    """Two replicas on one database, the second given another master key: it refuses to start,
    naming auth.master_key; given the right key it starts and serves the first one's keys."""
    database = f"sqlite:///{tmp_path / 'shared' / 'metadata.db'}"
    first_key = _master_key()
    first = LiveServer(tmp_path / "a", env={"MOORAGE_METADATA__URL": database, "MOORAGE_AUTH__MASTER_KEY": first_key})
    with first:
        first.ecr().create_repository(repositoryName="shared")
    wrong = {"MOORAGE_METADATA__URL": database, "MOORAGE_AUTH__MASTER_KEY": _master_key()}
    assert_one_line(serve(tmp_path / "b", env=wrong), "auth.master_key", "same auth.master_key")
    # The data dir's own master.key (no auth.master_key) is another key too.
    assert_one_line(serve(tmp_path / "c", env={"MOORAGE_METADATA__URL": database}), "auth.master_key", "master.key")
    second = LiveServer(tmp_path / "b", env={"MOORAGE_METADATA__URL": database, "MOORAGE_AUTH__MASTER_KEY": first_key})
    with second:
        names = [r["repositoryName"] for r in second.ecr().describe_repositories()["repositories"]]
        assert names == ["shared"]


def _listeners(port: int) -> list[str]:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_second_server_on_a_port_in_use_fails_and_the_first_keeps_it(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "first", args=["--workers", "2"]) as first:
        second = serve(tmp_path / "second", "--port", str(first.port), "--auth", "open")
        assert_one_line(second, "http.port", f"127.0.0.1:{first.port}", "in use")
        # Every connection still reaches the first server, which checks credentials.
        for _ in range(20):
            response = httpx.post(
                first.url,
                headers={"x-amz-target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"},
                content=b"{}",
                timeout=10,
            )
            assert response.status_code in (400, 403), response.text


def test_port_held_by_a_listener_that_shares_ports(tmp_path: Path) -> None:
    """A listener with SO_REUSEPORT (as granian's own sockets have) would let a second one join;
    moorage binds without it, so it refuses to start."""
    sharing = socket.socket()
    sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sharing.bind(("127.0.0.1", 0))
    sharing.listen()
    with sharing:
        port = sharing.getsockname()[1]
        assert_one_line(serve(tmp_path / "data", "--port", str(port)), "http.port", "in use")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


@pytest.fixture
def parent_only_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "data", args=["--workers", "2"])
    try:
        yield server.start()
    finally:
        server.kill()


def test_workers_die_with_a_killed_parent(parent_only_server: LiveServer, tmp_path: Path) -> None:
    server = parent_only_server
    assert server.process is not None
    parent = server.process.pid
    workers = _children(parent)
    assert len(workers) == 2, workers
    os.kill(parent, signal.SIGKILL)  # the parent only, as `kill -9 <pid>` does
    server.process.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (any(_alive(w) for w in workers) or _listeners(server.port)):
        time.sleep(0.05)
    assert [w for w in workers if _alive(w)] == [], "workers outlived their parent"
    assert _listeners(server.port) == [], "the port is still served"
    # A restart on the same port and data dir is the only server there.
    with LiveServer(server.data_dir, port=server.port) as again:
        assert httpx.get(f"{again.url}/healthz", timeout=10).status_code == 200
