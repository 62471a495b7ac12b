"""OSV semantics: range evaluation, record matching, severity, finding identity.

Range evaluation follows the OSV schema's algorithm: an `affected` entry hits a version listed in
`versions`, or one that an evaluable range (`ECOSYSTEM` in the ecosystem's order, `SEMVER`) ends
vulnerable; `GIT` ranges are skipped; a `withdrawn` record never matches.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cvss import CVSS2, CVSS3, CVSS4
from packaging.utils import canonicalize_name

from moorage.scanning.gcpause import paused_gc
from moorage.scanning.inventory import Package
from moorage.scanning.versions import VersionKey, comparator_for, compare_semver, key_for

Record = Mapping[str, Any]

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")


@dataclass(frozen=True)
class Hit:
    affected: bool
    fixed: str | None = None  # the `fixed` event closing the interval that holds the version
    evaluated: bool = True  # False when the version could not be ordered (exact `versions` only)


def _events_hit(events: list[Mapping[str, str]], version: str, key: VersionKey) -> tuple[bool, str | None]:
    v = key(version)
    if len(events) == 2 and "introduced" in events[0] and ("fixed" in events[1] or "last_affected" in events[1]):
        # The common shape, already in order: no sort needed.
        start, end = events[0]["introduced"], events[1]
        if start != "0" and key(start) > v:  # type: ignore[operator]
            return False, None
        fix = end.get("fixed")
        if fix is not None:
            return (False, None) if key(fix) <= v else (True, fix)  # type: ignore[operator]
        return key(end["last_affected"]) >= v, None  # type: ignore[operator]
    limits = [e["limit"] for e in events if "limit" in e and e["limit"] != "*"]
    if limits and not any(v < key(lim) for lim in limits):  # type: ignore[operator]
        return False, None

    def order(e: Mapping[str, str]) -> tuple[Any, ...]:
        return (0,) if e.get("introduced") == "0" else (1, key(next(iter(e.values()))))

    vulnerable = False
    fixed: str | None = None
    for e in sorted((e for e in events if "limit" not in e), key=order):
        if "introduced" in e:
            if e["introduced"] == "0" or key(e["introduced"]) <= v:  # type: ignore[operator]
                vulnerable = True
                fixed = None
        elif "fixed" in e:
            if key(e["fixed"]) <= v:  # type: ignore[operator]
                vulnerable = False
            elif vulnerable and fixed is None:
                fixed = e["fixed"]
        elif "last_affected" in e and key(e["last_affected"]) < v:  # type: ignore[operator]
            vulnerable = False
    return vulnerable, fixed if vulnerable else None


@functools.lru_cache(maxsize=1024)
def _ecosystem_key(ecosystem: str) -> VersionKey | None:
    cmp = comparator_for(ecosystem)
    return key_for(cmp) if cmp is not None else None


_SEMVER_KEY = key_for(compare_semver)


def evaluate(entry: Mapping[str, Any], version: str, ecosystem: str) -> Hit:
    """Does `entry` (one `affected[]` element) cover `version`?"""
    listed = version in (entry.get("versions") or ())
    fixed: str | None = None
    hit = False
    evaluated = True
    for r in entry.get("ranges") or ():
        kind = r.get("type")
        key = _SEMVER_KEY if kind == "SEMVER" else _ecosystem_key(ecosystem) if kind == "ECOSYSTEM" else None
        if key is None:
            continue
        try:
            vulnerable, fix = _events_hit(r.get("events") or [], version, key)
        except (ValueError, TypeError):
            evaluated = False
            continue
        if vulnerable:
            hit = True
            fixed = fixed or fix
    return Hit(affected=hit or listed, fixed=fixed, evaluated=evaluated)


def normalise_name(ecosystem: str, name: str) -> str:
    return canonicalize_name(name) if ecosystem == "PyPI" else name


_RHEL_STREAM = re.compile(r"^Red Hat:(?:[^:]*:)*?enterprise_linux:(\d+)")


@functools.lru_cache(maxsize=4096)
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


# A range ready to evaluate against version keys. The common two-event shape
# (introduced, then fixed or last_affected) is (0, semver?, start key or None for "0", fixed,
# fixed key, last_affected key), its keys computed once per record; any other shape (or one whose
# versions the order cannot key) is (1, semver?, events), walked by `_events_hit`.
_Range = tuple[Any, ...]
# One `affected[]` entry ready to match: (normalised name, entry, versions, ranges).
_Entry = tuple[str, Mapping[str, Any], frozenset[str], tuple[_Range, ...]]
_Plan = list[tuple[str, Record, list[_Entry]]]

_NO_VERSIONS: frozenset[str] = frozenset()


def _compile_range(r: Mapping[str, Any], eco_key: VersionKey | None) -> _Range | None:
    kind = r.get("type")
    if kind not in ("SEMVER", "ECOSYSTEM"):
        return None
    semver = kind == "SEMVER"
    key = _SEMVER_KEY if semver else eco_key
    if key is None:
        return None
    events = list(r.get("events") or [])
    if len(events) == 2 and "introduced" in events[0] and ("fixed" in events[1] or "last_affected" in events[1]):
        start, fix, last = events[0]["introduced"], events[1].get("fixed"), events[1].get("last_affected")
        try:
            return (
                0,
                semver,
                None if start == "0" else key(start),
                fix,
                None if fix is None else key(fix),
                None if last is None else key(last),
            )
        except ValueError:
            pass
    return (1, semver, events)


def _plan(records: Iterable[Record], eco: str) -> _Plan:
    """The records of one lookup, prepared once: (id, record, its entries in ecosystem `eco`)."""
    eco_key = _ecosystem_key(eco)
    pypi = eco == "PyPI"
    out = []
    for record in records:
        if record.get("withdrawn"):
            continue
        entries: list[_Entry] = []
        for entry in record.get("affected") or ():
            p = entry.get("package") or {}
            entry_eco = p.get("ecosystem")
            if entry_eco != eco and match_ecosystem(str(entry_eco)) != eco:
                continue
            ranges = entry.get("ranges")
            compiled = [c for r in ranges if (c := _compile_range(r, eco_key)) is not None] if ranges else []
            listed = entry.get("versions")
            name = str(p.get("name"))
            entries.append(
                (
                    canonicalize_name(name) if pypi else name,
                    entry,
                    frozenset(listed) if listed else _NO_VERSIONS,
                    tuple(compiled),
                )
            )
        if entries:
            out.append((str(record.get("id")), record, entries))
    return out


def _key_or_none(key: VersionKey | None, version: str) -> Any:
    if key is None:
        return None
    try:
        return key(version)
    except ValueError:
        return None


def match(packages: Iterable[Package], lookup: Lookup) -> list[Match]:
    """Every (record, package) pair where the record's entry for the package covers its version.

    Each lookup's records are prepared once per call (entry names, versions, and the keys of the
    common two-event ranges) and each package's version is keyed once, so evaluating one record
    for one package is a few tuple comparisons. The cyclic garbage collector is paused meanwhile:
    matching makes many small acyclic objects, and each full collection would walk every record
    of the snapshot again (a third of the time over 100,000 advisories, per bench/scanning.py).
    """
    with paused_gc():
        return _match(packages, lookup)


# Prepared plans of record lists that lookups return again (the vulnerability database's per-process
# cache shares one list per key and generation), keyed by the list's identity and kept with it, so a
# rescan prepares only the records it has not seen. Least recently used lists go first once more than
# PLAN_CACHE_RECORDS records are held.
PLAN_CACHE_RECORDS = 100_000
_PLANS: OrderedDict[int, tuple[Sequence[Record], str, _Plan]] = OrderedDict()
_planned = [0]


def _cached_plan(records: Iterable[Record], eco: str) -> _Plan:
    if not isinstance(records, list):
        return _plan(records, eco)
    hit = _PLANS.get(id(records))
    if hit is not None and hit[0] is records and hit[1] == eco:
        _PLANS.move_to_end(id(records))
        return hit[2]
    plan = _plan(records, eco)
    if hit is not None:
        _planned[0] -= len(hit[0])
    _PLANS[id(records)] = (records, eco, plan)
    _planned[0] += len(records)
    while _planned[0] > PLAN_CACHE_RECORDS and len(_PLANS) > 1:
        _, (gone, _eco, _plan_gone) = _PLANS.popitem(last=False)
        _planned[0] -= len(gone)
    return plan


def _match(packages: Iterable[Package], lookup: Lookup) -> list[Match]:
    found: list[Match] = []
    plans: dict[tuple[str, str], _Plan] = {}
    for pkg in packages:
        eco = pkg.ecosystem
        if not eco:
            continue
        eco_key = _ecosystem_key(eco)
        version = pkg.match_version
        by_eco, by_semver = _key_or_none(eco_key, version), _key_or_none(_SEMVER_KEY, version)
        names = {normalise_name(eco, n) for n in (pkg.match_name, pkg.alt_match_name) if n}
        seen: set[str] = set()
        two_names = len(names) > 1  # only then can one record come through two lookups
        for name in sorted(names):
            plan = plans.get((eco, name))
            if plan is None:
                plan = plans[(eco, name)] = _cached_plan(lookup(eco, name), eco)
            for rid, record, entries in plan:
                if two_names:
                    if rid in seen:
                        continue
                    seen.add(rid)
                for entry_name, entry, versions, ranges in entries:
                    if entry_name not in names:
                        continue
                    affected, fixed = False, None
                    for r in ranges:
                        v = by_semver if r[1] else by_eco
                        if v is None:
                            continue
                        try:
                            if r[0] == 0:
                                if r[2] is not None and r[2] > v:
                                    continue
                                if r[4] is not None:
                                    if r[4] > v:
                                        affected, fixed = True, fixed or r[3]
                                        break
                                    continue
                                if r[5] >= v:
                                    affected = True
                                continue
                            vulnerable, fix = _events_hit(r[2], version, _SEMVER_KEY if r[1] else eco_key)  # type: ignore[arg-type]
                        except (ValueError, TypeError):
                            continue
                        if vulnerable:
                            affected, fixed = True, fixed or fix
                    if affected or version in versions:
                        found.append(Match(record, entry, pkg, fixed))
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
