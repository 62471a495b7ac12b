"""Replication to destinations in other deployments (`[[replication.remotes]]`), end to end.

The source is a Moorage (`--auth open`, account A in us-east-1) whose configuration sends
`far...` to account R of a second Moorage (its own data dir and port, SigV4 mode: the source
signs GetAuthorizationToken and CreateRepository with R's root key and pushes over /v2/ with the
registry password) and `dist...` to the Debian `docker-registry` (CNCF distribution) behind
htpasswd. The copies are pulled back with skopeo and compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import SERVER_ENV, Layout, login, make_image, need, push, skopeo
from tests.e2e.test_replication_e2e import client, eventually, manifest_of, settled, statuses
from tests.support.images import artifact, blob
from tests.support.images import push_blob as v2_blob
from tests.support.images import push_image as v2_image
from tests.support.images import push_manifest as v2_manifest
from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer
from tests.support.upstream import Distribution

pytestmark = pytest.mark.e2e

A, R, D = "123456789012", "555555555555", "666666666666"
EAST, WEST = "us-east-1", "us-west-2"
USER, PASSWORD = "pusher", "distribution-password-1"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    root = tmp_path_factory.mktemp("remote-image") / "layout"
    make_image(root, "multi", layers=2, layer_size_mb=0.3, seed=81, platforms="linux/amd64,linux/arm64")
    make_image(root, "single", layers=3, layer_size_mb=0.2, seed=82)
    return Layout(root)


@pytest.fixture(scope="module")
def far(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The second Moorage: account R, SigV4, no create-on-push (the source creates repositories)."""
    need("skopeo")
    root = tmp_path_factory.mktemp("remote-moorage")
    with LiveServer(root / "data", env={"MOORAGE_ACCOUNT_ID": R}) as live:
        login(live)
        yield live


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    registry = Distribution(tmp_path_factory.mktemp("remote-dist"), users={USER: PASSWORD}).start()
    yield registry
    registry.stop()


def remotes_toml(far: LiveServer, dist: Distribution) -> str:
    return (
        "[[replication.remotes]]\n"
        f'registry_id = "{R}"\nregion = "{EAST}"\nurl = "{far.url}"\n'
        f'access_key_id = "{ROOT_ACCESS_KEY_ID}"\nsecret_access_key = "{ROOT_SECRET_ACCESS_KEY}"\n\n'
        "[[replication.remotes]]\n"
        f'registry_id = "{D}"\nregion = "{WEST}"\nurl = "{dist.url}"\n'
        f'username = "{USER}"\npassword = "{PASSWORD}"\n'
    )


RULES = {
    "rules": [
        {
            "destinations": [{"region": EAST, "registryId": R}],
            "repositoryFilters": [{"filter": "far", "filterType": "PREFIX_MATCH"}],
        },
        {
            "destinations": [{"region": WEST, "registryId": D}],
            "repositoryFilters": [{"filter": "dist", "filterType": "PREFIX_MATCH"}],
        },
    ]
}


def source_server(root: Path, far: LiveServer, dist: Distribution, *, port: int | None = None) -> LiveServer:
    config = root / "moorage.toml"
    config.write_text(remotes_toml(far, dist))
    env = {
        **SERVER_ENV,
        "MOORAGE_CONFIG": str(config),
        "MOORAGE_EVENTS__AUDIT_LOG": str(root / "audit.jsonl"),
        "MOORAGE_EVENTS__RETRY_MAX_INTERVAL": "2s",
    }
    return LiveServer(root / "data", port=port, args=["--auth", "open"], env=env)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, far: LiveServer, dist: Distribution) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("remote-source")
    with source_server(root, far, dist) as live:
        login(live)
        a = client(live, A)
        a.put_replication_configuration(replicationConfiguration=RULES)
        yield live


def pulled_from(tmp_path: Path, reference: str, *creds: str) -> Layout:
    """skopeo copy --all of `reference` into a fresh layout, every blob checked by skopeo."""
    out = tmp_path / f"pulled-{hashlib.sha256(reference.encode()).hexdigest()[:8]}"
    skopeo("copy", "--quiet", "--src-tls-verify=false", *creds, "--all", f"docker://{reference}", f"oci:{out}:got")
    return Layout(out)


def test_a_push_is_pushed_to_another_moorage(
    source: LiveServer, far: LiveServer, layout: Layout, tmp_path: Path
) -> None:
    push(f"oci:{layout.root}:multi", source, "far/app:v1", "--all")
    index = layout.digest_of("multi")
    a = client(source, A)
    found = settled(a, "far/app", index, expected=1)
    assert found[(R, EAST)] == {"registryId": R, "region": EAST, "status": "COMPLETE"}

    remote = far.ecr()
    # The repository was made there through its ECR API, with its defaults.
    repo = remote.describe_repositories(repositoryNames=["far/app"])["repositories"][0]
    assert repo["registryId"] == R
    assert repo["imageTagMutability"] == "MUTABLE"
    _, source_manifest = manifest_of(a, "far/app", {"imageTag": "v1"})
    assert manifest_of(remote, "far/app", {"imageTag": "v1"}) == (index, source_manifest)
    children = {m["digest"] for m in json.loads(source_manifest)["manifests"]}
    listed = {d["imageDigest"] for d in remote.describe_images(repositoryName="far/app")["imageDetails"]}
    assert listed == {index, *children}
    copy = pulled_from(tmp_path, f"{far.address}/far/app:v1")
    assert copy.digest_of("got") == index
    copy.verify(index)

    audit = source.data_dir.parent / "audit.jsonl"

    def replicated() -> dict[str, Any]:
        lines = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
        found = [
            e
            for e in lines
            if e["detail-type"] == "ECR Replication Action"
            and e["detail"]["repository-name"] == "far/app"
            and e["detail"]["image-digest"] == index
        ]
        assert len(found) == 1, found
        first: dict[str, Any] = found[0]
        return first

    event = eventually(replicated)
    assert (event["account"], event["region"]) == (R, EAST)
    assert event["detail"] == {
        "result": "SUCCESS",
        "repository-name": "far/app",
        "image-digest": index,
        "source-account": A,
        "action-type": "REPLICATE",
        "source-region": EAST,
        "image-tag": "v1",
    }
    # Nothing was copied inside the source deployment for the remote destination.
    with pytest.raises(ClientError) as info:
        client(source, R).describe_repositories(repositoryNames=["far/app"])
    assert info.value.response["Error"]["Code"] == "RepositoryNotFoundException"


def test_a_push_is_pushed_to_distribution_with_htpasswd(
    source: LiveServer, dist: Distribution, layout: Layout, tmp_path: Path
) -> None:
    creds = ("--src-creds", f"{USER}:{PASSWORD}")
    a = client(source, A)
    push(f"oci:{layout.root}:multi", source, "dist/app:v1", "--all")
    push(f"oci:{layout.root}:single", source, "dist/lib:2.0")
    index, single = layout.digest_of("multi"), layout.digest_of("single")
    assert settled(a, "dist/app", index, expected=1)[(D, WEST)]["status"] == "COMPLETE"
    assert settled(a, "dist/lib", single, expected=1)[(D, WEST)]["status"] == "COMPLETE"
    # The distribution refuses anonymous pulls: the copies came with the htpasswd credentials.
    assert httpx.get(f"{dist.url}/v2/dist/app/manifests/v1", timeout=10).status_code == 401
    for reference, digest in ((f"{dist.host}/dist/app:v1", index), (f"{dist.host}/dist/lib:2.0", single)):
        raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{reference}")
        assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == digest
        copy = pulled_from(tmp_path, reference, *creds)
        assert copy.digest_of("got") == digest
        copy.verify(digest)
    # The same image again under another name: its blobs are mounted or found, and it is there.
    push(f"oci:{layout.root}:single", source, "dist/lib-copy:2.0")
    assert settled(a, "dist/lib-copy", single, expected=1)[(D, WEST)]["status"] == "COMPLETE"
    assert pulled_from(tmp_path, f"{dist.host}/dist/lib-copy:2.0", *creds).digest_of("got") == single


def blob_bytes_received(server: LiveServer) -> float:
    """The server's `moorage_blob_bytes{direction="in"}` (loopback clients may read /metrics)."""
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith('moorage_blob_bytes_total{direction="in"}'):
            return float(line.rpartition(" ")[2])
    raise AssertionError("no moorage_blob_bytes_total in /metrics")


def test_blobs_already_there_are_mounted_not_sent_again(source: LiveServer, far: LiveServer, layout: Layout) -> None:
    a = client(source, A)
    push(f"oci:{layout.root}:single", source, "far/mount-one:v1")
    digest = layout.digest_of("single")
    assert settled(a, "far/mount-one", digest, expected=1)[(R, EAST)]["status"] == "COMPLETE"
    sent = blob_bytes_received(far)
    # The remote does not mount (ECR mounts only with its BLOB_MOUNTING setting ENABLED): the
    # upload it opened instead carries the bytes.
    push(f"oci:{layout.root}:single", source, "far/mount-two:v1")
    assert settled(a, "far/mount-two", digest, expected=1)[(R, EAST)]["status"] == "COMPLETE"
    again = blob_bytes_received(far)
    assert again - sent > 500_000
    far.ecr().put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    try:
        push(f"oci:{layout.root}:single", source, "far/mount-three:v1")
        assert settled(a, "far/mount-three", digest, expected=1)[(R, EAST)]["status"] == "COMPLETE"
        # Mounted from far/mount-two, where Moorage pushed them: no blob bytes sent this time.
        assert blob_bytes_received(far) == again
    finally:
        far.ecr().put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
    for name in ("far/mount-two", "far/mount-three"):
        got, body = manifest_of(far.ecr(), name, {"imageTag": "v1"})
        assert got == digest
        manifest = json.loads(body)
        # far/mount-two received each blob once, in full.
        assert manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"]) == again - sent


def test_an_immutable_tag_there_keeps_its_image(source: LiveServer, far: LiveServer, layout: Layout) -> None:
    remote = far.ecr()
    remote.create_repository(repositoryName="far/fixed", imageTagMutability="IMMUTABLE")
    a = client(source, A)
    push(f"oci:{layout.root}:single", source, "far/fixed:v1")
    first = layout.digest_of("single")
    assert settled(a, "far/fixed", first, expected=1)[(R, EAST)]["status"] == "COMPLETE"
    push(f"oci:{layout.root}:multi", source, "far/fixed:v1", "--all")  # v1 moves in the source
    second = layout.digest_of("multi")
    assert settled(a, "far/fixed", second, expected=1)[(R, EAST)]["status"] == "COMPLETE"
    # There the image arrived without the tag, which still names the first.
    assert manifest_of(remote, "far/fixed", {"imageTag": "v1"})[0] == first
    details = {d["imageDigest"]: d for d in remote.describe_images(repositoryName="far/fixed")["imageDetails"]}
    assert second in details
    assert "imageTags" not in details[second]


def test_referrers_follow_their_subject_to_the_remote(source: LiveServer, far: LiveServer) -> None:
    with httpx.Client(base_url=source.url, auth=source.auth, timeout=30) as v2:
        subject = v2_image(v2, "far/signed", "v1")
        signature = blob(b"a remote signature", "application/vnd.example.signature")
        v2_blob(v2, "far/signed", b"{}")
        v2_blob(v2, "far/signed", signature.data)
        sig = artifact(subject, "application/vnd.example.signature", blobs=[signature])
        v2_manifest(v2, "far/signed", sig.digest, sig)
    a = client(source, A)
    assert settled(a, "far/signed", sig.digest, expected=1)[(R, EAST)]["status"] == "COMPLETE"
    assert settled(a, "far/signed", subject.digest, expected=1)[(R, EAST)]["status"] == "COMPLETE"
    referrers = far.ecr().list_image_referrers(repositoryName="far/signed", subjectId={"imageDigest": subject.digest})
    assert [r["digest"] for r in referrers["referrers"]] == [sig.digest]
    body = httpx.get(
        f"{far.url}/v2/far/signed/blobs/{signature.digest}", auth=far.auth, timeout=30, follow_redirects=True
    ).content
    assert body == signature.data


def test_a_remote_that_is_down_fails_then_completes_when_it_is_up(
    source: LiveServer, far: LiveServer, layout: Layout, tmp_path: Path
) -> None:
    a = client(source, A)
    far.stop()
    try:
        push(f"oci:{layout.root}:single", source, "far/later:v1")
        digest = layout.digest_of("single")

        def failed() -> None:
            found = statuses(a, "far/later", digest)
            assert found.get((R, EAST), {}).get("status") == "FAILED", found

        eventually(failed)
        assert statuses(a, "far/later", digest)[(R, EAST)]["failureCode"] == "DESTINATION_UNREACHABLE"
        time.sleep(2.5)  # retried meanwhile (every 1 s, 2 s, 2 s ...), still failing
        assert statuses(a, "far/later", digest)[(R, EAST)]["status"] == "FAILED"
    finally:
        far.start()

    def complete() -> None:
        assert statuses(a, "far/later", digest)[(R, EAST)]["status"] == "COMPLETE"

    eventually(complete, timeout=20)
    copy = pulled_from(tmp_path, f"{far.address}/far/later:v1")
    assert copy.digest_of("got") == digest
    copy.verify(digest)


def test_a_backfill_pushes_to_a_remote(source: LiveServer, far: LiveServer, layout: Layout) -> None:
    """An image pushed before `far-late` had a rule is pushed there by a backfill."""
    a = client(source, A)
    push(f"oci:{layout.root}:single", source, "late/app:v3")
    digest = layout.digest_of("single")
    time.sleep(0.5)
    assert statuses(a, "late/app", digest) == {}
    a.put_replication_configuration(
        replicationConfiguration={"rules": [*RULES["rules"], {"destinations": [{"region": EAST, "registryId": R}]}]}
    )
    try:
        backfill = a.start_replication_backfill(destination={"region": EAST, "registryId": R})

        def finished() -> dict[str, Any]:
            found: dict[str, Any] = a.describe_replication_backfill_results(
                replicationBackfillId=backfill["replicationBackfillId"]
            )
            assert found["status"] == "COMPLETE", found
            return found

        results = eventually(finished, timeout=30)
        mine = [r for r in results["results"] if r["repositoryName"] == "late/app"]
        assert [(r["imageId"]["imageDigest"], r["status"]) for r in mine] == [(digest, "COMPLETE")]
        assert manifest_of(far.ecr(), "late/app", {"imageTag": "v3"})[0] == digest
    finally:
        a.put_replication_configuration(replicationConfiguration=RULES)


@pytest.mark.slow
def test_kill_9_mid_push_to_a_remote_resumes_and_completes(tmp_path: Path, far: LiveServer, dist: Distribution) -> None:
    """A 200 MiB image: the source is killed while it pushes to the remote, started again, and
    the copy ends COMPLETE and byte-identical."""
    layout_root = tmp_path / "big"
    digest = make_image(layout_root, "big", layers=2, layer_size_mb=100, seed=91)
    big = Layout(layout_root)
    root = tmp_path / "source"
    root.mkdir()
    first = source_server(root, far, dist).start()
    try:
        login(first)
        a = client(first, A)
        a.put_replication_configuration(replicationConfiguration=RULES)
        push(f"oci:{big.root}:big", first, "far/big:v1")

        def started() -> None:
            assert statuses(a, "far/big", digest).get((R, EAST), {}).get("status") == "IN_PROGRESS"

        eventually(started, timeout=20)
        # Mid-push: a layer is streaming into the remote's staging area.
        (staging,) = (p for p in far.data_dir.rglob("uploads") if p.is_dir())

        def size(f: Path) -> int:
            try:
                return f.stat().st_size
            except FileNotFoundError:  # committed meanwhile
                return 0

        def streaming() -> None:
            assert any(size(f) > (8 << 20) for f in staging.iterdir()), list(staging.iterdir())

        eventually(streaming, timeout=20)
    finally:
        first.kill()
    # Killed mid-push: the remote does not have the image.
    remote = far.ecr()
    with pytest.raises(ClientError) as info:
        remote.describe_images(repositoryName="far/big", imageIds=[{"imageDigest": digest}])
    assert info.value.response["Error"]["Code"] in ("ImageNotFoundException", "RepositoryNotFoundException")
    with source_server(root, far, dist, port=first.port) as second:
        a = client(second, A)

        def complete() -> None:
            assert statuses(a, "far/big", digest)[(R, EAST)]["status"] == "COMPLETE"

        eventually(complete, timeout=90)
    copy = pulled_from(tmp_path, f"{far.address}/far/big:v1")
    assert copy.digest_of("got") == digest
    copy.verify(digest)


def test_remote_credentials_come_from_secrets(
    tmp_path: Path, far: LiveServer, dist: Distribution, layout: Layout
) -> None:
    """`credential_arn` instead of inline credentials: an access key for the other Moorage, a
    username/accessToken for distribution, read at every copy (a changed value is used by the
    next push); a secret that does not exist fails that destination's copies, and only those."""
    import boto3

    root = tmp_path / "secret-source"
    root.mkdir()
    config = root / "moorage.toml"
    config.write_text("")
    env = {**SERVER_ENV, "MOORAGE_CONFIG": str(config)}
    server = LiveServer(root / "data", args=["--auth", "open"], env=env)

    def secrets() -> Any:
        return boto3.client(
            "secretsmanager", endpoint_url=server.url, region_name=EAST, aws_access_key_id=A, aws_secret_access_key="x"
        )

    with server:
        sm = secrets()
        far_arn = sm.create_secret(
            Name="replication/far",
            SecretString=json.dumps({"accessKeyId": ROOT_ACCESS_KEY_ID, "secretAccessKey": ROOT_SECRET_ACCESS_KEY}),
        )["ARN"]
        dist_arn = sm.create_secret(
            Name="replication/dist", SecretString=json.dumps({"username": USER, "accessToken": PASSWORD})
        )["ARN"]
    missing_arn = f"arn:aws:secretsmanager:{EAST}:{A}:secret:replication/none-AbCdEf"
    lost = "777777777777"
    config.write_text(
        "[[replication.remotes]]\n"
        f'registry_id = "{R}"\nregion = "{EAST}"\nurl = "{far.url}"\ncredential_arn = "{far_arn}"\n\n'
        "[[replication.remotes]]\n"
        f'registry_id = "{D}"\nregion = "{EAST}"\nurl = "{dist.url}"\ncredential_arn = "{dist_arn}"\n\n'
        "[[replication.remotes]]\n"
        f'registry_id = "{lost}"\nregion = "{EAST}"\nurl = "{far.url}"\ncredential_arn = "{missing_arn}"\n'
    )
    rules = {
        "rules": [
            {
                "destinations": [{"region": EAST, "registryId": R}, {"region": EAST, "registryId": D}],
                "repositoryFilters": [{"filter": "sec", "filterType": "PREFIX_MATCH"}],
            },
            {
                "destinations": [{"region": EAST, "registryId": lost}],
                "repositoryFilters": [{"filter": "lost", "filterType": "PREFIX_MATCH"}],
            },
        ]
    }
    with server:
        login(server)
        a = client(server, A)
        a.put_replication_configuration(replicationConfiguration=rules)
        digest = layout.digest_of("single")
        push(f"oci:{layout.root}:single", server, "sec/app:v1")
        found = settled(a, "sec/app", digest, expected=2)
        assert found[(R, EAST)]["status"] == "COMPLETE", found
        assert found[(D, EAST)]["status"] == "COMPLETE", found
        assert manifest_of(far.ecr(), "sec/app", {"imageTag": "v1"})[0] == digest
        copy = pulled_from(tmp_path, f"{dist.host}/sec/app:v1", "--src-creds", f"{USER}:{PASSWORD}")
        assert copy.digest_of("got") == digest

        push(f"oci:{layout.root}:single", server, "lost/app:v1")
        (failed,) = settled(a, "lost/app", digest, expected=1).values()
        assert (failed["status"], failed.get("failureCode")) == ("FAILED", "CREDENTIALS_UNAVAILABLE")

        # The secret's value is read at each copy: a wrong token now is refused by distribution.
        secrets().put_secret_value(SecretId=dist_arn, SecretString=json.dumps({"username": USER, "accessToken": "no"}))
        push(f"oci:{layout.root}:single", server, "sec/other:v1")
        found = settled(a, "sec/other", digest, expected=2)
        assert found[(R, EAST)]["status"] == "COMPLETE", found
        assert (found[(D, EAST)]["status"], found[(D, EAST)].get("failureCode")) == ("FAILED", "ACCESS_DENIED")
