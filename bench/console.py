#!/usr/bin/env python3
"""Web console page render times with a big repository.

    python bench/console.py [--images 10000] [--requests 200]

Starts `moorage serve` (this working tree's sources, one worker, SQLite, SigV4) on a free loopback
port, creates the repository `big` through the ECR API and bulk-inserts `--images` manifests into
its metadata store (60% tagged, one or two tags each; sizes and push times spread out), signs in to
the console over HTTP with the root access key and times, client-side on loopback, `--requests`
GETs of each page form: the repository page (first page, sorted by push time; sorted by size;
filtered to untagged; filtered by tag text; a deep page), the repositories list and one image page.

Target (issue 15): every page under 100 ms at 10,000 images. Prints median and p99 per page.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx
from sqlalchemy import insert, select

from moorage.metadata import tables as t
from moorage.metadata.sql import SqlMetadataStore

KEY_ID = "AKIAMOORAGEBENCHROOT"
SECRET = "moorage-bench-root-secret-0123456789abcdef"
SOURCE = Path(__file__).resolve().parents[1] / "src"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    env.update(MOORAGE_ROOT_ACCESS_KEY_ID=KEY_ID, MOORAGE_ROOT_SECRET_ACCESS_KEY=SECRET)
    env["MOORAGE_JOBS__ENABLED"] = "false"  # no background writer while the bench seeds the store
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "moorage", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"moorage did not start:\n{log.read_text()[-2000:]}")


async def seed(data_dir: Path, images: int) -> str:
    """Bulk-insert `images` manifests (and tags) into the repository `big`; returns one digest."""
    store = SqlMetadataStore.open(f"sqlite:///{(data_dir / 'metadata.db').absolute()}")
    rng = random.Random(15)
    base = time.time() - 400 * 86400
    async with store.engine.begin() as conn:
        repo_id = (await conn.execute(select(t.repositories.c.id).where(t.repositories.c.name == "big"))).scalar_one()
        rows, tags = [], []
        for i in range(images):
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "n": i}).encode()
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            rows.append(
                {
                    "repo_id": repo_id,
                    "digest": digest,
                    "media_type": OCI_MANIFEST,
                    "size": len(body),
                    "image_size": rng.randint(1_000_000, 900_000_000),
                    "body": body,
                    "pushed_at": base + i * 3000 + rng.random(),
                }
            )
            if rng.random() < 0.6:
                tags.append({"repo_id": repo_id, "name": f"build-{i}", "digest": digest, "updated_at": 0.0})
                if rng.random() < 0.3:
                    tags.append({"repo_id": repo_id, "name": f"release-{i}", "digest": digest, "updated_at": 0.0})
        for i in range(0, len(rows), 5000):
            await conn.execute(insert(t.manifests), rows[i : i + 5000])
        for i in range(0, len(tags), 5000):
            await conn.execute(insert(t.tags), tags[i : i + 5000])
    await store.close()
    return str(rows[len(rows) // 2]["digest"])


def sign_in(client: httpx.Client) -> None:
    page = client.get("/console/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post(
        "/console/signin",
        data={"signin_token": token[1], "access_key_id": KEY_ID, "secret_access_key": SECRET, "region": "us-east-1"},
    )
    assert answer.status_code == 303, answer.text


def timed(client: httpx.Client, path: str, requests: int) -> tuple[float, float, int]:
    for _ in range(5):  # warm up (template compilation, caches)
        client.get(path)
    samples = []
    size = 0
    for _ in range(requests):
        begin = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - begin) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
        size = len(answer.content)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples), p99, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moorage-console-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        process = start(root / "data", port, root / "server.log")
        try:
            ecr = boto3.client(
                "ecr",
                endpoint_url=f"http://127.0.0.1:{port}",
                region_name="us-east-1",
                aws_access_key_id=KEY_ID,
                aws_secret_access_key=SECRET,
            )
            ecr.create_repository(repositoryName="big")
            for i in range(50):
                ecr.create_repository(repositoryName=f"team/service-{i:02d}")
            begin = time.perf_counter()
            digest = asyncio.run(seed(root / "data", args.images))
            seeded = time.perf_counter() - begin
            pages = [
                ("repository, newest first", "/console/repositories/big"),
                ("repository, largest first", "/console/repositories/big?sort=size&dir=desc"),
                ("repository, untagged only", "/console/repositories/big?tagged=UNTAGGED"),
                ("repository, tag contains 'release-9'", "/console/repositories/big?tag=release-9"),
                ("repository, page 150 (oldest)", "/console/repositories/big?page=150"),
                ("repositories list (51)", "/console/"),
                ("image page", f"/console/repositories/big/-/images/{digest}"),
            ]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                sign_in(client)
                results = [(label, *timed(client, path, args.requests)) for label, path in pages]
        finally:
            process.terminate()
            process.wait(30)
    print(f"# Console page render times, {args.images:,} images in one repository ({args.requests} GETs per page)")
    print(f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, SQLite,")
    print(f"# one worker, client-side on loopback; seeding took {seeded:.1f} s")
    print()
    print(f"| {'page':<40} | {'median ms':>9} | {'p99 ms':>7} | {'HTML KiB':>8} | {'median < 100 ms':>15} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 9}|{'-' * 10}|{'-' * 17}|")
    for label, median, p99, size in results:
        verdict = "yes" if median < 100 else "NO"
        print(f"| {label:<40} | {median:>9.1f} | {p99:>7.1f} | {size / 1024:>8.1f} | {verdict:>15} |")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"\n# load average {load:.1f} on {os.cpu_count()} CPUs while measuring: other work shared the machine")


if __name__ == "__main__":
    main()
