"""GET /metrics after a scripted workload on a server with two workers: the counters, merged across
worker processes, match what was done; access rules (loopback only, or a bearer token)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from moorage.metrics import client_is_loopback
from tests.support.images import layer, push_blob, push_image
from tests.support.live import LiveServer
from tests.support.receiver import WebhookReceiver
from tests.support.services import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(statuses=[500] * 1000) as receiver:  # it never takes anything
        yield receiver


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hook: WebhookReceiver) -> Iterator[LiveServer]:
    env = {"MOORAGE_EVENTS__WEBHOOK_URL": hook.url, "MOORAGE_CREATE_ON_PUSH": "true"}
    with LiveServer(tmp_path_factory.mktemp("metrics") / "data", args=["--workers", "2"], env=env) as live:
        yield live


def test_counters_merged_across_workers_match_the_workload(server: LiveServer) -> None:
    pushes, pulls = 3, 7
    with httpx.Client(base_url=server.url, auth=server.auth, timeout=30) as client:
        before = _samples(client.get("/metrics").text)
        manifests = [push_image(client, "metrics/app", f"v{i}") for i in range(pushes)]
        big = layer(300_000)
        push_blob(client, "metrics/app", big.data)
        for i in range(pulls):
            assert client.get(f"/v2/metrics/app/manifests/v{i % pushes}").status_code == 200
        assert client.get(f"/v2/metrics/app/blobs/{big.digest}").content == big.data
        assert client.delete(f"/v2/metrics/app/manifests/{manifests[0].digest}").status_code == 202
        assert client.get("/v2/metrics/app/manifests/nope").status_code == 404
        server.ecr().describe_repositories()
        after = _samples(client.get("/metrics").text)
        # Delivery runs in the background (in either worker): wait for its first failed attempt.
        deadline = time.monotonic() + 15
        while _value(after, "moorage_event_delivery_failures_total", consumer="env") < 1:
            assert time.monotonic() < deadline, "no delivery attempt was counted"
            time.sleep(0.2)
            after = _samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("moorage_manifest_operations_total", operation="push") == pushes
    assert delta("moorage_manifest_operations_total", operation="pull") == pulls
    assert delta("moorage_manifest_operations_total", operation="delete") == 1
    assert delta("moorage_http_requests_total", face="oci", operation="manifest_put", status="201") == pushes
    assert delta("moorage_http_requests_total", face="oci", operation="manifest_get", status="200") == pulls
    assert delta("moorage_http_requests_total", face="oci", operation="manifest_get", status="404") == 1
    assert delta("moorage_http_requests_total", face="ecr", operation="DescribeRepositories", status="200") == 1
    assert delta("moorage_http_request_duration_seconds_count", face="oci", operation="manifest_get") == pulls + 1
    # 2 blobs of 512 bytes per image plus the big layer came in; the big layer went out.
    assert delta("moorage_blob_bytes_total", direction="out") == len(big.data)
    assert delta("moorage_blob_bytes_total", direction="in") >= len(big.data) + pushes * 512
    assert _value(after, "moorage_build_info", version=__import__("moorage").__version__) == 1
    assert _value(after, "moorage_uploads_in_progress") == 0
    # The webhook refuses everything: its backlog holds every event (3 pushes, a create, a delete).
    assert _value(after, "moorage_events_pending", consumer="env") >= pushes + 2
    assert _value(after, "moorage_event_delivery_failures_total", consumer="env") >= 1
    # No label carries a repository name or a digest.
    assert not any("metrics/app" in str(labels) or "sha256" in str(labels) for _, labels in after)


def test_metrics_need_the_bearer_token_when_one_is_set(tmp_path: Path) -> None:
    env = {"MOORAGE_METRICS__BEARER_TOKEN": "scrape-me"}
    with LiveServer(tmp_path / "data", env=env) as live:
        assert httpx.get(f"{live.url}/metrics").status_code == 401
        assert httpx.get(f"{live.url}/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        good = httpx.get(f"{live.url}/metrics", headers={"authorization": "Bearer scrape-me"})
        assert good.status_code == 200
        assert "moorage_build_info" in good.text


def test_only_loopback_clients_get_metrics_without_a_token() -> None:
    assert client_is_loopback({"client": ("127.0.0.1", 5555)})
    assert client_is_loopback({"client": ("::1", 5555)})
    assert not client_is_loopback({"client": ("192.0.2.10", 5555)})
    assert not client_is_loopback({"client": None})


def test_a_worker_serves_its_own_metrics(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "moorage", "worker", "--data-dir", str(tmp_path / "data"), "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                samples = _samples(response.text)
                if _value(samples, "moorage_job_runs_total", job="gc", result="success") >= 1:
                    break
            except httpx.HTTPError:
                pass
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker's metrics never showed a GC run"
            time.sleep(0.2)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert _value(samples, "moorage_build_info", version=__import__("moorage").__version__) == 1
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=2).status_code == 404
    finally:
        worker.terminate()
        worker.wait(15)
