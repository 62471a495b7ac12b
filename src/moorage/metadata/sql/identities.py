"""Who may do what: accounts, users and access keys (`t.accounts`, `t.users`, `t.access_keys`),
policy documents (user, repository and registry policies) and the principals excluded from
pull-time updates (`t.pull_time_exclusions`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from moorage.metadata import AccessKeyRecord
from moorage.metadata import tables as t
from moorage.metadata.sql.base import SqlTable, dt_req, limited, paged, ts
from moorage.model import Page, PageRequest, RegistryRef

__all__ = ["SqlIdentities", "SqlPolicies", "SqlPullExclusions"]


def _key_record(row: Row[Any, *tuple[Any, ...]]) -> AccessKeyRecord:
    m = row._mapping
    return AccessKeyRecord(m["id"], m["account_id"], m["user_name"], m["secret"], dt_req(m["created_at"]))


class SqlIdentities(SqlTable):
    async def create_account(self, account_id: str, now: datetime) -> bool:
        result = await self._c.execute(self._insert_ignore(t.accounts).values(id=account_id, created_at=ts(now)))
        return bool(result.rowcount == 1)

    async def accounts(self) -> list[str]:
        return [row[0] for row in await self._c.execute(select(t.accounts.c.id).order_by(t.accounts.c.id))]

    async def delete_account(self, account_id: str) -> bool:
        await self._c.execute(delete(t.user_policies).where(t.user_policies.c.account_id == account_id))
        await self._c.execute(delete(t.access_keys).where(t.access_keys.c.account_id == account_id))
        await self._c.execute(delete(t.users).where(t.users.c.account_id == account_id))
        result = await self._c.execute(delete(t.accounts).where(t.accounts.c.id == account_id))
        return bool(result.rowcount == 1)

    async def create_user(self, account_id: str, name: str, now: datetime) -> bool:
        result = await self._c.execute(
            self._insert_ignore(t.users).values(account_id=account_id, name=name, created_at=ts(now))
        )
        return bool(result.rowcount == 1)

    async def users(self, account_id: str) -> list[str]:
        u = t.users
        return [
            row[0]
            for row in await self._c.execute(select(u.c.name).where(u.c.account_id == account_id).order_by(u.c.name))
        ]

    async def delete_user(self, account_id: str, name: str) -> bool:
        k, u, up = t.access_keys, t.users, t.user_policies
        await self._c.execute(delete(up).where(up.c.account_id == account_id, up.c.user_name == name))
        await self._c.execute(delete(k).where(k.c.account_id == account_id, k.c.user_name == name))
        result = await self._c.execute(delete(u).where(u.c.account_id == account_id, u.c.name == name))
        return bool(result.rowcount == 1)

    async def user_exists(self, account_id: str, name: str) -> bool:
        u = t.users
        row = (await self._c.execute(select(u.c.name).where(u.c.account_id == account_id, u.c.name == name))).first()
        return row is not None

    async def add_key(self, record: AccessKeyRecord) -> None:
        await self._c.execute(
            t.access_keys.insert().values(
                id=record.access_key_id,
                account_id=record.account_id,
                user_name=record.user_name,
                secret=record.secret_ciphertext,
                created_at=ts(record.created_at),
            )
        )

    async def key(self, access_key_id: str) -> AccessKeyRecord | None:
        row = (await self._c.execute(select(t.access_keys).where(t.access_keys.c.id == access_key_id))).first()
        return None if row is None else _key_record(row)

    async def keys(self, account_id: str | None = None) -> list[AccessKeyRecord]:
        k = t.access_keys
        stmt = select(k).order_by(k.c.account_id, k.c.id)
        if account_id is not None:
            stmt = stmt.where(k.c.account_id == account_id)
        return [_key_record(row) for row in await self._c.execute(stmt)]

    async def delete_key(self, access_key_id: str) -> bool:
        result = await self._c.execute(delete(t.access_keys).where(t.access_keys.c.id == access_key_id))
        return bool(result.rowcount == 1)


class SqlPolicies(SqlTable):
    async def repository_policy(self, repo_id: int) -> str | None:
        rp = t.repository_policies
        value = (await self._c.execute(select(rp.c.document).where(rp.c.repo_id == repo_id))).scalar()
        return None if value is None else str(value)

    async def put_repository_policy(self, repo_id: int, document: str, now: datetime) -> None:
        rp = t.repository_policies
        values = {"repo_id": repo_id, "document": document, "updated_at": ts(now)}
        await self._upsert(rp, values, ["repo_id"])

    async def delete_repository_policy(self, repo_id: int) -> bool:
        rp = t.repository_policies
        result = await self._c.execute(delete(rp).where(rp.c.repo_id == repo_id))
        return bool(result.rowcount == 1)

    async def any_repository_policy(self, registry: RegistryRef) -> bool:
        rp, r = t.repository_policies, t.repositories
        stmt = (
            select(rp.c.repo_id)
            .select_from(rp.join(r, r.c.id == rp.c.repo_id))
            .where(r.c.account_id == registry.account_id, r.c.region == registry.region)
            .limit(1)
        )
        return (await self._c.execute(stmt)).first() is not None

    async def registry_policy(self, registry: RegistryRef) -> str | None:
        gp = t.registry_policies
        stmt = select(gp.c.document).where(gp.c.account_id == registry.account_id, gp.c.region == registry.region)
        value = (await self._c.execute(stmt)).scalar()
        return None if value is None else str(value)

    async def put_registry_policy(self, registry: RegistryRef, document: str, now: datetime) -> None:
        values = {
            "account_id": registry.account_id,
            "region": registry.region,
            "document": document,
            "updated_at": ts(now),
        }
        await self._upsert(t.registry_policies, values, ["account_id", "region"])

    async def delete_registry_policy(self, registry: RegistryRef) -> bool:
        gp = t.registry_policies
        result = await self._c.execute(
            delete(gp).where(gp.c.account_id == registry.account_id, gp.c.region == registry.region)
        )
        return bool(result.rowcount == 1)

    async def user_policies(self, account_id: str, user_name: str) -> list[tuple[str, str]]:
        up = t.user_policies
        stmt = (
            select(up.c.name, up.c.document)
            .where(up.c.account_id == account_id, up.c.user_name == user_name)
            .order_by(up.c.name)
        )
        return [(str(name), str(document)) for name, document in await self._c.execute(stmt)]

    async def put_user_policy(self, account_id: str, user_name: str, name: str, document: str, now: datetime) -> bool:
        up = t.user_policies
        key = (up.c.account_id == account_id, up.c.user_name == user_name, up.c.name == name)
        existed = (await self._c.execute(select(up.c.name).where(*key))).first() is not None
        values = {
            "account_id": account_id,
            "user_name": user_name,
            "name": name,
            "document": document,
            "updated_at": ts(now),
        }
        await self._upsert(up, values, ["account_id", "user_name", "name"])
        return not existed

    async def delete_user_policy(self, account_id: str, user_name: str, name: str) -> bool:
        up = t.user_policies
        result = await self._c.execute(
            delete(up).where(up.c.account_id == account_id, up.c.user_name == user_name, up.c.name == name)
        )
        return bool(result.rowcount == 1)

    async def _upsert(self, table: Table, values: dict[str, Any], key: list[str]) -> None:
        changes = {k: v for k, v in values.items() if k not in key}
        if self._dialect == "postgresql":
            pg = postgresql.insert(table).values(values)
            await self._c.execute(pg.on_conflict_do_update(index_elements=key, set_=changes))
        else:
            lite = sqlite.insert(table).values(values)
            await self._c.execute(lite.on_conflict_do_update(index_elements=key, set_=changes))


class SqlPullExclusions(SqlTable):
    @staticmethod
    def _where(registry: RegistryRef) -> Any:
        ex = t.pull_time_exclusions
        return and_(ex.c.account_id == registry.account_id, ex.c.region == registry.region)

    async def add(self, registry: RegistryRef, principal_arn: str, now: datetime) -> bool:
        result = await self._c.execute(
            self._insert_ignore(t.pull_time_exclusions).values(
                account_id=registry.account_id, region=registry.region, principal_arn=principal_arn, created_at=ts(now)
            )
        )
        return bool(result.rowcount == 1)

    async def remove(self, registry: RegistryRef, principal_arn: str) -> bool:
        ex = t.pull_time_exclusions
        result = await self._c.execute(delete(ex).where(self._where(registry), ex.c.principal_arn == principal_arn))
        return bool(result.rowcount == 1)

    async def contains(self, registry: RegistryRef, principal_arn: str) -> bool:
        ex = t.pull_time_exclusions
        stmt = select(ex.c.principal_arn).where(self._where(registry), ex.c.principal_arn == principal_arn)
        return (await self._c.execute(stmt)).first() is not None

    async def count(self, registry: RegistryRef) -> int:
        ex = t.pull_time_exclusions
        return int((await self._c.execute(select(func.count()).select_from(ex).where(self._where(registry)))).scalar())

    async def list_page(self, registry: RegistryRef, page: PageRequest) -> Page[str]:
        ex = t.pull_time_exclusions
        stmt = select(ex.c.principal_arn).where(self._where(registry))
        if page.after is not None:
            stmt = stmt.where(ex.c.principal_arn > page.after)
        rows = (await self._c.execute(limited(stmt.order_by(ex.c.principal_arn), page))).all()
        return paged([row[0] for row in rows], page.limit, lambda arn: arn)
