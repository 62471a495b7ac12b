"""rpm databases (SQLite made by the real rpm tool, BerkeleyDB from CentOS 5), Go binaries' build
information (the real shfmt executable) and zstd-compressed layers: layers -> inventory -> findings."""

from __future__ import annotations

import io
import json
import lzma
import shutil
import sqlite3
import subprocess
import tarfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import zstandard

from moorage.scanning.findings import basic_findings, enhanced_findings
from moorage.scanning.gobinary import go_semver, parse_buildinfo, read_buildinfo
from moorage.scanning.inventory import GOBINARY, OS, build_inventory, distro_from_os_release
from moorage.scanning.layers import GO_MARKER, LayerError, LayerInventory, read_layer
from moorage.scanning.osv import match, match_ecosystem, package_keys
from moorage.scanning.rpmdb import read_bdb_packages, read_sqlite_packages, source_name
from moorage.scanning.squash import squash
from moorage.scanning.vulndb import _keys
from tests.scanning.helpers import DATA, base_layer, osv_records, tar_layer
from tests.scanning.test_scanner import lookup_in

RPMBUILD = shutil.which("rpmbuild")
needs_rpm = pytest.mark.skipif(RPMBUILD is None or shutil.which("rpm") is None, reason="needs rpm and rpmbuild")

ROCKY_9 = b'NAME="Rocky Linux"\nID="rocky"\nVERSION_ID="9.3"\n'


def _spec(name: str, epoch: int, version: str, release: str, subpackage: str | None = None) -> str:
    lines = [
        f"Name: {name}",
        f"Epoch: {epoch}",
        f"Version: {version}",
        f"Release: {release}",
        "Summary: test package",
        "License: MIT",
        "BuildArch: noarch",
        "%description",
        "test package",
    ]
    if subpackage:
        lines += [f"%package {subpackage}", "Summary: test subpackage", f"%description {subpackage}", "sub"]
        lines += [f"%files {subpackage}"]
    else:
        lines += ["%files"]
    return "\n".join(lines) + "\n"


def _rpmdb(tmp: Path, specs: list[str]) -> Path:
    """An rpm database (rpmdb.sqlite) holding the packages `rpmbuild` makes from the specs."""
    top, db = tmp / "build", tmp / "db"
    db.mkdir(parents=True)
    rpms = []
    for i, spec in enumerate(specs):
        path = tmp / f"p{i}.spec"
        path.write_text(spec)
        subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(path)], check=True, capture_output=True)
    rpms = sorted(str(p) for p in (top / "RPMS").rglob("*.rpm"))
    subprocess.run(["rpm", "--initdb", "--dbpath", str(db)], check=True, capture_output=True)
    subprocess.run(["rpm", "-i", "--justdb", "--nodeps", "--dbpath", str(db), *rpms], check=True, capture_output=True)
    return db / "rpmdb.sqlite"


@pytest.fixture(scope="module")
def rocky_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if RPMBUILD is None:
        pytest.skip("needs rpmbuild")
    return _rpmdb(
        tmp_path_factory.mktemp("rpm"),
        [_spec("openssl", 1, "3.0.7", "24.el9", subpackage="libs"), _spec("tzdata", 0, "2024a", "1.el9")],
    )


def _rpm_query(db: Path) -> set[tuple[int, str, str, str, str, str]]:
    out = subprocess.run(
        [
            "rpm",
            "-qa",
            "--dbpath",
            str(db.parent),
            "--qf",
            "%{EPOCHNUM}\t%{NAME}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = set()
    for line in out.splitlines():
        e, n, v, r, a, s = line.split("\t")
        rows.add((int(e), n, v, r, a, s))
    return rows


@needs_rpm
def test_rpmdb_sqlite_made_by_rpm_reads_as_rpm_lists_it(rocky_db: Path) -> None:
    got = {
        (e.epoch, e.name, e.version, e.release, e.arch, e.sourcerpm)
        for e in read_sqlite_packages(rocky_db.read_bytes())
    }
    assert got == _rpm_query(rocky_db)
    assert (1, "openssl-libs", "3.0.7", "24.el9", "noarch", "openssl-3.0.7-24.el9.src.rpm") in got
    assert source_name("openssl-3.0.7-24.el9.src.rpm") == "openssl"


@needs_rpm
def test_rpmdb_sqlite_wal_frames_are_applied(rocky_db: Path, tmp_path: Path) -> None:
    """rpm keeps rpmdb.sqlite in WAL mode: a package whose row is only in the -wal file still counts."""
    db = tmp_path / "rpmdb.sqlite"
    shutil.copy(rocky_db, db)
    blob = sqlite3.connect(db).execute("SELECT blob FROM Packages ORDER BY hnum LIMIT 1").fetchone()[0]
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("DELETE FROM Packages WHERE hnum = (SELECT max(hnum) FROM Packages)")
    writer.execute("INSERT INTO Packages (blob) VALUES (?)", (blob,))
    writer.commit()
    main, wal = db.read_bytes(), (tmp_path / "rpmdb.sqlite-wal").read_bytes()
    writer.close()
    assert len(wal) > 32
    without = [e.name for e in read_sqlite_packages(main)]
    with_wal = [e.name for e in read_sqlite_packages(main, wal)]
    assert sorted(without) == sorted(e.name for e in read_sqlite_packages(rocky_db.read_bytes()))
    assert len(with_wal) == len(without)
    assert sorted(with_wal) != sorted(without)


def test_bdb_packages_of_centos5_reads_as_go_rpmdb_expects() -> None:
    data = lzma.decompress((DATA / "rpm" / "centos5-plain.Packages.xz").read_bytes())
    expected = json.loads((DATA / "rpm" / "centos5-plain.expected.json").read_text())["packages"]
    got = {(e.epoch, e.name, e.version, e.release, e.arch, e.sourcerpm) for e in read_bdb_packages(data)}
    # go-rpmdb's table writes gpg-pubkey's missing SOURCERPM as "" where rpm prints "(none)".
    assert got == {tuple(row) for row in expected}
    assert len(got) == 110
    assert (10, "centos-release", "5", "11.el5.centos", "x86_64", "centos-release-5-11.el5.centos.src.rpm") in got


def test_bdb_garbage_is_a_layer_error() -> None:
    layer = tar_layer([("var/lib/rpm/Packages", b"\0" * 4096)])
    with pytest.raises(LayerError, match="rpm database var/lib/rpm/Packages"):
        read_layer("sha256:bad", io.BytesIO(layer))
    truncated = lzma.decompress((DATA / "rpm" / "centos5-plain.Packages.xz").read_bytes())[:70000]
    layer = tar_layer([("var/lib/rpm/Packages", truncated)])
    with pytest.raises(LayerError, match="overflow chain leaves the file"):
        read_layer("sha256:cut", io.BytesIO(layer))


def test_rpm_distros_map_to_osv_ecosystems() -> None:
    assert distro_from_os_release(ROCKY_9.decode()).ecosystem == "Rocky Linux:9"
    assert distro_from_os_release('ID="almalinux"\nVERSION_ID="8.10"\n').ecosystem == "AlmaLinux:8"
    assert distro_from_os_release('ID="opensuse-leap"\nVERSION_ID="15.5"\n').ecosystem == "openSUSE:Leap 15.5"
    assert (
        distro_from_os_release('ID="opensuse-tumbleweed"\nVERSION_ID="20240101"\n').ecosystem == "openSUSE:Tumbleweed"
    )
    assert distro_from_os_release('ID="sles"\nVERSION_ID="15.5"\n').ecosystem == "SUSE:Linux Enterprise Server 15 SP5"
    assert distro_from_os_release('ID="rhel"\nVERSION_ID="9.4"\n').ecosystem == "Red Hat:9"
    assert match_ecosystem("Red Hat:enterprise_linux:9::appstream") == "Red Hat:9"
    assert match_ecosystem("Red Hat:rhel_eus:9.2::baseos") == "Red Hat:rhel_eus:9.2::baseos"
    record = {"affected": [{"package": {"ecosystem": "Red Hat:enterprise_linux:9::baseos", "name": "openssl-libs"}}]}
    assert _keys(record) == (("Red Hat:9", "openssl-libs"),)


def _rocky_layers(db: Path) -> list[LayerInventory]:
    first = [("etc/os-release", ROCKY_9), ("var/lib/rpm/rpmdb.sqlite", db.read_bytes())]
    return [read_layer("sha256:" + "a" * 64, io.BytesIO(tar_layer(first)))]


@needs_rpm
def test_rocky_image_matches_by_source_package_in_rpm_order(rocky_db: Path) -> None:
    inventory = build_inventory(squash(_rocky_layers(rocky_db)))
    libs = next(p for p in inventory.packages if p.name == "openssl-libs")
    assert (libs.ecosystem, libs.match_name, libs.alt_match_name, libs.version) == (
        "Rocky Linux:9",
        "openssl",
        "openssl-libs",
        "1:3.0.7-24.el9",
    )
    assert ("Rocky Linux:9", "openssl-libs") in package_keys(inventory.packages)
    records = [json.loads(p.read_text()) for p in (DATA / "osv-rpm").glob("*.json")]
    matches = match(inventory.packages, lookup_in(records))
    assert [(m.record["id"], m.package.name, m.fixed) for m in matches] == [
        ("TEST-RLSA-2024-2447", "openssl-libs", "1:3.0.7-27.el9")
    ]
    [finding] = basic_findings(matches)
    assert finding["name"] == "CVE-2024-0727"
    assert finding["severity"] == "MEDIUM"
    assert {"key": "package_version", "value": "1:3.0.7-24.el9"} in finding["attributes"]
    [enhanced] = enhanced_findings(
        matches,
        account="123456789012",
        region="us-east-1",
        repository="r",
        image_digest="sha256:" + "b" * 64,
        image_tags=[],
        platform=inventory.distro.platform if inventory.distro else "",
        architecture="amd64",
        pushed_at=None,
        observed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    [vp] = enhanced["packageVulnerabilityDetails"]["vulnerablePackages"]
    assert (vp["epoch"], vp["version"], vp["release"], vp["packageManager"], vp["fixedInVersion"]) == (
        1,
        "3.0.7",
        "24.el9",
        OS,
        "1:3.0.7-27.el9",
    )
    assert vp["sourceLayerHash"] == "sha256:" + "a" * 64

    # The same record naming the binary package (as SUSE's and Red Hat's do) matches too; one at the fix does not.
    by_binary = json.loads(json.dumps(records[0]))
    by_binary["affected"][0]["package"]["name"] = "openssl-libs"
    assert len(match(inventory.packages, lookup_in([by_binary]))) == 1
    fixed = json.loads(json.dumps(records[0]))
    fixed["affected"][0]["ranges"][0]["events"][1]["fixed"] = "1:3.0.7-24.el9"
    assert match(inventory.packages, lookup_in([fixed])) == []


@needs_rpm
def test_rpm_package_removed_by_a_later_database_is_gone(rocky_db: Path, tmp_path: Path) -> None:
    smaller = _rpmdb(tmp_path, [_spec("tzdata", 0, "2024a", "1.el9")])
    layers = [
        *_rocky_layers(rocky_db),
        read_layer("sha256:" + "c" * 64, io.BytesIO(tar_layer([("var/lib/rpm/rpmdb.sqlite", smaller.read_bytes())]))),
    ]
    inventory = build_inventory(squash(layers))
    assert [(p.name, p.layer) for p in inventory.packages] == [("tzdata", "sha256:" + "a" * 64)]


# --- Go ------------------------------------------------------------------------------------------


def _shfmt() -> Path:
    try:
        dist = metadata.distribution("shfmt-py")
    except metadata.PackageNotFoundError:
        pytest.skip("needs the shfmt-py wheel (test extra)")
    for f in dist.files or []:
        if f.name == "shfmt" and "bin" in f.parts:
            return Path(str(dist.locate_file(f)))
    pytest.skip("shfmt-py has no shfmt executable")


def test_go_buildinfo_of_the_real_shfmt_binary() -> None:
    binary = _shfmt()
    with binary.open("rb") as f:
        found = read_buildinfo(f.read)
    assert found is not None
    version, modinfo = found
    go, main, deps = parse_buildinfo(version, modinfo)
    assert go.startswith("go1.")
    assert go_semver(go) is not None
    assert main is not None
    assert main.path == "mvdan.cc/sh/v3"
    assert main.version.startswith("v3.")
    paths = {d.path: d.version for d in deps}
    assert "golang.org/x/sys" in paths
    assert paths["golang.org/x/sys"].startswith("v0.")
    assert "path\tmvdan.cc/sh/v3/cmd/shfmt" in modinfo


def test_go_versions_and_replacements() -> None:
    assert go_semver("go1.21") == "1.21.0"
    assert go_semver("go1.20.5 X:boringcrypto") == "1.20.5"
    assert go_semver("go1.22rc1") == "1.22.0-rc.1"
    assert go_semver("devel go1.23-abc") is None
    modinfo = (
        "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n"
        "dep\tgolang.org/x/text\tv0.3.2\th1:x\n=>\tgolang.org/x/text\tv0.3.8\th1:y\n"
        "dep\texample.com/local\tv1.0.0\t\n=>\t../local\t\t\n"
        "dep\tgithub.com/tidwall/gjson\tv1.6.0\th1:z\n"
    )
    _go, main, deps = parse_buildinfo("go1.19.8", modinfo)
    assert main is not None
    assert main.version == "(devel)"
    assert [(d.path, d.version) for d in deps] == [
        ("golang.org/x/text", "v0.3.8"),
        ("github.com/tidwall/gjson", "v1.6.0"),
    ]


def test_go_binary_in_a_layer_gives_go_findings() -> None:
    binary = _shfmt().read_bytes()
    rebuilt = io.BytesIO()
    with tarfile.open(fileobj=rebuilt, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, mode in (("usr/local/bin/shfmt", 0o755), ("usr/share/doc/shfmt.bin", 0o644)):
            info = tarfile.TarInfo(name)  # the second is not executable: not searched
            info.size, info.mode = len(binary), mode
            out.addfile(info, io.BytesIO(binary))
    inv = read_layer("sha256:" + "d" * 64, io.BytesIO(rebuilt.getvalue()))
    assert set(inv.files) == {"usr/local/bin/shfmt"}
    assert inv.files["usr/local/bin/shfmt"].startswith(GO_MARKER)
    assert len(inv.dumps()) < 4096  # the cache keeps the build info, not the binary

    inventory = build_inventory(squash([inv]))
    assert inventory.supported  # no OS, but Go modules
    by_name = {p.name: p for p in inventory.packages}
    assert by_name["golang.org/x/sys"].package_manager == GOBINARY
    assert by_name["golang.org/x/sys"].file_path == "usr/local/bin/shfmt"
    assert "stdlib" in by_name
    assert by_name["stdlib"].match_version.count(".") == 2
    records = [json.loads(p.read_text()) for p in sorted((DATA / "osv-go").glob("*.json"))]
    matches = match(inventory.packages, lookup_in(records))
    assert [(m.record["id"], m.package.name, m.fixed) for m in matches] == [
        ("TEST-GO-X-SYS", "golang.org/x/sys", "0.48.0")
    ]
    [finding] = basic_findings(matches)
    assert finding["name"] == "TEST-GO-X-SYS"
    assert finding["severity"] == "UNDEFINED"


def test_non_go_executable_is_not_kept() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 400
    with tarfile.open(fileobj=(buf := io.BytesIO()), mode="w") as tar:
        info = tarfile.TarInfo("usr/bin/tool")
        info.size, info.mode = len(elf), 0o755
        tar.addfile(info, io.BytesIO(elf))
    assert read_layer("sha256:e", io.BytesIO(buf.getvalue())).files == {}


# --- zstd ----------------------------------------------------------------------------------------


def _zstd(entries: list[Any], frames: int = 1) -> bytes:
    raw = tar_layer(entries, compress=False)
    step = -(-len(raw) // frames)
    return b"".join(zstandard.ZstdCompressor(level=3).compress(raw[i : i + step]) for i in range(0, len(raw), step))


@pytest.mark.parametrize("frames", [1, 3])
def test_zstd_layer_reads_like_its_gzip_twin(frames: int) -> None:
    entries = base_layer()
    gz = read_layer("sha256:gz", io.BytesIO(tar_layer(entries)))
    zs = read_layer("sha256:gz", io.BytesIO(_zstd(entries, frames)))
    assert zs.to_json() == gz.to_json()
    names = {p.name for p in build_inventory(squash([zs])).packages}
    assert {"openssl", "libssl3", "requests", "ms"} <= names
    records = osv_records()
    assert {m.record["id"] for m in match(build_inventory(squash([zs])).packages, lookup_in(records))}


def test_corrupt_zstd_layer_is_a_layer_error() -> None:
    good = _zstd(base_layer())
    with pytest.raises(LayerError, match="cannot be read"):
        read_layer("sha256:z", io.BytesIO(good[: len(good) // 2] + b"\0" * 64))
