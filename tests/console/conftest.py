"""A registry with something to look at, for the console tests: real pushes over /v2/ (httpx), a
real scan (the scanner fixtures and `moorage vulndb import`), a restricted user from `moorage admin`."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.scanning.helpers import DATA, base_layer, tar_layer
from tests.support import images as im
from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer

ACCOUNT = "123456789012"
REGION = "us-east-1"
TEAM_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/*"}
    ],
}
LIFECYCLE_POLICY = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep one untagged image",
            "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
            "action": {"type": "expire"},
        }
    ]
}


@dataclass
class World:
    live: LiveServer
    digests: dict[str, str] = field(default_factory=dict)
    dev_key: tuple[str, str] = ("", "")

    @property
    def root_key(self) -> tuple[str, str]:
        return ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY

    def ecr(self) -> Any:
        return self.live.ecr()

    def admin(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "moorage", "admin", *args, "--data-dir", str(self.live.data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "moorage", *args, "--data-dir", str(self.live.data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _push_scannable(client: httpx.Client, name: str, tag: str) -> str:
    """An image whose one layer holds real package metadata (so the scan finds real CVEs) and whose
    config has an environment, an entrypoint, labels and history."""
    layer = tar_layer(base_layer())
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-11-30T12:00:00Z",
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin", "GREETING=ahoy"],
                "Entrypoint": ["/app/server"],
                "Cmd": ["--port", "8080"],
                "Labels": {"org.example.team": "harbour"},
            },
            "history": [{"created_by": "COPY rootfs / # buildkit", "created": "2026-11-30T12:00:00Z"}],
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_blob = im.blob(config, im.OCI_CONFIG)
    layer_blob = im.blob(layer, im.OCI_LAYER)
    for item in (config_blob, layer_blob):
        im.push_blob(client, name, item.data)
    manifest = im.oci_manifest(config_blob, [layer_blob])
    im.push_manifest(client, name, tag, manifest)
    return manifest.digest


def build_world(live: LiveServer, *, scan: bool = True) -> World:
    world = World(live)
    ecr = live.ecr()
    for name in ("team/app", "team/tools", "other/secret"):
        ecr.create_repository(repositoryName=name)
    client = httpx.Client(base_url=live.url, auth=live.auth, timeout=30)
    world.digests["v1"] = _push_scannable(client, "team/app", "v1")
    world.digests["v2"] = im.push_image(client, "team/app", "v2").digest
    world.digests["old"] = im.push_image(client, "team/app").digest
    time.sleep(0.05)
    world.digests["new"] = im.push_image(client, "team/app").digest
    world.digests["tools"] = im.push_image(client, "team/tools", "latest").digest
    world.digests["secret"] = im.push_image(client, "other/secret", "latest").digest
    client.close()
    # The vulnerability database import (a CLI process) runs beside the identity set-up (three more).
    importing = ThreadPoolExecutor(1).submit(world.cli, "vulndb", "import", str(DATA / "osv")) if scan else None
    world.admin("create-user", "dev")
    out = world.admin("create-access-key", "--user", "dev")
    key = re.search(r"AWS_ACCESS_KEY_ID=(\S+)", out)
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=(\S+)", out)
    assert key
    assert secret
    world.dev_key = (key[1], secret[1])
    policy = live.data_dir.parent / "team-policy.json"
    policy.write_text(json.dumps(TEAM_POLICY))
    world.admin("attach-user-policy", "dev", "--name", "team", "--document", str(policy))
    if importing is not None:
        importing.result()
        ecr.start_image_scan(repositoryName="team/app", imageId={"imageTag": "v1"})
        deadline = time.monotonic() + 60
        while True:
            found = ecr.describe_image_scan_findings(repositoryName="team/app", imageId={"imageTag": "v1"})
            if found["imageScanStatus"]["status"] != "IN_PROGRESS":
                break
            assert time.monotonic() < deadline, "the scan did not finish"
            time.sleep(0.2)
        assert found["imageScanStatus"]["status"] == "COMPLETE", found["imageScanStatus"]
    return world
