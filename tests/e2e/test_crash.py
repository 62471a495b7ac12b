"""Crash consistency: SIGKILL the server in the middle of a real skopeo push, restart it on the same
data dir, and check that nothing acknowledged was lost and nothing half-written is visible."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    AUTH_FILE,
    SERVER_ENV,
    Layout,
    fetch_verified_blob,
    get_manifest,
    inspect_raw,
    login,
    make_image,
    need,
    pull,
    push,
    sha256_hex,
)
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e

BIG_TAG = "v1"
BIG_REPO = "e2e/crash-big"
FIRST_REPO = "e2e/crash-first"


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """3 layers of 40 MiB of incompressible data: a push that takes long enough to be interrupted."""
    root = tmp_path_factory.mktemp("big-image") / "layout"
    make_image(root, BIG_TAG, layers=3, layer_size_mb=40, seed=77)
    return Layout(root)


@dataclass(frozen=True)
class KillPoint:
    """When to SIGKILL the server during the big push. `must_fire`: the kill has to land before the
    push finishes, else the case tested nothing (a fixed delay may legitimately come too late)."""

    name: str
    due: Callable[[LiveServer, Layout, float], bool]
    must_fire: bool


def _staging_reached(size: int) -> Callable[[LiveServer, Layout, float], bool]:
    def due(server: LiveServer, big: Layout, elapsed: float) -> bool:
        staging = server.data_dir / "blobs" / "uploads"
        assert staging.is_dir(), f"no upload staging dir at {staging}: the storage layout changed"
        return any(path.stat().st_size >= size for path in staging.iterdir() if path.is_file())

    return due


def _a_layer_committed(server: LiveServer, big: Layout, elapsed: float) -> bool:
    layers = big.json_blob(big.digest_of(BIG_TAG))["layers"]
    with httpx.Client(timeout=5, auth=server.auth) as client:
        return any(
            client.head(f"{server.url}/v2/{BIG_REPO}/blobs/{layer['digest']}").status_code == 200 for layer in layers
        )


def _after(seconds: float) -> Callable[[LiveServer, Layout, float], bool]:
    return lambda server, big, elapsed: elapsed >= seconds


KILL_POINTS = [
    KillPoint("staging-4MiB", _staging_reached(4 << 20), must_fire=True),
    KillPoint("first-layer-committed", _a_layer_committed, must_fire=True),
    KillPoint("after-0.8s", _after(0.8), must_fire=False),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    need("skopeo")
    live = LiveServer(tmp_path / "data", env=SERVER_ENV)
    try:
        yield login(live.start())
    finally:
        live.kill()


def _interrupted_push(server: LiveServer, big: Layout, point: KillPoint, logs: Path) -> tuple[bool, int]:
    """Run the big push in the background and SIGKILL the server at `point`.
    Returns (whether the kill landed before skopeo finished, skopeo's exit status)."""
    command = [
        "skopeo",
        "copy",
        "--dest-tls-verify=false",
        f"oci:{big.root}:{BIG_TAG}",
        f"docker://{server.address}/{BIG_REPO}:{BIG_TAG}",
    ]
    with (logs / "push.out").open("wb") as out, (logs / "push.err").open("wb") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, "REGISTRY_AUTH_FILE": str(AUTH_FILE)}
        )
    fired = False
    try:
        start = time.monotonic()
        while time.monotonic() - start < 60 and process.poll() is None:
            if point.due(server, big, time.monotonic() - start):
                fired = process.poll() is None
                break
            time.sleep(0.01)
        server.kill()
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return fired, code


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.name for p in KILL_POINTS])
def test_sigkill_during_push(
    server: LiveServer, small_image: Layout, big_image: Layout, point: KillPoint, tmp_path: Path
) -> None:
    first_digest = small_image.digest_of("v1")
    first_blobs = small_image.closure(first_digest)
    big_digest = big_image.digest_of(BIG_TAG)
    big_blobs = big_image.closure(big_digest)

    push(f"oci:{small_image.root}:v1", server, f"{FIRST_REPO}:v1")  # acknowledged before the crash

    fired, code = _interrupted_push(server, big_image, point, tmp_path)
    push_err = (tmp_path / "push.err").read_text(errors="replace")
    if point.must_fire:
        assert fired, f"the push finished (exit {code}) before the kill point {point.name}:\n{push_err}"
    if fired:
        assert code != 0, "skopeo reported success for a push whose server was killed midway"

    restarted = LiveServer(server.data_dir, port=server.port, env=server.env)
    restarted.start()
    try:
        # 1. The acknowledged image survived, byte for byte.
        assert "sha256:" + sha256_hex(inspect_raw(restarted, f"{FIRST_REPO}:v1")) == first_digest
        back = Layout(tmp_path / "first-back")
        pull(restarted, f"{FIRST_REPO}:v1", f"oci:{back.root}:v1")
        assert back.digest_of("v1") == first_digest
        assert back.verify(first_digest) == first_blobs
        for digest in first_blobs[1:]:
            assert fetch_verified_blob(restarted, FIRST_REPO, digest) == small_image.blob(digest)

        # 2. The interrupted tag is absent, or complete: never a manifest with missing blobs.
        response = get_manifest(restarted, BIG_REPO, BIG_TAG)
        if response.status_code == 200:
            assert response.content == big_image.blob(big_digest)
            for digest in big_blobs[1:]:
                fetch_verified_blob(restarted, BIG_REPO, digest)
        else:
            assert response.status_code == 404, f"{response.status_code} {response.text}"
            assert response.json()["errors"][0]["code"] in {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}
            assert not fired or code != 0

        # 3. Whatever blob of the interrupted push the registry claims to have is intact.
        with httpx.Client(timeout=30, auth=restarted.auth) as client:
            for digest in big_blobs[1:]:
                head = client.head(f"{restarted.url}/v2/{BIG_REPO}/blobs/{digest}")
                assert head.status_code in (200, 404), f"HEAD {digest}: {head.status_code}"
                if head.status_code == 200:
                    assert int(head.headers["content-length"]) == big_image.blob_path(digest).stat().st_size
                    fetch_verified_blob(restarted, BIG_REPO, digest)

        # 4. Pushing again completes, and the image pulls back identical.
        push(f"oci:{big_image.root}:{BIG_TAG}", restarted, f"{BIG_REPO}:{BIG_TAG}")
        assert "sha256:" + sha256_hex(inspect_raw(restarted, f"{BIG_REPO}:{BIG_TAG}")) == big_digest
        big_back = Layout(tmp_path / "big-back")
        pull(restarted, f"{BIG_REPO}:{BIG_TAG}", f"oci:{big_back.root}:{BIG_TAG}")
        assert big_back.digest_of(BIG_TAG) == big_digest
        assert big_back.verify(big_digest) == big_blobs
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- interrupted push (exit {code}) ---\n{push_err[-2000:]}"
            f"\n--- server log ---\n{restarted.log()[-4000:]}"
        ) from exc
    finally:
        restarted.stop()
