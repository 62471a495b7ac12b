"""Lifecycle policies, their previews and the events the lifecycle job records
(`t.lifecycle_policies`, `t.lifecycle_previews`, `t.lifecycle_events`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from moorage.metadata import LifecycleEvent, LifecyclePolicyRecord, LifecyclePreviewRecord
from moorage.metadata import tables as t
from moorage.metadata.sql.base import SqlTable, dt, dt_req, ts
from moorage.metadata.sql.repositories import repository_from_row
from moorage.model import Digest, RegistryRef, Repository, RepositoryName

__all__ = ["SqlLifecycle"]


def _policy_record(row: Row[Any, *tuple[Any, ...]]) -> LifecyclePolicyRecord:
    m = row._mapping
    return LifecyclePolicyRecord(m["document"], dt_req(m["updated_at"]), dt(m["last_evaluated_at"]))


class SqlLifecycle(SqlTable):
    async def policy(self, repo_id: int) -> LifecyclePolicyRecord | None:
        lp = t.lifecycle_policies
        row = (await self._c.execute(select(lp).where(lp.c.repo_id == repo_id))).first()
        return None if row is None else _policy_record(row)

    async def put_policy(self, repo_id: int, document: str, now: datetime) -> None:
        lp = t.lifecycle_policies
        values = {"repo_id": repo_id, "document": document, "updated_at": ts(now)}
        changes = {"document": document, "updated_at": ts(now)}
        if self._dialect == "postgresql":
            pg = postgresql.insert(lp).values(values)
            await self._c.execute(pg.on_conflict_do_update(index_elements=["repo_id"], set_=changes))
        else:
            lite = sqlite.insert(lp).values(values)
            await self._c.execute(lite.on_conflict_do_update(index_elements=["repo_id"], set_=changes))

    async def delete_policy(self, repo_id: int) -> LifecyclePolicyRecord | None:
        record = await self.policy(repo_id)
        if record is not None:
            lp = t.lifecycle_policies
            await self._c.execute(delete(lp).where(lp.c.repo_id == repo_id))
        return record

    async def evaluated(self, repo_id: int, at: datetime) -> None:
        lp = t.lifecycle_policies
        await self._c.execute(update(lp).where(lp.c.repo_id == repo_id).values(last_evaluated_at=ts(at)))

    async def with_policies(
        self, registry: RegistryRef | None = None, name: RepositoryName | None = None
    ) -> list[tuple[Repository, LifecyclePolicyRecord]]:
        lp, r = t.lifecycle_policies, t.repositories
        stmt = select(r, lp.c.document, lp.c.updated_at, lp.c.last_evaluated_at).select_from(
            lp.join(r, r.c.id == lp.c.repo_id)
        )
        if registry is not None:
            stmt = stmt.where(r.c.account_id == registry.account_id, r.c.region == registry.region)
        if name is not None:
            stmt = stmt.where(r.c.name == name)
        rows = await self._c.execute(stmt.order_by(r.c.id))
        return [(repository_from_row(row), _policy_record(row)) for row in rows]

    async def preview(self, repo_id: int) -> LifecyclePreviewRecord | None:
        pv = t.lifecycle_previews
        row = (await self._c.execute(select(pv).where(pv.c.repo_id == repo_id))).first()
        if row is None:
            return None
        m = row._mapping
        return LifecyclePreviewRecord(
            m["document"], m["status"], dt_req(m["started_at"]), dt(m["finished_at"]), m["results"]
        )

    async def put_preview(self, repo_id: int, preview: LifecyclePreviewRecord) -> None:
        pv = t.lifecycle_previews
        changes = {
            "document": preview.document,
            "status": preview.status,
            "started_at": ts(preview.started_at),
            "finished_at": None if preview.finished_at is None else ts(preview.finished_at),
            "results": preview.results,
        }
        if self._dialect == "postgresql":
            pg = postgresql.insert(pv).values(repo_id=repo_id, **changes)
            await self._c.execute(pg.on_conflict_do_update(index_elements=["repo_id"], set_=changes))
        else:
            lite = sqlite.insert(pv).values(repo_id=repo_id, **changes)
            await self._c.execute(lite.on_conflict_do_update(index_elements=["repo_id"], set_=changes))

    async def add_events(self, events: Sequence[LifecycleEvent]) -> None:
        if not events:
            return
        await self._c.execute(
            t.lifecycle_events.insert(),
            [
                {
                    "account_id": e.registry.account_id,
                    "region": e.registry.region,
                    "repository": e.repository,
                    "digest": str(e.digest),
                    "tags": json.dumps(list(e.tags)),
                    "action": e.action,
                    "rule_priority": e.rule_priority,
                    "at": ts(e.at),
                }
                for e in events
            ],
        )

    async def events(
        self, registry: RegistryRef | None = None, repository: RepositoryName | None = None, limit: int = 100
    ) -> list[LifecycleEvent]:
        ev = t.lifecycle_events
        stmt = select(ev)
        if registry is not None:
            stmt = stmt.where(ev.c.account_id == registry.account_id, ev.c.region == registry.region)
        if repository is not None:
            stmt = stmt.where(ev.c.repository == repository)
        rows = await self._c.execute(stmt.order_by(ev.c.at.desc(), ev.c.id.desc()).limit(limit))
        return [
            LifecycleEvent(
                RegistryRef(m["account_id"], m["region"]),
                RepositoryName(m["repository"]),
                Digest.parse(m["digest"]),
                tuple(json.loads(m["tags"])),
                m["action"],
                m["rule_priority"],
                dt_req(m["at"]),
            )
            for m in (row._mapping for row in rows)
        ]
