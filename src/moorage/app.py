"""The composition root: builds every store and service from a `Settings`, and the ASGI app.

    Settings ─► build() ─► MetadataStore (SQL)      ┐
                           BlobStore (filesystem|s3) ├─► Registry, Uploads ─► OciApi (/v2/...)
                           Clock, Limits             ┘
    RootApp (ASGI): lifespan builds/closes the services; routes /v2 → OciApi, /healthz.

Only this module imports store implementations. Nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from moorage.asgi import Receive, Scope, Send, send_bytes
from moorage.auth import AnonymousAuthenticator
from moorage.clock import Clock, SystemClock
from moorage.config import Settings, settings_from_json
from moorage.metadata import MetadataStore
from moorage.metadata.sql import SqlMetadataStore
from moorage.model import RegistryRef
from moorage.oci import OciApi
from moorage.registry import Limits, Registry
from moorage.storage import BlobStore
from moorage.storage.filesystem import FilesystemBlobStore
from moorage.uploads import Uploads

__all__ = ["SETTINGS_ENV", "Moorage", "RootApp", "build", "create_app", "server_app"]

log = logging.getLogger("moorage")

SETTINGS_ENV = "MOORAGE_SETTINGS_JSON"


@dataclass
class Moorage:
    """Everything one process serves with."""

    settings: Settings
    metadata: MetadataStore
    blobs: BlobStore
    registry: Registry
    uploads: Uploads
    oci: OciApi

    async def close(self) -> None:
        await self.metadata.close()
        await self.blobs.close()


def open_blob_store(settings: Settings) -> BlobStore:
    if settings.storage.backend == "filesystem":
        return FilesystemBlobStore(settings.storage.filesystem.effective_root(settings.data_dir))
    raise NotImplementedError(f"storage backend {settings.storage.backend!r} is not available yet")


async def build(settings: Settings, *, clock: Clock | None = None) -> Moorage:
    clock = clock or SystemClock()
    metadata = SqlMetadataStore.open(settings.metadata.effective_url(settings.data_dir))
    blobs = open_blob_store(settings)
    limits = Limits(
        max_manifest_bytes=settings.limits.max_manifest_bytes, max_blob_bytes=settings.limits.max_blob_bytes
    )
    registry = Registry(metadata, blobs, clock=clock, limits=limits)
    uploads = Uploads(metadata, blobs, registry, clock=clock, max_blob_bytes=limits.max_blob_bytes)
    default = RegistryRef(settings.account_id, settings.region)
    oci = OciApi(registry, uploads, AnonymousAuthenticator(default))
    return Moorage(settings, metadata, blobs, registry, uploads, oci)


class RootApp:
    """The ASGI entry point: one port serves the registry API (and, later, the ECR API)."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self._clock = clock
        self._moorage: Moorage | None = None
        self._lock = asyncio.Lock()

    async def services(self) -> Moorage:
        if self._moorage is None:
            async with self._lock:
                if self._moorage is None:
                    self._moorage = await build(self.settings, clock=self._clock)
        return self._moorage

    async def close(self) -> None:
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
        path: str = scope["path"]
        if path.startswith("/v2"):
            await moorage.oci(scope, receive, send)
        elif path == "/healthz":
            await self._health(moorage, send, scope["method"] == "HEAD")
        else:
            await send_bytes(send, 404, [("content-type", "text/plain")], b"not found\n")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.services()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
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
    logging.basicConfig(
        level=settings.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(settings)
