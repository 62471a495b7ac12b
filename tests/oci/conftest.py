"""Protocol tests of the registry API against the real `moorage serve` process.

One server per session (its data dir under the session's tmp dir), shared by every test; each
test works in repositories of its own (`repo`, `new_repo`), so tests never see each other's
content except through `_catalog`, which lists every repository.

Every response the shared client receives is checked for a 5xx: a protocol error must never be
an internal server error.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live import LiveServer


def _no_server_error(response: httpx.Response) -> None:
    if response.status_code >= 500:
        response.read()
        raise AssertionError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
        )


# SigV4 mode (the default) with repositories created by their first push, as a plain OCI
# registry behaves; the client logs in with a password from GetAuthorizationToken.
SERVER_ARGS = ("--create-on-push",)


def make_server(data_dir: Path) -> LiveServer:
    return LiveServer(data_dir, args=SERVER_ARGS)


def make_client(server: LiveServer) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=30.0, auth=server.auth, event_hooks={"response": [_no_server_error]}
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = make_server(tmp_path_factory.mktemp("oci") / "data")
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with make_client(server) as session_client:
        yield session_client


@pytest.fixture
def server_for() -> Callable[[Path], LiveServer]:
    """Makes (does not start) a separate server on a data dir, configured like the shared one."""
    return make_server


@pytest.fixture
def client_for() -> Callable[[LiveServer], httpx.Client]:
    """Makes a client for a separate server, with the same 5xx check as the shared client."""
    return make_client


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].strip("-") or "t"


@pytest.fixture
def new_repo(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Makes repository names unique to this test (and to each call)."""
    stem = _slug(request.node.name.removeprefix("test_"))

    def make() -> str:
        return f"oci/{stem}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def repo(new_repo: Callable[[], str]) -> str:
    """A repository name no other test uses (the repository is created by the first push)."""
    return new_repo()
