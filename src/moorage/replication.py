"""Replication (semantics §10): the registry's replication configuration, and the outbox
consumers that copy every pushed image to the destinations a rule gives it: inside this
deployment (below), or pushed to a remote registry (`RemoteCopier`, at the end).

    push (either face) ─► ECR Image Action PUSH in the outbox
      ReplicationSink (a Sink of delivery.EventDispatcher, lease "events/replication"):
        rules of the source registry that match the repository ─► destinations (unique)
        IN_PROGRESS rows ─► per destination, one write transaction:
          cross-account? the destination's registry policy must allow the source account
            ecr:ReplicateImage (and ecr:CreateRepository when the repository is missing)
          missing repository ─► created through the destination's REPLICATION template (else defaults)
          children of an index first, then the manifest, then its referrers: manifest rows and
            blob *links* (the bytes are shared, never copied), the tag unless it is immutable there
          ─► COMPLETE / FAILED(failure code), and an `ECR Replication Action` event

The copy writes no `ECR Image Action`, so a replicated image is never replicated again (one hop).
Deletes are never replicated. A copy is idempotent (a manifest already there is kept), so the
at-least-once delivery of the outbox makes a restart mid-copy end COMPLETE.

Failure codes (`failureCode` of DescribeImageReplicationStatus; ECR's is a free string):
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from moorage import events as ev
from moorage import manifests as mf
from moorage.clock import Clock
from moorage.config import ReplicationRemoteSettings
from moorage.delivery import DeliveryError
from moorage.errors import (
    BackfillInProgressError,
    BackfillInvalidStatusError,
    BackfillNotFoundError,
    InvalidRequestError,
    LimitExceededError,
    ManifestUnknownError,
    MoorageError,
    RepositoryAlreadyExistsError,
)
from moorage.metadata import MetadataStore, Transaction
from moorage.metadata.outbox import StoredEvent
from moorage.metadata.replication import BackfillItem, BackfillRecord, ReplicationStatusRecord, item_key
from moorage.model import Digest, Image, Page, PageRequest, RegistryRef, Repository, RepositoryName, parse_tag
from moorage.registry import manifest_references, tag_is_immutable
from moorage.remote import EcrApi, RemoteError, RemoteRegistry
from moorage.secrets import CacheCredentials
from moorage.storage import BlobMissingError, BlobStore
from moorage.templates import Templates
from moorage.upstream import Credentials

__all__ = [
    "FAILURE_CODES",
    "MAX_DESTINATIONS",
    "Allowed",
    "BackfillJob",
    "Destination",
    "RemoteCopier",
    "RemoteReplicationSink",
    "Replication",
    "ReplicationSink",
    "destinations_for",
]

log = logging.getLogger("moorage.replication")

FAILURE_CODES: dict[str, str] = {
    "ACCESS_DENIED": "the destination registry's policy does not allow the source account ecr:ReplicateImage",
    "REPOSITORY_CREATION_DENIED": "the destination repository is missing and the destination registry's policy "
    "does not allow the source account ecr:CreateRepository",
    "IMAGE_NOT_FOUND": "the image was deleted from the source before it was copied",
    "DESTINATION_UNREACHABLE": "a remote destination could not be reached (connection refused, timeout, "
    "5xx or 429 answers); retried with backoff until it takes the image",
    "DESTINATION_REJECTED": "a remote destination refused the image (a 4xx answer other than for access)",
    "LIMIT_EXCEEDED": "the destination refused the image for a quota (reserved)",
    "CREDENTIALS_UNAVAILABLE": "a remote's credential_arn names a secret that is missing, scheduled for "
    "deletion, or holds neither username/accessToken nor accessKeyId/secretAccessKey",
}
__doc__ = (__doc__ or "") + "".join(f"\n    {code:<28} {meaning}" for code, meaning in FAILURE_CODES.items()) + "\n"

MAX_DESTINATIONS = 25
_DOCUMENT = "replication"
SINK_NAME = "replication"


@dataclass(frozen=True, slots=True, order=True)
class Destination:
    region: str
    registry_id: str

    @property
    def registry(self) -> RegistryRef:
        return RegistryRef(self.registry_id, self.region)


def _doc_key(registry: RegistryRef) -> str:
    return f"doc/{registry.account_id}/{registry.region}/{_DOCUMENT}"


async def _configuration_in(tx: Transaction, registry: RegistryRef) -> dict[str, object]:
    """The registry's replication configuration as `tx` sees it (no rules when none was put)."""
    text = await tx.kv.get(_doc_key(registry))
    return dict(json.loads(text)) if text else {"rules": []}


def _replicable_push(event: StoredEvent) -> bool:
    """What both replication sinks take: a push that the push's transaction found a destination for."""
    return (
        event.detail_type == ev.IMAGE_ACTION
        and ev.wants(event.work, ev.WORK_REPLICATION)
        and '"action-type":"PUSH"' in event.body
    )


def destinations_for(config: Mapping[str, object] | None, repository: str) -> list[Destination]:
    """The unique destinations of the rules whose filters match `repository` (a rule without
    filters matches every repository), in the order they first appear."""
    found: dict[Destination, None] = {}
    rules = config.get("rules", []) if config else []
    assert isinstance(rules, list)
    for rule in rules:
        filters = rule.get("repositoryFilters") or []
        if filters and not any(repository.startswith(f["filter"]) for f in filters):
            continue
        for d in rule.get("destinations", []):
            found.setdefault(Destination(d["region"], d["registryId"]), None)
    return list(found)


Allowed = Callable[[RegistryRef, str, RegistryRef, RepositoryName], Awaitable[bool]]
"""(source registry, IAM action, destination registry, repository) -> whether the destination's
policies allow the source account that action (the composition root asks the Authorizer)."""


class Replication:
    """The configuration (stored as the registry's `replication` document) and the statuses."""

    def __init__(self, metadata: MetadataStore, *, clock: Clock) -> None:
        self._metadata = metadata
        self._clock = clock

    async def configuration(self, registry: RegistryRef) -> dict[str, object]:
        async with self._metadata.transaction() as tx:
            return await _configuration_in(tx, registry)

    async def on_push(
        self, tx: Transaction, repo: Repository, image: Image, principal: str | None, now: datetime
    ) -> int:
        """The Registry push hook: WORK_REPLICATION when the registry's configuration, as of the
        push's own transaction, has a destination for the repository. The replication consumers
        pass over every other push (ECR replicates what is pushed after the configuration is in
        place, never an earlier push that a consumer happened to deliver late)."""
        config = await _configuration_in(tx, repo.registry)
        return ev.WORK_REPLICATION if destinations_for(config, repo.name) else 0

    async def put_configuration(self, registry: RegistryRef, config: dict[str, object]) -> dict[str, object]:
        """Validate (InvalidRequestError with ECR's constraint text) and replace the configuration."""
        rules = config.get("rules", [])
        assert isinstance(rules, list)
        unique: set[Destination] = set()
        for rule in rules:
            for d in rule.get("destinations", []):
                dest = Destination(d["region"], d["registryId"])
                if dest.registry == registry:
                    raise InvalidRequestError(
                        "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
                        "'Replication destination cannot be the same as the source registry'"
                    )
                unique.add(dest)
            for f in rule.get("repositoryFilters") or []:
                if f.get("filterType") != "PREFIX_MATCH":
                    raise InvalidRequestError(
                        "Invalid parameter at 'repositoryFilters' failed to satisfy constraint: "
                        "'Member must satisfy enum value set: [PREFIX_MATCH]'"
                    )
        if len(unique) > MAX_DESTINATIONS:
            raise InvalidRequestError(
                "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: "
                f"'A replication configuration can have at most {MAX_DESTINATIONS} unique destinations'"
            )
        stored: dict[str, object] = {"rules": rules}
        async with self._metadata.transaction(write=True) as tx:
            await tx.kv.put(_doc_key(registry), json.dumps(stored))
        return stored

    async def statuses(self, registry: RegistryRef, repository: str, digest: Digest) -> list[ReplicationStatusRecord]:
        async with self._metadata.transaction() as tx:
            return await tx.replication.for_image(registry, repository, str(digest))

    async def listing(
        self, *, repository: str | None = None, statuses: Sequence[str] = ()
    ) -> list[ReplicationStatusRecord]:
        async with self._metadata.transaction() as tx:
            return await tx.replication.list(repository=repository, statuses=statuses)

    # -- backfills (StartReplicationBackfill & co.; BackfillJob does the work) ------------------

    async def start_backfill(self, source: RegistryRef, dest: Destination) -> BackfillRecord:
        config = await self.configuration(source)
        rules = config.get("rules", [])
        assert isinstance(rules, list)
        configured = {Destination(d["region"], d["registryId"]) for r in rules for d in r.get("destinations", [])}
        if dest not in configured:
            raise InvalidRequestError(
                "Invalid parameter at 'destination' failed to satisfy constraint: "
                "'The destination must be configured in the registry's replication configuration'"
            )
        now = self._clock.now()
        record = BackfillRecord(str(uuid.uuid4()), source, dest.registry, "PREPARING", now)
        async with self._metadata.transaction(write=True) as tx:
            running = await tx.backfills.listing(source, statuses=BACKFILL_RUNNING)
            if any(b.destination.region == dest.region for b in running):
                raise BackfillInProgressError(
                    f"A replication backfill to the region '{dest.region}' is already in progress"
                )
            if len(running) >= MAX_RUNNING_BACKFILLS:
                raise LimitExceededError(
                    f"A registry can have at most {MAX_RUNNING_BACKFILLS} replication backfills in progress"
                )
            await tx.backfills.create(record)
        return record

    async def backfill(self, source: RegistryRef, backfill_id: str) -> BackfillRecord:
        async with self._metadata.transaction() as tx:
            record = await tx.backfills.get(source, backfill_id)
        if record is None:
            raise _backfill_not_found(source, backfill_id)
        return record

    async def stop_backfill(self, source: RegistryRef, backfill_id: str) -> BackfillRecord:
        """Stop at once: copies are single transactions, so none is left half done."""
        async with self._metadata.transaction(write=True) as tx:
            record = await tx.backfills.get(source, backfill_id)
            if record is None:
                raise _backfill_not_found(source, backfill_id)
            if record.status not in BACKFILL_RUNNING:
                raise BackfillInvalidStatusError(
                    f"The replication backfill '{backfill_id}' is {record.status} and cannot be stopped"
                )
            stopped = replace(record, status="STOPPED", ended_at=self._clock.now())
            await tx.backfills.update(stopped)
        return stopped

    async def list_backfills(self, source: RegistryRef, page: PageRequest) -> Page[BackfillRecord]:
        """Newest first; those that ended over 90 days ago are no longer listed."""
        cutoff = self._clock.now() - BACKFILL_RETENTION
        async with self._metadata.transaction() as tx:
            found = [b for b in await tx.backfills.listing(source) if b.ended_at is None or b.ended_at >= cutoff]
        start = 0
        if page.after is not None:
            start = next((i + 1 for i, b in enumerate(found) if b.id == page.after), len(found))
        items = found[start:]
        if page.limit is not None and len(items) > page.limit:
            return Page(items[: page.limit], items[page.limit - 1].id)
        return Page(items)

    async def backfill_results(
        self, source: RegistryRef, backfill_id: str, status: str | None, page: PageRequest
    ) -> tuple[BackfillRecord, Page[BackfillItem]]:
        """The backfill and a page of its per-image results (none before it ended)."""
        async with self._metadata.transaction() as tx:
            record = await tx.backfills.get(source, backfill_id)
            if record is None:
                raise _backfill_not_found(source, backfill_id)
            if record.status in BACKFILL_RUNNING:
                return record, Page([])
            statuses = [status] if status else ["COMPLETE", "FAILED"]
            limit = None if page.limit is None else page.limit + 1
            items = await tx.backfills.items(backfill_id, statuses=statuses, after=page.after, limit=limit)
        if page.limit is not None and len(items) > page.limit:
            items = items[: page.limit]
            return record, Page(items, item_key(items[-1]))
        return record, Page(items)


BACKFILL_RUNNING = ("PREPARING", "IN_PROGRESS", "STOPPING")
MAX_RUNNING_BACKFILLS = 10
BACKFILL_RETENTION = timedelta(days=90)


def _backfill_not_found(source: RegistryRef, backfill_id: str) -> BackfillNotFoundError:
    return BackfillNotFoundError(
        f"The replication backfill with id '{backfill_id}' does not exist in the registry with id '{source.account_id}'"
    )


class BackfillJob:
    """Runs replication backfills, a bounded batch per run, resumable from its rows:

        PREPARING    list the source's images the configuration sends to the destination (one
                     item per image and tag, an index counted once with its children) ─► IN_PROGRESS
        IN_PROGRESS  copy up to `batch` pending items; an image the push-time replication already
                     copied (its status row says COMPLETE) is counted, not copied again
                     ─► COMPLETE when none is pending
    A crash leaves the pending items pending; the next run (any process, under the job's lease)
    goes on from there."""

    name = "replication-backfill"

    def __init__(
        self,
        metadata: MetadataStore,
        sink: ReplicationSink,
        replication: Replication,
        *,
        interval: timedelta = timedelta(seconds=1),
        batch: int = 200,
    ) -> None:
        self.interval = interval
        self._metadata = metadata
        self._sink = sink
        self._replication = replication
        self._batch = batch

    async def run_once(self, now: datetime) -> dict[str, object]:
        async with self._metadata.transaction() as tx:
            running = await tx.backfills.listing(statuses=("PREPARING", "IN_PROGRESS"))
        copied = 0
        for backfill in running:
            if backfill.status == "PREPARING":
                await self._prepare(backfill, now)
            else:
                copied += await self._advance(backfill, now)
        return {"backfills": len(running), "copied": copied}

    async def _prepare(self, backfill: BackfillRecord, now: datetime) -> None:
        config = await self._replication.configuration(backfill.source)
        dest = Destination(backfill.destination.region, backfill.destination.account_id)
        items: list[BackfillItem] = []
        async with self._metadata.transaction() as tx:
            after: str | None = None
            while True:
                page = await tx.repositories.list_page(backfill.source, PageRequest(limit=500, after=after))
                for repo in page.items:
                    if dest not in destinations_for(config, repo.name):
                        continue
                    children = {child for _, child in await tx.images.children(repo.id)}
                    for image in await tx.images.scan(repo.id):
                        if image.digest in children:
                            continue  # copied with its index
                        for tag in image.tags or ("",):
                            items.append(BackfillItem(backfill.id, repo.name, str(image.digest), tag, "PENDING"))
                if page.next_after is None:
                    break
                after = page.next_after
        async with self._metadata.transaction(write=True) as tx:
            current = await tx.backfills.get(backfill.source, backfill.id)
            if current is None or current.status != "PREPARING":
                return  # stopped meanwhile
            await tx.backfills.add_items(items)
            await tx.backfills.update(replace(current, status="IN_PROGRESS", total=len(items)))

    async def _advance(self, backfill: BackfillRecord, now: datetime) -> int:
        async with self._metadata.transaction() as tx:
            pending = await tx.backfills.items(backfill.id, statuses=["PENDING"], limit=self._batch)
        copied = 0
        for item in pending:
            async with self._metadata.transaction() as tx:
                current = await tx.backfills.get(backfill.source, backfill.id)
                done = {
                    r.destination: r
                    for r in await tx.replication.for_image(backfill.source, item.repository, item.digest)
                }
            if current is None or current.status != "IN_PROGRESS":
                return copied  # stopped
            already = done.get(backfill.destination)
            if already is not None and already.status == "COMPLETE":
                status, code = "COMPLETE", None
            else:
                status, code = await self._sink.copy(
                    backfill.source,
                    RepositoryName(item.repository),
                    Digest.parse(item.digest),
                    item.tag or None,
                    backfill.destination,
                )
                copied += 1
            async with self._metadata.transaction(write=True) as tx:
                current = await tx.backfills.get(backfill.source, backfill.id)
                assert current is not None
                await tx.backfills.finish_item(replace(item, status=status, failure_code=code))
                codes = current.failure_codes
                if code is not None and code not in codes:
                    codes = (*codes, code)
                await tx.backfills.update(
                    replace(
                        current,
                        completed=current.completed + (status == "COMPLETE"),
                        failed=current.failed + (status == "FAILED"),
                        failure_codes=codes,
                    )
                )
        if len(pending) < self._batch:
            async with self._metadata.transaction(write=True) as tx:
                current = await tx.backfills.get(backfill.source, backfill.id)
                if current is not None and current.status == "IN_PROGRESS":
                    left = await tx.backfills.items(backfill.id, statuses=["PENDING"], limit=1)
                    if not left:
                        await tx.backfills.update(replace(current, status="COMPLETE", ended_at=now))
        return copied


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class ReplicationSink:
    """The outbox consumer that performs replication (see the module documentation)."""

    name = SINK_NAME

    def __init__(
        self,
        metadata: MetadataStore,
        replication: Replication,
        *,
        clock: Clock,
        allowed: Allowed,
        remotes: Sequence[RemoteCopier] = (),
    ) -> None:
        self._metadata = metadata
        self._replication = replication
        self._clock = clock
        self._allowed = allowed
        # Destinations in other deployments: each has a sink of its own (RemoteReplicationSink).
        self._remotes = {remote.destination: remote for remote in remotes}
        # During a batch of the dispatcher's: each registry's configuration, read once for it.
        self._configs: dict[RegistryRef, dict[str, object]] | None = None

    def begin_batch(self) -> None:
        """A new batch: every event in it committed before now, so a configuration read from
        here on is as current for each of them as a read per event would be."""
        self._configs = {}

    def end_batch(self) -> None:
        self._configs = None

    def accepts(self, event: StoredEvent) -> bool:
        return _replicable_push(event)

    async def close(self) -> None:
        return None

    async def deliver(self, event: StoredEvent) -> None:
        detail = json.loads(event.body)["detail"]
        source = RegistryRef(event.account_id, event.region)
        name = RepositoryName(detail["repository-name"])
        digest = Digest.parse(detail["image-digest"])
        tag: str | None = detail.get("image-tag")
        try:
            config = None if self._configs is None else self._configs.get(source)
            if config is None:
                config = await self._replication.configuration(source)
                if self._configs is not None:
                    self._configs[source] = config
            destinations = [d for d in destinations_for(config, name) if d.registry not in self._remotes]
            if not destinations:
                return
            now = self._clock.now()
            async with self._metadata.transaction(write=True) as tx:
                await tx.replication.put(
                    [
                        ReplicationStatusRecord(source, name, str(digest), d.registry, "IN_PROGRESS", None, now)
                        for d in destinations
                    ]
                )
            for dest in destinations:
                await self.copy(source, name, digest, tag, dest.registry)
        except DeliveryError:
            raise
        except Exception as exc:  # the database went away, say: retried with backoff
            log.exception("replication of %s@%s failed", name, digest)
            raise DeliveryError(f"replication failed: {type(exc).__name__}: {exc}") from exc

    async def copy(
        self, source: RegistryRef, name: RepositoryName, digest: Digest, tag: str | None, dest: RegistryRef
    ) -> tuple[str, str | None]:
        """Copy one image (with its children and referrers) into `dest`; record and return the
        status and failure code."""
        remote = self._remotes.get(dest)
        if remote is not None:  # a backfill to a remote destination
            outcome = await remote.copy(source, name, digest, tag)
            return outcome[0], outcome[1]
        now = self._clock.now()
        code: str | None = None
        kept_tag: str | None = None
        try:
            cross_account = source.account_id != dest.account_id
            if cross_account and not await self._allowed(source, "ecr:ReplicateImage", dest, name):
                raise _Refused("ACCESS_DENIED")
            async with self._metadata.transaction(write=True) as tx:
                kept_tag = await self._copy_in(tx, source, name, digest, tag, dest, now, cross_account)
                status = "COMPLETE"
                await self._record(tx, source, name, digest, dest, status, None, kept_tag, now)
            return status, None
        except _Refused as refused:
            code = refused.code
        except ManifestUnknownError:  # a child of the index was deleted before the copy
            code = "IMAGE_NOT_FOUND"
        except RepositoryAlreadyExistsError:
            # Created concurrently (another copy or a push): copy again into that repository.
            return await self.copy(source, name, digest, tag, dest)
        async with self._metadata.transaction(write=True) as tx:
            await self._record(tx, source, name, digest, dest, "FAILED", code, None, now)
        log.info("replication of %s@%s to %s/%s failed: %s", name, digest, dest.account_id, dest.region, code)
        return "FAILED", code

    async def _record(
        self,
        tx: Transaction,
        source: RegistryRef,
        name: RepositoryName,
        digest: Digest,
        dest: RegistryRef,
        status: str,
        code: str | None,
        tag: str | None,
        now: datetime,
    ) -> None:
        await tx.replication.put([ReplicationStatusRecord(source, name, str(digest), dest, status, code, now)])
        await tx.events.add([ev.replication_action(dest, name, digest, source, now, tag=tag, failure_code=code)])

    async def _copy_in(
        self,
        tx: Transaction,
        source: RegistryRef,
        name: RepositoryName,
        digest: Digest,
        tag: str | None,
        dest: RegistryRef,
        now: datetime,
        cross_account: bool,
    ) -> str | None:
        src = await tx.repositories.get(source, name)
        if src is None or await tx.images.get(src.id, digest, with_body=False) is None:
            raise _Refused("IMAGE_NOT_FOUND")
        repo = await tx.repositories.get(dest, name, for_update=True)
        if repo is None:
            if cross_account and not await self._allowed(source, "ecr:CreateRepository", dest, name):
                raise _Refused("REPOSITORY_CREATION_DENIED")
            template = await Templates.select(tx, dest, name, "REPLICATION")
            repo = await Templates.create_repository(tx, dest, name, template, now)
        await self._copy_manifest(tx, src, repo, digest, now, seen=set())
        for referrer in await tx.images.referrers(src.id, digest):
            await self._copy_manifest(tx, src, repo, referrer.digest, now, seen=set())
        if tag is None:
            return None
        parse_tag(tag)
        if tag_is_immutable(repo, tag):
            current = await tx.images.get_by_tag(repo.id, tag, with_body=False)
            if current is not None and current.digest != digest:
                return None  # ECR: the image arrives, the immutable tag is not moved
        await tx.images.set_tag(repo.id, tag, digest, now)
        return tag

    async def _copy_manifest(
        self, tx: Transaction, src: Repository, repo: Repository, digest: Digest, now: datetime, seen: set[Digest]
    ) -> None:
        if digest in seen:
            return
        seen.add(digest)
        if await tx.images.get(repo.id, digest, with_body=False) is not None:
            return  # already there (an earlier attempt, or pushed there too)
        image = await tx.images.get(src.id, digest)
        if image is None or image.body is None:
            raise ManifestUnknownError("Requested image not found", str(digest))
        parsed = mf.parse(image.body, image.media_type)
        for child in parsed.manifest_references:
            await self._copy_manifest(tx, src, repo, child, now, seen)
        for blob in parsed.blob_references:
            info = await tx.blobs.linked(src.id, blob)
            if info is None:
                continue  # pushed without it (a non-distributable layer, say): nothing to link
            if not await tx.blobs.claim(info, now):
                raise DeliveryError(f"blob {blob} is being garbage collected; retrying")
            await tx.blobs.link(repo.id, blob, now)
        copied: Image = replace(
            image,
            registry=repo.registry,
            repository=repo.name,
            pushed_at=now,
            tags=(),
            body=None,
            last_pulled_at=None,
            storage_class="STANDARD",
            last_archived_at=None,
            last_activated_at=None,
        )
        await tx.images.put(repo.id, copied, image.body, manifest_references(parsed))


# -- remote destinations ([[replication.remotes]]) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Manifest:
    digest: Digest
    media_type: str
    body: bytes
    blobs: tuple[tuple[Digest, int], ...]  # (digest, size) of the blobs the source repository links


class _Retry(Exception):
    """Authenticate afresh (or after creating the repository) and push once more."""


PARALLEL_BLOBS = 4  # blob uploads in flight per image and remote


class RemoteCredentialSource(Protocol):
    """Where a remote's `credential_arn` is read (`secrets.Secrets`)."""

    async def pull_through_credentials(self, registry: RegistryRef, arn: str) -> CacheCredentials:
        """Raises MoorageError when the secret is missing or its value is not JSON credentials."""
        ...


class RemoteCopier:
    """Pushes images to one destination served by another deployment (see moorage.remote):

        the manifests to send, read in one transaction: the children of an index first, then
          the image, then its referrers (each with the blobs the source repository links)
        per manifest: each blob (up to PARALLEL_BLOBS at once) HEAD ─► there: skipped; known in
          another repository there ─► cross-repository mount; else one streamed upload
          ─► PUT the manifest by digest (the image itself by its tag, when it has one: refused
          ─► by digest: the image arrives, the tag does not, as into an immutable tag there)
        a missing repository ─► CreateRepository through the remote's ECR API (with access keys)

    Everything is idempotent, so a copy interrupted anywhere (a crash, the remote going away)
    is pushed again from the start and skips what arrived."""

    def __init__(
        self,
        settings: ReplicationRemoteSettings,
        metadata: MetadataStore,
        blobs: BlobStore,
        *,
        clock: Clock,
        client: RemoteRegistry | None = None,
        secrets: RemoteCredentialSource | None = None,
    ) -> None:
        self.settings = settings
        self.destination = RegistryRef(settings.registry_id, settings.region)
        self._metadata = metadata
        self._blobs = blobs
        self._clock = clock
        self._secrets = secrets
        self._secret_value: CacheCredentials | None = None
        self._timeout = timeout = settings.timeout.total_seconds()
        self._api: EcrApi | None = None
        credentials: Credentials | None = None
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            self._api = self._ecr_api(settings.access_key_id, settings.secret_access_key)
        elif settings.username is not None and settings.password is not None:
            credentials = Credentials(settings.username, settings.password)
        self._registry = client or RemoteRegistry(settings.url, credentials, timeout=timeout)
        self._password: str | None = None
        self._known: dict[Digest, str] = {}  # blob -> a repository there that has it (for mounts)
        self._failed: dict[tuple[str, str, str], str] = {}  # (source, repository, digest) -> last code

    async def close(self) -> None:
        await self._registry.aclose()
        if self._api is not None:
            await self._api.aclose()

    async def copy(
        self, source: RegistryRef, name: RepositoryName, digest: Digest, tag: str | None
    ) -> tuple[str, str | None, bool]:
        """Push one image; record the status (and an `ECR Replication Action`, when it changed).
        Returns (status, failure code, whether to try again later)."""
        code: str | None = None
        retry = False
        kept: str | None = None
        try:
            await self._read_secret()
            plan = await self._plan(source, name, digest)
            for attempt in range(3):
                try:
                    await self._authenticate(fresh=attempt > 0)
                    kept = await self._push(name, digest, tag, plan)
                    break
                except _Retry:
                    if attempt == 2:
                        raise RemoteError("denied", "the remote registry refused the credentials") from None
        except _Refused as refused:
            code = refused.code
        except RemoteError as exc:
            code, retry = _remote_failure(exc)
            log.info(
                "replication of %s@%s to %s/%s: %s",
                name,
                digest,
                self.destination.account_id,
                self.destination.region,
                exc.message,
            )
        status = "COMPLETE" if code is None else "FAILED"
        await self._record(source, name, digest, status, code, kept)
        return status, code, retry

    async def _record(
        self, source: RegistryRef, name: RepositoryName, digest: Digest, status: str, code: str | None, tag: str | None
    ) -> None:
        key = (str(source), str(name), str(digest))
        repeated = code is not None and self._failed.get(key) == code
        if code is None:
            self._failed.pop(key, None)
        else:
            self._failed[key] = code
            if len(self._failed) > 10_000:
                self._failed.pop(next(iter(self._failed)))
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            await tx.replication.put(
                [ReplicationStatusRecord(source, name, str(digest), self.destination, status, code, now)]
            )
            if not repeated:  # one event per outcome, not one per retry of the same failure
                await tx.events.add(
                    [ev.replication_action(self.destination, name, digest, source, now, tag=tag, failure_code=code)]
                )

    def _ecr_api(self, access_key_id: str, secret_access_key: str) -> EcrApi:
        """The remote's ECR API (GetAuthorizationToken, CreateRepository) signed with this key."""
        settings = self.settings
        return EcrApi(
            settings.api_url or settings.url, settings.region, access_key_id, secret_access_key, timeout=self._timeout
        )

    async def _read_secret(self) -> None:
        """With `credential_arn`: the secret's current value, read at every copy (a rotated value
        is used by the next copy); raises _Refused(CREDENTIALS_UNAVAILABLE) when it cannot be used."""
        arn = self.settings.credential_arn
        if arn is None:
            return
        if self._secrets is None:
            raise _Refused("CREDENTIALS_UNAVAILABLE")
        parts = arn.split(":")  # validated at start-up: arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME
        try:
            found = await self._secrets.pull_through_credentials(RegistryRef(parts[4], parts[3]), arn)
        except MoorageError as exc:
            log.info("replication to %s/%s: %s", self.destination.account_id, self.destination.region, exc.message)
            raise _Refused("CREDENTIALS_UNAVAILABLE") from None
        if found == self._secret_value:
            return
        if found.access_key_id is not None and found.secret_access_key is not None:
            old, self._api = self._api, self._ecr_api(found.access_key_id, found.secret_access_key)
            self._password = None
        elif found.username is not None and found.access_token is not None:
            old, self._api = self._api, None
            self._registry.set_credentials(Credentials(found.username, found.access_token))
        else:
            log.info(
                "replication to %s/%s: the secret %s holds no credentials",
                self.destination.account_id,
                self.destination.region,
                arn,
            )
            raise _Refused("CREDENTIALS_UNAVAILABLE")
        if old is not None:
            await old.aclose()
        self._secret_value = found

    async def _authenticate(self, *, fresh: bool) -> None:
        if self._api is None:
            return
        if fresh:
            self._api.forget_password()
        password = await self._api.registry_password()
        if password != self._password:
            self._registry.set_credentials(Credentials("AWS", password), preemptive=True)
            self._password = password

    async def _plan(self, source: RegistryRef, name: RepositoryName, digest: Digest) -> list[_Manifest]:
        plan: list[_Manifest] = []
        seen: set[Digest] = set()
        async with self._metadata.transaction() as tx:
            src = await tx.repositories.get(source, name)
            if src is None or await tx.images.get(src.id, digest, with_body=False) is None:
                raise _Refused("IMAGE_NOT_FOUND")

            async def visit(wanted: Digest) -> None:
                if wanted in seen:
                    return
                seen.add(wanted)
                image = await tx.images.get(src.id, wanted)
                if image is None or image.body is None:
                    raise _Refused("IMAGE_NOT_FOUND")
                parsed = mf.parse(image.body, image.media_type)
                for child in parsed.manifest_references:
                    await visit(child)
                blobs: list[tuple[Digest, int]] = []
                for blob in parsed.blob_references:
                    info = await tx.blobs.linked(src.id, blob)
                    if info is not None:  # a non-distributable layer is not ours to send
                        blobs.append((blob, info.size))
                plan.append(_Manifest(wanted, image.media_type, image.body, tuple(blobs)))

            await visit(digest)
            for referrer in await tx.images.referrers(src.id, digest):
                await visit(referrer.digest)
        return plan

    async def _push(self, name: RepositoryName, digest: Digest, tag: str | None, plan: list[_Manifest]) -> str | None:
        created = False
        while True:
            try:
                return await self._push_once(name, digest, tag, plan)
            except RemoteError as exc:
                if exc.kind == "denied" and self._api is not None:
                    raise _Retry() from None  # the registry password may have expired
                if exc.kind != "not_found" or exc.code != "NAME_UNKNOWN" or created:
                    raise
                if self._api is None:
                    raise _Refused("REPOSITORY_CREATION_DENIED") from None
                try:
                    await self._api.create_repository(name)
                except RemoteError as refused:
                    if refused.kind in ("denied", "rejected"):
                        raise _Refused("REPOSITORY_CREATION_DENIED") from None
                    raise
                created = True

    async def _push_once(
        self, name: RepositoryName, digest: Digest, tag: str | None, plan: list[_Manifest]
    ) -> str | None:
        top = next(m for m in plan if m.digest == digest)
        kept: str | None = None
        for manifest in plan:
            await self._send_blobs(name, manifest.blobs)
            if manifest is top and tag is not None:
                try:  # by tag: the digest arrives with it
                    await self._registry.put_manifest(name, tag, top.media_type, top.body)
                    kept = tag
                    continue
                except RemoteError as exc:
                    if exc.kind != "rejected":
                        raise
                    # An immutable tag there naming another image: the image arrives, the tag not.
                    log.info("replication of %s:%s: the remote kept its tag (%s)", name, tag, exc.code)
            await self._registry.put_manifest(name, str(manifest.digest), manifest.media_type, manifest.body)
        return kept

    async def _send_blobs(self, name: RepositoryName, blobs: Sequence[tuple[Digest, int]]) -> None:
        """A manifest's blobs, up to `PARALLEL_BLOBS` at a time."""
        unique = list(dict.fromkeys(blobs))
        if len(unique) <= 1:
            for blob, size in unique:
                await self._send_blob(name, blob, size)
            return
        gate = asyncio.Semaphore(PARALLEL_BLOBS)

        async def send(blob: Digest, size: int) -> None:
            async with gate:
                await self._send_blob(name, blob, size)

        try:
            async with asyncio.TaskGroup() as group:
                for blob, size in unique:
                    group.create_task(send(blob, size))
        except ExceptionGroup as failed:  # the first failure is the one reported
            raise failed.exceptions[0] from None

    async def _send_blob(self, name: RepositoryName, blob: Digest, size: int) -> None:
        if await self._registry.has_blob(name, str(blob)):
            self._remember(blob, name)
            return
        elsewhere = self._known.get(blob)
        location: str | None = None
        if elsewhere is not None and elsewhere != name:
            location = await self._registry.mount_blob(name, str(blob), elsewhere)
            if location is None:  # mounted
                self._remember(blob, name)
                return
        try:
            await self._registry.push_blob(name, str(blob), size, self._blobs.read(blob), location=location)
        except BlobMissingError:
            raise _Refused("IMAGE_NOT_FOUND") from None
        self._remember(blob, name)

    def _remember(self, blob: Digest, name: str) -> None:
        self._known[blob] = name
        if len(self._known) > 100_000:
            self._known.pop(next(iter(self._known)))


def _remote_failure(exc: RemoteError) -> tuple[str, bool]:
    """The failure code of a remote's answer, and whether it is worth trying again."""
    if exc.kind == "unavailable":
        return "DESTINATION_UNREACHABLE", True
    if exc.kind == "denied":
        return "ACCESS_DENIED", False
    if exc.code in ("TOOMANYREQUESTS", "LimitExceededException"):
        return "LIMIT_EXCEEDED", False
    return "DESTINATION_REJECTED", False


class RemoteReplicationSink:
    """The outbox consumer for one remote destination (lease `events/replication-remote-<id>-<region>`):
    a remote that is down holds back only its own copies. A copy that could not reach the remote
    is FAILED(DESTINATION_UNREACHABLE) and the event is retried with the dispatcher's backoff
    (1 s, 2 s, 4 s ... up to `events.retry_max_interval`, for `events.retry_for`) until it is
    COMPLETE; other failures are final, as for destinations in this deployment."""

    def __init__(
        self, metadata: MetadataStore, replication: Replication, copier: RemoteCopier, *, clock: Clock
    ) -> None:
        self._metadata = metadata
        self._replication = replication
        self._copier = copier
        self._clock = clock
        dest = copier.destination
        self.name = f"replication-remote-{dest.account_id}-{dest.region}"

    def accepts(self, event: StoredEvent) -> bool:
        return _replicable_push(event)

    async def close(self) -> None:
        await self._copier.close()

    async def deliver(self, event: StoredEvent) -> None:
        detail = json.loads(event.body)["detail"]
        source = RegistryRef(event.account_id, event.region)
        name = RepositoryName(detail["repository-name"])
        digest = Digest.parse(detail["image-digest"])
        tag: str | None = detail.get("image-tag")
        dest = self._copier.destination
        try:
            config = await self._replication.configuration(source)
            if Destination(dest.region, dest.account_id) not in destinations_for(config, name):
                return
            async with self._metadata.transaction(write=True) as tx:
                current = [
                    r for r in await tx.replication.for_image(source, name, str(digest)) if r.destination == dest
                ]
                if not current or current[0].status != "FAILED":  # a retry keeps showing its failure
                    await tx.replication.put(
                        [
                            ReplicationStatusRecord(
                                source, name, str(digest), dest, "IN_PROGRESS", None, self._clock.now()
                            )
                        ]
                    )
            _status, code, retry = await self._copier.copy(source, name, digest, tag)
        except Exception as exc:  # the database went away, say: retried with backoff
            log.exception("replication of %s@%s to %s/%s failed", name, digest, dest.account_id, dest.region)
            raise DeliveryError(f"replication failed: {type(exc).__name__}: {exc}") from exc
        if retry:
            raise DeliveryError(f"replication to {dest.account_id}/{dest.region}: {code}")
