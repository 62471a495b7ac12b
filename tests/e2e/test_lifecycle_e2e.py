"""Lifecycle end to end: skopeo pushes 30 images, a policy keeps the newest five `prod*` images and
expires untagged ones after a day, the clock moves two days (`POST /_moorage/clock`), `moorage
lifecycle run` applies the policy, and `moorage gc` then reclaims exactly the bytes no survivor uses."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import login, need, push, skopeo
from tests.e2e.conftest import moorage_cli as moorage
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REPO = "team/lifecycle"
POLICY = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep the newest five prod images",
            "selection": {
                "tagStatus": "tagged",
                "tagPatternList": ["prod*"],
                "countType": "imageCountMoreThan",
                "countNumber": 5,
            },
            "action": {"type": "expire"},
        },
        {
            "rulePriority": 2,
            "description": "expire untagged images after a day",
            "selection": {
                "tagStatus": "untagged",
                "countType": "sinceImagePushed",
                "countUnit": "days",
                "countNumber": 1,
            },
            "action": {"type": "expire"},
        },
    ]
}


@dataclass
class Layout:
    """An OCI image layout written by hand: every image gets its own config and layer, plus shared ones."""

    root: Path
    refs: list[dict[str, Any]] = field(default_factory=list)
    closures: dict[str, dict[str, int]] = field(default_factory=dict)  # manifest digest -> {blob: size}

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def _blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}"

    def layer(self, name: str, size: int) -> tuple[str, int, str]:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mtime = 0
            tar.addfile(info, io.BytesIO(os.urandom(size)))
        diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
        data = gzip.compress(raw.getvalue(), mtime=0)  # compressed, so skopeo pushes it as it is
        return self._blob(data), len(data), diff_id

    def image(self, ref: str, layers: list[tuple[str, int, str]]) -> str:
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {"ref": ref}},
                "rootfs": {"type": "layers", "diff_ids": [diff for _, _, diff in layers]},
            }
        ).encode()
        config_digest = self._blob(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s, _ in layers],
            }
        ).encode()
        digest = self._blob(manifest)
        self.refs.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        )
        self.closures[digest] = {config_digest: len(config), **{d: s for d, s, _ in layers}}
        return digest

    def save(self) -> None:
        (self.root / "index.json").write_text(
            json.dumps(
                {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.refs}
            )
        )


def blob_bytes(live: LiveServer) -> int:
    root = live.data_dir / "blobs" / "blobs"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_policy_expires_the_right_images_and_gc_reclaims_exactly_their_bytes(tmp_path: Path) -> None:
    need("skopeo")
    live = LiveServer(tmp_path / "data", args=["--allow-clock-control", "--no-jobs"])
    login(live.start(60.0))
    try:
        ecr = live.ecr()
        ecr.create_repository(repositoryName=REPO)
        layout = Layout(tmp_path / "layout")
        base = layout.layer("base", 64 * 1024)  # in every image: survives
        junk = layout.layer("junk", 16 * 1024)  # only in the untagged images: goes with them
        prod = [layout.image(f"prod-{i}", [base, layout.layer(f"p{i}", 20_000 + i)]) for i in range(1, 13)]
        dev = [layout.image(f"dev-{i}", [base, layout.layer(f"d{i}", 30_000 + i)]) for i in range(1, 9)]
        old = [layout.image(f"old-{i}", [base, junk, layout.layer(f"u{i}", 10_000 + i)]) for i in range(9)]
        fresh = layout.image("fresh", [base, layout.layer("f", 12_345)])
        layout.save()
        source = f"oci:{layout.root}"

        # prod-1 .. prod-12 in order (their push times decide which five are the newest), the rest in
        # parallel; untagged images are pushed by digest.
        for i in range(1, 13):
            push(f"{source}:prod-{i}", live, f"{REPO}:prod-{i}")
        with ThreadPoolExecutor(max_workers=6) as pool:
            jobs = [pool.submit(push, f"{source}:dev-{i}", live, f"{REPO}:dev-{i}") for i in range(1, 9)]
            jobs += [pool.submit(push, f"{source}:old-{i}", live, f"{REPO}@{old[i]}") for i in range(9)]
            for job in jobs:
                job.result()
        moved = httpx.post(f"{live.url}/_moorage/clock", json={"advance_seconds": 2 * 86400}, timeout=10)
        assert moved.status_code == 200, moved.text
        push(f"{source}:fresh", live, f"{REPO}@{fresh}")  # pushed "now", after the jump: less than a day old
        every = ecr.describe_images(repositoryName=REPO, maxResults=100)["imageDetails"]
        assert len(every) == 30
        ecr.put_lifecycle_policy(repositoryName=REPO, lifecyclePolicyText=json.dumps(POLICY))

        report = moorage(live, "lifecycle", "run")
        assert "16 expired, 0 archived" in report, report
        survivors = set(prod[7:]) | set(dev) | {fresh}
        expired = set(prod[:7]) | set(old)
        details = ecr.describe_images(repositoryName=REPO, maxResults=100)["imageDetails"]
        assert {d["imageDigest"] for d in details} == survivors
        assert {t for d in details for t in d.get("imageTags", [])} == {f"prod-{i}" for i in range(8, 13)} | {
            f"dev-{i}" for i in range(1, 9)
        }
        assert "lastEvaluatedAt" in ecr.get_lifecycle_policy(repositoryName=REPO)
        history = moorage(live, "lifecycle", "history", "--repository", REPO).splitlines()
        assert {line.split("\t")[4] for line in history} == expired

        # Expired images cannot be pulled any more; survivors can.
        for ref in (f"{REPO}:prod-1", f"{REPO}:prod-7", f"{REPO}@{old[0]}"):
            done = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{live.address}/{ref}", check=False)
            assert done.returncode != 0, ref
            assert "manifest unknown" in done.stderr.lower(), done.stderr
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{live.address}/{REPO}:prod-8")

        # GC reclaims exactly the blobs that only expired images referenced (the junk layer once).
        kept = {blob for digest in survivors for blob in layout.closures[digest]}
        gone = {blob: size for digest in expired for blob, size in layout.closures[digest].items() if blob not in kept}
        before = blob_bytes(live)
        out = moorage(live, "gc", "--grace-period", "0s")
        assert f"reclaimed {len(gone)} blob(s), {sum(gone.values())} bytes" in out, out
        assert before - blob_bytes(live) == sum(gone.values())
        skopeo(
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{live.address}/{REPO}:prod-12",
            f"oci:{tmp_path / 'out'}:x",
        )
    finally:
        live.stop()
