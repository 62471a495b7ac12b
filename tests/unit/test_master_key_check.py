"""The master key's check value: a database recognises its master key before anything is decrypted,
also a database whose keys were stored before check values existed."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from moorage.clock import SystemClock
from moorage.identity import Identities, MasterKeyMismatchError, verify_master_key
from moorage.metadata.migrate import upgrade
from moorage.metadata.sql import SqlMetadataStore

pytestmark = pytest.mark.anyio


async def test_first_key_is_recorded_and_another_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    await upgrade(url)
    store = SqlMetadataStore.open(url)
    try:
        first, other = secrets.token_bytes(32), secrets.token_bytes(32)
        await verify_master_key(store, first)  # an empty database takes the first key
        await verify_master_key(store, first)
        with pytest.raises(MasterKeyMismatchError, match=r"auth\.master_key"):
            await verify_master_key(store, other)
    finally:
        await store.close()


async def test_database_from_before_check_values_is_checked_against_its_secrets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    await upgrade(url)
    store = SqlMetadataStore.open(url)
    try:
        first, other = secrets.token_bytes(32), secrets.token_bytes(32)
        # Keys stored without a check value, as every database before it had them.
        key = await Identities(store, first, clock=SystemClock()).create_key("123456789012")
        with pytest.raises(MasterKeyMismatchError):
            await verify_master_key(store, other)  # cannot open the stored secret: refused, nothing recorded
        await verify_master_key(store, first)  # opens it: recorded from now on
        with pytest.raises(MasterKeyMismatchError):
            await verify_master_key(store, other)
        found = await Identities(store, first, clock=SystemClock()).lookup(key.access_key_id)
        assert found is not None
        assert found.secret_access_key == key.secret_access_key
    finally:
        await store.close()
