"""Text PostgreSQL cannot store (NUL) never reaches it: the same server, metadata in a real
PostgreSQL, sent NUL wherever a client can put text (ECR string members, `/v2/` upload ids and
`?last=`, manifest fields). SQLite stores NUL, so only this server shows the boundary holds."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.fuzz.conftest import BASE_REPO, MANIFEST, FuzzClient, restore_fixture
from tests.support.live import LiveServer
from tests.support.services import PostgresServer, postgres_available

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzClient]:
    if not postgres_available():
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are missing: install postgresql (CI does)")
    with PostgresServer() as postgres:
        url = postgres.create_database("fuzz")
        live = LiveServer(
            tmp_path_factory.mktemp("fuzz-pg") / "data",
            args=["--create-on-push"],
            env={"MOORAGE_METADATA__URL": url},
        )
        with live:
            client = FuzzClient(live)
            try:
                restore_fixture(client)
                yield client
            finally:
                client.close()
                assert "Traceback" not in live.log(), live.log()[-5000:]


ARN = f"arn:aws:ecr:us-east-1:123456789012:repository/{BASE_REPO}"


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("TagResource", {"resourceArn": ARN, "tags": [{"Key": "k", "Value": "a\x00b"}]}),
        ("TagResource", {"resourceArn": ARN, "tags": [{"Key": "k\x00", "Value": "v"}]}),
        ("UntagResource", {"resourceArn": ARN, "tagKeys": ["\x00"]}),
        ("BatchGetImage", {"repositoryName": BASE_REPO, "imageIds": [{"imageTag": "v1\x00"}]}),
        ("DescribeImages", {"repositoryName": BASE_REPO, "imageIds": [{"imageTag": "\x00"}]}),
        ("PutImage", {"repositoryName": BASE_REPO, "imageManifest": MANIFEST.decode(), "imageTag": "t\x00"}),
        ("SetRepositoryPolicy", {"repositoryName": BASE_REPO, "policyText": '{"Version": "\x00"}'}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_ecr_text_with_nul_is_refused(operation: str, params: dict[str, object], pg_client: FuzzClient) -> None:
    answer = pg_client.ecr_raw(operation, json.dumps(params).encode())
    assert answer.status == 400, answer.describe()
    assert json.loads(answer.body)["__type"] == "InvalidParameterException", answer.describe()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", f"/v2/{BASE_REPO}/blobs/uploads/%00", b"", 404),
        ("PATCH", f"/v2/{BASE_REPO}/blobs/uploads/a%00b", b"x", 404),
        ("GET", "/v2/_catalog?n=5&last=fuzz%00", b"", 200),
        ("GET", f"/v2/{BASE_REPO}/tags/list?n=5&last=%00", b"", 200),
        ("GET", f"/v2/{BASE_REPO}/manifests/v1%00", b"", 404),  # an invalid tag: nothing to find
        (
            "PUT",
            f"/v2/{BASE_REPO}/manifests/nul",
            MANIFEST.replace(b'"layers"', b'"artifactType":"a\\u0000","layers"'),
            400,
        ),
    ],
)
def test_registry_text_with_nul_never_reaches_the_store(
    method: str, path: str, body: bytes, status: int, pg_client: FuzzClient
) -> None:
    answer = pg_client.v2(
        method, path, body=body, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    )
    # an invalid tag in a GET is TAG_INVALID today; the distribution spec asks for MANIFEST_UNKNOWN
    assert answer.status == status or (status, answer.status) == (404, 400), answer.describe()
