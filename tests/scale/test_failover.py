"""A replica dies (SIGKILL) in the middle of a large push through it; the client retries through the
other replica, which completes the push; the image pulls back byte-identical through both (the dead
one restarted) and nothing half-written was ever visible."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import AUTH_FILE, Layout, fetch_verified_blob, inspect_raw, make_image, pull, sha256_hex, skopeo
from tests.scale.conftest import ClusterFactory

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.s3]

REPO = "scale/failover"
TAG = "v1"


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """2 layers of 30 MiB of incompressible data: a push that takes long enough to be interrupted."""
    root = tmp_path_factory.mktemp("scale-big-image") / "layout"
    make_image(root, TAG, layers=2, layer_size_mb=30, seed=57)
    return Layout(root)


def test_replica_killed_mid_push_then_push_through_the_other(
    make_cluster: ClusterFactory, big_image: Layout, tmp_path: Path
) -> None:
    cluster = make_cluster()
    a, b = cluster.replicas
    b.ecr().create_repository(repositoryName=REPO)
    digest = big_image.digest_of(TAG)
    closure = big_image.verify(digest)

    # Push through A in the background; SIGKILL A as soon as an upload has staged bytes in S3.
    command = ["skopeo", "copy", "--dest-tls-verify=false", f"oci:{big_image.root}:{TAG}"]
    command.append(f"docker://{a.address}/{REPO}:{TAG}")
    with (tmp_path / "push.out").open("wb") as out, (tmp_path / "push.err").open("wb") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, "REGISTRY_AUTH_FILE": str(AUTH_FILE)}
        )
    fired = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if cluster.staged_pieces():
                fired = process.poll() is None
                break
            time.sleep(0.02)
        a.kill()
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    push_err = (tmp_path / "push.err").read_text(errors="replace")
    assert fired, f"the push finished (exit {code}) before any upload was staged:\n{push_err}"
    assert code != 0, "skopeo reported success for a push whose replica was killed midway"

    # B never stopped serving, and shows nothing of the interrupted push.
    assert httpx.get(f"{b.url}/healthz", timeout=10).status_code == 200
    ecr_b = b.ecr()
    missing = ecr_b.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": TAG}])
    assert missing["images"] == []
    assert [f["failureCode"] for f in missing["failures"]] == ["ImageNotFound"]

    # The client retries through the other replica: the push completes.
    digest_file = tmp_path / "retry.digest"
    skopeo(
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--digestfile",
        str(digest_file),
        f"oci:{big_image.root}:{TAG}",
        f"docker://{b.address}/{REPO}:{TAG}",
        timeout=180,
    )
    assert digest_file.read_text().strip() == digest
    (image,) = ecr_b.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": TAG}])["images"]
    assert image["imageId"]["imageDigest"] == digest

    back_b = Layout(tmp_path / "back-b")
    pull(b, f"{REPO}:{TAG}", f"oci:{back_b.root}:{TAG}")
    assert back_b.digest_of(TAG) == digest
    assert back_b.verify(digest) == closure
    for blob in closure:
        assert back_b.blob(blob) == big_image.blob(blob), f"{blob} pulled through B differs"

    # The killed replica comes back on the same data dir and serves the same bytes.
    a = cluster.restart(a)
    assert "sha256:" + sha256_hex(inspect_raw(a, f"{REPO}:{TAG}")) == digest
    back_a = Layout(tmp_path / "back-a")
    pull(a, f"{REPO}:{TAG}", f"oci:{back_a.root}:{TAG}")
    assert back_a.verify(digest) == closure
    for blob in closure:
        assert back_a.blob(blob) == big_image.blob(blob), f"{blob} pulled through restarted A differs"
    for blob in closure[1:]:  # the config and the layers, straight from the blob endpoint
        assert fetch_verified_blob(a, REPO, blob) == big_image.blob(blob)
