#!/usr/bin/env python3
"""Moorage's Secrets Manager face vs moto's `moto_server` (secretsmanager), side by side.

    python bench/secretsmanager.py [--calls 400] [--rounds 3]

Both servers start on free loopback ports (Moorage: one worker, SigV4, this tree's sources, the
start-up of bench/ecr.py). One client, one persistent connection, every call signed by botocore's
SigV4Auth for service `secretsmanager` and sent as is (no boto3 overhead). Per round and server:
`--calls` CreateSecret calls (unique names, a 100-byte SecretString), then as many GetSecretValue
calls of those secrets (every answer checked), then DescribeSecret. Reported: medians over the
rounds of calls per second and server CPU ms per call (the server process and its workers, from
/proc). Rounds alternate which server goes first. Client and server share the machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from ecr import KEY_ID, REGION, SECRET, Server, start_moorage, start_moto
from procstat import BenchError, cpu_seconds, cpu_snapshot, log

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET = "secretsmanager."
JSON_11 = "application/x-amz-json-1.1"
VALUE = json.dumps({"username": "bench", "accessToken": "x" * 60})


class Client:
    def __init__(self, port: int) -> None:
        self.host = f"127.0.0.1:{port}"
        self.auth = SigV4Auth(Credentials(KEY_ID, SECRET), "secretsmanager", REGION)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params).encode()
        request = AWSRequest(
            method="POST",
            url=f"http://{self.host}/",
            data=body,
            headers={"Host": self.host, "Content-Type": JSON_11, "X-Amz-Target": TARGET + operation},
        )
        self.auth.add_auth(request)
        self.conn.request("POST", "/", body, dict(request.headers.items()))
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise BenchError(f"{operation}: HTTP {response.status}: {data[:300]!r}")
        parsed: dict[str, Any] = json.loads(data)
        return parsed


def _round(server: Server, calls: int) -> dict[str, tuple[float, float]]:
    client = Client(server.port)
    names = [f"bench/{uuid.uuid4().hex}" for _ in range(calls)]
    out: dict[str, tuple[float, float]] = {}

    def timed(label: str, operation: str, make: Any, check: Any) -> None:
        before, start = cpu_snapshot(server.pid), time.perf_counter()
        for name in names:
            check(name, client.call(operation, make(name)))
        wall, cpu = time.perf_counter() - start, cpu_seconds(before, cpu_snapshot(server.pid))
        out[label] = (calls / wall, cpu * 1000 / calls)

    def created(name: str, answer: dict[str, Any]) -> None:
        if answer.get("Name") != name:
            raise BenchError(f"CreateSecret answered {answer}")

    def got(name: str, answer: dict[str, Any]) -> None:
        if answer.get("SecretString") != VALUE:
            raise BenchError(f"GetSecretValue of {name} answered {answer}")

    def described(name: str, answer: dict[str, Any]) -> None:
        if answer.get("Name") != name:
            raise BenchError(f"DescribeSecret answered {answer}")

    timed("CreateSecret", "CreateSecret", lambda n: {"Name": n, "SecretString": VALUE}, created)
    timed("GetSecretValue", "GetSecretValue", lambda n: {"SecretId": n}, got)
    timed("DescribeSecret", "DescribeSecret", lambda n: {"SecretId": n}, described)
    client.conn.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-secrets-") as tmp:
        work = Path(tmp)
        servers = [start_moorage(work, 1, REPO_ROOT / "src")]
        try:
            servers.append(start_moto(work, "moto_server"))
            results: dict[str, list[dict[str, tuple[float, float]]]] = {s.key: [] for s in servers}
            for r in range(args.rounds):
                for server in servers if r % 2 == 0 else servers[::-1]:
                    log(f"round {r + 1}: {server.title}")
                    results[server.key].append(_round(server, args.calls))
        finally:
            for server in servers:
                server.stop()
    print(f"\n{args.calls} calls per operation, median of {args.rounds} rounds, one client\n")
    print(f"{'operation':<16} {'moorage calls/s':>16} {'cpu ms/call':>12} {'moto calls/s':>13} {'cpu ms/call':>12}")
    for operation in ("CreateSecret", "GetSecretValue", "DescribeSecret"):
        row = [operation.ljust(16)]
        for key in ("moorage", "moto"):
            rate = statistics.median(x[operation][0] for x in results[key])
            cpu = statistics.median(x[operation][1] for x in results[key])
            row.append(f"{rate:>{16 if key == 'moorage' else 13}.0f} {cpu:>12.2f}")
        print(" ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
