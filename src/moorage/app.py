"""The composition root: builds every store and service from a `Settings`, and the ASGI app.

    Settings ─► build() ─► MetadataStore (SQL)      ┐   Registry, Images, Uploads ─┬─► OciApi (/v2/...)
                           BlobStore (filesystem|s3) ├─► Identities, TokenSigner  ─┴─► EcrApi (POST /)
                           Clock, Limits             ┘
    RootApp (ASGI): lifespan builds/closes the services; routes
        POST / with X-Amz-Target → EcrApi      /v2/... → OciApi
        /_moorage/layers/<token> (GetDownloadUrlForLayer URLs), /_moorage/reset, /_moorage/clock, /healthz

Only this module imports store implementations. Nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from moorage import __version__
from moorage.asgi import (
    ClientDisconnectedError,
    Receive,
    Request,
    Scope,
    Send,
    answer_disconnected,
    guard_unread_body,
    send_bytes,
    send_file,
    send_stream,
)
from moorage.auth import (
    AnonymousAuthenticator,
    ApiAuthenticator,
    Principal,
    RegistryAuthenticator,
    TokenRegistryAuthenticator,
)
from moorage.authz import Authorizer, Need, Origin, PolicyStore, on_repository
from moorage.clock import Clock, OffsetClock, SystemClock
from moorage.config import SETTINGS_ENV, Settings, settings_from_json
from moorage.console import ConsoleApp, ConsoleServices, derive_key
from moorage.delivery import EventDispatcher, EventRetentionJob, sinks_from_settings
from moorage.ecr import TARGET_PREFIX, EcrApi, EcrServices
from moorage.ecr.validation import InputValidator, operation_names
from moorage.errors import MoorageError, TooLargeError
from moorage.gc import GarbageCollector, GcJob
from moorage.identity import Identities, load_master_key, verify_master_key
from moorage.images import Images
from moorage.jobs import Job, Scheduler, last_runs
from moorage.lifecycle_job import Lifecycle, LifecycleJob
from moorage.metadata import MetadataStore
from moorage.metadata.sql import SqlMetadataStore
from moorage.metrics import MeteredApp, Metrics, metrics_endpoint
from moorage.model import Digest, RegistryRef, RepositoryName
from moorage.oci import OciApi, parse_path
from moorage.pull_through import CachePulls, PullThroughCache
from moorage.pulls import PullTimes
from moorage.registry import Limits, Registry
from moorage.replication import BackfillJob, RemoteCopier, RemoteReplicationSink, Replication, ReplicationSink
from moorage.scanning.service import ScanJob, Scanning
from moorage.secrets import Secrets
from moorage.secretsmanager import TARGET_PREFIX as SECRETSMANAGER_TARGET_PREFIX
from moorage.secretsmanager import SecretsManagerApi
from moorage.signer import SignerApi
from moorage.signer import route as signer_route
from moorage.signing import Signing, SigningSink, signing_profile_registry
from moorage.storage import BlobStore
from moorage.storage.filesystem import FilesystemBlobStore
from moorage.templates import Templates
from moorage.tokens import TokenError, TokenSigner, load_token_key
from moorage.uploads import Uploads

__all__ = ["SETTINGS_ENV", "Moorage", "RootApp", "build", "create_app", "server_app"]

log = logging.getLogger("moorage")


@dataclass
class Moorage:
    """Everything one process serves with."""

    settings: Settings
    clock: Clock
    metadata: MetadataStore
    blobs: BlobStore
    registry: Registry
    images: Images
    uploads: Uploads
    identities: Identities
    tokens: TokenSigner
    collector: GarbageCollector
    oci: OciApi
    ecr: EcrApi
    lifecycle: Lifecycle

    dispatcher: EventDispatcher
    metrics: Metrics
    secretsmanager: SecretsManagerApi | None = None
    backfills: Job | None = None
    scanning: Scanning | None = None
    signing: Signing | None = None
    replication: Replication | None = None
    signer: SignerApi | None = None
    cache_pulls: CachePulls | None = None
    console: ConsoleApp | None = None

    def scheduler(self) -> Scheduler:
        """The background jobs of this process, coordinated with every other one by leases."""
        jobs: list[Job] = [
            GcJob(self.collector, self.settings.gc.interval),
            LifecycleJob(self.lifecycle, self.settings.jobs.lifecycle_interval),
            EventRetentionJob(self.metadata, self.settings.events.retention),
        ]
        if self.backfills is not None:
            jobs.append(self.backfills)
        if self.scanning is not None:
            jobs.append(ScanJob(self.scanning))
        return Scheduler(jobs, self.metadata, clock=self.clock, holder=_holder(), on_finished=self.metrics.job_finished)

    async def run_background(self, stop: asyncio.Event) -> None:
        """Jobs and event delivery, until `stop` is set."""
        await asyncio.gather(self.scheduler().run(stop), self.dispatcher.run(stop))

    async def close(self) -> None:
        # background writes (pull times, previews, clock refreshes) finish before the store closes
        await self.registry.pulls.drain()
        await self.lifecycle.drain()
        await self.dispatcher.close()
        if isinstance(self.clock, OffsetClock):
            await self.clock.drain()
        await self.metadata.close()
        await self.blobs.close()


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def open_blob_store(settings: Settings) -> BlobStore:
    if settings.storage.backend == "s3":
        from moorage.storage.s3 import S3BlobStore

        s3 = settings.storage.s3
        assert s3.bucket is not None  # the config loader requires it for this backend
        return await S3BlobStore.open(
            s3.bucket,
            prefix=s3.prefix,
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            redirect=s3.redirect,
        )
    return FilesystemBlobStore(settings.storage.filesystem.effective_root(settings.data_dir))


async def build(settings: Settings, *, clock: Clock | None = None) -> Moorage:
    """Open the stores and build the services. Without `clock`, time is real time plus the shared
    clock-control offset (`OffsetClock`; zero unless `POST /_moorage/clock` moved it)."""
    metadata = SqlMetadataStore.open(settings.metadata.effective_url(settings.data_dir))
    if clock is None:
        offset_clock = OffsetClock(metadata)
        await offset_clock.refresh()
        clock = offset_clock
    blobs = await open_blob_store(settings)
    limits = Limits(
        max_manifest_bytes=settings.limits.max_manifest_bytes, max_blob_bytes=settings.limits.max_blob_bytes
    )
    pulls = PullTimes(metadata, clock=clock)
    registry = Registry(
        metadata, blobs, clock=clock, limits=limits, create_on_push=settings.create_on_push, pulls=pulls
    )
    images = Images(metadata, clock=clock, pulls=pulls, restore_delay=settings.archive.restore_delay)
    lifecycle = Lifecycle(metadata, clock=clock)
    uploads = Uploads(metadata, blobs, registry, clock=clock, max_blob_bytes=limits.max_blob_bytes)
    master_key = load_master_key(settings.auth.master_key, settings.data_dir)
    await verify_master_key(metadata, master_key)
    identities = Identities(metadata, master_key, clock=clock)
    secrets = Secrets(metadata, identities, clock=clock)
    tokens = TokenSigner(await load_token_key(metadata))
    default = RegistryRef(settings.account_id, settings.region)
    registry_tokens = TokenRegistryAuthenticator(
        tokens, domain=settings.registry_domain, default_region=settings.region
    )
    registry_auth: RegistryAuthenticator = registry_tokens
    if settings.auth.mode == "open":
        registry_auth = AnonymousAuthenticator(default, settings.registry_domain, tokens=registry_tokens)
    # aws:CurrentTime follows real time, never a test-moved clock.
    templates = Templates(metadata, clock=clock)
    authorizer = Authorizer(
        PolicyStore(metadata, registry, clock=clock),
        clock=SystemClock(),
        create_on_push=settings.create_on_push,
        templates=templates,
    )
    replication = Replication(metadata, clock=clock)

    async def replication_allowed(source: RegistryRef, action: str, dest: RegistryRef, name: RepositoryName) -> bool:
        """Whether the destination's policies allow the source account (its root) `action`."""
        need = on_repository(action, dest, name)
        return (await authorizer.evaluate(Principal.root(source.account_id), Origin(), need)).allowed

    scanning = Scanning(metadata, blobs, registry, clock=clock)
    pull_through = PullThroughCache(metadata, clock, settings.pull_through_cache, credentials=secrets)
    signing = Signing(metadata, identities, registry, uploads, clock=clock, agent=f"moorage/{__version__}")
    registry.push_hooks.append(signing.on_push)
    registry.push_hooks.append(replication.on_push)

    async def sign_allowed(principal_arn: str, profile: str) -> bool:
        """Whether the pushing principal may signer:SignPayload with the profile (ECR asks the same)."""
        account, _, rest = principal_arn.removeprefix("arn:aws:iam::").partition(":")
        user = rest.removeprefix("user/") if rest.startswith("user/") else None
        owner = signing_profile_registry(profile)
        if owner is None:
            return False
        need = Need("signer:SignPayload", owner, profile, identity_only=True)
        return (await authorizer.evaluate(Principal.of(account, user), Origin(), need)).allowed

    cache_pulls = CachePulls(pull_through, registry, uploads, clock)
    oci = OciApi(registry, uploads, registry_auth, authorizer, cache_pulls)
    ecr = EcrApi(
        EcrServices(
            settings,
            registry,
            images,
            uploads,
            identities,
            tokens,
            registry_tokens,
            authorizer=authorizer,
            lifecycle=lifecycle,
            templates=templates,
            replication=replication,
            scanning=scanning,
            pull_through=pull_through,
            cache_pulls=cache_pulls,
            signing=signing,
        ),
        ApiAuthenticator(identities, mode=settings.auth.mode, default=default),
        InputValidator(),
    )
    collector = GarbageCollector(
        metadata,
        blobs,
        clock=clock,
        grace_period=settings.gc.grace_period,
        upload_expiry=settings.uploads.expiry,
    )
    metrics = Metrics(__version__)
    events = settings.events
    api_auth = ApiAuthenticator(identities, mode=settings.auth.mode, default=default)
    signer = SignerApi(signing, api_auth, authorizer)
    remotes = [
        RemoteCopier(remote, metadata, blobs, clock=clock, secrets=secrets) for remote in settings.replication.remotes
    ]
    replication_sink = ReplicationSink(metadata, replication, clock=clock, allowed=replication_allowed, remotes=remotes)
    dispatcher = EventDispatcher(
        metadata,
        [
            *sinks_from_settings(settings, user_agent=f"moorage/{__version__}"),
            replication_sink,
            SigningSink(signing, allowed=sign_allowed),
            *(RemoteReplicationSink(metadata, replication, remote, clock=clock) for remote in remotes),
        ],
        holder=_holder(),
        retry_max_interval=events.retry_max_interval,
        retry_for=events.retry_for,
        on_failure=lambda consumer: metrics.delivery_failures.labels(consumer).inc(),
    )
    metadata.on_events_committed(dispatcher.notify)

    async def backlog() -> dict[str, int]:
        names = {sink.name for sink in dispatcher.sinks}
        async with metadata.transaction() as tx:
            return {
                state.name: await tx.events.count_after(state.position)
                for state in await tx.events.consumers()
                if state.name in names
            }

    metrics.watch_backlog(backlog)
    cache_pulls.observe = lambda kind, result: metrics.pull_through.labels(kind, result).inc()
    console = None
    if settings.console.enabled:
        job_names = [GcJob.name, LifecycleJob.name, EventRetentionJob.name, BackfillJob.name, ScanJob.name]

        async def job_runs() -> dict[str, datetime | None]:
            return await last_runs(metadata, job_names)

        console = ConsoleApp(
            ConsoleServices(
                settings,
                registry,
                images,
                identities,
                registry_tokens,
                authorizer,
                lifecycle,
                metadata,
                derive_key(master_key),
                templates=templates,
                replication=replication,
                scanning=scanning,
                pull_through=pull_through,
                signing=signing,
                job_runs=job_runs,
                backlog=backlog,
                regions=_console_regions(),
            )
        )
    return Moorage(
        settings,
        clock,
        metadata,
        blobs,
        registry,
        images,
        uploads,
        identities,
        tokens,
        collector,
        oci,
        ecr,
        lifecycle,
        dispatcher,
        metrics,
        secretsmanager=SecretsManagerApi(
            secrets,
            ApiAuthenticator(identities, mode=settings.auth.mode, default=default),
            authorizer,
            tokens,
            max_body=settings.limits.max_json_body_bytes,
        ),
        backfills=BackfillJob(metadata, replication_sink, replication),
        scanning=scanning,
        signing=signing,
        replication=replication,
        signer=signer,
        cache_pulls=cache_pulls,
        console=console,
    )


def _console_regions() -> tuple[str, ...]:
    """The regions the console offers (botocore's ECR endpoints data, read locally)."""
    try:
        import boto3

        return tuple(boto3.session.Session().get_available_regions("ecr"))
    except Exception:
        return ()


_OTHER_ROUTES = {
    "/healthz": "healthz",
    "/metrics": "metrics",
    "/_moorage/reset": "reset",
    "/_moorage/clock": "clock",
}


class RootApp:
    """The ASGI entry point: one port serves the registry API (and, later, the ECR API)."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._moorage: Moorage | None = None
        self._lock = asyncio.Lock()
        self._stop_jobs = asyncio.Event()
        self._jobs: asyncio.Task[None] | None = None
        self._metered: MeteredApp | None = None
        self._operations = operation_names()
        self._secretsmanager_operations = operation_names("secretsmanager")

    async def services(self) -> Moorage:
        if self._moorage is None:
            async with self._lock:
                if self._moorage is None:
                    self._moorage = await build(self.settings, clock=self._clock)
        return self._moorage

    async def close(self) -> None:
        if self._jobs is not None:
            self._stop_jobs.set()
            await self._jobs
            self._jobs = None
        if self._moorage is not None:
            await self._moorage.close()
            self._moorage = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        moorage = self._moorage or await self.services()
        if self._metered is None:
            self._metered = MeteredApp(self._route, moorage.metrics, self._classify)
        await guard_unread_body(self._metered, scope, receive, send)

    def _classify(self, scope: Scope) -> tuple[str, str]:
        """(face, operation) of a request for the metrics: never a repository name or digest."""
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v2"):
            try:
                route = parse_path(path)
            except MoorageError:
                return "oci", "invalid"
            return ("oci", f"{route.kind}_{method.lower()}") if route is not None else ("oci", "unknown")
        if path == "/" and method == "POST" and _target(scope).startswith(SECRETSMANAGER_TARGET_PREFIX):
            operation = _target(scope)[len(SECRETSMANAGER_TARGET_PREFIX) :]
            return "secretsmanager", operation if operation in self._secretsmanager_operations else "unknown"
        if path == "/" and method == "POST":
            for key, value in scope["headers"]:
                if key == b"x-amz-target":
                    target = value.decode("latin-1")
                    operation = target.rpartition(".")[2]
                    known = target.startswith(TARGET_PREFIX) and operation in self._operations
                    return "ecr", operation if known else "unknown"
            return "ecr", "unknown"
        if path.startswith("/_moorage/layers/"):
            return "ecr", "layer_download"
        if path.startswith("/console"):
            return "console", "page"
        if path.startswith(("/signing-profiles", "/tags/")):
            signer_op = signer_route(method, path)
            return "signer", signer_op[0] if signer_op else "unknown"
        return "other", _OTHER_ROUTES.get(path, "unknown")

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        moorage = self._moorage or await self.services()
        path: str = scope["path"]
        try:
            if path.startswith("/v2"):
                await moorage.oci(scope, receive, send)
            elif (
                path == "/"
                and scope["method"] == "POST"
                and _target(scope).startswith(SECRETSMANAGER_TARGET_PREFIX)
                and moorage.secretsmanager is not None
            ):
                await moorage.secretsmanager(scope, receive, send)
            elif path == "/" and scope["method"] == "POST":
                await moorage.ecr(scope, receive, send)
            elif path.startswith(("/signing-profiles", "/tags/")) and moorage.signer is not None:
                await moorage.signer(scope, receive, send)
            elif path.startswith("/_moorage/layers/"):
                await self._layer(moorage, scope, send, path[len("/_moorage/layers/") :])
            elif path == "/_moorage/reset":
                await self._reset(moorage, scope, send)
            elif path == "/_moorage/clock":
                await self._clock_control(moorage, scope, receive, send)
            elif (path == "/console" or path.startswith("/console/")) and moorage.console is not None:
                await moorage.console(scope, receive, send)
            elif path == "/healthz":
                await self._health(moorage, send, scope["method"] == "HEAD")
            elif path == "/metrics" and self.settings.metrics.enabled:
                await metrics_endpoint(moorage.metrics, self.settings.metrics.bearer_token, scope, send)
            else:
                await send_bytes(send, 404, [("content-type", "text/plain")], b"not found\n")
        except ClientDisconnectedError:
            log.info("client disconnected during %s %s", scope["method"], path)
        await answer_disconnected(scope, send)

    async def _layer(self, moorage: Moorage, scope: Scope, send: Send, token: str) -> None:
        """Serve a GetDownloadUrlForLayer URL: a signed, expiring grant for one blob."""
        try:
            claims = moorage.tokens.verify("layer", token, now=time.time())
            registry = RegistryRef(str(claims["a"]), str(claims["r"]))
            blob = await moorage.registry.open_blob(
                registry, RepositoryName(str(claims["n"])), Digest.parse(str(claims["d"])), allow_redirect=True
            )
        except (TokenError, MoorageError, KeyError):
            await send_bytes(send, 403, [("content-type", "text/plain")], b"access denied\n")
            return
        if blob.redirect is not None:
            await send_bytes(send, 307, [("location", blob.redirect)])
            return
        headers = [("content-type", "application/octet-stream"), ("content-length", str(blob.info.size))]
        if blob.path is not None:
            await send_file(send, 200, headers, blob.path, None)
        else:
            assert blob.chunks is not None
            await send_stream(send, 200, headers, blob.chunks)

    async def _reset(self, moorage: Moorage, scope: Scope, send: Send) -> None:
        """POST /_moorage/reset: wipe all registry state (not identities), for test suites."""
        if scope["method"] != "POST":
            await send_bytes(send, 405, [("content-type", "text/plain")], b"POST only\n")
            return
        if not self.settings.testing.allow_reset:
            await send_bytes(send, 403, [("content-type", "text/plain")], b"reset is disabled (serve --allow-reset)\n")
            return
        await moorage.metadata.reset()
        moorage.ecr.authorizer.store.clear()
        async for digest in moorage.blobs.digests():
            await moorage.blobs.delete(digest)
        if isinstance(moorage.clock, OffsetClock):
            await moorage.clock.refresh()  # the reset cleared the clock offset too
        await send_bytes(send, 204, [])

    async def _clock_control(self, moorage: Moorage, scope: Scope, receive: Receive, send: Send) -> None:
        """GET /_moorage/clock: the shared clock offset and the time the services see.
        POST /_moorage/clock {"advance_seconds": N}: move that clock forward by N seconds (N >= 0), for
        every process and replica on the same metadata store. Needs `serve --allow-clock-control`."""
        text = [("content-type", "text/plain")]
        if not self.settings.testing.allow_clock_control:
            await send_bytes(send, 403, text, b"clock control is disabled (serve --allow-clock-control)\n")
            return
        clock = moorage.clock
        if not isinstance(clock, OffsetClock):
            await send_bytes(send, 409, text, b"this server runs on an injected clock\n")
            return
        if scope["method"] == "POST":
            try:
                body = json.loads(await Request(scope, receive).read(4096) or b"{}")
                seconds = body["advance_seconds"] if isinstance(body, dict) else None
                if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < 1e10:
                    raise ValueError("advance_seconds")
            except (ValueError, KeyError, TooLargeError):
                message = b'expected {"advance_seconds": N} with a number N >= 0\n'
                await send_bytes(send, 400, text, message)
                return
            await clock.advance(timedelta(seconds=seconds))
        elif scope["method"] == "GET":
            await clock.refresh()
        else:
            await send_bytes(send, 405, text, b"GET or POST\n")
            return
        now = clock.now()
        state = {
            "offset_seconds": clock.offset.total_seconds(),
            "now": now.isoformat(),
            "real_now": (now - clock.offset).isoformat(),
        }
        await send_bytes(send, 200, [("content-type", "application/json")], json.dumps(state).encode())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    moorage = await self.services()
                    # Before the first request: a new webhook must see every event from now on.
                    await moorage.dispatcher.register()
                    if self.settings.jobs.enabled:
                        self._jobs = asyncio.create_task(moorage.run_background(self._stop_jobs))
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, moorage: Moorage, send: Send, head: bool) -> None:
        problems = []
        try:
            await moorage.metadata.ping()
        except Exception as exc:
            problems.append(f"metadata: {type(exc).__name__}")
        try:
            probe = f"healthz-{os.getpid()}"
            state = await moorage.blobs.begin_upload(probe)
            await moorage.blobs.abort_upload(state)
        except Exception as exc:
            problems.append(f"storage: {type(exc).__name__}")
        status, body = (503, "\n".join(problems) + "\n") if problems else (200, "ok\n")
        await send_bytes(send, status, [("content-type", "text/plain")], body.encode(), head=head)


def _target(scope: Scope) -> str:
    """The request's X-Amz-Target ("" without one)."""
    for key, value in scope["headers"]:
        if key == b"x-amz-target":
            return str(value.decode("latin-1"))
    return ""


def create_app(settings: Settings, *, clock: Clock | None = None) -> RootApp:
    """The ASGI app for `settings` (stores are opened on lifespan startup or first request)."""
    return RootApp(settings, clock=clock)


def server_app() -> RootApp:
    """Factory for the server's worker processes: `moorage serve` hands them the effective
    settings through one environment variable, so every worker serves the same config."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise RuntimeError(f"{SETTINGS_ENV} is not set; start the server with `moorage serve`")
    settings = settings_from_json(text)
    logging.basicConfig(level=settings.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _die_with_parent(os.environ.get(SERVE_PID_ENV))
    return create_app(settings)


SERVE_PID_ENV = "MOORAGE_SERVE_PID"
"""Set by `moorage serve` (cli.SERVE_PID_ENV) to its own pid for the workers it starts."""

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: str | None) -> None:
    """Have the kernel kill this worker when the serving parent dies, however it dies (`kill -9`
    included): an orphaned worker would go on serving on the parent's socket, beside a restart.
    SIGKILL, since nobody is left to wait for a graceful stop."""
    if parent is None or not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("cannot ask to die with the serving process: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != int(parent):  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
