"""Two replicas behind one imaginary load balancer: whatever one acknowledges, the other serves at
once; secrets and tokens one issues, the other accepts; races between them have one winner; an
upload session moves freely between them. One cluster for the module, a repository per test."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import OCI_MANIFEST, Engine, Layout, inspect_raw, skopeo
from tests.scale.conftest import Cluster
from tests.support.live import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.s3]

MiB = 1024 * 1024
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_blob(server: LiveServer, name: str, data: bytes) -> str:
    """A monolithic blob upload (`POST ?digest=`); returns the digest."""
    digest = sha256_digest(data)
    response = httpx.post(
        f"{server.url}/v2/{name}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        auth=server.auth,
        timeout=60,
    )
    assert response.status_code == 201, f"blob upload to {server.address}: {response.status_code} {response.text}"
    return digest


def manifest(config: bytes, layer: bytes, annotations: dict[str, str]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}],
            "annotations": annotations,
        },
        sort_keys=True,
    ).encode()


def put_manifest(client: httpx.Client, server: LiveServer, repo: str, tag: str, body: bytes) -> httpx.Response:
    return client.put(f"{server.url}/v2/{repo}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST})


def error_codes(response: httpx.Response) -> list[str]:
    return [str(entry.get("code")) for entry in response.json().get("errors", [])]


def aws_error(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# --------------------------------------------------------------------------------------------------
# 1. push through A, pull through B at once
# --------------------------------------------------------------------------------------------------


def test_push_through_a_pull_through_b(cluster: Cluster, small_image: Layout, podman: Engine, tmp_path: Path) -> None:
    a, b = cluster.replicas
    repo = "scale/push-pull"
    created = a.ecr().create_repository(repositoryName=repo)["repository"]
    seen = b.ecr().describe_repositories(repositoryNames=[repo])["repositories"]
    assert [r["repositoryName"] for r in seen] == [repo]
    assert seen[0]["repositoryArn"] == created["repositoryArn"]
    assert seen[0]["createdAt"] == created["createdAt"]

    digest = small_image.digest_of("v1")
    digest_file = tmp_path / "pushed.digest"
    skopeo(
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--digestfile",
        str(digest_file),
        f"oci:{small_image.root}:v1",
        f"docker://{a.address}/{repo}:v1",
    )
    # Acknowledged by A: B pulls it right away (no sleep, no retry).
    podman("pull", "--quiet", "--tls-verify=false", f"{b.address}/{repo}:v1")
    assert digest_file.read_text().strip() == digest

    reference = f"{b.address}/{repo}:v1"
    repo_digests = json.loads(podman("image", "inspect", "--format", "{{json .RepoDigests}}", reference).stdout)
    assert f"{b.address}/{repo}@{digest}" in repo_digests
    image_id = podman("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()
    config_digest = small_image.json_blob(digest)["config"]["digest"]
    assert "sha256:" + image_id == config_digest

    assert sha256_digest(inspect_raw(b, f"{repo}:v1")) == digest
    images = b.ecr().describe_images(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["imageDetails"]
    assert [(i["imageDigest"], i["imageTags"]) for i in images] == [(digest, ["v1"])]


# --------------------------------------------------------------------------------------------------
# 2. secrets and tokens issued by one replica are accepted by the other
# --------------------------------------------------------------------------------------------------


def test_password_and_next_token_cross_replicas(cluster: Cluster) -> None:
    a, b = cluster.replicas
    for issuer, checker in ((a, b), (b, a)):
        password = issuer.password()
        accepted = httpx.get(f"{checker.url}/v2/", auth=("AWS", password), timeout=10)
        assert accepted.status_code == 200, f"{issuer.address}'s password on {checker.address}: {accepted.text}"
        forged = password[:-4] + ("AAAA" if not password.endswith("AAAA") else "BBBB")
        refused = httpx.get(f"{checker.url}/v2/", auth=("AWS", forged), timeout=10)
        assert refused.status_code == 401, "a tampered password must be refused (the check is real)"

    clients = (a.ecr(), b.ecr())
    names = [f"scale/pages/{index:02d}" for index in range(6)]
    for index, name in enumerate(names):
        clients[index % 2].create_repository(repositoryName=name)

    listed: list[str] = []
    token: str | None = None
    calls = 0
    while True:
        client = clients[calls % 2]  # every nextToken is spent on the other replica than its issuer
        kwargs: dict[str, Any] = {"maxResults": 1}
        if token is not None:
            kwargs["nextToken"] = token
        page = client.describe_repositories(**kwargs)
        calls += 1
        assert len(page["repositories"]) <= 1
        listed += [repo["repositoryName"] for repo in page["repositories"]]
        token = page.get("nextToken")
        if token is None:
            break
        assert calls < 100, "pagination does not end"
    everything = [repo["repositoryName"] for repo in clients[1].describe_repositories()["repositories"]]
    assert listed == sorted(everything) == everything
    assert set(names) <= set(listed)
    assert calls >= len(names)


# --------------------------------------------------------------------------------------------------
# 3. races between the replicas have exactly one winner
# --------------------------------------------------------------------------------------------------


def _race(*actions: Any) -> list[Any]:
    """Run the callables at the same moment (one thread each, released by a barrier)."""
    barrier = threading.Barrier(len(actions))

    def run(action: Any) -> Any:
        barrier.wait(timeout=30)
        return action()

    with ThreadPoolExecutor(len(actions)) as pool:
        return [future.result() for future in [pool.submit(run, action) for action in actions]]


def test_concurrent_immutable_tag_pushes_have_one_winner(cluster: Cluster) -> None:
    a, b = cluster.replicas
    repo = "scale/immutable"
    a.ecr().create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")
    layer = os.urandom(64 * 1024)
    upload_blob(a, repo, layer)
    configs = {}
    for side, replica in (("a", a), ("b", b)):
        configs[side] = json.dumps({"architecture": "amd64", "os": "linux", "side": side}).encode()
        upload_blob(replica, repo, configs[side])

    rounds = 10
    winners: dict[str, str] = {}
    losers: dict[str, str] = {}
    with httpx.Client(auth=a.auth, timeout=30) as to_a, httpx.Client(auth=b.auth, timeout=30) as to_b:
        for index in range(rounds):
            tag = f"v{index}"
            bodies = {side: manifest(configs[side], layer, {"round": tag, "side": side}) for side in ("a", "b")}
            assert bodies["a"] != bodies["b"]

            answers = _race(
                partial(put_manifest, to_a, a, repo, tag, bodies["a"]),
                partial(put_manifest, to_b, b, repo, tag, bodies["b"]),
            )
            statuses = sorted(response.status_code for response in answers)
            assert statuses == [201, 400], f"{tag}: {[(r.status_code, r.text) for r in answers]}"
            for side, response in zip(("a", "b"), answers, strict=True):
                if response.status_code == 201:
                    winners[tag] = response.headers["docker-content-digest"]
                    assert winners[tag] == sha256_digest(bodies[side])
                else:
                    assert error_codes(response) == ["TAG_INVALID"], response.text
                    losers[tag] = sha256_digest(bodies[side])

    tags = [f"v{index}" for index in range(rounds)]
    for reader in (a, b):
        found = reader.ecr().batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag} for tag in tags])
        assert found["failures"] == []
        assert {i["imageId"]["imageTag"]: i["imageId"]["imageDigest"] for i in found["images"]} == winners
    # The losers left nothing behind: the repository holds exactly the winning manifests.
    described = b.ecr().describe_images(repositoryName=repo)["imageDetails"]
    assert sorted(i["imageDigest"] for i in described) == sorted(winners.values())
    missing = a.ecr().batch_get_image(repositoryName=repo, imageIds=[{"imageDigest": d} for d in losers.values()])
    assert missing["images"] == []
    assert {f["failureCode"] for f in missing["failures"]} == {"ImageNotFound"}


def test_concurrent_create_repository_has_one_winner(cluster: Cluster) -> None:
    a, b = cluster.replicas
    clients = {"a": a.ecr(), "b": b.ecr()}
    mutability = {"a": "IMMUTABLE", "b": "MUTABLE"}
    for index in range(5):
        name = f"scale/created-twice/{index}"

        def create(side: str, name: str = name) -> tuple[str, dict[str, Any] | str]:
            try:
                made = clients[side].create_repository(repositoryName=name, imageTagMutability=mutability[side])
            except ClientError as error:
                return side, aws_error(error)
            return side, made["repository"]

        outcomes = _race(lambda: create("a"), lambda: create("b"))
        won = [(side, result) for side, result in outcomes if isinstance(result, dict)]
        lost = [result for _side, result in outcomes if not isinstance(result, dict)]
        assert len(won) == 1, f"{name}: {outcomes}"
        assert lost == ["RepositoryAlreadyExistsException"], f"{name}: {outcomes}"
        winner, repository = won[0]
        for client in clients.values():
            (seen,) = client.describe_repositories(repositoryNames=[name])["repositories"]
            assert seen["repositoryArn"] == repository["repositoryArn"]
            assert seen["imageTagMutability"] == mutability[winner]


# --------------------------------------------------------------------------------------------------
# 4. one chunked upload, three requests, two replicas
# --------------------------------------------------------------------------------------------------


def test_chunked_upload_moves_between_replicas(cluster: Cluster) -> None:
    a, b = cluster.replicas
    repo = "scale/chunked"
    a.ecr().create_repository(repositoryName=repo)
    chunks = [os.urandom(3 * MiB), os.urandom(7 * MiB), os.urandom(1 * MiB)]
    blob = b"".join(chunks)
    digest = sha256_digest(blob)

    with httpx.Client(auth=a.auth, timeout=60) as to_a, httpx.Client(auth=b.auth, timeout=60) as to_b:
        started = to_a.post(f"{a.url}/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        upload_id = started.headers["docker-upload-uuid"]
        location = started.headers["location"]

        def patch(client: httpx.Client, server: LiveServer, location: str, start: int, data: bytes) -> httpx.Response:
            return client.patch(
                httpx.URL(server.url).join(location),
                content=data,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{start}-{start + len(data) - 1}",
                },
            )

        first = patch(to_a, a, location, 0, chunks[0])
        assert first.status_code == 202, first.text
        assert first.headers["range"] == f"0-{len(chunks[0]) - 1}"

        # B knows where the session stands: a chunk at the wrong offset is refused with the truth.
        stale = patch(to_b, b, first.headers["location"], 0, chunks[1])
        assert stale.status_code == 416, stale.text
        assert stale.headers["range"] == f"0-{len(chunks[0]) - 1}"
        status = to_b.get(httpx.URL(b.url).join(first.headers["location"]))
        assert status.status_code == 204, status.text
        assert status.headers["range"] == f"0-{len(chunks[0]) - 1}"

        second = patch(to_b, b, first.headers["location"], len(chunks[0]), chunks[1])
        assert second.status_code == 202, second.text
        assert second.headers["range"] == f"0-{len(chunks[0]) + len(chunks[1]) - 1}"

        finished = to_a.put(
            httpx.URL(a.url).join(second.headers["location"]),
            params={"digest": digest},
            content=chunks[2],
            headers={"Content-Type": "application/octet-stream"},
        )
        assert finished.status_code == 201, finished.text
        assert finished.headers["docker-content-digest"] == digest

        fetched = to_b.get(f"{b.url}/v2/{repo}/blobs/{digest}")
        assert fetched.status_code == 200, fetched.text
        assert len(fetched.content) == len(blob)
        assert sha256_digest(fetched.content) == digest
        assert fetched.content == blob
        head = to_a.head(f"{a.url}/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(blob)

        # The session is over on both replicas, and its staging is gone from the bucket.
        for client, server in ((to_a, a), (to_b, b)):
            gone = client.get(f"{server.url}/v2/{repo}/blobs/uploads/{upload_id}")
            assert gone.status_code == 404, gone.text
    assert cluster.keys(f"uploads/{upload_id}/") == []
