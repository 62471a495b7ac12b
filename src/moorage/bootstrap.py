"""Preparing state before serving: schema migrations and the default account's root key.

`moorage serve` runs this in a short-lived child process (`moorage prepare`), so the serving
parent process never imports the database and crypto stacks and stays small; the admin
commands use `open_identities` directly.
"""

from __future__ import annotations

import os

from sqlalchemy.exc import IntegrityError

from moorage.clock import SystemClock
from moorage.config import Settings
from moorage.errors import InvalidRequestError, MoorageError, NotFoundError
from moorage.identity import Identities, load_master_key
from moorage.metadata import MetadataStore
from moorage.metadata.migrate import current_revision, upgrade
from moorage.metadata.sql import SqlMetadataStore

__all__ = ["migrate", "open_identities", "provision_root_key", "root_key_message"]


async def migrate(settings: Settings) -> str:
    """Apply pending migrations; return the schema revision."""
    url = settings.metadata.effective_url(settings.data_dir)
    await upgrade(url)
    return await current_revision(url) or "none"


async def open_identities(settings: Settings) -> tuple[Identities, MetadataStore]:
    metadata = SqlMetadataStore.open(settings.metadata.effective_url(settings.data_dir))
    master_key = load_master_key(settings.auth.master_key, settings.data_dir)
    return Identities(metadata, master_key, clock=SystemClock()), metadata


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
