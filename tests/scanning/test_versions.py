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


# --- rpm: rpm 4.18's own rpm.vercmp (Debian's `rpm` package) is the oracle ------------------------

RPM = shutil.which("rpm")


def _random_rpm_version(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789.abz~^_+") for _ in range(rng.randint(1, 8)))


def _random_rpm_evr(rng: random.Random) -> str:
    evr = _random_rpm_version(rng)
    if rng.random() < 0.7:
        evr += "-" + _random_rpm_version(rng)
    if rng.random() < 0.3:
        evr = f"{rng.randint(0, 2)}:{evr}"
    return evr


def _rpm_vercmp_oracle(pairs: list[tuple[str, str]]) -> list[int]:
    """rpm.vercmp of every pair, in one `rpm --eval` call (a Lua chunk, each string as a long literal)."""
    calls = "".join(f'print(rpm.vercmp([==[{a}]==], [==[{b}]==]) .. " ") ' for a, b in pairs)
    out = subprocess.run(["rpm", "--eval", f"%{{lua: {calls}}}"], check=True, capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.skipif(RPM is None, reason="needs rpm (Debian package rpm)")
def test_rpm_order_agrees_with_rpm_vercmp() -> None:
    from moorage.scanning.versions import rpmvercmp

    rng = random.Random(1717)
    pairs = [(_random_rpm_version(rng), _random_rpm_version(rng)) for _ in range(400)]
    pairs += [
        ("1.0", "1.0a"),
        ("1.0~rc1", "1.0"),
        ("1.0~rc1", "1.0~rc2"),
        ("1.0^", "1.0"),
        ("1.0^git1", "1.0.1"),
        ("1.0^git1", "1.0^git2"),
        ("1.0~rc1^git1", "1.0~rc1"),
        ("1.01", "1.1"),
        ("1.001", "1.0001"),
        ("2.0a", "2.0.1"),
        ("a", "1"),
        ("1.0.", "1.0"),
        ("5.5p1", "5.5p10"),
        ("27.el9", "27.el9_2"),
        ("3.0.7", "3.0.7"),
        ("fc38", "fc4"),
        ("1_0", "1.0"),
        ("~", "1"),
    ]
    expected = _rpm_vercmp_oracle(pairs)
    assert len(expected) == len(pairs)
    mismatches = [(a, b, want) for (a, b), want in zip(pairs, expected, strict=True) if rpmvercmp(a, b) != want]
    assert not mismatches


@pytest.mark.skipif(RPM is None, reason="needs rpm (Debian package rpm)")
def test_rpm_evr_order_agrees_with_rpm_vercmp() -> None:
    from moorage.scanning.versions import compare_rpm

    rng = random.Random(1818)
    pairs = [(_random_rpm_evr(rng), _random_rpm_evr(rng)) for _ in range(300)]
    pairs += [
        ("1:1.0-1.el9", "2.0-1.el9"),
        ("0:2.0-1.el9", "2.0-1.el9"),
        ("3.0.7-27.el9", "3.0.7-27.el9_2"),
        ("1:3.0.7-27.el9", "1:3.0.7-27.el9"),
        ("3.0.7", "3.0.7-27.el9"),
        ("2.5-123.el5_11.3", "2.5-123.el5_11.10"),
    ]
    expected = _rpm_vercmp_oracle(pairs)
    mismatches = [(a, b, want) for (a, b), want in zip(pairs, expected, strict=True) if compare_rpm(a, b) != want]
    assert not mismatches


def test_rpm_evr_order_epoch_and_missing_release() -> None:
    from moorage.scanning.versions import compare_rpm

    rpm = comparator_for("Rocky Linux:9")
    assert rpm is compare_rpm
    assert comparator_for("AlmaLinux:8") is compare_rpm
    assert comparator_for("openSUSE:Leap 15.5") is compare_rpm
    assert comparator_for("Red Hat:enterprise_linux:9::baseos") is compare_rpm
    assert compare_rpm("1:1.0-1.el9", "2.0-1.el9") > 0  # the epoch first
    assert compare_rpm("0:2.0-1.el9", "2.0-1.el9") == 0  # a missing epoch is 0
    assert compare_rpm("3.0.7-27.el9", "3.0.7-27.el9_2") < 0
    assert compare_rpm("3.0.7", "3.0.7-27.el9") < 0  # a missing release sorts below any (as rpm.vercmp)
    assert compare_rpm("3.0.8", "3.0.7-99.el9") > 0
    with pytest.raises(ValueError, match="invalid rpm epoch"):
        compare_rpm("x:1.0", "1.0")
