"""ECR's two finding shapes from matches: BASIC `ImageScanFinding` and ENHANCED `EnhancedImageScanFinding`.

Decisions (README "Image scanning"): a BASIC finding is one (vulnerability, installed package) pair,
so `package_name` names the binary package; an ENHANCED finding is one (vulnerability, source
package) and lists every affected binary in `vulnerablePackages`. When two advisories name the same
vulnerability for the same package (a `DEBIAN-CVE-*` and a `DSA-*`), one is kept and the other goes
to `relatedVulnerabilities`. Fields the advisories do not carry (`exploitAvailable`) are omitted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from moorage.scanning.inventory import OS, Package
from moorage.scanning.osv import SEVERITIES, Match, Record, cvss_scores, finding_name, severity, vendor_severity
from moorage.scanning.versions import comparator_for, compare_rpm, dpkg_split, rpm_split

_SOURCE_BY_PREFIX = (
    ("DEBIAN-CVE-", "DEBIAN_CVE"),
    ("DSA-", "DEBIAN_CVE"),
    ("DLA-", "DEBIAN_CVE"),
    ("USN-", "UBUNTU_CVE"),
    ("UBUNTU-CVE-", "UBUNTU_CVE"),
    ("ALPINE-CVE-", "ALPINE_SECDB"),
    ("GHSA-", "GITHUB"),
    ("PYSEC-", "PYPA"),
    ("GO-", "GO_VULNDB"),
    ("CVE-", "NVD"),
)
# Which of two advisories for one vulnerability is kept: the distro's own CVE record first.
_PREFERENCE = ("DEBIAN-CVE-", "UBUNTU-CVE-", "ALPINE-CVE-", "GHSA-", "PYSEC-", "GO-", "CVE-", "DSA-", "DLA-", "USN-")


def _preference(record: Record) -> int:
    rid = str(record["id"])
    for i, prefix in enumerate(_PREFERENCE):
        if rid.startswith(prefix):
            return i
    return len(_PREFERENCE)


def source_of(record: Record) -> str:
    rid = str(record["id"])
    for prefix, source in _SOURCE_BY_PREFIX:
        if rid.startswith(prefix):
            return source
    return rid.split("-", 1)[0]


def uri_of(record: Record, ecosystem: str) -> str:
    name = finding_name(record)
    if name.startswith("CVE-"):
        if ecosystem.startswith("Debian"):
            return f"https://security-tracker.debian.org/tracker/{name}"
        if ecosystem.startswith("Ubuntu"):
            return f"https://ubuntu.com/security/{name}"
        if ecosystem.startswith("Alpine"):
            return f"https://security.alpinelinux.org/vuln/{name}"
    for ref in record.get("references") or []:
        if ref.get("type") == "ADVISORY" and ref.get("url"):
            return str(ref["url"])
    return f"https://osv.dev/vulnerability/{record['id']}"


def description_of(record: Record) -> str:
    return str(record.get("details") or record.get("summary") or "").strip()


def _dedupe(matches: Sequence[Match]) -> list[tuple[Match, list[str]]]:
    """One match per (vulnerability name, binary package); the other advisories' ids are returned beside it."""
    groups: dict[tuple[str, str, str], list[Match]] = {}
    for m in matches:
        groups.setdefault((finding_name(m.record), m.package.name, m.package.file_path), []).append(m)
    out = []
    for group in groups.values():
        group.sort(key=lambda m: _preference(m.record))
        out.append((group[0], [str(m.record["id"]) for m in group[1:]]))
    return out


def _sort_key(name: str, sev: str, pkg: str) -> tuple[int, str, str]:
    return (SEVERITIES.index(sev), name, pkg)


def basic_findings(matches: Sequence[Match]) -> list[dict[str, Any]]:
    out = []
    for m, _related in _dedupe(matches):
        attrs = [
            {"key": "package_name", "value": m.package.name},
            {"key": "package_version", "value": m.package.version},
        ]
        for c in cvss_scores(m.record, m.entry):
            tag = "CVSS2" if c.version.startswith("2") else "CVSS3" if c.version.startswith("3") else "CVSS4"
            attrs += [{"key": f"{tag}_VECTOR", "value": c.vector[:256]}, {"key": f"{tag}_SCORE", "value": str(c.score)}]
        finding: dict[str, Any] = {
            "name": finding_name(m.record),
            "uri": uri_of(m.record, m.package.ecosystem),
            "severity": severity(m.record, m.entry),
            "attributes": attrs[:50],
        }
        desc = description_of(m.record)
        if desc:
            finding["description"] = desc
        out.append(finding)
    out.sort(key=lambda f: _sort_key(f["name"], f["severity"], f["attributes"][0]["value"]))
    return out


def severity_counts(findings: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    return counts


def _version_release(pkg: Package) -> tuple[int, str, str]:
    if pkg.package_manager != OS:
        return 0, pkg.version, ""
    if pkg.ecosystem.startswith(("Debian", "Ubuntu")):
        try:
            return dpkg_split(pkg.version)
        except ValueError:
            return 0, pkg.version, ""
    if comparator_for(pkg.ecosystem) is compare_rpm:
        try:
            epoch, version, release = rpm_split(pkg.version)
        except ValueError:
            return 0, pkg.version, ""
        return epoch, version, release or ""
    if "-r" in pkg.version:
        version, _, release = pkg.version.rpartition("-")
        return 0, version, release
    return 0, pkg.version, ""


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def enhanced_findings(
    matches: Sequence[Match],
    *,
    account: str,
    region: str,
    repository: str,
    image_digest: str,
    image_tags: Sequence[str],
    platform: str,
    architecture: str,
    pushed_at: datetime | None,
    observed_at: datetime,
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[tuple[Match, list[str]]]] = {}
    for m, related in _dedupe(matches):
        groups.setdefault((finding_name(m.record), m.package.ecosystem, m.package.match_name), []).append((m, related))
    out = []
    for (name, _eco, _src), members in groups.items():
        m0 = members[0][0]
        record, entry = m0.record, m0.entry
        sev = severity(record, entry)
        scores = cvss_scores(record, entry)
        packages = []
        for m, _ in members:
            epoch, version, release = _version_release(m.package)
            vp: dict[str, Any] = {
                "name": m.package.name,
                "version": version,
                "epoch": epoch,
                "packageManager": m.package.package_manager,
                "sourceLayerHash": m.package.layer,
            }
            if release:
                vp["release"] = release
            if m.package.arch:
                vp["arch"] = m.package.arch.upper()
            if m.package.package_manager != OS:
                vp["filePath"] = m.package.file_path
            if m.fixed:
                vp["fixedInVersion"] = m.fixed
            packages.append(vp)
        fixable = sum(1 for p in packages if "fixedInVersion" in p)
        others = {str(x) for k in ("aliases", "upstream", "related") for x in record.get(k) or []}
        others |= {r for _, rel in members for r in rel}
        related = sorted(others - {name, str(record["id"])})
        details: dict[str, Any] = {
            "vulnerabilityId": name,
            "source": source_of(record),
            "sourceUrl": uri_of(record, m0.package.ecosystem),
            "vulnerablePackages": packages,
            "referenceUrls": [str(r["url"]) for r in record.get("references") or [] if r.get("url")],
            "relatedVulnerabilities": related,
            "cvss": [
                {"baseScore": c.score, "scoringVector": c.vector, "source": source_of(record), "version": c.version}
                for c in scores
            ],
        }
        vendor = vendor_severity(record, entry)
        if vendor:
            details["vendorSeverity"] = vendor[1]
        for key, field in (("published", "vendorCreatedAt"), ("modified", "vendorUpdatedAt")):
            when = _ts(record.get(key))
            if when:
                details[field] = when
        names = ", ".join(dict.fromkeys(p["name"] for p in packages))
        first_fix = next((p["fixedInVersion"] for p in packages if "fixedInVersion" in p), None)
        text = f"Upgrade {names} to {first_fix}" if first_fix else "None Provided"
        digest_key = "\0".join([repository, image_digest, name, *sorted(p["name"] for p in packages)])
        resource_details: dict[str, Any] = {
            "architecture": architecture,
            "imageHash": image_digest,
            "imageTags": list(image_tags),
            "platform": platform,
            "registry": account,
            "repositoryName": repository,
        }
        if pushed_at:
            resource_details["pushedAt"] = pushed_at
        finding: dict[str, Any] = {
            "awsAccountId": account,
            "description": description_of(record),
            "findingArn": f"arn:aws:ecr:{region}:{account}:finding/{hashlib.sha256(digest_key.encode()).hexdigest()}",
            "firstObservedAt": observed_at,
            "lastObservedAt": observed_at,
            "updatedAt": observed_at,
            "packageVulnerabilityDetails": details,
            "remediation": {"recommendation": {"text": text, "url": uri_of(record, m0.package.ecosystem)}},
            "resources": [
                {
                    "id": f"arn:aws:ecr:{region}:{account}:repository/{repository}/{image_digest}",
                    "type": "AWS_ECR_CONTAINER_IMAGE",
                    "details": {"awsEcrContainerImage": resource_details},
                }
            ],
            "severity": "UNTRIAGED" if sev == "UNDEFINED" else sev,
            "status": "ACTIVE",
            "title": f"{name} - {names}",
            "type": "PACKAGE_VULNERABILITY",
            "fixAvailable": "YES" if fixable == len(packages) else "PARTIAL" if fixable else "NO",
        }
        if scores:
            finding["score"] = scores[0].score
            finding["scoreDetails"] = {
                "cvss": {
                    "adjustments": [],
                    "score": scores[0].score,
                    "scoreSource": source_of(record),
                    "scoringVector": scores[0].vector,
                    "version": scores[0].version,
                }
            }
        out.append(finding)
    order = {s: i for i, s in enumerate((*SEVERITIES, "UNTRIAGED"))}
    out.sort(key=lambda f: (order[f["severity"]], f["packageVulnerabilityDetails"]["vulnerabilityId"], f["title"]))
    return out
