"""Fuzzing the real `moorage serve` process (SigV4 mode, repositories created on first push).

One server for the whole fuzz package. `FuzzClient` signs raw ECR requests with botocore's own
SigV4 signer (so arbitrary bodies reach validation and the handlers), sends raw `/v2/` requests
with a registry password, and takes snapshots of the state a user sees (repositories, images,
tags, policies, `_catalog`) to show that a refused request changed nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, Phase, settings

from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
ACCOUNT = "123456789012"
REGION = "us-east-1"

# The fixture state every fuzz run starts from: two repositories, one image (config + one layer)
# tagged `v1` in the first, a repository policy and a resource tag on it.
BASE_REPO = "fuzz/base"
OTHER_REPO = "fuzz/other"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"fuzz layer bytes\n" * 64


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(LAYER), "size": len(LAYER)}
        ],
    },
    separators=(",", ":"),
).encode()
MANIFEST_DIGEST = sha256(MANIFEST)
CONFIG_DIGEST = sha256(CONFIG)
LAYER_DIGEST = sha256(LAYER)

_READ_PREFIXES = ("Describe", "Get", "List", "BatchGet", "BatchCheck")


def is_read_only(operation: str) -> bool:
    """Operations that never change state (GetAuthorizationToken issues a token, stores nothing)."""
    return operation.startswith(_READ_PREFIXES) or operation.startswith("Validate")


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def describe(self) -> str:
        return f"{self.status} {self.body[:300]!r}"


class FuzzClient:
    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.http = httpx.Client(base_url=live.url, timeout=30.0)
        self._creds = Credentials(ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY)
        self._basic: str | None = None

    def close(self) -> None:
        self.http.close()

    # --- ECR -------------------------------------------------------------------------------------

    def ecr_raw(self, operation: str, body: bytes, *, headers: Mapping[str, str] | None = None) -> Answer:
        """POST `body` (any bytes) to the ECR API as `operation`, signed by botocore."""
        request = AWSRequest(
            method="POST",
            url=self.live.url + "/",
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": TARGET_PREFIX + operation,
                **(headers or {}),
            },
        )
        SigV4Auth(self._creds, "ecr", REGION).add_auth(request)
        sent = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        response = self.http.post("/", headers=sent, content=body)
        return Answer(response.status_code, response.content, response.headers)

    def ecr(self, operation: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        answer = self.ecr_raw(operation, json.dumps(dict(params or {})).encode())
        document: dict[str, Any] = json.loads(answer.body)
        if answer.status != 200:
            return {"error": document.get("__type")}
        return document

    # --- registry API ------------------------------------------------------------------------------

    @property
    def basic(self) -> str:
        if self._basic is None:
            data = self.ecr("GetAuthorizationToken")["authorizationData"][0]
            self._basic = "Basic " + data["authorizationToken"]
        return self._basic

    def v2(
        self,
        method: str,
        raw_path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        authenticated: bool = True,
    ) -> Answer:
        """A request whose path and query go on the wire exactly as given (no normalisation)."""
        all_headers = dict(headers or {})
        if authenticated:
            all_headers.setdefault("Authorization", self.basic)
        url = httpx.URL(self.live.url).copy_with(raw_path=raw_path.encode("ascii"))
        request = self.http.build_request(method, url, headers=all_headers, content=body)
        response = self.http.send(request)
        return Answer(response.status_code, response.content, response.headers)

    # --- state -------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What a user can see of the registry: every repository with its settings, the images,
        tags, resource tags and policies of the fixture repositories, registry settings and the
        registry API's catalog and tag lists."""
        repos = self.ecr("DescribeRepositories", {"maxResults": 1000})
        state: dict[str, Any] = {"repositories": repos}
        for repo in (BASE_REPO, OTHER_REPO):
            arn = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repo}"
            images = self.ecr("DescribeImages", {"repositoryName": repo, "maxResults": 1000})
            for detail in images.get("imageDetails", []):
                detail.pop("lastRecordedPullTime", None)  # pulls are recorded in the background
                # A scan a valid StartImageScan began finishes in the background, later.
                detail.pop("imageScanStatus", None)
                detail.pop("imageScanFindingsSummary", None)
            state[repo] = {
                "images": images,
                "tags": self.ecr("ListTagsForResource", {"resourceArn": arn}),
                "policy": self.ecr("GetRepositoryPolicy", {"repositoryName": repo}),
                "lifecycle": self.ecr("GetLifecyclePolicy", {"repositoryName": repo}),
                "v2tags": self.v2("GET", f"/v2/{repo}/tags/list").body,
            }
        state["registry"] = self.ecr("DescribeRegistry")
        state["registry_policy"] = self.ecr("GetRegistryPolicy")
        state["catalog"] = self.v2("GET", "/v2/_catalog").body
        return state


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis settings of every fuzz test: derandomized (the same requests on every run), no
    example database, no deadline, and no shrinking, so a failure reports the request as sent."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


class Baseline:
    """The last snapshot of the visible state, refreshed after a request that may have changed it."""

    def __init__(self, client: FuzzClient) -> None:
        self.client = client
        self.state = client.snapshot()


def restore_fixture(client: FuzzClient) -> None:
    """(Re)create the fixture state; an earlier fuzz run may have changed or deleted any of it."""
    for repo in (BASE_REPO, OTHER_REPO):
        created = client.ecr("CreateRepository", {"repositoryName": repo})
        assert created.get("error") in (None, "RepositoryAlreadyExistsException"), created
        assert "error" not in client.ecr(
            "PutImageTagMutability", {"repositoryName": repo, "imageTagMutability": "MUTABLE"}
        )
    for data in (CONFIG, LAYER):
        answer = client.v2(
            "POST",
            f"/v2/{BASE_REPO}/blobs/uploads/?digest={sha256(data)}",
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert answer.status == 201, answer.describe()
    answer = client.v2(
        "PUT",
        f"/v2/{BASE_REPO}/manifests/v1",
        body=MANIFEST,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert answer.status == 201, answer.describe()
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "pull",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": ["ecr:BatchGetImage"],
            }
        ],
    }
    assert "error" not in client.ecr(
        "SetRepositoryPolicy", {"repositoryName": BASE_REPO, "policyText": json.dumps(policy)}
    )
    arn = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{BASE_REPO}"
    assert "error" not in client.ecr("TagResource", {"resourceArn": arn, "tags": [{"Key": "team", "Value": "fuzz"}]})


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("fuzz") / "data", args=["--create-on-push"])
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def fuzz(fuzz_server: LiveServer) -> Iterator[FuzzClient]:
    client = FuzzClient(fuzz_server)
    try:
        yield client
    finally:
        client.close()
