"""Image scanning as a service: registry scanning configuration, StartImageScan, results, and the
leased job that runs scans (started by StartImageScan or, on push, by the outbox's PUSH events).

A scan reads each layer once (cached per layer digest in the key-value table), squashes the
selected files, builds the inventory and matches it against one generation of the vulnerability
database. Its result and an `ECR Image Scan` event are written in one transaction.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

from moorage import manifests as mf
from moorage.clock import Clock
from moorage.events import ECR_SOURCE, Event
from moorage.metadata import MetadataStore
from moorage.metadata.scans import ScanRecord
from moorage.model import Digest, Image, RegistryRef, RepositoryName
from moorage.registry import Registry
from moorage.scanning.findings import basic_findings, enhanced_findings, severity_counts
from moorage.scanning.inventory import build_inventory
from moorage.scanning.layers import EXTRACTOR_VERSION, LayerError, LayerInventory, read_layer
from moorage.scanning.osv import match, package_keys
from moorage.scanning.squash import squash
from moorage.scanning.vulndb import snapshot
from moorage.storage import BlobStore

__all__ = [
    "COMPLETE_DESCRIPTION",
    "NO_DATABASE",
    "UNSUPPORTED",
    "ScanLimitExceededError",
    "ScanNotFoundError",
    "Scanning",
    "UnsupportedImageTypeError",
    "filter_matches",
]

log = logging.getLogger("moorage.scanning")

COMPLETE_DESCRIPTION = "The scan was completed successfully."
NO_DATABASE = "No vulnerability database; run 'moorage vulndb import'"
UNSUPPORTED = "UnsupportedImageError: The operating system and/or package manager are not supported."
IMAGE_SCAN = "ECR Image Scan"
_CONSUMER = "image-scanning"
_SPOOL = 64 << 20


class ScanLimitExceededError(Exception):
    """A second basic scan of the image within 24 hours."""


class UnsupportedImageTypeError(Exception):
    """The manifest is not an image manifest that can be scanned (an index, a non-image artifact)."""


class ScanNotFoundError(Exception):
    """The image was never scanned."""


def filter_matches(pattern: str, repository: str) -> bool:
    """ECR's WILDCARD filter: without `*`, a substring; with `*`, a whole-name glob."""
    if "*" not in pattern:
        return pattern in repository
    return fnmatch.fnmatchcase(repository, pattern.replace("[", "[[]").replace("?", "[?]"))


@dataclass(frozen=True)
class EffectiveConfig:
    scan_frequency: str  # SCAN_ON_PUSH / CONTINUOUS_SCAN / MANUAL
    applied_filters: list[dict[str, str]]


class Scanning:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStore,
        registry: Registry,
        *,
        clock: Clock,
        lease_seconds: float = 900.0,
        max_attempts: int = 3,
    ) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._registry = registry
        self._clock = clock
        self._lease = lease_seconds
        self._max_attempts = max_attempts

    # --- configuration ---------------------------------------------------------------------

    @staticmethod
    def _config_key(registry: RegistryRef) -> str:
        return f"scanning/config/{registry.account_id}/{registry.region}"

    async def configuration(self, registry: RegistryRef) -> dict[str, Any]:
        async with self._metadata.transaction() as tx:
            raw = await tx.kv.get(self._config_key(registry))
        return json.loads(raw) if raw else {"scanType": "BASIC", "rules": []}

    async def put_configuration(self, registry: RegistryRef, scan_type: str, rules: Sequence[Any]) -> dict[str, Any]:
        config = {"scanType": scan_type, "rules": list(rules)}
        async with self._metadata.transaction(write=True) as tx:
            await tx.kv.put(self._config_key(registry), json.dumps(config))
        return config

    @staticmethod
    def effective(config: dict[str, Any], repository: str, scan_on_push: bool) -> EffectiveConfig:
        """The repository's scan frequency under the registry configuration (semantics §13.1)."""
        hits: dict[str, list[dict[str, str]]] = {}
        for rule in config.get("rules") or []:
            matched = [f for f in rule.get("repositoryFilters") or [] if filter_matches(f["filter"], repository)]
            if matched:
                hits.setdefault(rule["scanFrequency"], []).extend(matched)
        for frequency in ("CONTINUOUS_SCAN", "SCAN_ON_PUSH"):
            if frequency in hits and (frequency != "CONTINUOUS_SCAN" or config.get("scanType") == "ENHANCED"):
                return EffectiveConfig(frequency, hits[frequency])
        if config.get("scanType", "BASIC") == "BASIC" and scan_on_push:
            return EffectiveConfig("SCAN_ON_PUSH", [])
        return EffectiveConfig("MANUAL", [])

    # --- StartImageScan / results ------------------------------------------------------------

    async def _image(self, registry: RegistryRef, name: RepositoryName, reference: str) -> Image:
        return await self._registry.get_manifest(registry, name, reference)

    async def start(self, registry: RegistryRef, name: RepositoryName, reference: str) -> Image:
        """Queue a basic scan (raises ManifestUnknownError, UnsupportedImageTypeError, ScanLimitExceededError)."""
        image = await self._image(registry, name, reference)
        if image.body is None or mf.parse(image.body, image.media_type).is_index:
            raise UnsupportedImageTypeError(image.media_type)
        if mf.parse(image.body, image.media_type).config is None:
            raise UnsupportedImageTypeError(image.media_type)
        now = self._clock.now()
        config = await self.configuration(registry)
        async with self._metadata.transaction(write=True) as tx:
            previous = _current(await tx.scans.get(registry, name, str(image.digest)), image)
            if (
                previous is not None
                and previous.status in ("IN_PROGRESS", "COMPLETE")
                and now - previous.requested_at < timedelta(hours=24)
            ):
                raise ScanLimitExceededError()
            await tx.scans.put(self._queued(registry, name, str(image.digest), config.get("scanType", "BASIC"), now))
        return image

    @staticmethod
    def _queued(registry: RegistryRef, name: str, digest: str, scan_type: str, now: datetime) -> ScanRecord:
        return ScanRecord(registry, name, digest, scan_type, "IN_PROGRESS", "", now)

    async def result(self, registry: RegistryRef, name: RepositoryName, reference: str) -> tuple[Image, ScanRecord]:
        image = await self._image(registry, name, reference)
        async with self._metadata.transaction() as tx:
            record = _current(await tx.scans.get(registry, name, str(image.digest)), image)
        if record is None:
            raise ScanNotFoundError()
        return image, record

    async def status_of(
        self, registry: RegistryRef, name: str, pushed: Mapping[str, datetime]
    ) -> dict[str, ScanRecord]:
        """The current scan of each image (digest -> its push time), in one query."""
        async with self._metadata.transaction() as tx:
            records = await tx.scans.many(registry, name, list(pushed))
        return {r.digest: r for r in records if r.digest in pushed and r.requested_at >= pushed[r.digest]}

    async def current_many(self, registry: RegistryRef, name: str, images: Sequence[Image]) -> dict[str, ScanRecord]:
        """The current scan of each image (a listing's page), as `status_of`."""
        return await self.status_of(registry, name, {str(i.digest): i.pushed_at for i in images})

    # --- the job -----------------------------------------------------------------------------

    async def enqueue_pushed(self) -> int:
        """Queue scans for images pushed (outbox `ECR Image Action` PUSH) into SCAN_ON_PUSH repositories."""
        now = self._clock.now()
        queued = 0
        async with self._metadata.transaction(write=True) as tx:
            state = await tx.events.register(_CONSUMER, now)
            stored = await tx.events.after(state.position, 500)
        if not stored:
            return 0
        configs: dict[RegistryRef, dict[str, Any]] = {}
        for item in stored:
            if item.detail_type != "ECR Image Action":
                continue
            detail = json.loads(item.body)["detail"]
            if detail.get("action-type") != "PUSH":
                continue
            registry = RegistryRef(item.account_id, item.region)
            if registry not in configs:
                configs[registry] = await self.configuration(registry)
            name = RepositoryName(detail["repository-name"])
            try:
                repo = await self._registry.get_repository(registry, name)
                # Most pushes go to repositories scanned manually only: decided before the
                # manifest is read.
                if self.effective(configs[registry], name, repo.scan_on_push).scan_frequency == "MANUAL":
                    continue
                image = await self._image(registry, name, detail["image-digest"])
            except Exception:  # noqa: S112 - deleted since the push: nothing to scan
                continue
            if image.body is None or mf.parse(image.body, image.media_type).config is None:
                continue  # an index: its platform images are pushed, and scanned, on their own
            async with self._metadata.transaction(write=True) as tx:
                previous = await tx.scans.get(registry, name, str(image.digest))
                if previous is None or previous.status != "IN_PROGRESS":
                    scan_type = configs[registry].get("scanType", "BASIC")
                    await tx.scans.put(self._queued(registry, name, str(image.digest), scan_type, now))
                    queued += 1
        async with self._metadata.transaction(write=True) as tx:
            from dataclasses import replace

            await tx.events.save(replace(state, position=stored[-1].position), now)
        return queued

    async def rematch_continuous(self) -> int:
        """After an import, queue again the CONTINUOUS_SCAN images holding a package that a record
        changed by the import names (found through `image_packages`, not by rescanning everything);
        layers come from the per-layer cache, so no blob is read again."""
        key = "scanning/matched-generation"
        async with self._metadata.transaction() as tx:
            active = await tx.vulndb.active()
            seen = int(await tx.kv.get(key) or 0)
            if active is None or active.generation <= seen:
                return 0
            candidates = await tx.scans.affected_by(active.generation, seen)
        now = self._clock.now()
        configs: dict[RegistryRef, dict[str, Any]] = {}
        queued = 0
        for registry, repository, digest in candidates:
            if registry not in configs:
                configs[registry] = await self.configuration(registry)
            config = configs[registry]
            if config.get("scanType") != "ENHANCED":
                continue
            if self.effective(config, repository, False).scan_frequency != "CONTINUOUS_SCAN":
                continue
            async with self._metadata.transaction(write=True) as tx:
                previous = await tx.scans.get(registry, repository, digest)
                if previous is not None and previous.status != "IN_PROGRESS":
                    await tx.scans.put(self._queued(registry, repository, digest, "ENHANCED", now))
                    queued += 1
        async with self._metadata.transaction(write=True) as tx:
            await tx.kv.put(key, str(active.generation))
        return queued

    async def run_pending(self, limit: int = 4) -> int:
        """Claim and run up to `limit` queued scans; returns how many finished."""
        await self.enqueue_pushed()
        await self.rematch_continuous()
        async with self._metadata.transaction(write=True) as tx:
            claimed = await tx.scans.claim(self._clock.now(), self._lease, limit)
        for record in claimed:
            await self._run(record)
        return len(claimed)

    async def _layer(self, digest: str) -> LayerInventory:
        key = f"scanning/layer/{EXTRACTOR_VERSION}/{digest}"
        async with self._metadata.transaction() as tx:
            cached = await tx.kv.get(key)
        if cached is not None:
            return LayerInventory.from_json(json.loads(cached))
        path = self._blobs.local_path(Digest.parse(digest))
        if path is not None:
            with path.open("rb") as stream:
                inv = await asyncio.to_thread(read_layer, digest, stream)
        else:
            with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
                async for chunk in self._blobs.read(Digest.parse(digest)):
                    spool.write(chunk)
                spool.seek(0)
                inv = await asyncio.to_thread(read_layer, digest, _as_io(spool))
        async with self._metadata.transaction(write=True) as tx:
            await tx.kv.put(key, json.dumps(inv.to_json()))
        return inv

    async def _run(self, record: ScanRecord) -> None:
        registry, name = record.registry, RepositoryName(record.repository)
        now = self._clock.now()
        try:
            image = await self._image(registry, name, record.digest)
        except Exception:
            return  # deleted meanwhile
        status, description, result = "COMPLETE", COMPLETE_DESCRIPTION, None
        keys: list[tuple[str, str]] = []
        try:
            status, description, result, keys = await self._scan(record, image)
        except LayerError as exc:
            status, description = "FAILED", str(exc)
        except Exception as exc:
            log.exception("scan of %s@%s failed", record.repository, record.digest)
            if record.attempts + 1 < self._max_attempts:
                return  # the lease expires and another attempt follows
            status, description = "FAILED", f"Internal error: {exc}"
        done = self._clock.now()
        counts = (json.loads(result)["counts"] if result else {}) if status == "COMPLETE" else {}
        detail: dict[str, Any] = {
            "scan-status": status,
            "repository-name": record.repository,
            "finding-severity-counts": counts,
            "image-digest": record.digest,
            "image-tags": list(image.tags),
        }
        event = Event.create(IMAGE_SCAN, ECR_SOURCE, registry, done, detail, repository=record.repository)
        async with self._metadata.transaction(write=True) as tx:
            current = await tx.scans.get(registry, name, record.digest)
            if current is None or current.requested_at != record.requested_at:
                return  # a newer request replaced this one: it runs again
            await tx.scans.put(
                ScanRecord(
                    registry,
                    record.repository,
                    record.digest,
                    record.scan_type,
                    status,
                    description,
                    record.requested_at,
                    completed_at=done,
                    attempts=record.attempts + 1,
                    result=result,
                )
            )
            await tx.scans.set_packages(registry, record.repository, record.digest, keys)
            await tx.events.add([event])
        log.info("scan of %s@%s: %s (%.2fs)", record.repository, record.digest, status, (done - now).total_seconds())

    async def _scan(self, record: ScanRecord, image: Image) -> tuple[str, str, str | None, list[tuple[str, str]]]:
        assert image.body is not None
        parsed = mf.parse(image.body, image.media_type)
        config: dict[str, Any] = {}
        if parsed.config is not None:
            chunks = [c async for c in self._blobs.read(Digest.parse(str(parsed.config.digest)))]
            try:
                config = json.loads(b"".join(chunks))
            except ValueError:
                config = {}
        if config.get("os") == "windows":
            return "UNSUPPORTED_IMAGE", UNSUPPORTED, None, []
        layers = [await self._layer(str(d.digest)) for d in parsed.layers]
        inventory = build_inventory(squash(layers))
        if not inventory.supported:
            return "UNSUPPORTED_IMAGE", UNSUPPORTED, None, []
        keys = package_keys(inventory.packages)
        snap = await snapshot(self._metadata, keys)
        if snap is None:
            return "FAILED", NO_DATABASE, None, keys
        matches = match(inventory.packages, snap.lookup)
        basic = basic_findings(matches)
        enhanced = enhanced_findings(
            matches,
            account=record.registry.account_id,
            region=record.registry.region,
            repository=record.repository,
            image_digest=record.digest,
            image_tags=list(image.tags),
            platform=inventory.distro.platform if inventory.distro else "",
            architecture=str(config.get("architecture", "")),
            pushed_at=image.pushed_at,
            observed_at=self._clock.now(),
        )
        result = {
            "findings": basic,
            "enhanced": enhanced,
            "counts": severity_counts(basic),
            "vulndb_imported_at": snap.status.imported_at.timestamp(),
        }
        return "COMPLETE", COMPLETE_DESCRIPTION, json.dumps(result, default=_json_default), keys


def _current(record: ScanRecord | None, image: Image) -> ScanRecord | None:
    """The record unless it belongs to an earlier life of the digest (the image was deleted and pushed again)."""
    if record is None or record.requested_at < image.pushed_at:
        return None
    return record


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return {"$ts": value.timestamp()}
    raise TypeError(type(value).__name__)


def _as_io(spool: Any) -> IO[bytes]:
    return spool  # type: ignore[no-any-return]


class ScanJob:
    """Runs queued scans (and queues scans on push) under the scheduler's lease."""

    name = "image-scans"

    def __init__(self, scanning: Scanning, interval: timedelta = timedelta(seconds=1)) -> None:
        self._scanning = scanning
        self.interval = interval

    async def run_once(self, now: datetime) -> dict[str, object]:
        finished = 0
        while True:
            n = await self._scanning.run_pending()
            finished += n
            if n == 0:
                break
        return {"scans": finished}
