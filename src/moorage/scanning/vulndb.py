"""The OSV vulnerability database: import (files, directories, `all.zip`), status, lookups for scans.

An import merges into the active database by `modified` (a record replaces the stored one only when
it is newer) and writes the result as a new generation, in batches, then activates it in one
transaction: readers see the old database or the new one, never a mix.
"""

from __future__ import annotations

import json
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moorage.metadata import MetadataStore
from moorage.metadata.vulndb import VulnRow
from moorage.scanning.osv import Record, match_ecosystem, normalise_name

BATCH = 1000


class VulnDbImportError(Exception):
    """A path to import does not exist or is not JSON, a directory or a zip archive."""


@dataclass
class ImportReport:
    generation: int = 0
    imported: int = 0  # new ids
    updated: int = 0  # a newer `modified` replaced the stored record
    unchanged: int = 0
    invalid: int = 0
    withdrawn: int = 0
    per_ecosystem: dict[str, int] = field(default_factory=dict)  # records read, by base ecosystem


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _valid(doc: Any) -> bool:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("modified"), str):
        return False
    affected = doc.get("affected")
    if not isinstance(affected, list):
        return False
    for entry in affected:
        pkg = entry.get("package") if isinstance(entry, dict) else None
        if (
            not isinstance(pkg, dict)
            or not isinstance(pkg.get("ecosystem"), str)
            or not isinstance(pkg.get("name"), str)
        ):
            return False
    return True


def _documents(path: Path) -> Iterator[tuple[str, bytes]]:
    """(source, raw JSON) of every record under `path`."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and child.suffix in (".json", ".zip"):
                yield from _documents(child)
        return
    if not path.is_file():
        raise VulnDbImportError(f"{path}: no such file or directory")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".json") and not info.is_dir():
                    yield f"{path}!{info.filename}", archive.read(info)
        return
    yield str(path), path.read_bytes()


def _keys(doc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            {
                (
                    match_ecosystem(str(e["package"]["ecosystem"])),
                    normalise_name(str(e["package"]["ecosystem"]), str(e["package"]["name"])),
                )
                for e in doc.get("affected") or []
            }
        )
    )


async def import_paths(
    store: MetadataStore, paths: Sequence[Path], *, ecosystems: Iterable[str] = (), now: datetime | None = None
) -> ImportReport:
    """Merge the OSV records under `paths` into the database; `ecosystems` limits to those base ecosystems."""
    only = set(ecosystems)
    now = now or datetime.now(UTC)
    report = ImportReport()
    for p in paths:
        if not p.exists():
            raise VulnDbImportError(f"{p}: no such file or directory")
    async with store.transaction(write=True) as tx:
        active = await tx.vulndb.active()
        old = active.generation if active else 0
        await tx.vulndb.drop_except(old)  # leftovers of an abandoned import
        new = old + 1
        if active:
            await tx.vulndb.copy(old, new)
        stored = await tx.vulndb.modified(new)
        old_meta: dict[str, Any] = json.loads(active.meta) if active else {}
    report.generation = new

    batch: list[VulnRow] = []
    max_modified = str(old_meta.get("max_modified") or "")
    for path in paths:
        for source, raw in _documents(path):
            try:
                doc = json.loads(raw)
            except ValueError:
                report.invalid += 1
                continue
            if not _valid(doc):
                report.invalid += 1
                continue
            bases = {str(e["package"]["ecosystem"]).split(":", 1)[0] for e in doc["affected"]}
            if only and not bases & only:
                continue
            for base in bases:
                report.per_ecosystem[base] = report.per_ecosystem.get(base, 0) + 1
            rid, modified = doc["id"], doc["modified"]
            if doc.get("withdrawn"):
                report.withdrawn += 1
            if rid in stored and _when(stored[rid]) >= _when(modified):
                report.unchanged += 1
                continue
            if rid in stored:
                report.updated += 1
            else:
                report.imported += 1
            stored[rid] = modified
            if not max_modified or _when(modified) > _when(max_modified):
                max_modified = modified
            batch.append(VulnRow(rid, modified, source, json.dumps(doc, sort_keys=True), _keys(doc)))
            if len(batch) >= BATCH:
                async with store.transaction(write=True) as tx:
                    await tx.vulndb.put(new, batch)
                batch = []

    sources = dict(old_meta.get("sources") or {})
    for path in paths:
        sources[str(path.resolve())] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    async with store.transaction(write=True) as tx:
        await tx.vulndb.put(new, batch)
        meta = {
            "imported_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "max_modified": max_modified,
            "records": len(stored),
            "ecosystems": await tx.vulndb.counts(new),
            "sources": sources,
        }
        await tx.vulndb.activate(new, json.dumps(meta, sort_keys=True))
    async with store.transaction(write=True) as tx:
        await tx.vulndb.drop_except(new)
    return report


@dataclass(frozen=True)
class VulnDbStatus:
    generation: int
    imported_at: datetime
    max_modified: str
    records: int
    ecosystems: dict[str, int]
    sources: dict[str, str]


async def status(store: MetadataStore) -> VulnDbStatus | None:
    async with store.transaction() as tx:
        active = await tx.vulndb.active()
    if active is None:
        return None
    meta = json.loads(active.meta)
    return VulnDbStatus(
        generation=active.generation,
        imported_at=_when(meta["imported_at"]),
        max_modified=meta.get("max_modified", ""),
        records=int(meta.get("records", 0)),
        ecosystems=dict(meta.get("ecosystems") or {}),
        sources=dict(meta.get("sources") or {}),
    )


# Parsed records per (store, generation, ecosystem, name), shared by the scans of this process: a
# generation never changes once active (an import writes the next one), so a rescan or a re-match
# after an import reads from the database only the keys it has not seen in that generation. An
# entry holds its store (so the store's id cannot be reused while cached) and the generation's
# meta (its import time and sources), both checked on use. The records are read-only to every user
# (matching, findings). Least recently used keys go first once more than RECORD_CACHE_RECORDS
# records are held.
RECORD_CACHE_RECORDS = 100_000
_RECORDS: OrderedDict[tuple[int, int, str, str], tuple[object, str, list[Record]]] = OrderedDict()
_held = [0]


def _cache_records(key: tuple[int, int, str, str], entry: tuple[object, str, list[Record]]) -> None:
    previous = _RECORDS.pop(key, None)
    if previous is not None:
        _held[0] -= len(previous[2])
    _RECORDS[key] = entry
    _held[0] += len(entry[2])
    while _held[0] > RECORD_CACHE_RECORDS and len(_RECORDS) > 1:
        _, gone = _RECORDS.popitem(last=False)
        _held[0] -= len(gone[2])


@dataclass
class Snapshot:
    """The records one scan matches against: fetched for its packages from one generation."""

    status: VulnDbStatus
    records: dict[tuple[str, str], list[Record]]

    def lookup(self, ecosystem: str, name: str) -> list[Record]:
        return self.records.get((ecosystem, name), [])


async def snapshot(store: MetadataStore, keys: Iterable[tuple[str, str]]) -> Snapshot | None:
    """The active database's records for these (ecosystem, normalised name) keys, all from one generation."""
    async with store.transaction() as tx:
        active = await tx.vulndb.active()
        if active is None:
            return None
        found: dict[tuple[str, str], list[Record]] = {}
        for eco, name in set(keys):
            cache_key = (id(store), active.generation, eco, name)
            hit = _RECORDS.get(cache_key)
            if hit is not None and hit[0] is store and hit[1] == active.meta:
                _RECORDS.move_to_end(cache_key)
                found[(eco, name)] = hit[2]
                continue
            records = [json.loads(body) for body in await tx.vulndb.lookup(active.generation, eco, name)]
            _cache_records(cache_key, (store, active.meta, records))
            found[(eco, name)] = records
    meta = json.loads(active.meta)
    st = VulnDbStatus(
        generation=active.generation,
        imported_at=_when(meta["imported_at"]),
        max_modified=meta.get("max_modified", ""),
        records=int(meta.get("records", 0)),
        ecosystems=dict(meta.get("ecosystems") or {}),
        sources=dict(meta.get("sources") or {}),
    )
    return Snapshot(status=st, records=found)
