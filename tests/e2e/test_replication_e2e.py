"""Replication end to end, within one deployment: skopeo and boto3 against a real server.

Account A (123456789012) pushes in us-east-1; its configuration replicates `rep/...` to
eu-west-1 of A, to account B (whose registry policy allows A) and to account C (no policy). The
copies are checked through the ECR API of each destination registry (`/v2/` without
registry_domain serves only the configured region): the same digests and manifest bytes, the
layers downloadable, COMPLETE within seconds; C FAILED and empty.

The server runs `--auth open` (a 12-digit access key id is that account's root; policies apply).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import SERVER_ENV, Layout, login, make_image, need, push
from tests.support.ecr import ecr_client, push_image
from tests.support.images import artifact, blob
from tests.support.images import push_blob as v2_blob
from tests.support.images import push_image as v2_image
from tests.support.images import push_manifest as v2_manifest
from tests.support.live import LiveServer
from tests.support.services import PostgresServer, postgres_available

pytestmark = pytest.mark.e2e

A, B, C = "123456789012", "210987654321", "333333333333"
EAST, WEST = "us-east-1", "eu-west-1"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    root = tmp_path_factory.mktemp("replication-image") / "layout"
    make_image(root, "multi", layers=2, layer_size_mb=0.2, seed=71, platforms="linux/amd64,linux/arm64")
    make_image(root, "single", layers=2, layer_size_mb=0.2, seed=72)
    make_image(root, "other", layers=1, layer_size_mb=0.1, seed=73)
    return Layout(root)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    need("skopeo")
    root = tmp_path_factory.mktemp("replication")
    env = {**SERVER_ENV, "MOORAGE_EVENTS__AUDIT_LOG": str(root / "audit.jsonl")}
    with LiveServer(root / "data", args=["--auth", "open"], env=env) as live:
        login(live)
        yield live


def client(server: LiveServer, account: str, region: str = EAST) -> Any:
    return ecr_client(server.url, key_id=account, secret="x", region=region)


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def statuses(ecr: Any, name: str, digest: str) -> dict[tuple[str, str], dict[str, Any]]:
    found = ecr.describe_image_replication_status(repositoryName=name, imageId={"imageDigest": digest})
    return {(s["registryId"], s["region"]): s for s in found["replicationStatuses"]}


def settled(ecr: Any, name: str, digest: str, expected: int) -> dict[tuple[str, str], dict[str, Any]]:
    def check() -> dict[tuple[str, str], dict[str, Any]]:
        found = statuses(ecr, name, digest)
        assert len(found) == expected, found
        assert all(s["status"] != "IN_PROGRESS" for s in found.values()), found
        return found

    result: dict[tuple[str, str], dict[str, Any]] = eventually(check)
    return result


def manifest_of(ecr: Any, name: str, reference: dict[str, str]) -> tuple[str, str]:
    got = ecr.batch_get_image(repositoryName=name, imageIds=[reference])
    assert not got["failures"], got["failures"]
    image = got["images"][0]
    return image["imageId"]["imageDigest"], image["imageManifest"]


@pytest.fixture(scope="module")
def configured(server: LiveServer) -> LiveServer:
    a = client(server, A)
    config = {
        "rules": [
            {
                "destinations": [{"region": WEST, "registryId": A}, {"region": EAST, "registryId": B}],
                "repositoryFilters": [{"filter": "rep", "filterType": "PREFIX_MATCH"}],
            },
            {
                "destinations": [{"region": EAST, "registryId": C}, {"region": WEST, "registryId": A}],
                "repositoryFilters": [{"filter": "rep/", "filterType": "PREFIX_MATCH"}],
            },
        ]
    }
    assert a.put_replication_configuration(replicationConfiguration=config)["replicationConfiguration"] == config
    assert a.describe_registry()["replicationConfiguration"] == config
    b = client(server, B)
    b.put_registry_policy(
        policyText=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "replicate-from-a",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
                        "Action": ["ecr:ReplicateImage", "ecr:CreateRepository"],
                        "Resource": f"arn:aws:ecr:{EAST}:{B}:repository/*",
                    }
                ],
            }
        )
    )
    # B's repositories made by replication are immutable (its REPLICATION template) ...
    b.create_repository_creation_template(prefix="rep", appliedFor=["REPLICATION"], imageTagMutability="IMMUTABLE")
    # ... and B replicates to its own eu-west-1: a copy from A must not travel on (one hop).
    b.put_replication_configuration(
        replicationConfiguration={"rules": [{"destinations": [{"region": WEST, "registryId": B}]}]}
    )
    return server


def test_configuration_is_validated_like_ecr(server: LiveServer) -> None:
    a = client(server, A, region="ap-south-1")
    with pytest.raises(ClientError) as info:
        a.put_replication_configuration(
            replicationConfiguration={"rules": [{"destinations": [{"region": "ap-south-1", "registryId": A}]}]}
        )
    assert info.value.response["Error"]["Code"] == "InvalidParameterException"
    assert info.value.response["Error"]["Message"] == (
        "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
        "'Replication destination cannot be the same as the source registry'"
    )
    many = [{"region": f"region-{i}", "registryId": A} for i in range(26)]
    with pytest.raises(ClientError) as info:
        a.put_replication_configuration(
            replicationConfiguration={"rules": [{"destinations": many[:13]}, {"destinations": many[13:]}]}
        )
    assert info.value.response["Error"]["Code"] == "InvalidParameterException"
    assert a.describe_registry()["replicationConfiguration"] == {"rules": []}
    with pytest.raises(ClientError) as info:
        a.describe_image_replication_status(repositoryName="nothing", imageId={"imageTag": "v1"})
    assert info.value.response["Error"]["Code"] == "RepositoryNotFoundException"


def test_a_push_is_copied_to_each_destination_by_metadata(configured: LiveServer, layout: Layout) -> None:
    server = configured
    pushed = time.monotonic()
    push(f"oci:{layout.root}:multi", server, "rep/app:v1", "--all")
    index = layout.digest_of("multi")
    a = client(server, A)
    found = settled(a, "rep/app", index, expected=3)
    took = time.monotonic() - pushed
    assert found[(A, WEST)]["status"] == "COMPLETE"
    assert found[(B, EAST)]["status"] == "COMPLETE"
    assert found[(C, EAST)] == {"registryId": C, "region": EAST, "status": "FAILED", "failureCode": "ACCESS_DENIED"}
    assert took < 10, f"replication took {took:.1f}s"

    source_digest, source_manifest = manifest_of(a, "rep/app", {"imageTag": "v1"})
    assert source_digest == index
    children = [m["digest"] for m in json.loads(source_manifest)["manifests"]]
    for ecr in (client(server, A, WEST), client(server, B)):
        assert manifest_of(ecr, "rep/app", {"imageTag": "v1"}) == (index, source_manifest)
        listed = {d["imageDigest"] for d in ecr.describe_images(repositoryName="rep/app")["imageDetails"]}
        assert listed == {index, *children}
        # The layers are there too: downloadable, byte-identical.
        child = json.loads(manifest_of(ecr, "rep/app", {"imageDigest": children[0]})[1])
        for layer in child["layers"]:
            url = ecr.get_download_url_for_layer(repositoryName="rep/app", layerDigest=layer["digest"])["downloadUrl"]
            body = httpx.get(url, timeout=30).content
            assert "sha256:" + hashlib.sha256(body).hexdigest() == layer["digest"]
    # B's repository came from B's REPLICATION template; C got nothing at all.
    b_repo = client(server, B).describe_repositories(repositoryNames=["rep/app"])["repositories"][0]
    assert b_repo["imageTagMutability"] == "IMMUTABLE"
    with pytest.raises(ClientError) as info:
        client(server, C).describe_repositories(repositoryNames=["rep/app"])
    assert info.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    # One hop: B's own rule to its eu-west-1 does not carry A's image on.
    time.sleep(1.0)
    with pytest.raises(ClientError) as info:
        client(server, B, WEST).describe_repositories(repositoryNames=["rep/app"])
    assert info.value.response["Error"]["Code"] == "RepositoryNotFoundException"


def test_immutable_destination_tags_are_dropped_and_deletes_stay(configured: LiveServer, layout: Layout) -> None:
    server = configured
    a = client(server, A)
    push(f"oci:{layout.root}:multi", server, "rep/tags:v1", "--all")
    first = layout.digest_of("multi")
    settled(a, "rep/tags", first, expected=3)
    push(f"oci:{layout.root}:single", server, "rep/tags:v1")  # v1 moves in A
    second = layout.digest_of("single")
    found = settled(a, "rep/tags", second, expected=3)
    assert found[(B, EAST)]["status"] == "COMPLETE"
    b = client(server, B)
    # In B (immutable) the second image arrived without the tag; v1 still names the first.
    assert manifest_of(b, "rep/tags", {"imageTag": "v1"})[0] == first
    details = {d["imageDigest"]: d for d in b.describe_images(repositoryName="rep/tags")["imageDetails"]}
    assert second in details
    assert "imageTags" not in details[second]
    # eu-west-1 of A is mutable: the tag followed.
    west = client(server, A, WEST)
    assert manifest_of(west, "rep/tags", {"imageTag": "v1"})[0] == second
    # Deletes are never replicated.
    a.batch_delete_image(repositoryName="rep/tags", imageIds=[{"imageDigest": second}])
    time.sleep(1.0)
    assert manifest_of(west, "rep/tags", {"imageDigest": second})[0] == second


def test_the_ecr_face_replicates_and_other_repositories_do_not(configured: LiveServer, layout: Layout) -> None:
    server = configured
    a = client(server, A)
    a.create_repository(repositoryName="rep/api")
    image = push_image(a, "rep/api", "1.0", oci=True)
    digest = image.manifest.digest
    found = settled(a, "rep/api", digest, expected=3)
    assert found[(A, WEST)]["status"] == "COMPLETE"
    assert manifest_of(client(server, A, WEST), "rep/api", {"imageTag": "1.0"}) == (digest, image.manifest.text)
    # A repository no rule matches: no statuses, no copy.
    push(f"oci:{layout.root}:other", server, "plain/app:v1")
    other = layout.digest_of("other")
    time.sleep(1.0)
    assert statuses(a, "plain/app", other) == {}
    with pytest.raises(ClientError) as info:
        client(server, A, WEST).describe_repositories(repositoryNames=["plain/app"])
    assert info.value.response["Error"]["Code"] == "RepositoryNotFoundException"


def test_events_and_the_status_command(configured: LiveServer, layout: Layout) -> None:
    server = configured
    push(f"oci:{layout.root}:single", server, "rep/cli:v1")
    digest = layout.digest_of("single")
    settled(client(server, A), "rep/cli", digest, expected=3)
    audit = server.data_dir.parent / "audit.jsonl"

    def replicated() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
        found = [
            e
            for e in lines
            if e["detail-type"] == "ECR Replication Action"
            and e["detail"]["image-digest"] == digest
            and e["detail"]["repository-name"] == "rep/cli"
        ]
        assert len(found) == 3, found
        return found

    events = {(e["account"], e["region"]): e for e in eventually(replicated)}
    west = events[(A, WEST)]
    assert west["source"] == "aws.ecr"
    assert west["detail"] == {
        "result": "SUCCESS",
        "repository-name": "rep/cli",
        "image-digest": digest,
        "source-account": A,
        "action-type": "REPLICATE",
        "source-region": EAST,
        "image-tag": "v1",
    }
    assert events[(C, EAST)]["detail"]["result"] == "FAILURE"
    assert events[(C, EAST)]["detail"]["failure-code"] == "ACCESS_DENIED"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage",
            "replication",
            "status",
            "--repository",
            "rep/cli",
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    assert f"{A}/{EAST}/rep/cli@{digest}" in lines[0]
    assert f"-> {C}/{EAST}  FAILED(ACCESS_DENIED)" in lines[0]
    assert Path(server.data_dir).exists()


def test_a_crash_before_the_copy_resumes_from_the_outbox(tmp_path: Path, layout: Layout) -> None:
    """Pushed while no process replicates (`--no-jobs`), then SIGKILL: the next start copies it.
    D's policy allows ecr:ReplicateImage only, so its missing repository may not be created."""
    d = "444444444444"
    data = tmp_path / "data"
    with LiveServer(data, args=["--auth", "open", "--no-jobs"], env=SERVER_ENV) as first:
        login(first)
        a = client(first, A)
        a.put_replication_configuration(
            replicationConfiguration={
                "rules": [{"destinations": [{"region": WEST, "registryId": A}, {"region": EAST, "registryId": d}]}]
            }
        )
        client(first, d).put_registry_policy(
            policyText=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": A},
                            "Action": "ecr:ReplicateImage",
                            "Resource": "*",
                        }
                    ],
                }
            )
        )
        push(f"oci:{layout.root}:multi", first, "crash/app:v1", "--all")
        index = layout.digest_of("multi")
        time.sleep(1.0)
        assert statuses(a, "crash/app", index) == {}
        first.kill()
    with LiveServer(data, port=first.port, args=["--auth", "open"], env=SERVER_ENV) as second:
        a = client(second, A)
        found = settled(a, "crash/app", index, expected=2)
        assert found[(A, WEST)]["status"] == "COMPLETE"
        assert found[(d, EAST)]["failureCode"] == "REPOSITORY_CREATION_DENIED"
        assert manifest_of(client(second, A, WEST), "crash/app", {"imageTag": "v1"})[0] == index
        with pytest.raises(ClientError) as info:
            client(second, d).describe_repositories(repositoryNames=["crash/app"])
        assert info.value.response["Error"]["Code"] == "RepositoryNotFoundException"


def test_a_backfill_copies_what_existed_before_and_not_twice(tmp_path: Path, layout: Layout) -> None:
    audit = tmp_path / "audit.jsonl"
    env = {**SERVER_ENV, "MOORAGE_EVENTS__AUDIT_LOG": str(audit)}
    with LiveServer(tmp_path / "data", args=["--auth", "open"], env=env) as live:
        login(live)
        a = client(live, A)
        push(f"oci:{layout.root}:multi", live, "old/app:v1", "--all")
        push(f"oci:{layout.root}:multi", live, "old/app:stable", "--all")
        push(f"oci:{layout.root}:single", live, "old/lib:1")
        dest = {"region": WEST, "registryId": A}
        with pytest.raises(ClientError) as info:
            a.start_replication_backfill(destination=dest)
        assert info.value.response["Error"]["Code"] == "InvalidParameterException"
        a.put_replication_configuration(replicationConfiguration={"rules": [{"destinations": [dest]}]})
        push(f"oci:{layout.root}:other", live, "new/app:v1")  # replicated at push time
        other = layout.digest_of("other")
        settled(a, "new/app", other, expected=1)

        started = a.start_replication_backfill(destination=dest)
        assert started["status"] == "PREPARING"
        assert started["destination"] == dest
        with pytest.raises(ClientError) as info:
            a.start_replication_backfill(destination=dest)
        assert info.value.response["Error"]["Code"] == "ReplicationBackfillInProgressException"
        backfill_id = started["replicationBackfillId"]

        def finished() -> dict[str, Any]:
            listed = a.list_replication_backfills()["backfills"]
            assert [b["replicationBackfillId"] for b in listed] == [backfill_id]
            assert listed[0]["status"] == "COMPLETE", listed[0]
            summary: dict[str, Any] = listed[0]
            return summary

        summary = eventually(finished, timeout=30)
        assert summary["progress"] == {
            "totalReplicationCount": 4,  # old/app:v1, old/app:stable, old/lib:1, new/app:v1
            "completedReplicationCount": 4,
            "failedReplicationCount": 0,
            "failureCodes": [],
        }
        assert summary["endedAt"] >= summary["startedAt"]
        results = a.describe_replication_backfill_results(replicationBackfillId=backfill_id)
        assert results["status"] == "COMPLETE"
        index, single = layout.digest_of("multi"), layout.digest_of("single")
        assert sorted(
            (r["repositoryName"], r["imageId"]["imageDigest"], r["imageId"]["imageTag"], r["status"])
            for r in results["results"]
        ) == sorted(
            [
                ("old/app", index, "stable", "COMPLETE"),
                ("old/app", index, "v1", "COMPLETE"),
                ("old/lib", single, "1", "COMPLETE"),
                ("new/app", other, "v1", "COMPLETE"),
            ]
        )
        first = a.describe_replication_backfill_results(replicationBackfillId=backfill_id, maxResults=3)
        rest = a.describe_replication_backfill_results(
            replicationBackfillId=backfill_id, maxResults=3, nextToken=first["nextToken"]
        )
        assert len(first["results"]) == 3
        assert len(rest["results"]) == 1
        assert "nextToken" not in rest
        failed = a.describe_replication_backfill_results(replicationBackfillId=backfill_id, resultStatusFilter="FAILED")
        assert failed["results"] == []
        with pytest.raises(ClientError) as info:
            a.stop_replication_backfill(replicationBackfillId=backfill_id)
        assert info.value.response["Error"]["Code"] == "ReplicationBackfillInvalidStatusException"
        with pytest.raises(ClientError) as info:
            a.describe_replication_backfill_results(replicationBackfillId="00000000-0000-4000-8000-000000000000")
        assert info.value.response["Error"]["Code"] == "ReplicationBackfillNotFoundException"

        west = client(live, A, WEST)
        assert manifest_of(west, "old/app", {"imageTag": "stable"})[0] == index
        assert manifest_of(west, "old/lib", {"imageTag": "1"})[0] == single
        # The image replicated at push time was counted, not copied a second time.
        time.sleep(0.5)
        copies = [
            json.loads(line)
            for line in audit.read_text().splitlines()
            if '"ECR Replication Action"' in line and '"new/app"' in line
        ]
        assert len(copies) == 1, copies


DOMAIN = "moorage.test"


def _skopeo_with_hosts(tmp_path: Path, hosts: list[str], *args: str) -> str:
    """skopeo with ECR host names resolving to 127.0.0.1 through a private /etc/hosts in a mount
    namespace of its own (the machine's /etc/hosts is never touched)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare (a private /etc/hosts in a mount namespace)")
    etc_hosts = tmp_path / "hosts"
    etc_hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {h}\n" for h in hosts))
    script = (
        f"mount --bind {shlex.quote(str(etc_hosts))} /etc/hosts && exec skopeo --command-timeout 60s {shlex.join(args)}"
    )
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(tmp_path / "no-auth.json")}
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, f"skopeo {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_pulled_over_v2_from_the_other_region_and_account(tmp_path: Path, layout: Layout) -> None:
    """With registry host names, skopeo pushes to A in us-east-1 and pulls the same digest from
    A in eu-west-1 and from B (open mode: the host names the registry and its root pulls)."""
    env = {**SERVER_ENV, "MOORAGE_REGISTRY_DOMAIN": DOMAIN}
    with LiveServer(tmp_path / "data", args=["--auth", "open"], env=env) as live:
        a = client(live, A)
        a.put_replication_configuration(
            replicationConfiguration={
                "rules": [{"destinations": [{"region": WEST, "registryId": A}, {"region": EAST, "registryId": B}]}]
            }
        )
        client(live, B).put_registry_policy(
            policyText=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
                            "Action": ["ecr:ReplicateImage", "ecr:CreateRepository"],
                            "Resource": "*",
                        }
                    ],
                }
            )
        )
        source, west, other = (
            f"{acct}.dkr.ecr.{region}.{DOMAIN}" for acct, region in ((A, EAST), (A, WEST), (B, EAST))
        )
        hosts = [source, west, other]
        _skopeo_with_hosts(
            tmp_path,
            hosts,
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--all",
            f"oci:{layout.root}:multi",
            f"docker://{source}:{live.port}/rep/app:v1",
        )
        index = layout.digest_of("multi")
        found = settled(a, "rep/app", index, expected=2)
        assert {s["status"] for s in found.values()} == {"COMPLETE"}
        for host in (west, other):
            raw = _skopeo_with_hosts(
                tmp_path, hosts, "inspect", "--raw", "--tls-verify=false", f"docker://{host}:{live.port}/rep/app:v1"
            )
            assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == index
            pulled = tmp_path / f"pulled-{host}"
            _skopeo_with_hosts(
                tmp_path,
                hosts,
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--all",
                f"docker://{host}:{live.port}/rep/app:v1",
                f"oci:{pulled}:v1",
            )
            assert Layout(pulled).digest_of("v1") == index
            Layout(pulled).verify(index)


def test_referrers_follow_their_subject(configured: LiveServer) -> None:
    server = configured
    with httpx.Client(base_url=server.url, auth=server.auth, timeout=30) as v2:
        subject = v2_image(v2, "rep/signed", "v1")
        signature = blob(b"a signature", "application/vnd.example.signature")
        v2_blob(v2, "rep/signed", b"{}")
        v2_blob(v2, "rep/signed", signature.data)
        sig = artifact(subject, "application/vnd.example.signature", blobs=[signature])
        v2_manifest(v2, "rep/signed", sig.digest, sig)
    a = client(server, A)
    settled(a, "rep/signed", sig.digest, expected=3)
    for ecr in (client(server, A, WEST), client(server, B)):
        referrers = ecr.list_image_referrers(repositoryName="rep/signed", subjectId={"imageDigest": subject.digest})
        assert [r["digest"] for r in referrers["referrers"]] == [sig.digest]
        assert referrers["referrers"][0]["artifactType"] == "application/vnd.example.signature"


def test_two_workers_on_postgresql_copy_each_push_once(tmp_path: Path, layout: Layout) -> None:
    if not postgres_available():
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are missing: install postgresql (CI does)")
    audit = tmp_path / "audit.jsonl"
    with PostgresServer() as postgres:
        url = postgres.create_database("replication_e2e")
        env = {**SERVER_ENV, "MOORAGE_METADATA__URL": url, "MOORAGE_EVENTS__AUDIT_LOG": str(audit)}
        with LiveServer(tmp_path / "data", args=["--auth", "open", "--workers", "2"], env=env) as live:
            login(live)
            a = client(live, A)
            a.put_replication_configuration(
                replicationConfiguration={"rules": [{"destinations": [{"region": WEST, "registryId": A}]}]}
            )
            names = [f"pg/app{i}" for i in range(4)]
            for name in names:
                push(f"oci:{layout.root}:multi", live, f"{name}:v1", "--all")
            index = layout.digest_of("multi")
            west = client(live, A, WEST)
            for name in names:
                assert settled(a, name, index, expected=1)[(A, WEST)]["status"] == "COMPLETE"
                assert manifest_of(west, name, {"imageTag": "v1"})[0] == index
            time.sleep(1.0)
    copies = [
        (event["detail"]["repository-name"], event["detail"]["image-digest"])
        for event in map(json.loads, audit.read_text().splitlines())
        if event["detail-type"] == "ECR Replication Action"
    ]
    # Each pushed manifest (the index and its two children) copied once, though both workers
    # consume the outbox.
    children = [m["digest"] for m in layout.json_blob(index)["manifests"]]
    assert sorted(copies) == sorted((name, digest) for name in names for digest in (index, *children))
