#!/usr/bin/env python3
"""Replication latency within one deployment: push acknowledged → destination COMPLETE.

    python bench/replication.py [--pushes 50] [--layers 10]

One Moorage server (embedded default, one worker, open mode) replicates `bench/...` from
us-east-1 to eu-west-1 of the same account. Each push is a whole image of `--layers` small layers
(monolithic blob uploads, then the manifest PUT by tag), one at a time. A webhook receiver on
loopback records when each image's `ECR Replication Action` arrives: that event is written in the
transaction that marks the copy COMPLETE, so its arrival bounds the latency from above (it also
includes the webhook's own delivery). Reported: p50, p90, max, and that every push arrived COMPLETE.
Target: p50 under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import MOORAGE, start_moorage
from webhooks import EventReceiver, push_image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--layers", type=int, default=10)
    args = parser.parse_args()
    source = Path(__file__).resolve().parents[1] / "src"
    receiver = EventReceiver("ECR Replication Action")
    with tempfile.TemporaryDirectory(prefix="moorage-bench-replication-") as tmp:
        work = Path(tmp)
        hooks = work / "hooks.toml"
        hooks.write_text(
            f'[[events.webhooks]]\nname = "latency"\nurl = "{receiver.url}"\n'
            'detail_types = ["ECR Replication Action"]\n'
        )
        server = start_moorage(work, 1, source, {"MOORAGE_CONFIG": str(hooks)}, key=MOORAGE)
        try:
            ecr = boto3.client(
                "ecr",
                endpoint_url=f"http://127.0.0.1:{server.port}",
                region_name="us-east-1",
                aws_access_key_id="123456789012",
                aws_secret_access_key="x",
            )
            ecr.put_replication_configuration(
                replicationConfiguration={
                    "rules": [
                        {
                            "destinations": [{"region": "eu-west-1", "registryId": "123456789012"}],
                            "repositoryFilters": [{"filter": "bench/", "filterType": "PREFIX_MATCH"}],
                        }
                    ]
                }
            )
            push_image(server.port, "bench/warm", -1, layers=args.layers)  # first repository creations, imports
            time.sleep(1.0)
            acked: dict[str, float] = {}
            for n in range(args.pushes):
                digest, at = push_image(server.port, "bench/app", n, layers=args.layers)
                acked[digest] = at
                deadline = time.monotonic() + 30
                while digest not in receiver.arrivals and time.monotonic() < deadline:
                    time.sleep(0.002)
        finally:
            server.stop()
    latencies = [(receiver.arrivals[d][0][0] - t) * 1000 for d, t in acked.items() if d in receiver.arrivals]
    complete = all(
        d in receiver.arrivals and receiver.arrivals[d][0][1]["detail"]["result"] == "SUCCESS" for d in acked
    )
    print(
        f"replication latency, push acknowledged -> destination COMPLETE ({args.layers}-layer image, same deployment)"
    )
    print(f"pushes: {len(acked)}, arrived: {len(latencies)}, all COMPLETE: {complete}")
    if latencies:
        print(
            f"p50 {statistics.median(latencies):.1f} ms   p90 {percentile(latencies, 0.9):.1f} ms   "
            f"max {max(latencies):.1f} ms"
        )
    return 0 if complete and len(latencies) == len(acked) else 1


if __name__ == "__main__":
    raise SystemExit(main())
