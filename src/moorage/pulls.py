"""Pull times: `lastRecordedPullTime` of an image, and the principals whose pulls never change it.

    manifest GET (/v2/, by tag or digest; not HEAD)  ┐   note(): due? (never recorded, or older than
    BatchGetImage (ECR)                              ┘   `resolution`, judged on the value read with the
                                                         manifest) ──► background task: excluded principal?
                                                         ──► one write transaction, re-checking the age

The pull path pays one comparison: the write happens at most once per `resolution` per image (ECR
promises a refresh at least once every 24 h, semantics.md §3.8), in a task of its own, so the response
never waits for it; its errors are logged. Pulls by a principal on the registry's exclusion list
(RegisterPullTimeUpdateExclusion, §16.2) leave the time alone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from moorage.clock import Clock
from moorage.errors import ExclusionExistsError, ExclusionNotFoundError, LimitExceededError
from moorage.metadata import MetadataStore
from moorage.model import Digest, Image, Page, PageRequest, RegistryRef, RepositoryName

__all__ = ["MAX_EXCLUSIONS", "PULL_TIME_RESOLUTION", "PullTimes"]

log = logging.getLogger("moorage.pulls")

PULL_TIME_RESOLUTION: Final = timedelta(hours=1)
MAX_EXCLUSIONS: Final = 100  # §18 quota: pull-time update exclusions per registry


@dataclass(frozen=True, slots=True)
class _Pull:
    registry: RegistryRef
    repository: RepositoryName
    digest: Digest
    principal_arn: str | None


class PullTimes:
    def __init__(self, metadata: MetadataStore, *, clock: Clock, resolution: timedelta = PULL_TIME_RESOLUTION) -> None:
        self._metadata = metadata
        self._clock = clock
        self.resolution = resolution
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: set[tuple[RegistryRef, str, Digest]] = set()

    # -- recording ---------------------------------------------------------------------------

    def note(self, image: Image, principal_arn: str | None) -> None:
        """A pull of `image` (as read from the store, with its `last_pulled_at`). Starts the write
        in the background when the recorded time is due for a refresh; never blocks."""
        now = self._clock.now()
        last = image.last_pulled_at
        if last is not None and last >= now - self.resolution:
            return
        key = (image.registry, image.repository, image.digest)
        if key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(
            self._record(_Pull(image.registry, image.repository, image.digest, principal_arn), key)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, pull: _Pull, key: tuple[RegistryRef, str, Digest]) -> None:
        try:
            if pull.principal_arn is not None:
                async with self._metadata.transaction() as tx:
                    if await tx.pull_exclusions.contains(pull.registry, pull.principal_arn):
                        return
            now = self._clock.now()
            async with self._metadata.transaction(write=True) as tx:
                repo = await tx.repositories.get(pull.registry, pull.repository)
                if repo is not None:
                    await tx.images.record_pull(repo.id, pull.digest, now, unless_since=now - self.resolution)
        except Exception:
            log.exception("could not record the pull of %s@%s", pull.repository, pull.digest)
        finally:
            self._pending.discard(key)

    async def drain(self) -> None:
        """Wait for every recording in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- exclusions (RegisterPullTimeUpdateExclusion & co.) -----------------------------------

    async def exclude(self, registry: RegistryRef, principal_arn: str) -> datetime:
        """Add a principal to the registry's exclusion list; returns the creation time."""
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            if await tx.pull_exclusions.contains(registry, principal_arn):
                raise ExclusionExistsError(
                    f"The pull time update exclusion for principal '{principal_arn}' already exists in the "
                    f"registry with id '{registry.account_id}'"
                )
            if await tx.pull_exclusions.count(registry) >= MAX_EXCLUSIONS:
                raise LimitExceededError(
                    f"The maximum number of pull time update exclusions ({MAX_EXCLUSIONS}) for the registry "
                    f"with id '{registry.account_id}' has been reached"
                )
            await tx.pull_exclusions.add(registry, principal_arn, now)
        return now

    async def include(self, registry: RegistryRef, principal_arn: str) -> None:
        """Take a principal off the exclusion list."""
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.pull_exclusions.remove(registry, principal_arn):
                raise ExclusionNotFoundError(
                    f"The pull time update exclusion for principal '{principal_arn}' does not exist in the "
                    f"registry with id '{registry.account_id}'"
                )

    async def exclusions(self, registry: RegistryRef, page: PageRequest) -> Page[str]:
        async with self._metadata.transaction() as tx:
            return await tx.pull_exclusions.list_page(registry, page)
