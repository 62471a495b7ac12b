"""Preparing state before serving: schema migrations and the default account's root key.

`moorage serve` runs this in a short-lived child process (`moorage prepare`), so the serving
parent process never imports the database and crypto stacks and stays small; the admin
commands use `open_identities` directly.

What a user can get wrong before the first request (an unreachable database or bucket, a
master key that is not the database's) surfaces here as a `StartupError`: one line naming the
setting and what to do, which the command line prints instead of a traceback.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from moorage.clock import SystemClock
from moorage.config import Settings, settings_to_dict
from moorage.errors import InvalidRequestError, MoorageError, NotFoundError
from moorage.identity import Identities, MasterKeyMismatchError, load_master_key, verify_master_key
from moorage.metadata import MetadataStore
from moorage.metadata.migrate import current_revision, upgrade
from moorage.metadata.sql import SqlMetadataStore

__all__ = [
    "StartupError",
    "check_blob_store",
    "master_key",
    "migrate",
    "open_identities",
    "provision_root_key",
    "root_key_message",
    "verify_database_key",
]


_PROBE_SECONDS = 30.0
"""How long start-up waits for the blob store to answer."""


class StartupError(MoorageError):
    """A start-up failure the user can fix; the message is the one line to show them."""


def _database(settings: Settings) -> str:
    shown = settings_to_dict(settings, redact=True)["metadata"]
    url = shown.get("url") if isinstance(shown, dict) else None
    return str(url) if url else settings.metadata.effective_url(settings.data_dir)


def _reason(exc: BaseException) -> str:
    """The innermost readable cause: drivers wrap the socket error that says what happened."""
    while True:
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    if isinstance(exc, TimeoutError | asyncio.CancelledError):
        return "no answer (timed out)"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _database_error(settings: Settings, exc: BaseException) -> StartupError:
    return StartupError(
        f"cannot use the metadata database {_database(settings)}: {_reason(exc)} "
        "(check metadata.url and that the database is running and reachable)"
    )


def _is_database_error(exc: BaseException) -> bool:
    if isinstance(exc, SQLAlchemyError | OSError | ConnectionError):
        return True
    return type(exc).__module__.split(".")[0] == "asyncpg"


async def migrate(settings: Settings) -> str:
    """Apply pending migrations; return the schema revision."""
    url = settings.metadata.effective_url(settings.data_dir)
    try:
        await upgrade(url)
        return await current_revision(url) or "none"
    except Exception as exc:
        if _is_database_error(exc):
            raise _database_error(settings, exc) from exc
        raise


def master_key(settings: Settings) -> bytes:
    """The master key (`auth.master_key`, else `<data_dir>/master.key`), or a StartupError saying why not."""
    try:
        return load_master_key(settings.auth.master_key, settings.data_dir)
    except ValueError as exc:
        where = "auth.master_key" if settings.auth.master_key else f"{settings.data_dir / 'master.key'}"
        raise StartupError(f"{where} is not base64 of exactly 32 bytes: {exc}") from exc
    except OSError as exc:
        path = settings.data_dir / "master.key"
        raise StartupError(f"cannot read or create the master key {path}: {exc.strerror}") from exc


async def verify_database_key(settings: Settings, metadata: MetadataStore, key: bytes) -> None:
    """StartupError unless `key` is the master key of the database (see identity.verify_master_key)."""
    try:
        await verify_master_key(metadata, key)
    except MasterKeyMismatchError as exc:
        source = "auth.master_key" if settings.auth.master_key else f"{settings.data_dir / 'master.key'}"
        raise StartupError(
            f"auth.master_key: the master key ({source}) is not the key of the metadata database "
            f"{_database(settings)}, whose secrets another replica sealed with a different key; "
            "give every replica sharing that database the same auth.master_key"
        ) from exc
    except MoorageError:
        raise
    except Exception as exc:
        if _is_database_error(exc):
            raise _database_error(settings, exc) from exc
        raise


async def open_identities(settings: Settings) -> tuple[Identities, MetadataStore]:
    key = master_key(settings)
    metadata = SqlMetadataStore.open(settings.metadata.effective_url(settings.data_dir))
    try:
        await verify_database_key(settings, metadata, key)
    except BaseException:
        await metadata.close()
        raise
    return Identities(metadata, key, clock=SystemClock()), metadata


async def check_blob_store(settings: Settings) -> None:
    """Open the configured blob store once (S3: the bucket answers, or is created); StartupError if not."""
    if settings.storage.backend != "s3":
        return
    from moorage.app import open_blob_store

    s3 = settings.storage.s3
    try:
        store = await asyncio.wait_for(open_blob_store(settings), _PROBE_SECONDS)
    except Exception as exc:
        where = f" at {s3.endpoint_url}" if s3.endpoint_url else ""
        raise StartupError(
            f"storage.s3: bucket {s3.bucket}{where} cannot be used: {_reason(exc)} "
            "(check storage.s3.endpoint_url, the bucket and its credentials)"
        ) from exc
    await store.close()


async def root_key_message(settings: Settings) -> str | None:
    """Make sure the default account has a root access key. Returns a message to show once on
    the terminal when a key was generated (never logged)."""
    identities, metadata = await open_identities(settings)
    try:
        await identities.ensure_account(settings.account_id)
        key_id = os.environ.get("MOORAGE_ROOT_ACCESS_KEY_ID") or settings.auth.root_access_key_id
        secret = os.environ.get("MOORAGE_ROOT_SECRET_ACCESS_KEY") or settings.auth.root_secret_access_key
        if key_id and secret:
            await provision_root_key(identities, settings.account_id, key_id, secret)
            return None
        if any(k.user_name is None for k in await identities.keys(settings.account_id)):
            return None
        key = await identities.create_key(settings.account_id)
        path = settings.data_dir / "credentials"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                f"[default]\naws_access_key_id = {key.access_key_id}\naws_secret_access_key = {key.secret_access_key}\n"
            )
        return (
            f"Root access key for account {settings.account_id} (also written to {path}, mode 0600):\n"
            f"  AWS_ACCESS_KEY_ID={key.access_key_id}\n  AWS_SECRET_ACCESS_KEY={key.secret_access_key}\n"
            "It is shown only this once."
        )
    finally:
        await metadata.close()


async def provision_root_key(identities: Identities, account_id: str, key_id: str, secret: str) -> None:
    """Make `key_id` the account's root key with `secret`.

    Replicas started together run this at the same moment on one database: when another process
    creates (or replaces) the key between our look-up and our write, our write fails on the key's
    primary key; we look again and are done when the key is now the one we want."""
    for _attempt in range(5):
        existing = await identities.lookup(key_id, refresh=True)
        if existing is not None and existing.secret_access_key == secret and existing.account_id == account_id:
            return
        try:
            if existing is not None:
                await identities.delete_key(key_id)
            await identities.create_key(account_id, access_key_id=key_id, secret_access_key=secret)
            return
        except (InvalidRequestError, NotFoundError, IntegrityError):
            continue  # another process changed the key meanwhile
    raise MoorageError(f"could not provision the root access key {key_id}: it keeps changing")
