#!/usr/bin/env python3
"""Replication latency: push acknowledged → destination COMPLETE, same deployment and remote.

    python bench/replication.py [--pushes 50] [--layers 10]

One Moorage server (embedded default, one worker, open mode) replicates `bench/...` from
us-east-1 to eu-west-1 of the same account, and `far/...` to a second Moorage (its own data dir
and port; `[[replication.remotes]]` with access keys: GetAuthorizationToken, then a /v2/ push of
every blob and the manifest). Each push is a whole image of `--layers` small layers (monolithic
blob uploads, then the manifest PUT by tag), one at a time; the same-deployment pushes first, then
the remote ones. A webhook receiver on loopback records when each image's `ECR Replication
Action` arrives: that event is written in the transaction that marks the copy COMPLETE, so its
arrival bounds the latency from above (it also includes the webhook's own delivery). Reported per
destination: p50, p90, p99, max, and that every push arrived COMPLETE. Target (same deployment):
p50 under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import MOORAGE, start_moorage
from webhooks import EventReceiver, push_image

SOURCE, REMOTE = "123456789012", "555555555555"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_pushes(
    port: int, receiver: EventReceiver, name: str, account: str, pushes: int, layers: int
) -> tuple[list[float], bool, int]:
    """Push `pushes` images to `name` one at a time, each waited for at `account`'s destination;
    (latencies in ms, all COMPLETE, pushes)."""

    def arrival(digest: str) -> tuple[float, dict[str, Any]] | None:
        return next((a for a in receiver.arrivals.get(digest, []) if a[1]["account"] == account), None)

    acked: dict[str, float] = {}
    for n in range(pushes):
        digest, at = push_image(port, name, n, layers=layers)
        acked[digest] = at
        deadline = time.monotonic() + 30
        while arrival(digest) is None and time.monotonic() < deadline:
            time.sleep(0.002)
    found = {d: arrival(d) for d in acked}
    latencies = [(a[0] - acked[d]) * 1000 for d, a in found.items() if a is not None]
    complete = all(a is not None and a[1]["detail"]["result"] == "SUCCESS" for a in found.values())
    return latencies, complete, len(acked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--layers", type=int, default=10)
    args = parser.parse_args()
    source = Path(__file__).resolve().parents[1] / "src"
    receiver = EventReceiver("ECR Replication Action")
    results: list[tuple[str, list[float], bool, int]] = []
    with tempfile.TemporaryDirectory(prefix="moorage-bench-replication-") as tmp:
        work = Path(tmp)
        remote = start_moorage(work, 1, source, {"MOORAGE_ACCOUNT_ID": REMOTE}, key="moorage-remote")
        config = work / "source.toml"
        config.write_text(
            f'[[events.webhooks]]\nname = "latency"\nurl = "{receiver.url}"\n'
            'detail_types = ["ECR Replication Action"]\n\n'
            f'[[replication.remotes]]\nregistry_id = "{REMOTE}"\nregion = "us-east-1"\n'
            f'url = "http://127.0.0.1:{remote.port}"\naccess_key_id = "{REMOTE}"\nsecret_access_key = "x"\n'
        )
        try:
            server = start_moorage(work, 1, source, {"MOORAGE_CONFIG": str(config)}, key=MOORAGE)
        except BaseException:
            remote.stop()
            raise
        try:
            ecr = boto3.client(
                "ecr",
                endpoint_url=f"http://127.0.0.1:{server.port}",
                region_name="us-east-1",
                aws_access_key_id=SOURCE,
                aws_secret_access_key="x",
            )
            ecr.put_replication_configuration(
                replicationConfiguration={
                    "rules": [
                        {
                            "destinations": [{"region": "eu-west-1", "registryId": SOURCE}],
                            "repositoryFilters": [{"filter": "bench/", "filterType": "PREFIX_MATCH"}],
                        },
                        {
                            "destinations": [{"region": "us-east-1", "registryId": REMOTE}],
                            "repositoryFilters": [{"filter": "far/", "filterType": "PREFIX_MATCH"}],
                        },
                    ]
                }
            )
            # First repository creations, imports, the remote's registry password.
            push_image(server.port, "bench/warm", -1, layers=args.layers)
            push_image(server.port, "far/warm", -1, layers=args.layers)
            time.sleep(1.0)
            for title, name, account in (
                ("same deployment (us-east-1 -> eu-west-1)", "bench/app", SOURCE),
                ("remote (-> a second Moorage over /v2/)", "far/app", REMOTE),
            ):
                latencies, complete, pushed = run_pushes(server.port, receiver, name, account, args.pushes, args.layers)
                results.append((title, latencies, complete, pushed))
        finally:
            server.stop()
            remote.stop()
    print(f"replication latency, push acknowledged -> destination COMPLETE ({args.layers}-layer image)")
    print(f"{'destination':<44} {'pushes':>6} {'arrived':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    ok = True
    for title, latencies, complete, pushed in results:
        ok = ok and complete and len(latencies) == pushed
        if not latencies:
            print(f"{title:<44} {pushed:>6} {0:>7}")
            continue
        print(
            f"{title:<44} {pushed:>6} {len(latencies):>7} {statistics.median(latencies):>8.1f} "
            f"{percentile(latencies, 0.9):>8.1f} {percentile(latencies, 0.99):>8.1f} {max(latencies):>8.1f}"
            + ("" if complete else "  (not all COMPLETE)")
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
