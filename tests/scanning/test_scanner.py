"""Layers -> squash -> inventory -> OSV match -> ECR findings, on real package metadata and OSV records."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from moorage.scanning.findings import basic_findings, enhanced_findings, severity_counts
from moorage.scanning.inventory import (
    NODEPKG,
    OS,
    PYTHONPKG,
    Inventory,
    build_inventory,
    distro_from_os_release,
    parse_apk_installed,
    parse_dpkg_status,
)
from moorage.scanning.layers import LayerError, LayerInventory, read_layer
from moorage.scanning.osv import evaluate, finding_name, match, severity
from moorage.scanning.squash import squash
from tests.scanning.helpers import base_layer, fixture, osv_records, tar_layer


def layer(digest: str, entries: list[Any], compress: bool = True) -> LayerInventory:
    return read_layer(digest, io.BytesIO(tar_layer(entries, compress=compress)))


def lookup_in(records: list[dict[str, Any]]) -> Any:
    def lookup(ecosystem: str, name: str) -> Iterable[Mapping[str, Any]]:
        return [
            r
            for r in records
            if any(
                a["package"]["ecosystem"] == ecosystem and a["package"]["name"].lower() == name for a in r["affected"]
            )
        ]

    return lookup


def inventory_of(*layers: LayerInventory) -> Inventory:
    return build_inventory(squash(list(layers)))


def test_dpkg_status_from_a_real_bookworm_system() -> None:
    entries = {e.name: e for e in parse_dpkg_status(fixture("dpkg/status.bookworm").decode())}
    assert set(entries) == {"libc6", "libssl3", "openssl", "zlib1g"}
    assert (entries["libc6"].source, entries["libc6"].version) == ("glibc", "2.36-9+deb12u14")
    assert entries["libssl3"].source == "openssl"
    assert entries["openssl"].source == "openssl"  # no Source: field -> the package itself
    assert entries["zlib1g"].version == "1:1.2.13.dfsg-1"
    stanza = (
        "Package: postgresql-client\nStatus: install ok installed\nVersion: 11+200+deb10u5\n"
        "Source: postgresql-common (200+deb10u5)\n"
    )
    removed = "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0-1\n"
    got = parse_dpkg_status(stanza + "\n" + removed)
    assert [(e.name, e.source, e.source_version) for e in got] == [
        ("postgresql-client", "postgresql-common", "200+deb10u5")
    ]


def test_os_release_to_osv_ecosystem() -> None:
    assert distro_from_os_release(fixture("dpkg/os-release.bookworm").decode()).ecosystem == "Debian:12"
    alpine = distro_from_os_release('ID=alpine\nVERSION_ID=3.18.4\nPRETTY_NAME="Alpine Linux v3.18"\n')
    assert (alpine.ecosystem, alpine.platform) == ("Alpine:v3.18", "ALPINE_3_18_4")
    assert distro_from_os_release(
        'ID=ubuntu\nVERSION_ID="22.04"\nVERSION="22.04.3 LTS (Jammy Jellyfish)"\n'
    ).ecosystem == ("Ubuntu:22.04:LTS")
    assert distro_from_os_release("ID=debian\n").ecosystem is None  # sid: no VERSION_ID


def test_apk_installed_maps_binary_to_origin() -> None:
    db = "C:Q1abc=\nP:libssl1.0\nV:1.0.2n-r0\nA:x86_64\no:openssl\n\nP:musl\nV:1.1.18-r2\nA:x86_64\no:musl\n"
    assert [(e.name, e.version, e.origin) for e in parse_apk_installed(db)] == [
        ("libssl1.0", "1.0.2n-r0", "openssl"),
        ("musl", "1.1.18-r2", "musl"),
    ]


def test_one_layer_inventory_reads_every_package_manager() -> None:
    inv = inventory_of(layer("sha256:l1", base_layer()))
    assert inv.distro is not None
    assert inv.distro.ecosystem == "Debian:12"
    got = {(p.name, p.version, p.package_manager, p.match_name) for p in inv.packages}
    assert ("libssl3", "3.0.18-1~deb12u1", OS, "openssl") in got
    assert ("requests", "2.30.0", PYTHONPKG, "requests") in got
    assert ("ms", "0.7.0", NODEPKG, "ms") in got
    assert ("@types/ms", "0.7.31", NODEPKG, "@types/ms") in got
    assert not any(p.file_path == "app/package.json" for p in inv.packages)  # not under node_modules
    assert {p.layer for p in inv.packages} == {"sha256:l1"}


def test_plain_and_gzip_layers_and_corrupt_layers() -> None:
    assert layer("sha256:p", base_layer(), compress=False).files.keys() == layer("sha256:g", base_layer()).files.keys()
    with pytest.raises(LayerError, match="cannot be read"):
        read_layer("sha256:bad", io.BytesIO(b"\x1f\x8b" + b"garbage" * 10))


def test_whiteouts_opaque_dirs_and_attribution() -> None:
    l1 = layer("sha256:l1", base_layer())
    # Layer 2 deletes ms (whiteout of its directory) and rewrites the dpkg status with a new package
    # added: libssl3/openssl keep their attribution to layer 1.
    status2 = (
        fixture("dpkg/status.bookworm-older-openssl")
        + b"\nPackage: extra\nStatus: install ok installed\nVersion: 1.0-1\n"
    )
    l2 = layer("sha256:l2", [("app/node_modules/.wh.ms", b""), ("var/lib/dpkg/status", status2)])
    inv = inventory_of(l1, l2)
    names = {p.name: p for p in inv.packages}
    assert "ms" not in names
    assert "@types/ms" in names
    assert names["libssl3"].layer == "sha256:l1"
    assert names["extra"].layer == "sha256:l2"

    # Opaque site-packages with requests 2.31.0 re-created in the same layer; the marker comes last in the tar.
    newer = fixture("python/requests-2.30.0.METADATA").replace(b"Version: 2.30.0", b"Version: 2.31.0")
    sp = "usr/lib/python3/dist-packages"
    l3 = layer("sha256:l3", [(f"{sp}/requests-2.31.0.dist-info/METADATA", newer), (f"{sp}/.wh..wh..opq", b"")])
    inv3 = inventory_of(l1, l3)
    reqs = [p for p in inv3.packages if p.name == "requests"]
    assert [(p.version, p.layer) for p in reqs] == [("2.31.0", "sha256:l3")]

    # A whiteout beside a file of its own layer does not hide that file; a later layer may recreate.
    l4 = layer(
        "sha256:l4",
        [("app/node_modules/.wh.ms", b""), ("app/node_modules/ms/package.json", b'{"name":"ms","version":"0.7.2"}')],
    )
    assert [p.version for p in inventory_of(l1, l4).packages if p.name == "ms"] == ["0.7.2"]
    assert [p.version for p in inventory_of(l1, l2, l4).packages if p.name == "ms"] == ["0.7.2"]


def test_paths_escaping_the_root_are_ignored() -> None:
    inv = layer("sha256:x", [("../etc/os-release", b"ID=debian\nVERSION_ID=12\n")])
    assert inv.files == {}


def test_osv_range_evaluation() -> None:
    entry = {
        "ranges": [
            {"type": "ECOSYSTEM", "events": [{"fixed": "2.0-1"}, {"introduced": "0"}]},  # unsorted
            {"type": "ECOSYSTEM", "events": [{"introduced": "3.0-1"}, {"last_affected": "3.2-1"}]},
            {"type": "GIT", "repo": "https://example.invalid/x", "events": [{"introduced": "abc"}]},
        ],
        "versions": ["9.9-1"],
    }
    assert evaluate(entry, "1.5-1", "Debian:12").affected
    assert evaluate(entry, "1.5-1", "Debian:12").fixed == "2.0-1"
    assert not evaluate(entry, "2.0-1", "Debian:12").affected
    assert evaluate(entry, "3.2-1", "Debian:12").affected
    assert evaluate(entry, "3.2-1", "Debian:12").fixed is None
    assert not evaluate(entry, "3.3-1", "Debian:12").affected
    assert evaluate(entry, "9.9-1", "Debian:12").affected  # listed only (the GIT range is skipped)
    limited = {"ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}, {"limit": "1.5.0"}]}]}
    assert evaluate(limited, "1.4.0", "npm").affected
    assert not evaluate(limited, "1.6.0", "npm").affected
    apk = {"ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.9.0-r0"}]}]}
    assert evaluate(apk, "2.8.0-r0", "Alpine:v3.10").affected


def test_finding_identity_and_severity_follow_semantics_13_3() -> None:
    recs = {r["id"]: r for r in osv_records()}
    ghsa_req, ghsa_ms = recs["GHSA-j8r2-6x86-q33q"], recs["GHSA-3fx5-fwvr-xrjg"]
    deb = recs["TEST-DEBIAN-CVE-2025-15467"]
    assert finding_name(ghsa_req) == "CVE-2023-32681"
    assert finding_name(deb) == "CVE-2025-15467"  # from `upstream`
    assert finding_name({"id": "MAL-2024-1", "aliases": []}) == "MAL-2024-1"
    assert severity(ghsa_req) == "MEDIUM"  # GHSA MODERATE (CVSS 6.1 agrees)
    assert severity(ghsa_ms) == "HIGH"
    assert severity(deb, deb["affected"][0]) == "MEDIUM"  # Debian urgency
    # Vendor severity wins over the CVSS band (semantics §13.3): a LOW GHSA with a 9.8 vector stays LOW.
    low = {
        "id": "X",
        "database_specific": {"severity": "LOW"},
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    }
    assert severity(low) == "LOW"
    assert severity({"id": "Y", "severity": low["severity"]}) == "CRITICAL"  # CVSS band via `cvss`
    assert severity({"id": "Z"}) == "UNDEFINED"
    assert severity({"id": "D"}, {"ecosystem_specific": {"urgency": "unimportant"}}) == "INFORMATIONAL"
    assert severity({"id": "D"}, {"ecosystem_specific": {"urgency": "not yet assigned"}}) == "UNDEFINED"


def test_withdrawn_records_never_match() -> None:
    rec = dict(osv_records()[0], withdrawn="2024-01-01T00:00:00Z")
    inv = inventory_of(layer("sha256:l1", base_layer()))
    assert match(inv.packages, lookup_in([rec])) == []


def test_findings_for_the_test_image() -> None:
    records = osv_records()
    l1 = layer("sha256:l1", base_layer())
    inv = inventory_of(l1)
    found = basic_findings(match(inv.packages, lookup_in(records)))
    got = sorted((f["name"], f["attributes"][0]["value"], f["attributes"][1]["value"], f["severity"]) for f in found)
    assert got == [
        ("CVE-2015-8315", "ms", "0.7.0", "HIGH"),
        ("CVE-2023-32681", "requests", "2.30.0", "MEDIUM"),
        ("CVE-2025-15467", "libssl3", "3.0.18-1~deb12u1", "MEDIUM"),
        ("CVE-2025-15467", "openssl", "3.0.18-1~deb12u1", "MEDIUM"),
        ("CVE-2026-28387", "libssl3", "3.0.18-1~deb12u1", "MEDIUM"),
        ("CVE-2026-28387", "openssl", "3.0.18-1~deb12u1", "MEDIUM"),
    ]
    assert severity_counts(found) == {"HIGH": 1, "MEDIUM": 5}
    req = next(f for f in found if f["name"] == "CVE-2023-32681")
    attrs = {a["key"]: a["value"] for a in req["attributes"]}
    assert attrs["CVSS3_VECTOR"] == "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N"
    assert attrs["CVSS3_SCORE"] == "6.1"
    assert req["uri"] == "https://nvd.nist.gov/vuln/detail/CVE-2023-32681"
    deb = next(f for f in found if f["name"] == "CVE-2025-15467")
    assert deb["uri"] == "https://security-tracker.debian.org/tracker/CVE-2025-15467"

    # The real, current bookworm status is fixed for both openssl advisories.
    current = inventory_of(layer("sha256:c", base_layer("dpkg/status.bookworm")))
    assert {f["name"] for f in basic_findings(match(current.packages, lookup_in(records)))} == {
        "CVE-2015-8315",
        "CVE-2023-32681",
    }


def test_enhanced_findings_group_binaries_by_source_package() -> None:
    inv = inventory_of(layer("sha256:l1", base_layer()))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    found = enhanced_findings(
        match(inv.packages, lookup_in(osv_records())),
        account="123456789012",
        region="us-east-1",
        repository="app",
        image_digest="sha256:abc",
        image_tags=["v1"],
        platform="DEBIAN_12",
        architecture="amd64",
        pushed_at=now,
        observed_at=now,
    )
    by_id = {f["packageVulnerabilityDetails"]["vulnerabilityId"]: f for f in found}
    assert set(by_id) == {"CVE-2015-8315", "CVE-2023-32681", "CVE-2025-15467", "CVE-2026-28387"}
    ossl = by_id["CVE-2025-15467"]
    pkgs = {p["name"]: p for p in ossl["packageVulnerabilityDetails"]["vulnerablePackages"]}
    assert set(pkgs) == {"libssl3", "openssl"}
    assert pkgs["libssl3"]["version"] == "3.0.18"
    assert pkgs["libssl3"]["release"] == "1~deb12u1"
    assert pkgs["libssl3"]["fixedInVersion"] == "3.0.18-1~deb12u2"
    assert pkgs["libssl3"]["packageManager"] == "OS"
    assert pkgs["libssl3"]["sourceLayerHash"] == "sha256:l1"
    assert ossl["fixAvailable"] == "YES"
    assert "exploitAvailable" not in ossl
    assert ossl["packageVulnerabilityDetails"]["vendorSeverity"] == "medium"
    req = by_id["CVE-2023-32681"]
    assert req["score"] == 6.1
    assert req["packageVulnerabilityDetails"]["source"] == "GITHUB"
    assert req["packageVulnerabilityDetails"]["vulnerablePackages"][0]["packageManager"] == "PYTHONPKG"
    assert req["packageVulnerabilityDetails"]["relatedVulnerabilities"] == []
    assert by_id["CVE-2015-8315"]["packageVulnerabilityDetails"]["vulnerablePackages"][0]["filePath"] == (
        "app/node_modules/ms/package.json"
    )


def test_alpine_image_matches_by_origin_in_apk_order() -> None:
    """An Alpine 3.10 image with `botan 2.8.0-r0`; the record is derived from Alpine's secdb fact
    "botan 2.9.0-r0 fixes CVE-2018-20187 (v3.10 community)" (see data/SOURCE.md)."""
    os_release = b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.10.9\nPRETTY_NAME="Alpine Linux v3.10"\n'
    db = b"C:Q1x=\nP:botan\nV:2.8.0-r0\nA:x86_64\no:botan\n\nP:musl\nV:1.1.22-r4\nA:x86_64\no:musl\n"
    inv = inventory_of(layer("sha256:al", [("etc/os-release", os_release), ("lib/apk/db/installed", db)]))
    assert inv.distro is not None
    assert inv.distro.ecosystem == "Alpine:v3.10"
    record = {
        "id": "TEST-ALPINE-CVE-2018-20187",
        "modified": "2019-01-01T00:00:00Z",
        "upstream": ["CVE-2018-20187"],
        "affected": [
            {
                "package": {"ecosystem": "Alpine:v3.10", "name": "botan"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.9.0-r0"}]}],
            }
        ],
    }
    found = basic_findings(match(inv.packages, lookup_in([record])))
    assert [(f["name"], f["severity"], f["uri"]) for f in found] == [
        ("CVE-2018-20187", "UNDEFINED", "https://security.alpinelinux.org/vuln/CVE-2018-20187")
    ]
