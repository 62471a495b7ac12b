#!/usr/bin/env python3
"""The cost of events: push rate with three webhooks configured vs none, and delivery latency.

    python bench/events.py [--pushes 300] [--rounds 3] [--concurrency 4]

Two Moorage servers (embedded default, one worker) run side by side on fresh data dirs: one with
no webhook, one with three webhooks pointing at three real HTTP receivers on loopback. Rounds
alternate between them. A push is a whole small image (config + one layer + manifest PUT by tag,
over monolithic blob uploads), `--concurrency` pushers at once. Reported: pushes per second
(median of rounds) and the ratio; for the webhook server, the delay from each manifest PUT's
201 to its event reaching each receiver (p50, p99, max), and whether every receiver got every
push exactly once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import cpu_seconds, cpu_snapshot
from registry import MOORAGE, Server, start_moorage
from webhooks import EventReceiver, push_image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def run_round(
    server: Server, pushes: int, concurrency: int, round_no: int, acked: dict[str, float]
) -> tuple[float, float]:
    """(pushes per second, server CPU-ms per push, deliveries included once they are done)."""
    repo = f"bench/events-{round_no}"
    push_image(server.port, repo, -1)  # creates the repository outside the timed part
    time.sleep(1.5)  # its events are delivered and the positions saved before the count starts
    cpu = cpu_snapshot(server.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for digest, at in pool.map(lambda n: push_image(server.port, repo, n), range(pushes)):
            acked[digest] = at
    rate = pushes / (time.perf_counter() - started)
    time.sleep(1.5)  # the last deliveries and position saves land in this round's CPU
    return rate, cpu_seconds(cpu, cpu_snapshot(server.pid)) * 1000 / pushes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    source = Path(__file__).resolve().parents[1] / "src"
    receivers = [EventReceiver("ECR Image Action", "PUSH") for _ in range(3)]
    with tempfile.TemporaryDirectory(prefix="moorage-bench-events-") as tmp:
        work = Path(tmp)
        (work / "plain").mkdir()
        (work / "hooks").mkdir()
        hooks_file = work / "hooks.toml"
        hooks_file.write_text(
            "".join(
                f'[[events.webhooks]]\nname = "r{i}"\nurl = "{r.url}"\nsecret = "s{i}"\n\n'
                for i, r in enumerate(receivers)
            )
        )
        plain = start_moorage(work / "plain", 1, source, {}, key=MOORAGE)
        hooked = start_moorage(work / "hooks", 1, source, {"MOORAGE_CONFIG": str(hooks_file)}, key=MOORAGE)
        rates: dict[str, list[float]] = {"none": [], "three": []}
        cpus: dict[str, list[float]] = {"none": [], "three": []}
        acked: dict[str, float] = {}
        try:
            for round_no in range(args.rounds):
                order = [("none", plain), ("three", hooked)]
                if round_no % 2:
                    order.reverse()
                for label, server in order:
                    rate, cpu = run_round(
                        server, args.pushes, args.concurrency, round_no, acked if label == "three" else {}
                    )
                    rates[label].append(rate)
                    cpus[label].append(cpu)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(len(r.arrivals) < len(acked) for r in receivers):
                time.sleep(0.1)
        finally:
            plain.stop()
            hooked.stop()
    delays = [
        (times[0][0] - acked[digest]) * 1000
        for r in receivers
        for digest, times in r.arrivals.items()
        if digest in acked
    ]
    once = all(len(times) == 1 for r in receivers for times in r.arrivals.values())
    complete = all(set(acked) <= set(r.arrivals) for r in receivers)
    none, three = statistics.median(rates["none"]), statistics.median(rates["three"])
    print(
        f"pushes per round: {args.pushes}, rounds: {args.rounds}, concurrency: {args.concurrency}, 1 worker, embedded"
    )
    print(f"{'':32}{'no webhooks':>14}{'3 webhooks':>14}{'ratio':>9}")
    print(f"{'image pushes / s (median)':32}{none:>14.1f}{three:>14.1f}{three / none:>9.3f}")
    cpu_none, cpu_three = statistics.median(cpus["none"]), statistics.median(cpus["three"])
    print(f"{'server CPU-ms per push (median)':32}{cpu_none:>14.2f}{cpu_three:>14.2f}{cpu_three / cpu_none:>9.3f}")
    if delays:
        print(
            f"delivery latency after the 201: p50 {percentile(delays, 0.5):.1f} ms, "
            f"p99 {percentile(delays, 0.99):.1f} ms, max {max(delays):.1f} ms ({len(delays)} deliveries)"
        )
    print(f"every receiver got every push: {complete}; each exactly once: {once}")
    return 0 if complete and once else 1


if __name__ == "__main__":
    sys.exit(main())
