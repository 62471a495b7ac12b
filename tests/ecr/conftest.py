"""ECR API tests with real clients (boto3, botocore's signer, the AWS CLI, skopeo, podman) against
ONE real `moorage serve --auth sigv4` process per session (`server`).

The root access key is handed to the server by environment; every test works in repositories of
its own (`new_name`, `repo`), so tests never see each other's content.

Two small companions serve the few tests that need another configuration:
`open_server` (`--auth open --allow-reset`) and `domain_server` (sigv4, `--allow-reset`, and a
registry domain, so a `/v2/` request can name its registry by host). All three start together,
in parallel, the first time any of them is needed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.ecr import REGISTRY_DOMAIN, ROOT_KEY_ID, ROOT_SECRET, ecr_client
from tests.support.live import LiveServer

ROOT_ENV = {"MOORAGE_ROOT_ACCESS_KEY_ID": ROOT_KEY_ID, "MOORAGE_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET}


class ServerPool:
    """Starts several LiveServers concurrently; each fixture waits only for its own."""

    def __init__(self, root: Path) -> None:
        self._servers = {
            "sigv4": LiveServer(root / "sigv4", args=["--auth", "sigv4"], env=ROOT_ENV),
            "open": LiveServer(root / "open", args=["--auth", "open", "--allow-reset"]),
            "domain": LiveServer(
                root / "domain",
                args=["--auth", "sigv4", "--allow-reset"],
                env={**ROOT_ENV, "MOORAGE_REGISTRY_DOMAIN": REGISTRY_DOMAIN},
            ),
        }
        self._executor = ThreadPoolExecutor(max_workers=len(self._servers))
        self._started: dict[str, Future[LiveServer]] = {
            name: self._executor.submit(live.start, 60.0) for name, live in self._servers.items()
        }

    def get(self, name: str) -> LiveServer:
        return self._started[name].result()

    def stop(self) -> None:
        for future in self._started.values():
            future.exception()  # wait for every start to finish, successful or not
        self._executor.shutdown()
        for live in self._servers.values():
            live.stop()


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("ecr"))
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(scope="session")
def server(server_pool: ServerPool) -> LiveServer:
    """`moorage serve --auth sigv4` with the root key from the environment."""
    return server_pool.get("sigv4")


@pytest.fixture(scope="session")
def open_server(server_pool: ServerPool) -> LiveServer:
    """`moorage serve --auth open --allow-reset`."""
    return server_pool.get("open")


@pytest.fixture(scope="session")
def domain_server(server_pool: ServerPool) -> LiveServer:
    """`moorage serve --auth sigv4 --allow-reset` with registry domain REGISTRY_DOMAIN."""
    return server_pool.get("domain")


@pytest.fixture(scope="session")
def ecr(server: LiveServer) -> Any:
    """boto3's ECR client as the root of the default account, in us-east-1."""
    return ecr_client(server.url)


@pytest.fixture(scope="session")
def unchecked_ecr(server: LiveServer) -> Any:
    """Like `ecr`, without botocore's client-side parameter validation: the server must validate."""
    return ecr_client(server.url, validate=False)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50].strip("-") or "t"


@pytest.fixture
def new_name(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes repository names unique to this test (and to each call); nothing is created."""
    stem = _slug(request.node.name.removeprefix("test_"))

    def make() -> str:
        return f"ecr/{stem}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def repo(ecr: Any, new_name: Callable[[], str]) -> str:
    """A freshly created (MUTABLE) repository no other test uses."""
    name = new_name()
    ecr.create_repository(repositoryName=name)
    return name
