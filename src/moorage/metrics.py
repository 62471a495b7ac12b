"""Prometheus metrics: what the server does, correct across `--workers N`.

    moorage serve (parent) ── sets PROMETHEUS_MULTIPROC_DIR to a fresh directory, removes it at exit
      └─ each worker ── Metrics: counters/histograms written to per-process files (prometheus-client's
                        multiprocess mode); GET /metrics on any worker merges every worker's files
                        and adds what is read from the database at scrape time (event backlogs)
    moorage worker --metrics-port P ── the same metrics of that one process on its own port

The request metrics are recorded by `MeteredApp`, one ASGI wrapper at the top of the app, so the
handlers carry no metric code: face (`ecr`, `oci`, `console`, `other`), operation (the ECR
operation, or the `/v2/` route class such as `manifest_get`) and status. Repository names and
digests are never labels. A client that goes away mid-request is answered 499 by the root app
(nothing reaches it) and counted so, never as a server error; a request that ends with no
answer at all is counted with status `disconnected`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from moorage.asgi import Receive, Scope, Send, send_bytes

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_ENV",
    "MeteredApp",
    "Metrics",
    "client_is_loopback",
    "metrics_endpoint",
    "serve_metrics",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# (route kind, method) of /v2/ -> manifest operation counted on success
_MANIFEST_OPS: Mapping[tuple[str, str], str] = {
    ("manifest", "PUT"): "push",
    ("manifest", "GET"): "pull",
    ("manifest", "DELETE"): "delete",
}
_ECR_MANIFEST_OPS: Mapping[str, str] = {"PutImage": "push", "BatchGetImage": "pull", "BatchDeleteImage": "delete"}

Backlog = Callable[[], Awaitable[dict[str, int]]]


def client_is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Metrics:
    """The metric objects of one process. In multiprocess mode they write to the shared directory
    and are collected from there; otherwise they live in this object's own registry."""

    def __init__(self, version: str = "unknown") -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        target = None if self.multiprocess else self.registry
        self.requests = Counter(
            "moorage_http_requests",
            "HTTP requests answered, by face, operation and status.",
            ["face", "operation", "status"],
            registry=target,
        )
        self.duration = Histogram(
            "moorage_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the response body).",
            ["face", "operation"],
            buckets=_BUCKETS,
            registry=target,
        )
        self.blob_bytes = Counter(
            "moorage_blob_bytes", "Blob bytes received (in) and served (out).", ["direction"], registry=target
        )
        self.manifest_ops = Counter(
            "moorage_manifest_operations", "Manifests pushed, pulled and deleted.", ["operation"], registry=target
        )
        self.uploads = Gauge(
            "moorage_uploads_in_progress",
            "Upload requests streaming bytes in right now.",
            registry=target,
            multiprocess_mode="livesum",
        )
        self.gc_bytes = Counter("moorage_gc_reclaimed_bytes", "Blob bytes deleted by GC.", registry=target)
        self.lifecycle = Counter(
            "moorage_lifecycle_actions",
            "Images expired or transitioned by lifecycle rules.",
            ["action"],
            registry=target,
        )
        self.delivery_failures = Counter(
            "moorage_event_delivery_failures", "Failed event delivery attempts.", ["consumer"], registry=target
        )
        self.job_runs = Counter("moorage_job_runs", "Background job runs.", ["job", "result"], registry=target)
        self.pull_through = Counter(
            "moorage_pull_through_requests",
            "Pulls of cached repositories by kind (manifest, blob) and result: hit (served from the cache), "
            "miss (imported from the upstream now), stale (the upstream failed; the cached image was served).",
            ["kind", "result"],
            registry=target,
        )
        self.build_info = Gauge(
            "moorage_build_info", "Moorage build.", ["version"], registry=target, multiprocess_mode="max"
        )
        self.build_info.labels(version).set(1)
        self._backlog: Backlog | None = None

    def watch_backlog(self, backlog: Backlog) -> None:
        """Read the event consumers' backlogs (from the database) at every scrape."""
        self._backlog = backlog

    def job_finished(self, job: str, result: str, report: Mapping[str, object] | None) -> None:
        self.job_runs.labels(job, result).inc()
        if not report or report.get("dry_run"):
            return
        if job == "gc":
            reclaimed = report.get("bytes")
            if isinstance(reclaimed, int) and reclaimed > 0:
                self.gc_bytes.inc(reclaimed)
        elif job == "lifecycle":
            for action, key in (("expire", "expired"), ("transition", "transitioned")):
                count = report.get(key)
                if isinstance(count, int) and count > 0:
                    self.lifecycle.labels(action).inc(count)

    async def render(self) -> bytes:
        registry = self.registry
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
        if self._backlog is not None:
            pending = GaugeMetricFamily(
                "moorage_events_pending", "Events a consumer has not handled yet.", labels=["consumer"]
            )
            for consumer, count in sorted((await self._backlog()).items()):
                pending.add_metric([consumer], count)
            extra = CollectorRegistry()
            extra.register(_Fixed(pending))
            text += generate_latest(extra)
        return text


class _Fixed:
    def __init__(self, family: GaugeMetricFamily) -> None:
        self._family = family

    def collect(self) -> list[GaugeMetricFamily]:
        return [self._family]


OperationOf = Callable[[Scope], tuple[str, str]]


class MeteredApp:
    """ASGI wrapper recording request count, duration, status, blob bytes and manifest operations."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: Metrics, classify: OperationOf):
        self._app = app
        self._metrics = metrics
        self._classify = classify
        # The labelled children per (face, operation, status): labels() costs more than the update.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        metrics = self._metrics
        started = time.perf_counter()
        face, operation = self._classify(scope)
        status: list[int] = []
        out_bytes = [0]
        in_bytes = [0]
        serves_blob = (face, operation) in (("oci", "blob_get"), ("ecr", "layer_download"))
        uploading = (
            face == "oci"
            and operation.startswith(("upload_", "uploads_"))
            and scope["method"] in ("PATCH", "PUT", "POST")
        )

        async def metered_send(message: MutableMapping[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                status.append(int(message["status"]))
                if serves_blob and message["status"] in (200, 206):
                    for key, value in message.get("headers", ()):
                        if key.lower() == b"content-length":
                            out_bytes[0] = int(value)
            await send(message)

        async def metered_receive() -> MutableMapping[str, Any]:
            message = await receive()
            if message.get("type") == "http.request":
                in_bytes[0] += len(message.get("body", b""))
            return message

        if uploading:
            metrics.uploads.inc()
        try:
            await self._app(scope, metered_receive if uploading else receive, metered_send)
        finally:
            if uploading:
                metrics.uploads.dec()
            code = str(status[0]) if status else "disconnected"
            children = self._children.get((face, operation, code))
            if children is None:
                children = (metrics.requests.labels(face, operation, code), metrics.duration.labels(face, operation))
                if len(self._children) < 4096:
                    self._children[(face, operation, code)] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
            if in_bytes[0]:
                metrics.blob_bytes.labels("in").inc(in_bytes[0])
            if out_bytes[0]:
                metrics.blob_bytes.labels("out").inc(out_bytes[0])
            if status and 200 <= status[0] < 300:
                op = _MANIFEST_OPS.get((operation.rsplit("_", 1)[0], scope["method"])) if face == "oci" else None
                if face == "ecr":
                    op = _ECR_MANIFEST_OPS.get(operation)
                if op is not None:
                    metrics.manifest_ops.labels(op).inc()


async def metrics_endpoint(metrics: Metrics, bearer_token: str | None, scope: Scope, send: Send) -> None:
    """GET /metrics: with a bearer token configured it is required; without one, only loopback
    clients are answered. Never SigV4: scrapers do not sign requests."""
    import hmac

    text = [("content-type", "text/plain")]
    if scope["method"] not in ("GET", "HEAD"):
        await send_bytes(send, 405, text, b"GET only\n")
        return
    if bearer_token:
        given = b""
        for key, value in scope["headers"]:
            if key.lower() == b"authorization":
                given = value
        if not hmac.compare_digest(given, b"Bearer " + bearer_token.encode()):
            await send_bytes(send, 401, [*text, ("www-authenticate", 'Bearer realm="metrics"')], b"unauthorized\n")
            return
    elif not client_is_loopback(scope):
        await send_bytes(send, 403, text, b"metrics are served to loopback clients only (set metrics.bearer_token)\n")
        return
    body = await metrics.render()
    await send_bytes(send, 200, [("content-type", CONTENT_TYPE)], body, head=scope["method"] == "HEAD")


async def serve_metrics(metrics: Metrics, host: str, port: int, bearer_token: str | None, stop: asyncio.Event) -> None:
    """`moorage worker --metrics-port`: GET /metrics on a port of its own (no other routes), with
    the same access rule as the server's /metrics."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, _, rest = request_line.partition(" ")
            path = rest.partition(" ")[0].split("?", 1)[0]
            headers = []
            for line in header_lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers.append((name.strip().lower().encode(), value.strip().encode("latin-1")))
            peer = writer.get_extra_info("peername")
            scope: dict[str, Any] = {"method": method, "headers": headers, "client": peer}
            sent: list[MutableMapping[str, Any]] = []

            async def collect(message: MutableMapping[str, Any]) -> None:
                sent.append(message)

            if path != "/metrics":
                await send_bytes(collect, 404, [("content-type", "text/plain")], b"not found\n")
            else:
                await metrics_endpoint(metrics, bearer_token, scope, collect)
            start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
            lines = [f"HTTP/1.1 {start['status']} OK".encode()]
            lines += [
                k.encode() + b": " + v.encode() if isinstance(k, str) else k + b": " + v for k, v in start["headers"]
            ]
            lines += [b"content-length: " + str(len(body)).encode(), b"connection: close", b"", b""]
            writer.write(b"\r\n".join(lines) + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host, port)
    async with server:
        await stop.wait()
