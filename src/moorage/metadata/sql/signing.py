"""Managed signing on SQL: signing profiles, root CAs and image signing statuses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select

from moorage.metadata import tables as t
from moorage.metadata.signing import SigningProfileRecord, SigningRoot, SigningStatusRecord
from moorage.metadata.sql.base import SqlTable, dt, dt_req, prebuilt, ts
from moorage.model import RegistryRef

__all__ = ["SqlSigning"]

_P = t.signing_profiles
_R = t.signing_roots
_S = t.signing_statuses


def _profile(row: Any) -> SigningProfileRecord:
    return SigningProfileRecord(
        RegistryRef(row.account_id, row.region),
        row.name,
        row.version,
        row.platform_id,
        row.status,
        row.validity_value,
        row.validity_type,
        row.key_ciphertext,
        row.cert_chain,
        dt_req(row.created_at),
        dict(json.loads(row.tags)),
        row.status_reason,
        dt(row.revoked_at),
        row.revoked_by,
        dt(row.revocation_effective_from),
    )


def _status(row: Any) -> SigningStatusRecord:
    return SigningStatusRecord(
        RegistryRef(row.account_id, row.region),
        row.repository,
        row.digest,
        row.profile_arn,
        row.status,
        dt_req(row.updated_at),
        row.failure_code,
        row.failure_reason,
        row.principal_arn,
        row.signature_digest,
    )


def _image(registry: RegistryRef, repository: str, digest: str) -> Any:
    return (
        (_S.c.account_id == registry.account_id)
        & (_S.c.region == registry.region)
        & (_S.c.repository == repository)
        & (_S.c.digest == digest)
    )


# Every pushed image's signing statuses are read (by the signing event consumer): built once.
_STATUSES = prebuilt(
    select(_S)
    .where(
        _S.c.account_id == bindparam("account"),
        _S.c.region == bindparam("region"),
        _S.c.repository == bindparam("repository"),
        _S.c.digest == bindparam("digest"),
    )
    .order_by(_S.c.profile_arn)
)


class SqlSigning(SqlTable):
    async def profile(self, registry: RegistryRef, name: str) -> SigningProfileRecord | None:
        row = (
            await self._c.execute(
                select(_P).where(
                    _P.c.account_id == registry.account_id, _P.c.region == registry.region, _P.c.name == name
                )
            )
        ).first()
        return None if row is None else _profile(row)

    async def profiles(self, registry: RegistryRef) -> Sequence[SigningProfileRecord]:
        rows = await self._c.execute(
            select(_P).where(_P.c.account_id == registry.account_id, _P.c.region == registry.region).order_by(_P.c.name)
        )
        return [_profile(row) for row in rows]

    async def put_profile(self, profile: SigningProfileRecord) -> None:
        reg = profile.registry
        await self._c.execute(
            delete(_P).where(_P.c.account_id == reg.account_id, _P.c.region == reg.region, _P.c.name == profile.name)
        )
        await self._c.execute(
            _P.insert().values(
                account_id=reg.account_id,
                region=reg.region,
                name=profile.name,
                version=profile.version,
                platform_id=profile.platform_id,
                status=profile.status,
                status_reason=profile.status_reason,
                validity_value=profile.validity_value,
                validity_type=profile.validity_type,
                key_ciphertext=profile.key_ciphertext,
                cert_chain=profile.cert_chain,
                tags=json.dumps(profile.tags, sort_keys=True),
                created_at=ts(profile.created_at),
                revoked_at=None if profile.revoked_at is None else ts(profile.revoked_at),
                revoked_by=profile.revoked_by,
                revocation_effective_from=(
                    None if profile.revocation_effective_from is None else ts(profile.revocation_effective_from)
                ),
            )
        )

    async def root(self, account_id: str) -> SigningRoot | None:
        row = (await self._c.execute(select(_R).where(_R.c.account_id == account_id))).first()
        return (
            None
            if row is None
            else SigningRoot(row.account_id, row.key_ciphertext, row.cert_pem, dt_req(row.created_at))
        )

    async def put_root(self, root: SigningRoot) -> SigningRoot:
        await self._c.execute(
            self._insert_ignore(_R).values(
                account_id=root.account_id,
                key_ciphertext=root.key_ciphertext,
                cert_pem=root.cert_pem,
                created_at=ts(root.created_at),
            )
        )
        stored = await self.root(root.account_id)
        assert stored is not None
        return stored

    async def statuses(self, registry: RegistryRef, repository: str, digest: str) -> Sequence[SigningStatusRecord]:
        params = {"account": registry.account_id, "region": registry.region, "repository": repository, "digest": digest}
        rows = await self._c.execute(_STATUSES, params)
        return [_status(row) for row in rows]

    async def put_statuses(self, records: Sequence[SigningStatusRecord]) -> None:
        for r in records:
            await self._c.execute(
                delete(_S).where(_image(r.registry, r.repository, r.digest), _S.c.profile_arn == r.profile_arn)
            )
            await self._c.execute(
                _S.insert().values(
                    account_id=r.registry.account_id,
                    region=r.registry.region,
                    repository=r.repository,
                    digest=r.digest,
                    profile_arn=r.profile_arn,
                    status=r.status,
                    failure_code=r.failure_code,
                    failure_reason=r.failure_reason,
                    principal_arn=r.principal_arn,
                    signature_digest=r.signature_digest,
                    updated_at=ts(r.updated_at),
                )
            )

    async def delete_statuses(self, registry: RegistryRef, repository: str, digest: str) -> None:
        await self._c.execute(delete(_S).where(_image(registry, repository, digest)))
