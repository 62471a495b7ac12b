"""The vulnerability database on every metadata backend: import, merge by `modified`, generations."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from moorage.metadata import MetadataStore
from moorage.scanning.vulndb import VulnDbImportError, import_paths, snapshot, status
from tests.scanning.helpers import DATA

pytestmark = pytest.mark.anyio

OSV = DATA / "osv"


def _zip(tmp_path: Path, name: str, records: Mapping[str, Any]) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        for rid, doc in records.items():
            z.writestr(f"{rid}.json", json.dumps(doc))
    return path


async def test_import_directory_then_lookups_see_the_records(metadata_store: MetadataStore) -> None:
    assert await status(metadata_store) is None
    report = await import_paths(metadata_store, [OSV])
    assert (report.imported, report.updated, report.invalid) == (4, 0, 0)
    assert report.per_ecosystem == {"Debian": 2, "PyPI": 1, "npm": 1}
    st = await status(metadata_store)
    assert st is not None
    assert st.records == 4
    assert st.ecosystems == {"Debian:12": 2, "PyPI": 1, "npm": 1}
    assert st.max_modified == "2026-04-03T00:00:00Z"
    snap = await snapshot(metadata_store, [("PyPI", "requests"), ("Debian:12", "openssl"), ("npm", "left-pad")])
    assert snap is not None
    assert [r["id"] for r in snap.lookup("PyPI", "requests")] == ["GHSA-j8r2-6x86-q33q"]
    assert sorted(r["id"] for r in snap.lookup("Debian:12", "openssl")) == [
        "TEST-DEBIAN-CVE-2025-15467",
        "TEST-DEBIAN-CVE-2026-28387",
    ]
    assert snap.lookup("npm", "left-pad") == []


async def test_reimport_is_idempotent_and_newer_modified_wins(metadata_store: MetadataStore, tmp_path: Path) -> None:
    await import_paths(metadata_store, [OSV])
    again = await import_paths(metadata_store, [OSV])
    assert (again.imported, again.updated, again.unchanged) == (0, 0, 4)

    original = json.loads((OSV / "GHSA-3fx5-fwvr-xrjg.json").read_text())
    older = dict(original, modified="2020-01-01T00:00:00Z", summary="older")
    newer = dict(original, modified="2024-01-01T00:00:00Z", summary="newer")
    assert (await import_paths(metadata_store, [_zip(tmp_path, "old.zip", {"x": older})])).unchanged == 1
    report = await import_paths(metadata_store, [_zip(tmp_path, "all.zip", {"x": newer})])
    assert report.updated == 1
    snap = await snapshot(metadata_store, [("npm", "ms")])
    assert snap is not None
    assert [r["summary"] for r in snap.lookup("npm", "ms")] == ["newer"]
    st = await status(metadata_store)
    assert st is not None
    assert st.records == 4  # merged, not replaced: the other records are still there


async def test_invalid_records_are_counted_and_skipped(metadata_store: MetadataStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.json").write_text("{not json")
    (bad / "no-affected.json").write_text(json.dumps({"id": "X-1", "modified": "2024-01-01T00:00:00Z"}))
    (bad / "ok.json").write_text((OSV / "GHSA-j8r2-6x86-q33q.json").read_text())
    report = await import_paths(metadata_store, [bad])
    assert (report.imported, report.invalid) == (1, 2)
    with pytest.raises(VulnDbImportError, match="no such file"):
        await import_paths(metadata_store, [tmp_path / "missing.zip"])


async def test_ecosystem_filter(metadata_store: MetadataStore) -> None:
    report = await import_paths(metadata_store, [OSV], ecosystems=["Debian"])
    assert report.imported == 2
    st = await status(metadata_store)
    assert st is not None
    assert st.ecosystems == {"Debian:12": 2}


async def test_a_reader_during_an_import_sees_the_old_database(metadata_store: MetadataStore, tmp_path: Path) -> None:
    """The new generation is written beside the active one and swapped in at the end."""
    await import_paths(metadata_store, [OSV / "GHSA-j8r2-6x86-q33q.json"])
    import moorage.scanning.vulndb as vulndb

    records = {
        f"TEST-{i}": {
            "id": f"TEST-{i}",
            "modified": "2024-01-01T00:00:00Z",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "requests"}, "versions": ["2.30.0"]}],
        }
        for i in range(25)
    }
    big = _zip(tmp_path, "big.zip", records)
    seen: list[int] = []
    original_batch = vulndb.BATCH
    vulndb.BATCH = 5  # several write transactions before the swap
    try:
        importing = asyncio.ensure_future(import_paths(metadata_store, [big]))
        while not importing.done():
            snap = await snapshot(metadata_store, [("PyPI", "requests")])
            assert snap is not None
            seen.append(len(snap.lookup("PyPI", "requests")))
            await asyncio.sleep(0)
        await importing
    finally:
        vulndb.BATCH = original_batch
    snap = await snapshot(metadata_store, [("PyPI", "requests")])
    assert snap is not None
    assert len(snap.lookup("PyPI", "requests")) == 26
    assert set(seen) <= {1, 26}  # never a partial import
