"""OSV semantics: range evaluation, record matching, severity, finding identity.

Range evaluation follows the OSV schema's algorithm: an `affected` entry hits a version listed in
`versions`, or one that an evaluable range (`ECOSYSTEM` in the ecosystem's order, `SEMVER`) ends
vulnerable; `GIT` ranges are skipped; a `withdrawn` record never matches.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cvss import CVSS2, CVSS3, CVSS4
from packaging.utils import canonicalize_name

from moorage.scanning.inventory import Package
from moorage.scanning.versions import Comparator, comparator_for, compare_semver

Record = Mapping[str, Any]

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")


@dataclass(frozen=True)
class Hit:
    affected: bool
    fixed: str | None = None  # the `fixed` event closing the interval that holds the version
    evaluated: bool = True  # False when the version could not be ordered (exact `versions` only)


def _events_hit(events: list[Mapping[str, str]], version: str, cmp: Comparator) -> tuple[bool, str | None]:
    def key(e: Mapping[str, str]) -> tuple[int, str]:
        return (0, "") if e.get("introduced") == "0" else (1, next(iter(e.values())))

    def order(a: Mapping[str, str], b: Mapping[str, str]) -> int:
        ka, kb = key(a), key(b)
        if ka[0] != kb[0]:
            return ka[0] - kb[0]
        return cmp(ka[1], kb[1]) if ka[1] != kb[1] else 0

    if len(events) == 2 and "introduced" in events[0] and ("fixed" in events[1] or "last_affected" in events[1]):
        # The common shape, already in order: no sort needed.
        start, end = events[0]["introduced"], events[1]
        if start != "0" and cmp(start, version) > 0:
            return False, None
        if "fixed" in end:
            return (False, None) if cmp(end["fixed"], version) <= 0 else (True, end["fixed"])
        return (cmp(end["last_affected"], version) >= 0), None
    limits = [e["limit"] for e in events if "limit" in e and e["limit"] != "*"]
    if limits and not any(cmp(version, lim) < 0 for lim in limits):
        return False, None
    vulnerable = False
    fixed: str | None = None
    for e in sorted((e for e in events if "limit" not in e), key=functools.cmp_to_key(order)):
        if "introduced" in e:
            if e["introduced"] == "0" or cmp(e["introduced"], version) <= 0:
                vulnerable = True
                fixed = None
        elif "fixed" in e:
            if cmp(e["fixed"], version) <= 0:
                vulnerable = False
            elif vulnerable and fixed is None:
                fixed = e["fixed"]
        elif "last_affected" in e and cmp(e["last_affected"], version) < 0:
            vulnerable = False
    return vulnerable, fixed if vulnerable else None


def evaluate(entry: Mapping[str, Any], version: str, ecosystem: str) -> Hit:
    """Does `entry` (one `affected[]` element) cover `version`?"""
    listed = version in (entry.get("versions") or [])
    eco_cmp = comparator_for(ecosystem)
    fixed: str | None = None
    hit = False
    evaluated = True
    for r in entry.get("ranges") or []:
        kind = r.get("type")
        cmp: Comparator | None = compare_semver if kind == "SEMVER" else eco_cmp if kind == "ECOSYSTEM" else None
        if cmp is None:
            continue
        try:
            vulnerable, fix = _events_hit(list(r.get("events") or []), version, cmp)
        except ValueError:
            evaluated = False
            continue
        if vulnerable:
            hit = True
            fixed = fixed or fix
    return Hit(affected=hit or listed, fixed=fixed, evaluated=evaluated)


def normalise_name(ecosystem: str, name: str) -> str:
    return canonicalize_name(name) if ecosystem == "PyPI" else name


_RHEL_STREAM = re.compile(r"^Red Hat:(?:[^:]*:)*?enterprise_linux:(\d+)")


def match_ecosystem(ecosystem: str) -> str:
    """The ecosystem an advisory's `affected[].package.ecosystem` is matched (and indexed) under.

    Red Hat's names a CPE product stream (`Red Hat:enterprise_linux:9::appstream`), which an image
    does not record: every stream of one RHEL major release is matched as `Red Hat:9`. Every
    other ecosystem is matched as it is named.
    """
    if ecosystem.startswith("Red Hat:"):
        m = _RHEL_STREAM.match(ecosystem)
        if m:
            return f"Red Hat:{m.group(1)}"
    return ecosystem


# --- identity and severity -------------------------------------------------------------------


def finding_name(record: Record) -> str:
    """The CVE id when the advisory names one (its id, then `upstream`, then `aliases`), else its id."""
    rid = str(record["id"])
    if rid.startswith("CVE-"):
        return rid
    for key in ("upstream", "aliases"):
        for other in record.get(key) or []:
            if str(other).startswith("CVE-"):
                return str(other)
    return rid


_GHSA = {"LOW": "LOW", "MODERATE": "MEDIUM", "MEDIUM": "MEDIUM", "HIGH": "HIGH", "CRITICAL": "CRITICAL"}
_DEBIAN_URGENCY = {"unimportant": "INFORMATIONAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH"}
_UBUNTU_PRIORITY = {
    "negligible": "INFORMATIONAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "critical": "CRITICAL",
}


@dataclass(frozen=True)
class Cvss:
    version: str  # "2.0", "3.1", "4.0"
    vector: str
    score: float


def band(score: float) -> str:
    if score == 0:
        return "INFORMATIONAL"
    if score < 4.0:
        return "LOW"
    if score < 7.0:
        return "MEDIUM"
    if score < 9.0:
        return "HIGH"
    return "CRITICAL"


def cvss_scores(record: Record, entry: Mapping[str, Any] | None = None) -> list[Cvss]:
    """Every scorable CVSS vector of the entry (or, without one there, the record), v3 first, then v4, v2."""
    items = list((entry or {}).get("severity") or []) or list(record.get("severity") or [])
    out: list[Cvss] = []
    for item in items:
        kind, vector = item.get("type"), str(item.get("score", ""))
        try:
            if kind == "CVSS_V3":
                c3 = CVSS3(vector)
                out.append(Cvss(vector.split("/")[0].split(":")[1], vector, float(c3.base_score)))
            elif kind == "CVSS_V4":
                out.append(Cvss("4.0", vector, float(CVSS4(vector).base_score)))
            elif kind == "CVSS_V2":
                out.append(Cvss("2.0", vector, float(CVSS2(vector).base_score)))
        except Exception:  # noqa: S112 - an unparsable vector is skipped, like an absent one
            continue
    rank = {"3": 0, "4": 1, "2": 2}
    return sorted(out, key=lambda c: rank.get(c.version[0], 3))


def vendor_severity(record: Record, entry: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """(ECR severity, the vendor's own word) when the advisory's vendor assigned one."""
    entry = entry or {}
    for spec in (entry.get("database_specific") or {}, record.get("database_specific") or {}):
        word = str(spec.get("severity") or "")
        if word.upper() in _GHSA:
            return _GHSA[word.upper()], word
    urgency = str((entry.get("ecosystem_specific") or {}).get("urgency") or "").lower()
    if urgency in _DEBIAN_URGENCY:
        return _DEBIAN_URGENCY[urgency], urgency
    for item in list(entry.get("severity") or []) + list(record.get("severity") or []):
        if item.get("type") == "Ubuntu" and str(item.get("score", "")).lower() in _UBUNTU_PRIORITY:
            word = str(item["score"])
            return _UBUNTU_PRIORITY[word.lower()], word
    return None


def severity(record: Record, entry: Mapping[str, Any] | None = None) -> str:
    """semantics §13.3: the vendor's severity, else the CVSS band, else UNDEFINED."""
    vendor = vendor_severity(record, entry)
    if vendor:
        return vendor[0]
    scores = cvss_scores(record, entry)
    return band(scores[0].score) if scores else "UNDEFINED"


# --- matching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    record: Record
    entry: Mapping[str, Any]
    package: Package
    fixed: str | None


Lookup = Callable[[str, str], Iterable[Record]]  # (ecosystem, normalised name) -> candidate records


def match(packages: Iterable[Package], lookup: Lookup) -> list[Match]:
    """Every (record, package) pair where the record's entry for the package covers its version."""
    found: list[Match] = []
    for pkg in packages:
        if not pkg.ecosystem:
            continue
        names = {normalise_name(pkg.ecosystem, n) for n in (pkg.match_name, pkg.alt_match_name) if n}
        seen: set[str] = set()
        for name in sorted(names):
            for record in lookup(pkg.ecosystem, name):
                rid = str(record.get("id"))
                if record.get("withdrawn") or rid in seen:
                    continue
                seen.add(rid)
                for entry in record.get("affected") or []:
                    p = entry.get("package") or {}
                    if match_ecosystem(str(p.get("ecosystem"))) != pkg.ecosystem:
                        continue
                    if normalise_name(pkg.ecosystem, str(p.get("name"))) not in names:
                        continue
                    hit = evaluate(entry, pkg.match_version, pkg.ecosystem)
                    if hit.affected:
                        found.append(Match(record, entry, pkg, hit.fixed))
                        break
    return found


def package_keys(packages: Iterable[Package]) -> list[tuple[str, str]]:
    """The (ecosystem, normalised name) keys the packages are looked up (and indexed) under."""
    keys: dict[tuple[str, str], None] = {}
    for p in packages:
        if p.ecosystem:
            for n in (p.match_name, p.alt_match_name):
                if n:
                    keys[(p.ecosystem, normalise_name(p.ecosystem, n))] = None
    return list(keys)
