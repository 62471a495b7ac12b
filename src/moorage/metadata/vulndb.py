"""The vulnerability database's part of the metadata contract: `Transaction.vulndb`.

    vuln_records    one row per (generation, OSV id): `modified`, where it came from, the record
    vuln_affected   (generation, ecosystem, name) -> OSV id, the index a scan looks packages up in

Readers see one generation, the active one (`active()`); an import writes a new generation beside
it in as many transactions as it needs, then `activate`s it in one, so every reader — on every
replica sharing the store — sees the old database or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["VulnDbState", "VulnDbTable", "VulnRow"]


@dataclass(frozen=True, slots=True)
class VulnRow:
    id: str
    modified: str  # RFC 3339, as the record says
    source: str  # the file or archive it was imported from
    body: str  # the OSV record (JSON)
    keys: tuple[tuple[str, str], ...]  # (ecosystem, normalised package name) of its `affected` entries


@dataclass(frozen=True, slots=True)
class VulnDbState:
    generation: int
    meta: str  # JSON: imported_at, max_modified, counts per ecosystem, sources


class VulnDbTable(Protocol):
    async def active(self) -> VulnDbState | None:
        """The generation readers use, None before the first import."""
        ...

    async def lookup(self, generation: int, ecosystem: str, name: str) -> list[str]:
        """The records (JSON) of `generation` with an `affected` entry for (ecosystem, name)."""
        ...

    async def modified(self, generation: int) -> dict[str, str]:
        """id -> modified of every record of `generation`."""
        ...

    async def copy(self, source: int, target: int) -> None:
        """Copy every row of generation `source` into the (empty) generation `target`."""
        ...

    async def put(self, generation: int, rows: Sequence[VulnRow]) -> None:
        """Insert or replace these records in `generation` (not yet active)."""
        ...

    async def counts(self, generation: int) -> dict[str, int]:
        """ecosystem -> how many records of `generation` have an entry in it."""
        ...

    async def activate(self, generation: int, meta: str) -> None:
        """Make `generation` the one readers see, with its description."""
        ...

    async def drop_except(self, generation: int) -> None:
        """Delete the rows of every other generation (an old one, or an abandoned import)."""
        ...
