"""Pull-through cache rules on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from moorage.metadata import tables as t
from moorage.metadata.pull_through import PullThroughRule
from moorage.metadata.sql.base import SqlTable, dt, dt_req, ts
from moorage.model import RegistryRef

__all__ = ["SqlPullThroughRules"]

_R = t.pull_through_rules


def _rule(row: Any) -> PullThroughRule:
    return PullThroughRule(
        RegistryRef(row.account_id, row.region),
        row.prefix,
        row.upstream_url,
        row.upstream_registry,
        row.upstream_prefix,
        row.credential_arn,
        row.custom_role_arn,
        dt_req(row.created_at),
        dt(row.updated_at),
    )


def _key(registry: RegistryRef, prefix: str) -> Any:
    return (_R.c.account_id == registry.account_id) & (_R.c.region == registry.region) & (_R.c.prefix == prefix)


class SqlPullThroughRules(SqlTable):
    async def list(self, registry: RegistryRef) -> Sequence[PullThroughRule]:
        rows = await self._c.execute(
            select(_R)
            .where(_R.c.account_id == registry.account_id, _R.c.region == registry.region)
            .order_by(_R.c.prefix)
        )
        return [_rule(row) for row in rows]

    async def insert(self, rule: PullThroughRule) -> bool:
        result = await self._c.execute(
            self._insert_ignore(_R).values(
                account_id=rule.registry.account_id,
                region=rule.registry.region,
                prefix=rule.prefix,
                upstream_url=rule.upstream_url,
                upstream_registry=rule.upstream_registry,
                upstream_prefix=rule.upstream_prefix,
                credential_arn=rule.credential_arn,
                custom_role_arn=rule.custom_role_arn,
                created_at=ts(rule.created_at),
            )
        )
        return bool(result.rowcount == 1)

    async def _get(self, registry: RegistryRef, prefix: str) -> PullThroughRule | None:
        row = (await self._c.execute(select(_R).where(_key(registry, prefix)))).first()
        return None if row is None else _rule(row)

    async def update(
        self, registry: RegistryRef, prefix: str, credential_arn: str | None, custom_role_arn: str | None, now: datetime
    ) -> PullThroughRule | None:
        await self._c.execute(
            update(_R)
            .where(_key(registry, prefix))
            .values(credential_arn=credential_arn, custom_role_arn=custom_role_arn, updated_at=ts(now))
        )
        return await self._get(registry, prefix)

    async def delete(self, registry: RegistryRef, prefix: str) -> PullThroughRule | None:
        rule = await self._get(registry, prefix)
        if rule is not None:
            await self._c.execute(delete(_R).where(_key(registry, prefix)))
        return rule
