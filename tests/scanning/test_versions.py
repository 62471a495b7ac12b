"""Version order per ecosystem, against real oracles: dpkg itself, apk-tools' vectors, semver.org."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess

import pytest

from moorage.scanning.versions import comparator_for, compare_apk, compare_dpkg, compare_pep440, compare_semver
from tests.scanning.helpers import DATA

DPKG = shutil.which("dpkg")


def _random_dpkg_version(rng: random.Random) -> str:
    def part(chars: str) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(1, 6)))

    upstream = str(rng.randint(0, 12)) + part("0123456789.~+ab")
    v = upstream
    if rng.random() < 0.6:
        v += "-" + part("0123456789~+.abdeu")
    if rng.random() < 0.2:
        v = f"{rng.randint(0, 2)}:{v}"
    return v


@pytest.mark.skipif(DPKG is None, reason="needs dpkg")
def test_dpkg_order_agrees_with_dpkg_compare_versions() -> None:
    rng = random.Random(1313)
    pairs = [(_random_dpkg_version(rng), _random_dpkg_version(rng)) for _ in range(150)]
    pairs += [
        ("1.0~rc1", "1.0"),
        ("1.0", "1.0+b1"),
        ("1.0+b1", "1.0a"),
        ("3.0.11-1~deb12u2", "3.0.11-1"),
        ("3.0.18-1~deb12u1", "3.0.18-1~deb12u2"),
        ("1:1.2.13.dfsg-1", "1.2.13.dfsg-1"),
        ("2.36-9+deb12u14", "2.36-9+deb12u3"),
        ("1.0-1ubuntu1", "1.0-1"),
        ("1.2.3", "1.2.3-0"),
    ]
    for a, b in pairs:
        ours = compare_dpkg(a, b)
        expect_lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0
        expect_eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b], check=False).returncode == 0
        assert (ours < 0, ours == 0) == (expect_lt, expect_eq), (a, b, ours)


def test_apk_order_agrees_with_apk_tools_vectors() -> None:
    lines = (DATA / "apk" / "version.data").read_text().splitlines()
    assert len(lines) > 100
    for line in lines:
        a, op, b = line.split()
        assert compare_apk(a, b) == {"<": -1, "=": 0, ">": 1}[op], line


def test_semver_precedence_chain_from_semver_org() -> None:
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
    ]
    for lower, higher in itertools.pairwise(chain):
        assert compare_semver(lower, higher) < 0
        assert compare_semver(higher, lower) > 0
    assert compare_semver("1.0.0+build.1", "1.0.0") == 0
    assert compare_semver("v0.7.0", "0.7.1") < 0
    with pytest.raises(ValueError, match="SemVer"):
        compare_semver("not-a-version", "1.0.0")


def test_pep440_uses_packaging_and_rejects_legacy_versions() -> None:
    assert compare_pep440("2.30.0", "2.31.0") < 0
    assert compare_pep440("2.31.0rc1", "2.31.0") < 0
    assert compare_pep440("1.0", "1.0.0") == 0
    with pytest.raises(ValueError, match="Invalid version"):
        compare_pep440("2004d", "1.0")


def test_comparators_are_chosen_by_base_ecosystem() -> None:
    assert comparator_for("Debian:12") is compare_dpkg
    assert comparator_for("Ubuntu:22.04:LTS") is compare_dpkg
    assert comparator_for("Alpine:v3.18") is compare_apk
    assert comparator_for("npm") is compare_semver
    assert comparator_for("Maven") is None
