"""The MetadataStore protocol: the source of truth for everything but blob bytes.

A `MetadataStore` hands out `Transaction`s. Each transaction groups typed sub-tables, so no
single protocol grows to fifty methods:

    Transaction
    ├── repositories   create / get / list / update / delete
    ├── images         put / get / get_by_tag / tags / set_tag / remove_tag / delete / referrers
    ├── blobs          add / get / link / linked / unlink
    ├── uploads        create / get / save / delete
    ├── resource_tags  get / put / delete
    ├── identities     accounts, users, access keys
    ├── policies       repository, registry and user (identity) policy texts
    ├── lifecycle      lifecycle policies, previews, events (what lifecycle runs did)
    ├── pull_exclusions principals whose pulls do not update lastRecordedPullTime
    ├── leases         acquire / release
    └── kv             get / put

Contract (checked by tests/contract/test_metadata_store.py against every backend):
- A transaction opened with `write=True` is serialisable with every other write transaction
  touching the same repository: `repositories.get(..., for_update=True)` locks the repository
  row until the transaction ends, so tag moves and immutable-tag checks never race.
- Leaving the `async with` block normally commits; an exception rolls everything back.
- Read transactions (`write=False`) see a consistent snapshot and must not write.
- Names are unique per registry; `create` of an existing name raises RepositoryAlreadyExistsError.
- Deleting a repository deletes its manifests, tags, references, blob links, uploads and policy,
  and its lifecycle policy and preview (lifecycle events are kept: they name the repository).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from moorage.metadata.outbox import EventTable
from moorage.metadata.pull_through import PullThroughRule, PullThroughRuleTable
from moorage.metadata.replication import BackfillTable, ReplicationStatusTable, TemplateTable
from moorage.metadata.scans import ScanTable
from moorage.metadata.secrets import SecretRecord, SecretTable, SecretVersionRecord
from moorage.metadata.signing import SigningTable
from moorage.metadata.vulndb import VulnDbTable
from moorage.model import (
    BlobInfo,
    Digest,
    Image,
    Page,
    PageRequest,
    RegistryRef,
    Repository,
    RepositoryName,
    UploadSession,
    UploadState,
)

__all__ = [
    "AccessKeyRecord",
    "BlobTable",
    "EventTable",
    "IdentityTable",
    "ImageTable",
    "KvTable",
    "LeaseTable",
    "LifecycleEvent",
    "LifecyclePolicyRecord",
    "LifecyclePreviewRecord",
    "LifecycleTable",
    "ManifestRef",
    "MetadataStore",
    "PolicyTable",
    "PullExclusionTable",
    "PullThroughRule",
    "PullThroughRuleTable",
    "RepositoryTable",
    "ResourceTagTable",
    "ScanTable",
    "SecretRecord",
    "SecretTable",
    "SecretVersionRecord",
    "SigningTable",
    "Transaction",
    "UploadTable",
    "VulnDbTable",
]

# (child digest, kind, media type) where kind is "blob" (config, layer) or "manifest" (index child)
ManifestRef = tuple[Digest, str, str | None]


class RepositoryTable(Protocol):
    async def create(self, repo: Repository) -> Repository:
        """Insert `repo` (its `id` is ignored); return it with its id. Raises RepositoryAlreadyExistsError."""
        ...

    async def get(self, registry: RegistryRef, name: RepositoryName, *, for_update: bool = False) -> Repository | None:
        """The repository, or None. `for_update` locks it until the write transaction ends."""
        ...

    async def list_page(
        self, registry: RegistryRef, page: PageRequest, *, prefix: str | None = None
    ) -> Page[Repository]:
        """Repositories of one registry in name order, after `page.after`, at most `page.limit`."""
        ...

    async def update(self, repo: Repository) -> None:
        """Store the settings fields of `repo` (by id)."""
        ...

    async def delete(self, repo_id: int, now: datetime) -> None:
        """Delete the repository and everything scoped to it; its blobs become GC candidates
        touched at `now`. Idempotent."""
        ...


class ImageTable(Protocol):
    async def put(self, repo_id: int, image: Image, body: bytes, refs: Sequence[ManifestRef]) -> bool:
        """Insert a manifest with its references; return False (and change nothing) if the
        repository already holds that digest."""
        ...

    async def get(
        self, repo_id: int, digest: Digest, *, with_body: bool = True, with_tags: bool = False
    ) -> Image | None:
        """The manifest (its tags filled in only when `with_tags`), or None."""
        ...

    async def get_by_tag(
        self, repo_id: int, tag: str, *, with_body: bool = True, with_tags: bool = False
    ) -> Image | None:
        """The manifest a tag points at, or None."""
        ...

    async def list_page(self, repo_id: int, page: PageRequest) -> Page[Image]:
        """Manifests of a repository in digest order, without bodies."""
        ...

    async def list_ids(
        self,
        repo_id: int,
        page: PageRequest,
        *,
        tag_status: Literal["TAGGED", "UNTAGGED", "ANY"] = "ANY",
        image_status: Literal["ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"] = "ANY",
        now: datetime,
    ) -> Page[tuple[Digest, str | None]]:
        """ListImages entries: one (digest, tag) per tag of a manifest and one (digest, None) per
        untagged manifest (TAGGED: only the former, UNTAGGED: only the latter), of manifests whose
        status at `now` is `image_status` (see Image.status), ordered by digest then tag. The
        cursor (`page.after`, `next_after`) is the last entry's `digest` or `digest tag`; a next
        page is announced only when one more entry exists."""
        ...

    async def tags(self, repo_id: int, page: PageRequest) -> Page[str]:
        """Tag names in case-insensitive lexical order (ties: exact name) after `page.after`,
        at most `page.limit`."""
        ...

    async def set_tag(self, repo_id: int, tag: str, digest: Digest, now: datetime) -> Digest | None:
        """Point `tag` at `digest` (which must be in the repository); return the previous digest."""
        ...

    async def remove_tag(self, repo_id: int, tag: str) -> Digest | None:
        """Remove a tag; return the digest it pointed at, or None when there was no such tag."""
        ...

    async def delete(self, repo_id: int, digest: Digest, now: datetime) -> list[str]:
        """Delete a manifest, its references and every tag pointing at it; return those tags.
        The blobs it referenced become GC candidates touched at `now`. Returns [] when absent."""
        ...

    async def referenced_by(self, repo_id: int, digest: Digest) -> list[Digest]:
        """Manifests of the repository (indexes) that list `digest` as a child."""
        ...

    async def referrers(self, repo_id: int, subject: Digest) -> list[Image]:
        """Manifests whose `subject` is `subject`, without bodies, in digest order."""
        ...

    async def missing(self, repo_id: int, digests: Sequence[Digest]) -> list[Digest]:
        """Those of `digests` that are not manifests of the repository."""
        ...

    async def scan(self, repo_id: int) -> list[Image]:
        """Every manifest of the repository with its tags, without bodies, in digest order (a few
        queries, whatever the size: for lifecycle evaluation)."""
        ...

    async def children(self, repo_id: int) -> list[tuple[Digest, Digest]]:
        """(index, child manifest) pairs of the repository."""
        ...

    async def set_storage_class(
        self,
        repo_id: int,
        digest: Digest,
        storage_class: str,
        *,
        archived_at: datetime | None = None,
        activated_at: datetime | None = None,
    ) -> bool:
        """Set the manifest's storage class ("STANDARD" / "ARCHIVE") and, when given, its last archive /
        restore time. False when the manifest is absent."""
        ...

    async def record_pull(self, repo_id: int, digest: Digest, now: datetime, *, unless_since: datetime) -> bool:
        """Set `last_pulled_at` to `now` unless it was recorded at or after `unless_since` (coalescing);
        True when it changed."""
        ...

    async def browse(
        self,
        repo_id: int,
        *,
        tag_status: Literal["TAGGED", "UNTAGGED", "ANY"] = "ANY",
        tag_contains: str | None = None,
        order: Literal["pushed", "size"] = "pushed",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        with_body: bool = False,
    ) -> tuple[list[Image], int]:
        """A page of images (with tags, without bodies) for a listing a person reads: filtered by
        tag status and by a tag containing `tag_contains`, ordered by push time or size (digest
        breaks ties), `limit` from `offset`; and how many images pass the filters. Two queries
        for the images and one for the page's tags, whatever the repository's size."""
        ...

    async def summaries(self, repo_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(image count, sum of image sizes) per repository id, in one query; absent ids have none."""
        ...

    async def usage(self, registry: RegistryRef) -> tuple[int, int, int]:
        """(repositories, images, sum of image sizes) of one registry: aggregate queries."""
        ...


class BlobTable(Protocol):
    async def add(self, info: BlobInfo, now: datetime) -> None:
        """Record that the blob store holds `info.digest` (idempotent)."""
        ...

    async def get(self, digest: Digest) -> BlobInfo | None:
        """The committed blob, whichever repository links it, or None."""
        ...

    async def link(self, repo_id: int, digest: Digest, now: datetime) -> None:
        """Make a committed blob available in a repository (idempotent)."""
        ...

    async def linked(self, repo_id: int, digest: Digest) -> BlobInfo | None:
        """The blob when the repository links it, else None."""
        ...

    async def missing(self, repo_id: int, digests: Sequence[Digest]) -> list[Digest]:
        """Those of `digests` the repository does not link."""
        ...

    async def unlink(self, repo_id: int, digest: Digest) -> bool:
        """Remove the repository's link; False when there was none."""
        ...

    async def claim(self, info: BlobInfo, now: datetime) -> bool:
        """Before committing or linking a blob: record it (when new) and mark it touched at `now`
        (which may lie in the future, to hold it), so garbage collection leaves it alone for a
        grace period after that. False while GC is deleting it (the caller waits and claims again)."""
        ...

    async def gc_candidates(self, touched_before: datetime, limit: int) -> list[Digest]:
        """Blobs that may be garbage, untouched since before `touched_before`, oldest first."""
        ...

    async def mark_deleting(self, digest: Digest, touched_before: datetime) -> BlobInfo | None:
        """Atomically re-check that the blob is still a candidate untouched since
        `touched_before` and that no manifest of any repository references it; if so mark it
        deleting (it then counts as absent everywhere) and return it. Otherwise drop the
        candidate when the blob is in use, and return None."""
        ...

    async def mark_deleting_many(self, digests: Sequence[Digest], touched_before: datetime) -> list[BlobInfo]:
        """`mark_deleting` for many blobs in a few statements; returns those marked."""
        ...

    async def in_use(self, digest: Digest) -> bool:
        """Whether a manifest of any repository references the blob."""
        ...

    async def deleting(self, limit: int) -> list[Digest]:
        """Blobs marked deleting (a GC interrupted between marking and forgetting)."""
        ...

    async def forget(self, digest: Digest) -> None:
        """Remove the blob's rows (after its bytes were deleted)."""
        ...

    async def forget_many(self, digests: Sequence[Digest]) -> None:
        """`forget` for many blobs in a few statements."""
        ...

    async def referenced(self, repo_id: int, digest: Digest) -> str | None:
        """The media type under which a manifest of the repository references the blob ("" when
        referenced without one), or None when no manifest of the repository references it."""
        ...


class UploadTable(Protocol):
    async def create(self, repo_id: int, state: UploadState, now: datetime) -> None:
        """Record a new upload session in a repository."""
        ...

    async def get(self, registry: RegistryRef, name: RepositoryName, upload_id: str) -> UploadSession | None:
        """The session if it exists in that repository, else None."""
        ...

    async def save(
        self,
        upload_id: str,
        state: UploadState,
        now: datetime,
        *,
        expected_size: int,
        part_size: int | None = None,
    ) -> bool:
        """Store the new state only if the stored size is still `expected_size` (compare-and-set);
        False when another request moved the session first or it is gone. `part_size`, when
        given, is recorded as one more part of the session (`UploadSession.part_sizes`)."""
        ...

    async def delete(self, upload_id: str) -> None:
        """Forget the session. Idempotent."""
        ...

    async def stale(self, updated_before: datetime, limit: int) -> list[tuple[str, UploadState]]:
        """Sessions of any repository not updated since `updated_before`."""
        ...


class ResourceTagTable(Protocol):
    async def get(self, repo_id: int) -> dict[str, str]:
        """The repository's resource tags."""
        ...

    async def put(self, repo_id: int, tags: dict[str, str]) -> None:
        """Add or overwrite tags (merge)."""
        ...

    async def delete(self, repo_id: int, keys: Sequence[str]) -> None:
        """Remove the named tags; unknown keys are ignored."""
        ...


@dataclass(frozen=True, slots=True)
class AccessKeyRecord:
    access_key_id: str
    account_id: str
    user_name: str | None
    secret_ciphertext: str
    created_at: datetime


class IdentityTable(Protocol):
    async def create_account(self, account_id: str, now: datetime) -> bool:
        """Create an account; False when it exists already."""
        ...

    async def accounts(self) -> list[str]: ...

    async def delete_account(self, account_id: str) -> bool:
        """Delete an account with its users and keys; False when absent."""
        ...

    async def create_user(self, account_id: str, name: str, now: datetime) -> bool:
        """False when the user exists already. The account must exist."""
        ...

    async def users(self, account_id: str) -> list[str]: ...

    async def delete_user(self, account_id: str, name: str) -> bool:
        """Delete a user and its keys; False when absent."""
        ...

    async def user_exists(self, account_id: str, name: str) -> bool: ...

    async def add_key(self, record: AccessKeyRecord) -> None: ...

    async def key(self, access_key_id: str) -> AccessKeyRecord | None: ...

    async def keys(self, account_id: str | None = None) -> list[AccessKeyRecord]: ...

    async def delete_key(self, access_key_id: str) -> bool: ...


class PolicyTable(Protocol):
    """Policy documents as the exact text accepted. A repository's policy goes with the repository;
    a user's policies go with the user."""

    async def repository_policy(self, repo_id: int) -> str | None: ...

    async def put_repository_policy(self, repo_id: int, document: str, now: datetime) -> None:
        """Create or replace."""
        ...

    async def delete_repository_policy(self, repo_id: int) -> bool:
        """False when there was none."""
        ...

    async def any_repository_policy(self, registry: RegistryRef) -> bool:
        """Whether any repository of the registry has a policy."""
        ...

    async def registry_policy(self, registry: RegistryRef) -> str | None: ...

    async def put_registry_policy(self, registry: RegistryRef, document: str, now: datetime) -> None:
        """Create or replace."""
        ...

    async def delete_registry_policy(self, registry: RegistryRef) -> bool:
        """False when there was none."""
        ...

    async def user_policies(self, account_id: str, user_name: str) -> list[tuple[str, str]]:
        """(name, document) of every policy attached to the user, in name order."""
        ...

    async def put_user_policy(self, account_id: str, user_name: str, name: str, document: str, now: datetime) -> bool:
        """Attach or replace a named policy (the user must exist); True when it is new."""
        ...

    async def delete_user_policy(self, account_id: str, user_name: str, name: str) -> bool:
        """False when the user has no policy of that name."""
        ...


@dataclass(frozen=True, slots=True)
class LifecyclePolicyRecord:
    document: str
    updated_at: datetime
    last_evaluated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LifecyclePreviewRecord:
    """A lifecycle policy preview: IN_PROGRESS until `results` (JSON) is written with COMPLETE / FAILED."""

    document: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    results: str | None = None


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One image a lifecycle run expired ("EXPIRE") or archived ("TRANSITION"), and the rule."""

    registry: RegistryRef
    repository: RepositoryName
    digest: Digest
    tags: tuple[str, ...]
    action: str
    rule_priority: int
    at: datetime


class LifecycleTable(Protocol):
    async def policy(self, repo_id: int) -> LifecyclePolicyRecord | None: ...

    async def put_policy(self, repo_id: int, document: str, now: datetime) -> None:
        """Create or replace (`last_evaluated_at` is kept)."""
        ...

    async def delete_policy(self, repo_id: int) -> LifecyclePolicyRecord | None:
        """Remove and return the policy; None when there was none."""
        ...

    async def evaluated(self, repo_id: int, at: datetime) -> None:
        """Record that a lifecycle run evaluated the repository's policy at `at`."""
        ...

    async def with_policies(
        self, registry: RegistryRef | None = None, name: RepositoryName | None = None
    ) -> list[tuple[Repository, LifecyclePolicyRecord]]:
        """Repositories that have a lifecycle policy (of one registry / one name when given), by id."""
        ...

    async def preview(self, repo_id: int) -> LifecyclePreviewRecord | None: ...

    async def put_preview(self, repo_id: int, preview: LifecyclePreviewRecord) -> None:
        """Create or replace the repository's preview."""
        ...

    async def add_events(self, events: Sequence[LifecycleEvent]) -> None: ...

    async def events(
        self, registry: RegistryRef | None = None, repository: RepositoryName | None = None, limit: int = 100
    ) -> list[LifecycleEvent]:
        """The newest `limit` events, newest first."""
        ...


class PullExclusionTable(Protocol):
    async def add(self, registry: RegistryRef, principal_arn: str, now: datetime) -> bool:
        """False when the principal is excluded already."""
        ...

    async def remove(self, registry: RegistryRef, principal_arn: str) -> bool:
        """False when the principal was not excluded."""
        ...

    async def contains(self, registry: RegistryRef, principal_arn: str) -> bool: ...

    async def count(self, registry: RegistryRef) -> int: ...

    async def list_page(self, registry: RegistryRef, page: PageRequest) -> Page[str]:
        """Excluded principal ARNs in lexical order after `page.after`, at most `page.limit`."""
        ...


class LeaseTable(Protocol):
    async def acquire(self, name: str, holder: str, now: datetime, ttl_seconds: float) -> bool:
        """Take or renew the named lease for `holder` unless another holder's lease is unexpired."""
        ...

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up if `holder` has it."""
        ...


class KvTable(Protocol):
    async def get(self, name: str) -> str | None: ...

    async def put(self, name: str, value: str) -> None: ...

    async def put_if_absent(self, name: str, value: str) -> str:
        """Store `value` unless a value exists; return the value that is stored afterwards."""
        ...


class Transaction(Protocol):
    """The table families of one transaction. Read-only: an implementation may make each one
    when it is first used."""

    @property
    def repositories(self) -> RepositoryTable: ...

    @property
    def images(self) -> ImageTable: ...

    @property
    def blobs(self) -> BlobTable: ...

    @property
    def uploads(self) -> UploadTable: ...

    @property
    def resource_tags(self) -> ResourceTagTable: ...

    @property
    def identities(self) -> IdentityTable: ...

    @property
    def policies(self) -> PolicyTable: ...

    @property
    def lifecycle(self) -> LifecycleTable: ...

    @property
    def pull_exclusions(self) -> PullExclusionTable: ...

    @property
    def leases(self) -> LeaseTable: ...

    @property
    def kv(self) -> KvTable: ...

    @property
    def events(self) -> EventTable: ...

    @property
    def templates(self) -> TemplateTable: ...

    @property
    def replication(self) -> ReplicationStatusTable: ...

    @property
    def backfills(self) -> BackfillTable: ...

    @property
    def vulndb(self) -> VulnDbTable: ...

    @property
    def scans(self) -> ScanTable: ...

    @property
    def pull_through(self) -> PullThroughRuleTable: ...

    @property
    def secrets(self) -> SecretTable: ...

    @property
    def signing(self) -> SigningTable: ...


class MetadataStore(Protocol):
    def transaction(self, *, write: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """A transaction; commits on normal exit, rolls back on exception."""
        ...

    def on_events_committed(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the event loop, after the commit) whenever a write transaction
        of this store committed events; consumers in this process use it to wake up."""
        ...

    def on_writes_committed(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the event loop) when any write transaction of this store ends,
        committed or not: read caches of this process drop what they hold, so this process
        reads its own writes at once."""
        ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        ...

    async def reset(self) -> None:
        """Delete every repository and everything below it, and all uploads (test suites' reset)."""
        ...

    async def close(self) -> None: ...
