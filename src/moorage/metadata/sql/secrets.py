"""Secrets Manager secrets and their versions on SQL (values arrive sealed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update

from moorage.metadata import tables as t
from moorage.metadata.secrets import SecretRecord, SecretVersionRecord
from moorage.metadata.sql.base import SqlTable, dt, dt_req, ts
from moorage.model import RegistryRef

__all__ = ["SqlSecrets"]

_S = t.secrets
_V = t.secret_versions


def _secret(row: Any) -> SecretRecord:
    return SecretRecord(
        RegistryRef(row.account_id, row.region),
        row.name,
        row.arn,
        dt_req(row.created_at),
        dt_req(row.last_changed_at),
        row.description,
        row.kms_key_id,
        tuple((str(k), str(v)) for k, v in json.loads(row.tags)),
        dt(row.last_accessed_at),
        dt(row.deleted_at),
        dt(row.deletion_at),
    )


def _fields(secret: SecretRecord) -> dict[str, Any]:
    return {
        "description": secret.description,
        "kms_key_id": secret.kms_key_id,
        "tags": json.dumps([list(pair) for pair in secret.tags]),
        "last_changed_at": ts(secret.last_changed_at),
        "last_accessed_at": None if secret.last_accessed_at is None else ts(secret.last_accessed_at),
        "deleted_at": None if secret.deleted_at is None else ts(secret.deleted_at),
        "deletion_at": None if secret.deletion_at is None else ts(secret.deletion_at),
    }


class SqlSecrets(SqlTable):
    async def get(self, registry: RegistryRef, name: str) -> SecretRecord | None:
        row = (
            await self._c.execute(
                select(_S).where(
                    _S.c.account_id == registry.account_id, _S.c.region == registry.region, _S.c.name == name
                )
            )
        ).first()
        return None if row is None else _secret(row)

    async def get_by_arn(self, arn: str) -> SecretRecord | None:
        row = (await self._c.execute(select(_S).where(_S.c.arn == arn))).first()
        return None if row is None else _secret(row)

    async def list(self, registry: RegistryRef) -> Sequence[SecretRecord]:
        rows = await self._c.execute(
            select(_S).where(_S.c.account_id == registry.account_id, _S.c.region == registry.region).order_by(_S.c.name)
        )
        return [_secret(row) for row in rows]

    async def insert(self, secret: SecretRecord) -> bool:
        result = await self._c.execute(
            self._insert_ignore(_S).values(
                arn=secret.arn,
                account_id=secret.registry.account_id,
                region=secret.registry.region,
                name=secret.name,
                created_at=ts(secret.created_at),
                **_fields(secret),
            )
        )
        return bool(result.rowcount == 1)

    async def update(self, secret: SecretRecord) -> None:
        await self._c.execute(update(_S).where(_S.c.arn == secret.arn).values(**_fields(secret)))

    async def delete(self, arn: str) -> None:
        await self._c.execute(delete(_V).where(_V.c.arn == arn))
        await self._c.execute(delete(_S).where(_S.c.arn == arn))

    async def versions(self, arn: str) -> Sequence[SecretVersionRecord]:
        rows = await self._c.execute(select(_V).where(_V.c.arn == arn).order_by(_V.c.created_at, _V.c.version_id))
        return [
            SecretVersionRecord(
                row.arn,
                row.version_id,
                row.ciphertext,
                bool(row.binary),
                dt_req(row.created_at),
                tuple(json.loads(row.stages)),
            )
            for row in rows
        ]

    async def add_version(self, version: SecretVersionRecord) -> bool:
        result = await self._c.execute(
            self._insert_ignore(_V).values(
                arn=version.arn,
                version_id=version.version_id,
                ciphertext=version.ciphertext,
                binary=version.binary,
                stages=json.dumps(list(version.stages)),
                created_at=ts(version.created_at),
            )
        )
        return bool(result.rowcount == 1)

    async def set_stages(self, arn: str, version_id: str, stages: Sequence[str]) -> None:
        await self._c.execute(
            update(_V).where(_V.c.arn == arn, _V.c.version_id == version_id).values(stages=json.dumps(list(stages)))
        )

    async def delete_version(self, arn: str, version_id: str) -> None:
        await self._c.execute(delete(_V).where(_V.c.arn == arn, _V.c.version_id == version_id))
