"""`moorage vulndb import` and `moorage vulndb status`, in-process with click's runner on a fresh data dir."""

from __future__ import annotations

import zipfile
from pathlib import Path

from click.testing import CliRunner

from moorage.cli import main
from tests.scanning.helpers import DATA


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_status_before_and_after_importing_an_all_zip_and_files(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "state")]
    code, out = run("vulndb", "status", *data)
    assert code == 1
    assert "no vulnerability database" in out

    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((DATA / "osv").glob("GHSA-*.json")):
            z.write(p, p.name)
    code, out = run("vulndb", "import", *data, str(archive), str(DATA / "osv" / "TEST-DEBIAN-CVE-2025-15467.json"))
    assert code == 0, out
    assert "generation 1: 3 imported, 0 updated, 0 unchanged, 0 invalid, 0 withdrawn" in out

    code, out = run("vulndb", "status", *data)
    assert code == 0, out
    assert "generation 1" in out
    assert "records: 3, newest modified: 2026-01-27T00:00:00Z" in out
    assert "Debian:12\t1" in out
    assert "PyPI\t1" in out
    assert "npm\t1" in out
    assert f"source {archive.resolve()}" in out

    code, out = run("vulndb", "import", *data, str(tmp_path / "nope.zip"))
    assert code == 1
    assert "no such file or directory" in out
