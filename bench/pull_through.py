#!/usr/bin/env python3
"""The pull-through cache, end to end and raw, against the upstream it caches.

    python bench/pull_through.py [--rounds 3] [--layers 4] [--layer-mib 32] [--blob-mib 1024] [--quick]

One upstream (the Debian `docker-registry`, CNCF distribution 2.8.2, filesystem storage) and one
Moorage (1 worker, SQLite + filesystem) with a pull-through rule `pt` for that upstream
(`allow_http_upstreams`), both on loopback. Every round pushes a fresh random image (a config and
`--layers` layers of `--layer-mib` MiB) to the upstream and to an ordinary Moorage repository, then
times, with `skopeo copy docker://... dir:...` (what users feel; skopeo's own local copy is most of
the time):

1. direct: the image straight from the upstream;
2. cold: through the cache (`pt/...`, nothing cached: the manifest and every blob are imported
   while skopeo reads them), target >= 0.8x of direct;
3. warm: the same image through the cache again (all cached), against
4. local: the same-sized image from an ordinary Moorage repository, target >= 0.95x.

direct and cold alternate which goes first round by round, after one small unmeasured image pulled
both ways (a fresh server's first import pays one-time costs). Then raw HTTP (http.client, 1 MiB
reads, discarded): one `--blob-mib` blob GET from the upstream directly, through the cache cold
(the manifest imported first, so the GET is the blob import streamed to the client), and warm;
server CPU-s per GiB for the cold import (Moorage's process tree, until the blob is published),
against PERF.md's one-thread socket -> sha256 -> file ceiling of 966 MiB/s. Medians over the
rounds. `--quick`: 1 round, 3 layers of 16 MiB, a 256 MiB blob.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import cpu_seconds, cpu_snapshot
from registry import MIB, REPO_ROOT, Server, make_data_file, start_moorage, start_reference

ONE_THREAD_CEILING = 966.0  # MiB/s, PERF.md: socket -> sha256 -> file in one Python thread
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _sha_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _push_blob(port: int, repo: str, path: Path, digest: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"")
        started = conn.getresponse()
        started.read()
        if started.status != 202:
            raise RuntimeError(f"POST upload to :{port}: HTTP {started.status}")
        location = started.getheader("location") or ""
        target = location.split("://", 1)[-1].partition("/")[2] if "://" in location else location.lstrip("/")
        separator = "&" if "?" in target else "?"
        size = path.stat().st_size
        with path.open("rb") as body:
            conn.request(
                "PUT",
                f"/{target}{separator}digest={digest}",
                body=body,
                headers={"content-length": str(size), "content-type": "application/octet-stream"},
            )
            done = conn.getresponse()
            done.read()
        if done.status != 201:
            raise RuntimeError(f"PUT blob to :{port}: HTTP {done.status}")
    finally:
        conn.close()


def _put_manifest(port: int, repo: str, tag: str, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("PUT", f"/v2/{repo}/manifests/{tag}", body=body, headers={"content-type": OCI_MANIFEST})
        response = conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"PUT manifest to :{port}: HTTP {response.status}")
    finally:
        conn.close()


def push_image(ports: list[int], repo: str, tag: str, layer_files: list[tuple[Path, str]]) -> str:
    """A config and the given layers as one OCI manifest, pushed to every port; its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "salt": os.urandom(8).hex()}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": digest, "size": path.stat().st_size} for path, digest in layer_files
            ],
        }
    ).encode()
    with tempfile.NamedTemporaryFile() as config_file:
        config_file.write(config)
        config_file.flush()
        for port in ports:
            _push_blob(port, repo, Path(config_file.name), config_digest)
            for path, digest in layer_files:
                _push_blob(port, repo, path, digest)
            _put_manifest(port, repo, tag, manifest)
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def skopeo_pull(port: int, ref: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://127.0.0.1:{port}/{ref}", f"dir:{dest}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"skopeo copy {ref} from :{port}: {done.stderr.strip()}")
    elapsed = time.perf_counter() - started
    shutil.rmtree(dest, ignore_errors=True)
    return elapsed


def get_blob(port: int, path: str, size: int) -> float:
    """Seconds to GET `path` and read its `size` bytes in 1 MiB reads."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    buffer = bytearray(MIB)
    view = memoryview(buffer)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {path} from :{port}: HTTP {response.status} {response.read()[:200]!r}")
        total = 0
        while n := response.readinto(view):
            total += n
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if total != size:
        raise RuntimeError(f"GET {path}: {total} bytes, expected {size}")
    return elapsed


def head_blob(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("HEAD", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HEAD {path} from :{port}: HTTP {response.status}")
    finally:
        conn.close()


def get_manifest(port: int, repo: str, tag: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"accept": OCI_MANIFEST})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET manifest {repo}:{tag} from :{port}: HTTP {response.status}")
        return response.getheader("x-moorage-cache") or ""
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mib", type=int, default=32)
    parser.add_argument("--blob-mib", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="1 round, 3 layers of 16 MiB, a 256 MiB blob")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.layers, args.layer_mib, args.blob_mib = 1, 3, 16, 256
    if shutil.which("skopeo") is None:
        print("skopeo not found", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-pull-through-") as tmp:
        work = Path(tmp)
        upstream: Server = start_reference(work, "docker-registry", "inmemory")
        moorage = start_moorage(
            work, 1, REPO_ROOT / "src", {"MOORAGE_PULL_THROUGH_CACHE__ALLOW_HTTP_UPSTREAMS": "true"}
        )
        try:
            ecr = boto3.client(
                "ecr",
                endpoint_url=f"http://127.0.0.1:{moorage.port}",
                region_name="us-east-1",
                aws_access_key_id="123456789012",
                aws_secret_access_key="x",
            )
            ecr.create_pull_through_cache_rule(
                ecrRepositoryPrefix="pt", upstreamRegistryUrl=f"http://127.0.0.1:{upstream.port}"
            )
            # one small unmeasured image first: a fresh process's first import pays one-time costs
            # (lazy imports, statement compilation, the upstream client and its TLS context)
            warmup = work / "warmup-layer"
            make_data_file(warmup, MIB)
            push_image([upstream.port], "bench/warmup", "1", [(warmup, _sha_file(warmup))])
            skopeo_pull(moorage.port, "pt/bench/warmup:1", work / "pulled")
            skopeo_pull(upstream.port, "bench/warmup:1", work / "pulled")
            times: dict[str, list[float]] = {"direct": [], "cold": [], "warm": [], "local": []}
            dest = work / "pulled"
            image_mib = args.layers * args.layer_mib
            for round_no in range(args.rounds):
                layers = []
                for i in range(args.layers):
                    path = work / f"layer-{round_no}-{i}"
                    make_data_file(path, args.layer_mib * MIB)
                    layers.append((path, _sha_file(path)))
                push_image([upstream.port], f"bench/app{round_no}", "1", layers)
                push_image([moorage.port], f"local/app{round_no}", "1", layers)
                for path, _ in layers:
                    path.unlink()
                order = ["direct", "cold"] if round_no % 2 == 0 else ["cold", "direct"]
                for which in order:
                    if which == "direct":
                        times["direct"].append(skopeo_pull(upstream.port, f"bench/app{round_no}:1", dest))
                    else:
                        times["cold"].append(skopeo_pull(moorage.port, f"pt/bench/app{round_no}:1", dest))
                time.sleep(0.5)  # the cold pull's last blobs finish publishing (fsync, rename) meanwhile
                for which in ("warm", "local") if round_no % 2 == 0 else ("local", "warm"):
                    ref = f"pt/bench/app{round_no}:1" if which == "warm" else f"local/app{round_no}:1"
                    times[which].append(skopeo_pull(moorage.port, ref, dest))

            raw: dict[str, list[float]] = {"direct": [], "cold": [], "warm": []}
            cpu_per_gib: list[float] = []
            size = args.blob_mib * MIB
            for round_no in range(args.rounds):
                blob = work / f"blob-{round_no}"
                make_data_file(blob, size)
                digest = _sha_file(blob)
                push_image([upstream.port], f"raw/blob{round_no}", "1", [(blob, digest)])
                blob.unlink()
                raw["direct"].append(
                    size / MIB / get_blob(upstream.port, f"/v2/raw/blob{round_no}/blobs/{digest}", size)
                )
                assert get_manifest(moorage.port, f"pt/raw/blob{round_no}", "1") == "miss"
                before = cpu_snapshot(moorage.pid)
                cold = get_blob(moorage.port, f"/v2/pt/raw/blob{round_no}/blobs/{digest}", size)
                # the body's last bytes go out once the digest matched, before the blob is published
                # (fsync, rename, metadata): a HEAD waits for that, so the warm GET reads the store
                head_blob(moorage.port, f"/v2/pt/raw/blob{round_no}/blobs/{digest}")
                cpu_per_gib.append(cpu_seconds(before, cpu_snapshot(moorage.pid)) / (size / (1024 * MIB)))
                raw["cold"].append(size / MIB / cold)
                raw["warm"].append(
                    size / MIB / get_blob(moorage.port, f"/v2/pt/raw/blob{round_no}/blobs/{digest}", size)
                )
        except BaseException:
            print(moorage.log_tail(60), file=sys.stderr)
            raise
        finally:
            moorage.stop()
            upstream.stop()

    med = {k: statistics.median(v) for k, v in times.items()}
    rmed = {k: statistics.median(v) for k, v in raw.items()}
    print(f"\npull-through cache: {args.rounds} round(s), image {args.layers} x {args.layer_mib} MiB; skopeo copy")
    print(f"{'skopeo copy':<44}{'seconds':>9}{'MiB/s':>9}{'ratio':>8}{'target':>8}")
    rows = [
        ("direct from the upstream (distribution)", med["direct"], None, None),
        ("cold through the cache", med["cold"], med["direct"] / med["cold"], ">=0.80"),
        ("local pull (ordinary Moorage repository)", med["local"], None, None),
        ("warm through the cache", med["warm"], med["local"] / med["warm"], ">=0.95"),
    ]
    for label, seconds, ratio, target in rows:
        ratio_text = f"{ratio:.2f}x" if ratio is not None else ""
        print(f"{label:<44}{seconds:>9.2f}{image_mib / seconds:>9.0f}{ratio_text:>8}{target or '':>8}")
    print(f"\nraw HTTP GET of one {args.blob_mib} MiB blob (1 MiB reads)")
    print(f"{'GET':<44}{'MiB/s':>9}{'ratio':>8}")
    print(f"{'direct from the upstream (distribution)':<44}{rmed['direct']:>9.0f}")
    print(f"{'cold through the cache (import streamed)':<44}{rmed['cold']:>9.0f}{rmed['cold'] / rmed['direct']:>7.2f}x")
    print(f"{'warm through the cache':<44}{rmed['warm']:>9.0f}{rmed['warm'] / rmed['direct']:>7.2f}x")
    print(
        f"{'one-thread receive->hash->write (PERF.md)':<44}{ONE_THREAD_CEILING:>9.0f}"
        f"  cold = {rmed['cold'] / ONE_THREAD_CEILING:.2f}x of it; "
        f"Moorage CPU {statistics.median(cpu_per_gib):.2f} s/GiB cold"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
