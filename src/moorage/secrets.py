"""Secrets: the part of AWS Secrets Manager a pull-through cache needs, per account and region.

A secret has a name, an ARN `arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 random
characters>`, metadata (description, KMS key id, kept and echoed only; tags) and versions. A
version holds one value (SecretString or SecretBinary), sealed with the master key
(`Identities.seal`: AES-256-GCM as secret access keys, associated data `<arn>/<version id>`; a
SecretBinary is sealed as its base64 text) before it reaches the metadata store,
and staging labels: a new value gets `AWSCURRENT` and the version that had it `AWSPREVIOUS`, as
Secrets Manager moves them; a version left with no label is deprecated, and the oldest of those
are dropped past 100 versions.

A secret is found by name, full ARN or partial ARN (the ARN without the random suffix).
DeleteSecret schedules the deletion at the end of a recovery window (7-30 days, default 30, on
the service clock) or deletes at once (`ForceDeleteWithoutRecovery`); while scheduled, the secret
refuses its value and changes (`SecretStateError`) until RestoreSecret; after the window it is
gone (purged when next touched). No rotation, replication or resource policies.

`pull_through_credentials` is what the pull-through cache asks at fetch time: the JSON of an
`ecr-pullthroughcache/...` secret (`username`, `accessToken`; `accessKeyId`/`secretAccessKey`
for ECR upstreams).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets as random
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.exceptions import InvalidTag

from moorage.clock import Clock
from moorage.errors import (
    InvalidRequestError,
    SecretDecryptionError,
    SecretExistsError,
    SecretNotFoundError,
    SecretStateError,
)
from moorage.metadata import MetadataStore, SecretRecord, SecretVersionRecord, Transaction
from moorage.model import RegistryRef

__all__ = [
    "CURRENT",
    "NOT_FOUND",
    "PREVIOUS",
    "CacheCredentials",
    "Sealer",
    "Secret",
    "SecretValue",
    "Secrets",
    "secret_arn_prefix",
]

CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"
NOT_FOUND = "Secrets Manager can't find the specified secret."
MAX_VERSIONS = 100
MAX_TAGS = 50
DEFAULT_RECOVERY_DAYS = 30
_NAME_RE = re.compile(r"[A-Za-z0-9/_+=.@-]+")
_ARN_RE = re.compile(r"arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):([0-9]{12}):secret:(.+)")
_SUFFIX = string.ascii_letters + string.digits
_MARKED = "You can't perform this operation on the secret because it was marked for deletion."


def secret_arn_prefix(registry: RegistryRef, name: str) -> str:
    """The ARN of a secret without its random suffix (a partial ARN)."""
    return f"arn:aws:secretsmanager:{registry.region}:{registry.account_id}:secret:{name}"


@dataclass(frozen=True, slots=True)
class Secret:
    record: SecretRecord
    versions: tuple[SecretVersionRecord, ...]

    @property
    def arn(self) -> str:
        return self.record.arn

    @property
    def name(self) -> str:
        return self.record.name

    def stages(self) -> dict[str, list[str]]:
        """Version id → staging labels, for the versions that have labels."""
        return {v.version_id: list(v.stages) for v in self.versions if v.stages}


@dataclass(frozen=True, slots=True)
class SecretValue:
    secret: SecretRecord
    version: SecretVersionRecord
    value: str | bytes  # str for SecretString, bytes for SecretBinary


@dataclass(frozen=True, slots=True)
class CacheCredentials:
    """What a pull-through cache secret holds."""

    username: str | None
    access_token: str | None
    access_key_id: str | None = None
    secret_access_key: str | None = None


def _context(version: SecretVersionRecord | tuple[str, str]) -> str:
    arn, vid = (version.arn, version.version_id) if isinstance(version, SecretVersionRecord) else version
    return f"{arn}/{vid}"


class Sealer(Protocol):
    """Master-key encryption bound to a context (`identity.Identities` is one)."""

    def seal(self, context: str, secret: str) -> str: ...

    def unseal(self, context: str, ciphertext: str) -> str: ...


class Secrets:
    def __init__(self, metadata: MetadataStore, sealer: Sealer, *, clock: Clock) -> None:
        self._metadata = metadata
        self._sealer = sealer
        self._clock = clock

    # -- lookup -----------------------------------------------------------------------------

    def _expired(self, record: SecretRecord) -> bool:
        return record.deletion_at is not None and record.deletion_at <= self._clock.now()

    async def _find(self, tx: Transaction, registry: RegistryRef, secret_id: str) -> SecretRecord | None:
        """The secret `secret_id` names in the registry (None also once its recovery window ended)."""
        record: SecretRecord | None
        match = _ARN_RE.fullmatch(secret_id)
        if match is not None:
            if (match[1], match[2]) != (registry.region, registry.account_id):
                return None
            record = await tx.secrets.get_by_arn(secret_id)
            if record is None:  # a partial ARN: the name without the suffix
                record = await tx.secrets.get(registry, match[3])
        else:
            record = await tx.secrets.get(registry, secret_id)
        if record is None or self._expired(record):
            return None
        return record

    async def _require(self, tx: Transaction, registry: RegistryRef, secret_id: str) -> SecretRecord:
        record = await self._find(tx, registry, secret_id)
        if record is None:
            raise SecretNotFoundError(NOT_FOUND)
        return record

    async def resource_arn(self, registry: RegistryRef, secret_id: str) -> str:
        """The ARN an operation on `secret_id` acts on, for authorization: the secret's when it
        exists, else what the id names (an ARN as given, a name as its partial ARN)."""
        async with self._metadata.transaction() as tx:
            record = await self._find(tx, registry, secret_id)
        if record is not None:
            return record.arn
        return secret_id if secret_id.startswith("arn:") else secret_arn_prefix(registry, secret_id)

    def new_arn(self, registry: RegistryRef, name: str) -> str:
        return f"{secret_arn_prefix(registry, name)}-{''.join(random.choice(_SUFFIX) for _ in range(6))}"

    # -- values -----------------------------------------------------------------------------

    def _seal(self, arn: str, version_id: str, value: str | bytes) -> str:
        text = value if isinstance(value, str) else base64.b64encode(value).decode()
        return self._sealer.seal(_context((arn, version_id)), text)

    def _open(self, version: SecretVersionRecord) -> str | bytes:
        try:
            text = self._sealer.unseal(_context(version), version.ciphertext)
            return base64.b64decode(text, validate=True) if version.binary else text
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretDecryptionError(
                "Secrets Manager can't decrypt the protected secret text using the provided KMS key."
            ) from None

    async def _add_version(
        self,
        tx: Transaction,
        record: SecretRecord,
        version_id: str | None,
        value: str | bytes,
        stages: Sequence[str] | None,
        now: datetime,
    ) -> SecretVersionRecord:
        """A new version with `stages` (default AWSCURRENT), labels moved as Secrets Manager
        moves them; the same id with the same value again is the version already there."""
        vid = version_id or str(uuid.uuid4())
        versions = list(await tx.secrets.versions(record.arn))
        existing = next((v for v in versions if v.version_id == vid), None)
        if existing is not None:
            if self._open(existing) == value:
                return existing
            raise SecretExistsError("You can't modify an existing version, you can only create a new version.")
        labels = list(dict.fromkeys(stages if stages is not None else [CURRENT]))
        moving = set(labels)
        if CURRENT in moving:
            moving.discard(PREVIOUS)  # the old current takes it, below
        changed: dict[str, list[str]] = {}
        for v in versions:
            kept = [s for s in v.stages if s not in moving]
            if CURRENT in labels and CURRENT in v.stages:
                kept.append(PREVIOUS)
            elif CURRENT in labels and PREVIOUS in kept:
                kept.remove(PREVIOUS)
            if kept != list(v.stages):
                changed[v.version_id] = kept
        for v in versions:
            if v.version_id in changed:
                await tx.secrets.set_stages(record.arn, v.version_id, changed[v.version_id])
        version = SecretVersionRecord(
            record.arn, vid, self._seal(record.arn, vid, value), isinstance(value, bytes), now, tuple(labels)
        )
        await tx.secrets.add_version(version)
        # Past MAX_VERSIONS, the oldest versions without labels go.
        unlabelled = [v for v in versions if not changed.get(v.version_id, list(v.stages))]
        excess = len(versions) + 1 - MAX_VERSIONS
        for v in unlabelled[: max(0, excess)]:
            await tx.secrets.delete_version(record.arn, v.version_id)
        return version

    # -- operations -------------------------------------------------------------------------

    async def create(
        self,
        registry: RegistryRef,
        name: str,
        *,
        arn: str | None = None,
        value: str | bytes | None = None,
        version_id: str | None = None,
        description: str | None = None,
        kms_key_id: str | None = None,
        tags: Sequence[tuple[str, str]] = (),
    ) -> tuple[SecretRecord, SecretVersionRecord | None]:
        if not _NAME_RE.fullmatch(name):
            raise InvalidRequestError(
                "Invalid name. Must be a valid name containing alphanumeric characters, "
                "or any of the following: -/_+=.@!"
            )
        checked = _check_tags(tags)
        now = self._clock.now()
        record = SecretRecord(
            registry,
            name,
            arn or self.new_arn(registry, name),
            now,
            now,
            description,
            kms_key_id,
            checked,
        )
        async with self._metadata.transaction(write=True) as tx:
            existing = await tx.secrets.get(registry, name)
            if existing is not None and self._expired(existing):
                await tx.secrets.delete(existing.arn)
            elif existing is not None:
                if existing.deletion_at is not None:
                    raise SecretStateError(
                        "You can't create this secret because a secret with this name is already scheduled for "
                        "deletion."
                    )
                retried = await self._same_request(tx, existing, version_id, value)
                if retried is not None:  # a retry of this very request (same token, same value)
                    return existing, retried
                raise SecretExistsError(f"The operation failed because the secret {name} already exists.")
            if not await tx.secrets.insert(record):
                raise SecretExistsError(f"The operation failed because the secret {name} already exists.")
            version = None
            if value is not None:
                version = await self._add_version(tx, record, version_id, value, None, now)
        return record, version

    async def _same_request(
        self, tx: Transaction, record: SecretRecord, version_id: str | None, value: str | bytes | None
    ) -> SecretVersionRecord | None:
        if version_id is None or value is None:
            return None
        for version in await tx.secrets.versions(record.arn):
            if version.version_id == version_id and self._open(version) == value:
                return version
        return None

    async def put_value(
        self,
        registry: RegistryRef,
        secret_id: str,
        value: str | bytes,
        *,
        version_id: str | None = None,
        stages: Sequence[str] | None = None,
    ) -> tuple[SecretRecord, SecretVersionRecord]:
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            record = await self._live(tx, registry, secret_id)
            version = await self._add_version(tx, record, version_id, value, stages, now)
            record = replace(record, last_changed_at=now)
            await tx.secrets.update(record)
        return record, version

    async def update(
        self,
        registry: RegistryRef,
        secret_id: str,
        *,
        value: str | bytes | None = None,
        version_id: str | None = None,
        description: str | None = None,
        kms_key_id: str | None = None,
    ) -> tuple[SecretRecord, SecretVersionRecord | None]:
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            record = await self._live(tx, registry, secret_id)
            version = None
            if value is not None:
                version = await self._add_version(tx, record, version_id, value, None, now)
            record = replace(
                record,
                description=description if description is not None else record.description,
                kms_key_id=kms_key_id if kms_key_id is not None else record.kms_key_id,
                last_changed_at=now,
            )
            await tx.secrets.update(record)
        return record, version

    async def _live(self, tx: Transaction, registry: RegistryRef, secret_id: str) -> SecretRecord:
        record = await self._require(tx, registry, secret_id)
        if record.deletion_at is not None:
            raise SecretStateError(_MARKED)
        return record

    async def get_value(
        self,
        registry: RegistryRef,
        secret_id: str,
        *,
        version_id: str | None = None,
        stage: str | None = None,
    ) -> SecretValue:
        async with self._metadata.transaction() as tx:
            record = await self._live(tx, registry, secret_id)
            versions = await tx.secrets.versions(record.arn)
        if version_id is not None:
            found = next((v for v in versions if v.version_id == version_id), None)
            if found is not None and stage is not None and stage not in found.stages:
                found = None
        else:
            label = stage or CURRENT
            found = next((v for v in versions if label in v.stages), None)
        if found is None:
            what = f"VersionId: {version_id}" if version_id is not None else f"staging label: {stage or CURRENT}"
            raise SecretNotFoundError(f"Secrets Manager can't find the specified secret value for {what}")
        value = self._open(found)
        today = self._clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
        if record.last_accessed_at != today:
            async with self._metadata.transaction(write=True) as tx:
                current = await tx.secrets.get_by_arn(record.arn)
                if current is not None:
                    await tx.secrets.update(replace(current, last_accessed_at=today))
        return SecretValue(record, found, value)

    async def describe(self, registry: RegistryRef, secret_id: str) -> Secret:
        async with self._metadata.transaction() as tx:
            record = await self._require(tx, registry, secret_id)
            return Secret(record, tuple(await tx.secrets.versions(record.arn)))

    async def list(
        self,
        registry: RegistryRef,
        *,
        include_deleted: bool = False,
        filters: Sequence[tuple[str, Sequence[str]]] = (),
        sort_by: str = "created-date",
        descending: bool = False,
    ) -> list[Secret]:
        """The secrets that pass every filter (`(key, values)`: any value may match), sorted."""
        async with self._metadata.transaction() as tx:
            found = []
            for record in await tx.secrets.list(registry):
                if self._expired(record) or (record.deletion_at is not None and not include_deleted):
                    continue
                if all(_matches(record, key, values) for key, values in filters):
                    found.append(Secret(record, tuple(await tx.secrets.versions(record.arn))))
        key: Callable[[Secret], tuple[float, str]]
        if sort_by == "name":
            key = lambda s: (0.0, s.name)  # noqa: E731
        else:
            attribute = {"last-accessed-date": "last_accessed_at", "last-changed-date": "last_changed_at"}.get(
                sort_by, "created_at"
            )

            def key(s: Secret) -> tuple[float, str]:
                when: datetime | None = getattr(s.record, attribute)
                return (when.timestamp() if when is not None else 0.0, s.name)

        found.sort(key=key, reverse=descending)
        return found

    async def delete(
        self, registry: RegistryRef, secret_id: str, *, recovery_days: int | None = None, force: bool = False
    ) -> tuple[SecretRecord, datetime]:
        """Schedule the deletion (or delete now with `force`); returns the secret and the deletion date."""
        if force and recovery_days is not None:
            raise InvalidRequestError(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
            )
        days = DEFAULT_RECOVERY_DAYS if recovery_days is None else recovery_days
        if not 7 <= days <= 30:
            raise InvalidRequestError("The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).")
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            record = await self._require(tx, registry, secret_id)
            if force:
                await tx.secrets.delete(record.arn)
                return record, now
            if record.deletion_at is not None:
                raise SecretStateError(
                    "You can't perform this operation on the secret because it was already scheduled for deletion."
                )
            record = replace(record, deleted_at=now, deletion_at=now + timedelta(days=days))
            await tx.secrets.update(record)
        assert record.deletion_at is not None
        return record, record.deletion_at

    async def restore(self, registry: RegistryRef, secret_id: str) -> SecretRecord:
        async with self._metadata.transaction(write=True) as tx:
            record = await self._require(tx, registry, secret_id)
            if record.deletion_at is not None:
                record = replace(record, deleted_at=None, deletion_at=None, last_changed_at=self._clock.now())
                await tx.secrets.update(record)
        return record

    async def tag(self, registry: RegistryRef, secret_id: str, tags: Sequence[tuple[str, str]]) -> None:
        async with self._metadata.transaction(write=True) as tx:
            record = await self._live(tx, registry, secret_id)
            merged = dict(record.tags)
            merged.update(_check_tags(tags))
            await tx.secrets.update(
                replace(record, tags=_check_tags(list(merged.items())), last_changed_at=self._clock.now())
            )

    async def untag(self, registry: RegistryRef, secret_id: str, keys: Sequence[str]) -> None:
        async with self._metadata.transaction(write=True) as tx:
            record = await self._live(tx, registry, secret_id)
            drop = set(keys)
            kept = tuple((k, v) for k, v in record.tags if k not in drop)
            await tx.secrets.update(replace(record, tags=kept, last_changed_at=self._clock.now()))

    # -- for the pull-through cache ---------------------------------------------------------

    async def exists(self, registry: RegistryRef, arn: str) -> bool:
        async with self._metadata.transaction() as tx:
            return await self._find(tx, registry, arn) is not None

    async def pull_through_credentials(self, registry: RegistryRef, arn: str) -> CacheCredentials:
        """The credentials of a pull-through cache rule's secret (AWSCURRENT). Raises
        SecretNotFoundError (no such secret, or it is scheduled for deletion) and
        InvalidRequestError (the value is not a JSON object of strings)."""
        try:
            value = await self.get_value(registry, arn)
        except SecretStateError:
            raise SecretNotFoundError(f"The secret {arn} is scheduled for deletion") from None
        if isinstance(value.value, bytes):
            raise InvalidRequestError(f"The secret {arn} holds a binary value, not JSON credentials")
        try:
            body = json.loads(value.value)
        except ValueError:
            raise InvalidRequestError(f"The value of the secret {arn} is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidRequestError(f"The value of the secret {arn} is not a JSON object")

        def text(key: str) -> str | None:
            item = body.get(key)
            return item if isinstance(item, str) else None

        return CacheCredentials(text("username"), text("accessToken"), text("accessKeyId"), text("secretAccessKey"))


def _check_tags(tags: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    merged = dict(tags)
    if len(merged) > MAX_TAGS:
        raise InvalidRequestError(f"A secret can have at most {MAX_TAGS} tags.")
    for key in merged:
        if key.lower().startswith("aws:"):
            raise InvalidRequestError("Tag keys beginning with 'aws:' are reserved for AWS use.")
    return tuple(merged.items())


def _matches(record: SecretRecord, key: str, values: Sequence[str]) -> bool:
    """ListSecrets' filter rules: prefix matches (`!` negates), case-sensitive except for
    `description` and `all`; any of the values may match."""
    for raw in values:
        negate = raw.startswith("!")
        value = raw[1:] if negate else raw
        if key == "name":
            hit = record.name.startswith(value)
        elif key == "description":
            hit = (record.description or "").lower().startswith(value.lower())
        elif key == "tag-key":
            hit = any(k.startswith(value) for k, _ in record.tags)
        elif key == "tag-value":
            hit = any(v.startswith(value) for _, v in record.tags)
        elif key == "primary-region":
            hit = record.registry.region.startswith(value)
        elif key == "all":
            words = value.lower().split()
            fields = [record.name, record.description or "", *(k for k, _ in record.tags), *(v for _, v in record.tags)]
            haystack = [f.lower() for f in fields]
            hit = all(any(w in f for f in haystack) for w in words)
        else:  # owning-service: no secret here is owned by a service
            hit = False
        if hit != negate:
            return True
    return False
