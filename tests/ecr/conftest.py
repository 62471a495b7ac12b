"""ECR API tests with real clients (boto3, botocore's signer, the AWS CLI, skopeo, podman) against
ONE real `moorage serve --auth sigv4` process per session.

The root access key is handed to the server by environment; every test works in repositories of
its own (`new_name`, `repo`), so tests never see each other's content.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.ecr import ROOT_KEY_ID, ROOT_SECRET, ecr_client
from tests.support.live import LiveServer

ROOT_ENV = {"MOORAGE_ROOT_ACCESS_KEY_ID": ROOT_KEY_ID, "MOORAGE_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("ecr") / "data", args=["--auth", "sigv4"], env=ROOT_ENV)
    live.start()
    try:
        yield live
    finally:
        live.stop()


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
