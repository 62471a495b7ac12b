"""Lifecycle policies at work: stored per repository, previewed, and applied by `LifecycleJob`.

`lifecycle.py` decides (pure: `parse_policy`, `evaluate`); this module does the I/O around it:

    PutLifecyclePolicy ─► parse_policy ─► lifecycle_policies row (goes with the repository)
    StartLifecyclePolicyPreview ─► row IN_PROGRESS ─► background task: evaluate (no side effects)
                                   ─► COMPLETE + results (FAILED on error) ─► EXPIRED after a day
    LifecycleJob / `moorage lifecycle run`, per repository with a policy:
        read every image (one snapshot) ─► evaluate(policy, facts, now) ─► apply in write transactions:
        EXPIRE = delete the image (metadata at once; GC reclaims its blobs later),
        TRANSITION = archive it; each action recorded in lifecycle_events; lastEvaluatedAt = now

Applying re-checks each decision against the current state inside the write transaction: an image
whose tags changed since the snapshot, that an index still lists, or that is no longer ACTIVE (for
an archive) is left for the next run. So a push racing the job never loses an image it just tagged,
and running the job twice (or in two processes) acts once. Images being restored (ACTIVATING) are
never acted on, nor anything that would follow them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from moorage import events as ev
from moorage.clock import Clock
from moorage.errors import (
    LifecyclePolicyNotFoundError,
    LifecyclePreviewInProgressError,
    LifecyclePreviewNotFoundError,
    RepositoryNotFoundError,
)
from moorage.lifecycle import Decision, ImageFacts, LifecyclePolicy, evaluate, parse_policy, preview_result
from moorage.metadata import (
    LifecycleEvent,
    LifecyclePolicyRecord,
    LifecyclePreviewRecord,
    MetadataStore,
    Transaction,
)
from moorage.model import Digest, Image, RegistryRef, Repository, RepositoryName

__all__ = [
    "PREVIEW_RETENTION",
    "PREVIEW_TIMEOUT",
    "Lifecycle",
    "LifecycleJob",
    "LifecycleReport",
    "Preview",
    "RepositoryRun",
    "image_facts",
]

log = logging.getLogger("moorage.lifecycle")

PREVIEW_RETENTION: Final = timedelta(hours=24)  # a COMPLETE preview reads EXPIRED (results gone) after this
PREVIEW_TIMEOUT: Final = timedelta(minutes=10)  # an IN_PROGRESS preview older than this died with its process
_APPLY_BATCH: Final = 200  # decisions applied per write transaction
_THREAD_THRESHOLD: Final = 2000  # evaluate larger repositories in a thread, so the event loop keeps serving


def image_facts(images: Sequence[Image], children: Sequence[tuple[Digest, Digest]]) -> list[ImageFacts]:
    """What `evaluate` needs to know about the images of one repository."""
    listed: dict[Digest, list[str]] = {}
    for parent, child in children:
        listed.setdefault(parent, []).append(str(child))
    return [
        ImageFacts(
            digest=str(image.digest),
            tags=image.tags,
            pushed_at=image.pushed_at,
            last_pulled_at=image.last_pulled_at,
            storage_class="ARCHIVE" if image.storage_class == "ARCHIVE" else "STANDARD",
            transitioned_at=image.last_archived_at,
            media_type=image.media_type,
            children=tuple(sorted(listed.get(image.digest, ()))),
            subject=str(image.subject) if image.subject is not None else None,
            activated_at=image.last_activated_at,
        )
        for image in images
    ]


@dataclass(frozen=True, slots=True)
class Preview:
    """A preview as GetLifecyclePolicyPreview shows it: `results` are `previewResults` entries."""

    document: str
    status: str
    results: list[dict[str, Any]]


@dataclass
class RepositoryRun:
    """One repository in one lifecycle run: what was decided, and what was done."""

    registry: RegistryRef
    name: RepositoryName
    decisions: list[Decision] = field(default_factory=list)
    applied: list[Decision] = field(default_factory=list)
    error: str | None = None


@dataclass
class LifecycleReport:
    runs: list[RepositoryRun] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> dict[str, object]:
        done = [d for run in self.runs for d in (run.decisions if self.dry_run else run.applied)]
        return {
            "repositories": len(self.runs),
            "expired": sum(1 for d in done if d.action == "EXPIRE"),
            "transitioned": sum(1 for d in done if d.action == "TRANSITION"),
            "failed": sum(1 for run in self.runs if run.error is not None),
            "dry_run": self.dry_run,
        }


class Lifecycle:
    def __init__(
        self,
        metadata: MetadataStore,
        *,
        clock: Clock,
        preview_retention: timedelta = PREVIEW_RETENTION,
        preview_timeout: timedelta = PREVIEW_TIMEOUT,
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self.preview_retention = preview_retention
        self.preview_timeout = preview_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    async def _repo(tx: Transaction, registry: RegistryRef, name: RepositoryName, *, lock: bool = False) -> Repository:
        repo = await tx.repositories.get(registry, name, for_update=lock)
        if repo is None:
            raise RepositoryNotFoundError(name, registry.account_id)
        return repo

    # -- policies ----------------------------------------------------------------------------

    async def put_policy(self, registry: RegistryRef, name: RepositoryName, text: str) -> None:
        """Validate (LifecyclePolicyError) and attach, replacing any policy of the repository."""
        parse_policy(text)
        async with self._metadata.transaction(write=True) as tx:
            repo = await self._repo(tx, registry, name, lock=True)
            await tx.lifecycle.put_policy(repo.id, text, self._clock.now())

    async def get_policy(self, registry: RegistryRef, name: RepositoryName) -> LifecyclePolicyRecord:
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            record = await tx.lifecycle.policy(repo.id)
        if record is None:
            raise LifecyclePolicyNotFoundError(name, registry.account_id)
        return record

    async def delete_policy(self, registry: RegistryRef, name: RepositoryName) -> LifecyclePolicyRecord:
        async with self._metadata.transaction(write=True) as tx:
            repo = await self._repo(tx, registry, name, lock=True)
            record = await tx.lifecycle.delete_policy(repo.id)
        if record is None:
            raise LifecyclePolicyNotFoundError(name, registry.account_id)
        return record

    # -- previews ----------------------------------------------------------------------------

    async def start_preview(self, registry: RegistryRef, name: RepositoryName, text: str | None) -> str:
        """Start evaluating `text` (or the repository's policy) against the repository, in the
        background and without side effects; returns the policy text used."""
        if text is not None:
            parse_policy(text)
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            repo = await self._repo(tx, registry, name, lock=True)
            if text is None:
                record = await tx.lifecycle.policy(repo.id)
                if record is None:
                    raise LifecyclePolicyNotFoundError(name, registry.account_id)
                text = record.document
            policy = parse_policy(text)
            current = await tx.lifecycle.preview(repo.id)
            if current is not None and self._status(current, now) == "IN_PROGRESS":
                raise LifecyclePreviewInProgressError()
            await tx.lifecycle.put_preview(repo.id, LifecyclePreviewRecord(text, "IN_PROGRESS", now))
        task = asyncio.get_running_loop().create_task(self._preview(repo.id, policy, text, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return text

    async def _preview(self, repo_id: int, policy: LifecyclePolicy, text: str, started: datetime) -> None:
        status, results = "FAILED", None
        try:
            async with self._metadata.transaction() as tx:
                images, children = await tx.images.scan(repo_id), await tx.images.children(repo_id)
            decisions = await self._decide(policy, images, children, self._clock.now())
            status, results = "COMPLETE", json.dumps(preview_result(decisions), separators=(",", ":"))
        except Exception:
            log.exception("lifecycle policy preview failed")
        try:
            async with self._metadata.transaction(write=True) as tx:
                current = await tx.lifecycle.preview(repo_id)
                # (not replaced meanwhile; times make a round trip through float epoch seconds)
                if current is not None and abs(current.started_at - started) < timedelta(milliseconds=1):
                    await tx.lifecycle.put_preview(
                        repo_id, LifecyclePreviewRecord(text, status, started, self._clock.now(), results)
                    )
        except Exception:
            log.exception("could not store a lifecycle policy preview")

    def _status(self, preview: LifecyclePreviewRecord, now: datetime) -> str:
        if preview.status == "IN_PROGRESS" and now - preview.started_at > self.preview_timeout:
            return "FAILED"
        finished = preview.finished_at
        if preview.status == "COMPLETE" and finished is not None and now - finished > self.preview_retention:
            return "EXPIRED"
        return preview.status

    async def get_preview(self, registry: RegistryRef, name: RepositoryName) -> Preview:
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            record = await tx.lifecycle.preview(repo.id)
        if record is None:
            raise LifecyclePreviewNotFoundError(name, registry.account_id)
        status = self._status(record, self._clock.now())
        results = json.loads(record.results) if status == "COMPLETE" and record.results else []
        return Preview(record.document, status, results)

    async def drain(self) -> None:
        """Wait for previews in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- runs --------------------------------------------------------------------------------

    @staticmethod
    async def _decide(
        policy: LifecyclePolicy, images: Sequence[Image], children: Sequence[tuple[Digest, Digest]], now: datetime
    ) -> list[Decision]:
        """`evaluate` over the repository's images, minus any decision on an image being restored
        (ACTIVATING) and on what would follow it."""
        facts = image_facts(images, children)
        if len(facts) >= _THREAD_THRESHOLD:
            decisions = await asyncio.to_thread(evaluate, policy, facts, now)
        else:
            decisions = evaluate(policy, facts, now)
        dropped = {str(i.digest) for i in images if i.status(now) == "ACTIVATING"}
        if not dropped:
            return decisions
        kept = []
        for d in decisions:
            if d.digest in dropped or (d.cascaded_from is not None and d.cascaded_from in dropped):
                dropped.add(d.digest)
            else:
                kept.append(d)
        return kept

    async def run(
        self,
        now: datetime,
        *,
        registry: RegistryRef | None = None,
        name: RepositoryName | None = None,
        dry_run: bool = False,
    ) -> LifecycleReport:
        """Apply the policy of every repository that has one (of one registry / one repository when
        given) at `now`. With `dry_run`, only decide. A failing repository is reported and skipped."""
        report = LifecycleReport(dry_run=dry_run)
        async with self._metadata.transaction() as tx:
            targets = await tx.lifecycle.with_policies(registry, name)
        for repo, record in targets:
            run = RepositoryRun(repo.registry, repo.name)
            report.runs.append(run)
            try:
                await self._run_repository(repo, record, now, run, dry_run=dry_run)
            except Exception as exc:
                log.exception("lifecycle run failed for %s/%s", repo.registry.account_id, repo.name)
                run.error = f"{type(exc).__name__}: {exc}"
        return report

    async def _run_repository(
        self, repo: Repository, record: LifecyclePolicyRecord, now: datetime, run: RepositoryRun, *, dry_run: bool
    ) -> None:
        policy = parse_policy(record.document)
        async with self._metadata.transaction() as tx:
            images = await tx.images.scan(repo.id)
            children = await tx.images.children(repo.id)
        decisions = await self._decide(policy, images, children, now)
        run.decisions = decisions
        if dry_run:
            return
        for start in range(0, max(len(decisions), 1), _APPLY_BATCH):
            batch = decisions[start : start + _APPLY_BATCH]
            last = start + _APPLY_BATCH >= len(decisions)
            async with self._metadata.transaction(write=True) as tx:
                current = await tx.repositories.get(repo.registry, repo.name, for_update=True)
                if current is None or current.id != repo.id:
                    return  # deleted (or replaced) meanwhile
                applied = [d for d in batch if await self._apply(tx, repo.id, d, now)]
                await tx.lifecycle.add_events(
                    [
                        LifecycleEvent(
                            repo.registry, repo.name, Digest.parse(d.digest), d.tags, d.action, d.rule_priority, now
                        )
                        for d in applied
                    ]
                )
                await tx.events.add(
                    [
                        ev.lifecycle_action(
                            repo.registry,
                            repo.name,
                            Digest.parse(d.digest),
                            d.action,
                            now,
                            tags=d.tags,
                            rule_priority=d.rule_priority,
                            storage_class="ARCHIVE" if d.action == "TRANSITION" else None,
                        )
                        for d in applied
                    ]
                )
                if last:
                    await tx.lifecycle.evaluated(repo.id, now)
            run.applied += applied

    @staticmethod
    async def _apply(tx: Transaction, repo_id: int, decision: Decision, now: datetime) -> bool:
        """Carry out one decision if the image is still as it was decided on."""
        digest = Digest.parse(decision.digest)
        image = await tx.images.get(repo_id, digest, with_body=False, with_tags=True)
        if image is None or tuple(sorted(image.tags)) != tuple(sorted(decision.tags)):
            return False
        if decision.action == "EXPIRE":
            if await tx.images.referenced_by(repo_id, digest):
                return False  # an index that survives still lists it
            await tx.images.delete(repo_id, digest, now)
            return True
        if image.status(now) != "ACTIVE":
            return False
        return await tx.images.set_storage_class(repo_id, digest, "ARCHIVE", archived_at=now)

    async def history(
        self, registry: RegistryRef | None = None, repository: RepositoryName | None = None, limit: int = 100
    ) -> list[LifecycleEvent]:
        """What lifecycle runs did, newest first."""
        async with self._metadata.transaction() as tx:
            return await tx.lifecycle.events(registry, repository, limit)


class LifecycleJob:
    """The scheduled form of `Lifecycle.run`: every repository's policy, once per interval."""

    name = "lifecycle"

    def __init__(self, lifecycle: Lifecycle, interval: timedelta) -> None:
        self._lifecycle = lifecycle
        self.interval = interval

    async def run_once(self, now: datetime) -> dict[str, object]:
        return (await self._lifecycle.run(now)).summary()
