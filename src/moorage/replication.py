"""Replication within one deployment (semantics §10): the registry's replication configuration,
and the outbox consumer that copies every pushed image to the destinations a rule gives it.

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

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from moorage import events as ev
from moorage import manifests as mf
from moorage.clock import Clock
from moorage.delivery import DeliveryError
from moorage.errors import InvalidRequestError, ManifestUnknownError, RepositoryAlreadyExistsError
from moorage.metadata import MetadataStore, Transaction
from moorage.metadata.outbox import StoredEvent
from moorage.metadata.replication import ReplicationStatusRecord
from moorage.model import Digest, Image, RegistryRef, Repository, RepositoryName, parse_tag
from moorage.registry import manifest_references, tag_is_immutable
from moorage.templates import Templates

__all__ = [
    "FAILURE_CODES",
    "MAX_DESTINATIONS",
    "Allowed",
    "Destination",
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
    "DESTINATION_UNREACHABLE": "the destination could not be written (reserved for remote destinations)",
    "LIMIT_EXCEEDED": "the destination refused the image for a quota (reserved)",
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


def destinations_for(config: dict[str, object] | None, repository: str) -> list[Destination]:
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
            text = await tx.kv.get(_doc_key(registry))
        return dict(json.loads(text)) if text else {"rules": []}

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


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class ReplicationSink:
    """The outbox consumer that performs replication (see the module documentation)."""

    name = SINK_NAME

    def __init__(self, metadata: MetadataStore, replication: Replication, *, clock: Clock, allowed: Allowed) -> None:
        self._metadata = metadata
        self._replication = replication
        self._clock = clock
        self._allowed = allowed

    def accepts(self, event: StoredEvent) -> bool:
        return event.detail_type == ev.IMAGE_ACTION and '"action-type":"PUSH"' in event.body

    async def close(self) -> None:
        return None

    async def deliver(self, event: StoredEvent) -> None:
        detail = json.loads(event.body)["detail"]
        source = RegistryRef(event.account_id, event.region)
        name = RepositoryName(detail["repository-name"])
        digest = Digest.parse(detail["image-digest"])
        tag: str | None = detail.get("image-tag")
        try:
            config = await self._replication.configuration(source)
            destinations = destinations_for(config, name)
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
    ) -> str:
        """Copy one image (with its children and referrers) into `dest`; record and return the status."""
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
            return status
        except _Refused as refused:
            code = refused.code
        except RepositoryAlreadyExistsError:
            # Created concurrently (another copy or a push): copy again into that repository.
            return await self.copy(source, name, digest, tag, dest)
        async with self._metadata.transaction(write=True) as tx:
            await self._record(tx, source, name, digest, dest, "FAILED", code, None, now)
        log.info("replication of %s@%s to %s/%s failed: %s", name, digest, dest.account_id, dest.region, code)
        return "FAILED"

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
