"""Accounts, IAM-style users and access keys, stored in the metadata database.

SigV4 needs each secret access key in clear to recompute signatures, so secrets are stored
encrypted (AES-256-GCM, the key id as associated data) with a master key that never enters
the database: `<data-dir>/master.key` (created 0600 on first use) or `auth.master_key`.
Every replica sharing one database must be given the same master key: the database keeps a key
check value (an HMAC of a constant under the master key, `kv` row `secret/master-key-check`), and
`verify_master_key` refuses a key that does not match it before anything is decrypted.

Lookups of access keys are cached per process for a few seconds (SigV4 verification is on every
API call); deleting a key takes effect everywhere within that time.

Users have identity policies (IAM's attached policies, kept by name; `moorage admin
attach-user-policy`): a new user has none, hence no permissions. The account root has none and
needs none (see authz.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from moorage.clock import Clock
from moorage.errors import InvalidRequestError, MoorageError, NotFoundError
from moorage.metadata import AccessKeyRecord, MetadataStore
from moorage.policy import parse_policy

__all__ = [
    "IDENTITY_POLICY_MAX_LENGTH",
    "MAX_USER_POLICIES",
    "AccessKey",
    "Identities",
    "MasterKeyMismatchError",
    "load_master_key",
    "verify_master_key",
]

IDENTITY_POLICY_MAX_LENGTH = 6_144
"""IAM's limit for a managed policy document."""
MAX_USER_POLICIES = 10
"""IAM's default quota of managed policies attached to one user."""
_POLICY_NAME_RE = re.compile(r"[\w+=,.@-]{1,128}")

_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_USER_RE = re.compile(r"[\w+=,.@-]{1,64}")
_KEY_CACHE_SECONDS = 5.0


def load_master_key(configured: str | None, data_dir: Path) -> bytes:
    """The 32-byte master key: the configured one, else `<data_dir>/master.key` (created if missing)."""
    if configured:
        key = base64.b64decode(configured)
        if len(key) != 32:
            raise ValueError("auth.master_key must be base64 of exactly 32 bytes")
        return key
    path = data_dir / "master.key"
    try:
        return base64.b64decode(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return base64.b64decode(path.read_text().strip())
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(key).decode() + "\n")
        out.flush()
        os.fsync(out.fileno())
    return key


_KEY_CHECK_NAME = "secret/master-key-check"
_KEY_CHECK_LABEL = b"moorage master key check v1"
_MISMATCH = (
    "auth.master_key: this master key is not the one the metadata database's secrets are sealed with; "
    "give every replica sharing the database the same auth.master_key"
)


class MasterKeyMismatchError(MoorageError):
    """The master key is not the one this metadata database's secrets are sealed with."""


def key_check_value(master_key: bytes) -> str:
    """What the database stores to recognise its master key (reveals nothing about the key)."""
    return hmac.new(master_key, _KEY_CHECK_LABEL, hashlib.sha256).hexdigest()


async def verify_master_key(metadata: MetadataStore, master_key: bytes) -> None:
    """Raise MasterKeyMismatchError unless `master_key` is the database's master key.

    The first process to start with a key records its check value. A database from before
    check values existed gets one only after the key has opened one of its stored secrets."""
    expected = key_check_value(master_key)
    async with metadata.transaction() as tx:
        stored = await tx.kv.get(_KEY_CHECK_NAME)
        sample = None if stored is not None else next(iter(await tx.identities.keys()), None)
    if stored is None:
        if sample is not None:
            try:
                _open_secret(AESGCM(master_key), sample.access_key_id, sample.secret_ciphertext)
            except (InvalidTag, ValueError):
                raise MasterKeyMismatchError(_MISMATCH) from None
        async with metadata.transaction(write=True) as tx:
            stored = await tx.kv.put_if_absent(_KEY_CHECK_NAME, expected)
    if not hmac.compare_digest(stored, expected):
        raise MasterKeyMismatchError(_MISMATCH)


def _open_secret(aead: AESGCM, key_id: str, ciphertext: str) -> str:
    raw = base64.b64decode(ciphertext)
    return aead.decrypt(raw[:12], raw[12:], key_id.encode()).decode()


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str
    account_id: str
    user_name: str | None

    @property
    def arn(self) -> str:
        if self.user_name is None:
            return f"arn:aws:iam::{self.account_id}:root"
        return f"arn:aws:iam::{self.account_id}:user/{self.user_name}"


def _new_key_id() -> str:
    alphabet = string.ascii_uppercase + "234567"
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def _new_secret() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in range(40))


class Identities:
    def __init__(self, metadata: MetadataStore, master_key: bytes, *, clock: Clock) -> None:
        self._metadata = metadata
        self._aead = AESGCM(master_key)
        self._clock = clock
        self._cache: dict[str, tuple[float, AccessKey | None]] = {}

    def _encrypt(self, key_id: str, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        return base64.b64encode(nonce + sealed).decode()

    def _decrypt(self, key_id: str, ciphertext: str) -> str:
        return _open_secret(self._aead, key_id, ciphertext)

    def seal(self, context: str, secret: str) -> str:
        """Encrypt another secret (a signing key, say) with the master key, bound to `context`
        (AES-256-GCM, `context` as associated data), the way access-key secrets are stored."""
        return self._encrypt(context, secret)

    def unseal(self, context: str, ciphertext: str) -> str:
        """The secret `seal(context, ...)` encrypted; raises cryptography's InvalidTag otherwise."""
        return self._decrypt(context, ciphertext)

    @property
    def metadata(self) -> MetadataStore:
        return self._metadata

    @staticmethod
    def check_account_id(account_id: str) -> str:
        if not _ACCOUNT_RE.fullmatch(account_id):
            raise InvalidRequestError(f"account id must be 12 digits: {account_id!r}")
        return account_id

    async def ensure_account(self, account_id: str) -> bool:
        """Create the account if it does not exist; True when it was created."""
        self.check_account_id(account_id)
        async with self._metadata.transaction(write=True) as tx:
            return await tx.identities.create_account(account_id, self._clock.now())

    async def accounts(self) -> list[str]:
        async with self._metadata.transaction() as tx:
            return await tx.identities.accounts()

    async def delete_account(self, account_id: str) -> None:
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.identities.delete_account(account_id):
                raise NotFoundError(f"no account {account_id}")
        self._cache.clear()

    async def create_user(self, account_id: str, name: str) -> None:
        if not _USER_RE.fullmatch(name):
            raise InvalidRequestError(f"invalid user name {name!r}")
        async with self._metadata.transaction(write=True) as tx:
            if account_id not in await tx.identities.accounts():
                raise NotFoundError(f"no account {account_id}")
            if not await tx.identities.create_user(account_id, name, self._clock.now()):
                raise InvalidRequestError(f"user {name} exists already in account {account_id}")

    async def users(self, account_id: str) -> list[str]:
        async with self._metadata.transaction() as tx:
            return await tx.identities.users(account_id)

    async def delete_user(self, account_id: str, name: str) -> None:
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.identities.delete_user(account_id, name):
                raise NotFoundError(f"no user {name} in account {account_id}")
        self._cache.clear()

    async def attach_user_policy(self, account_id: str, user_name: str, name: str, document: str) -> bool:
        """Attach (or replace) the user's identity policy `name`; True when it is new. The document
        is validated as an identity-based policy (PolicyError says what is wrong)."""
        if not _POLICY_NAME_RE.fullmatch(name):
            raise InvalidRequestError(f"invalid policy name {name!r} (1-128 letters, digits and +=,.@_-)")
        parse_policy(document, kind="identity", max_length=IDENTITY_POLICY_MAX_LENGTH)
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.identities.user_exists(account_id, user_name):
                raise NotFoundError(f"no user {user_name} in account {account_id}")
            names = [n for n, _ in await tx.policies.user_policies(account_id, user_name)]
            if name not in names and len(names) >= MAX_USER_POLICIES:
                raise InvalidRequestError(f"user {user_name} has {MAX_USER_POLICIES} policies already (the limit)")
            return await tx.policies.put_user_policy(account_id, user_name, name, document, self._clock.now())

    async def user_policies(self, account_id: str, user_name: str) -> list[tuple[str, str]]:
        """(name, document) of the user's identity policies."""
        async with self._metadata.transaction() as tx:
            if not await tx.identities.user_exists(account_id, user_name):
                raise NotFoundError(f"no user {user_name} in account {account_id}")
            return await tx.policies.user_policies(account_id, user_name)

    async def detach_user_policy(self, account_id: str, user_name: str, name: str) -> None:
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.identities.user_exists(account_id, user_name):
                raise NotFoundError(f"no user {user_name} in account {account_id}")
            if not await tx.policies.delete_user_policy(account_id, user_name, name):
                raise NotFoundError(f"user {user_name} of account {account_id} has no policy named {name}")

    async def create_key(
        self,
        account_id: str,
        user_name: str | None = None,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> AccessKey:
        """A new access key for the account's root (user None) or one of its users."""
        key = AccessKey(access_key_id or _new_key_id(), secret_access_key or _new_secret(), account_id, user_name)
        now: datetime = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            await tx.identities.create_account(account_id, now)
            if user_name is not None and not await tx.identities.user_exists(account_id, user_name):
                raise NotFoundError(f"no user {user_name} in account {account_id}")
            if await tx.identities.key(key.access_key_id) is not None:
                raise InvalidRequestError(f"access key {key.access_key_id} exists already")
            ciphertext = self._encrypt(key.access_key_id, key.secret_access_key)
            await tx.identities.add_key(AccessKeyRecord(key.access_key_id, account_id, user_name, ciphertext, now))
        self._cache.pop(key.access_key_id, None)
        return key

    async def keys(self, account_id: str | None = None) -> list[AccessKeyRecord]:
        async with self._metadata.transaction() as tx:
            return await tx.identities.keys(account_id)

    async def delete_key(self, access_key_id: str) -> None:
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.identities.delete_key(access_key_id):
                raise NotFoundError(f"no access key {access_key_id}")
        self._cache.pop(access_key_id, None)

    async def lookup(self, access_key_id: str, *, refresh: bool = False) -> AccessKey | None:
        """The key with its secret in clear, or None (cached briefly, misses included; `refresh`
        reads the database regardless of the cache)."""
        hit = self._cache.get(access_key_id)
        now = time.monotonic()
        if hit is not None and not refresh and now - hit[0] < _KEY_CACHE_SECONDS:
            return hit[1]
        async with self._metadata.transaction() as tx:
            record = await tx.identities.key(access_key_id)
        key = None
        if record is not None:
            secret = self._decrypt(record.access_key_id, record.secret_ciphertext)
            key = AccessKey(record.access_key_id, secret, record.account_id, record.user_name)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[access_key_id] = (now, key)
        return key
