#!/usr/bin/env python3
"""Managed-signing latency: push acknowledged → signature stored (status COMPLETE).

    python bench/signing.py [--pushes 100] [--layers 1]

One Moorage server (embedded default, one worker, open mode) with a signing profile (made through
the AWS Signer API with boto3) and a signing configuration matching `bench/*`. Each push is a
whole small image (monolithic blob uploads, then the manifest PUT by tag), one at a time, waiting
for its signature before the next. A webhook receiver on loopback records when each image's
`Moorage Image Signing Action` arrives: that event is written in the transaction that marks the
status COMPLETE, after the signature manifest is stored, so its arrival bounds the latency from
above (it includes the webhook's own delivery). No other registry signs on push, so there is no
reference peer: the table shows Moorage alone. Reported: p50, p99, max, and that every push was
signed (SUCCESS).
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

ACCOUNT = "123456789012"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--layers", type=int, default=1)
    args = parser.parse_args()
    source = Path(__file__).resolve().parents[1] / "src"
    receiver = EventReceiver("Moorage Image Signing Action", "SIGN")
    with tempfile.TemporaryDirectory(prefix="moorage-bench-signing-") as tmp:
        work = Path(tmp)
        hooks = work / "hooks.toml"
        hooks.write_text(
            f'[[events.webhooks]]\nname = "latency"\nurl = "{receiver.url}"\n'
            'detail_types = ["Moorage Image Signing Action"]\n'
        )
        server = start_moorage(work, 1, source, {"MOORAGE_CONFIG": str(hooks)}, key=MOORAGE)
        try:
            endpoint = f"http://127.0.0.1:{server.port}"
            creds = {"region_name": "us-east-1", "aws_access_key_id": ACCOUNT, "aws_secret_access_key": "x"}
            signer = boto3.client("signer", endpoint_url=endpoint, **creds)
            arn = signer.put_signing_profile(profileName="bench", platformId="Notation-OCI-SHA384-ECDSA")["arn"]
            ecr = boto3.client("ecr", endpoint_url=endpoint, **creds)
            ecr.put_signing_configuration(
                signingConfiguration={
                    "rules": [
                        {
                            "signingProfileArn": arn,
                            "repositoryFilters": [{"filter": "bench/*", "filterType": "WILDCARD_MATCH"}],
                        }
                    ]
                }
            )
            warm, _ = push_image(server.port, "bench/warm", -1, layers=args.layers)  # repository creation, keys
            deadline = time.monotonic() + 30
            while warm not in receiver.arrivals and time.monotonic() < deadline:
                time.sleep(0.01)
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
    signed = all(d in receiver.arrivals and receiver.arrivals[d][0][1]["detail"]["result"] == "SUCCESS" for d in acked)
    print(f"managed signing latency, push acknowledged -> signature stored ({args.layers}-layer image, ES384)")
    print(f"pushes: {len(acked)}, signed: {len(latencies)}, all SUCCESS: {signed}")
    if latencies:
        print(f"{'registry':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        print(
            f"{'moorage':<10} {statistics.median(latencies):>8.1f} {percentile(latencies, 0.99):>8.1f} "
            f"{max(latencies):>8.1f}"
        )
        print(f"{'(no peer)':<10} {'-':>8} {'-':>8} {'-':>8}   no other registry signs on push")
    return 0 if signed and len(latencies) == len(acked) else 1


if __name__ == "__main__":
    raise SystemExit(main())
