"""Package inventories from the squashed view: os-release, dpkg, apk, rpm, Python and npm metadata,
Go binaries' build information."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass
from email.parser import HeaderParser
from typing import Any

from packaging.utils import canonicalize_name

from moorage.scanning.gcpause import paused_gc
from moorage.scanning.gobinary import go_semver, parse_buildinfo
from moorage.scanning.layers import GO_MARKER, RPMDB_MARKER
from moorage.scanning.rpmdb import source_name
from moorage.scanning.squash import Squashed

OS, PYTHONPKG, NODEPKG, GOBINARY = "OS", "PYTHONPKG", "NODEPKG", "GOBINARY"


@dataclass(frozen=True)
class Distro:
    id: str
    version_id: str
    pretty_name: str
    ecosystem: str | None  # the OSV ecosystem, None when Moorage does not support the release

    @property
    def platform(self) -> str:
        """ECR's `platform` spelling, e.g. DEBIAN_12."""
        return f"{self.id}_{self.version_id}".upper().replace(".", "_").replace("-", "_")


@dataclass(frozen=True)
class Package:
    name: str  # binary / installed name
    version: str  # installed version string
    ecosystem: str  # OSV ecosystem to match in (`Debian:12`, `PyPI`, `npm`)
    match_name: str  # the name advisories use (dpkg/apk source package, PEP 503 name)
    match_version: str  # the version to compare (dpkg source version when `Source:` gives one)
    package_manager: str  # OS / PYTHONPKG / NODEPKG
    arch: str = ""
    file_path: str = ""  # the metadata file (language packages) or the package database
    layer: str = ""  # sourceLayerHash: the layer that introduced this version
    # A second name advisories may use: rpm ecosystems differ (or vary) between binary and source names.
    alt_match_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Inventory:
    distro: Distro | None
    packages: list[Package]

    @property
    def supported(self) -> bool:
        return (self.distro is not None and self.distro.ecosystem is not None) or any(
            p.package_manager != OS for p in self.packages
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "distro": asdict(self.distro) if self.distro else None,
            "packages": [p.to_json() for p in self.packages],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        distro = Distro(**data["distro"]) if data.get("distro") else None
        return cls(distro=distro, packages=[Package(**p) for p in data["packages"]])


# --- os-release ------------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        fields[key.strip()] = parts[0] if parts else ""
    return fields


def distro_from_os_release(text: str) -> Distro:
    f = parse_os_release(text)
    ident = f.get("ID", "").lower()
    version_id = f.get("VERSION_ID", "")
    ecosystem: str | None = None
    if ident == "debian" and re.fullmatch(r"\d+(\.\d+)*", version_id):
        ecosystem = f"Debian:{version_id.split('.')[0]}"
    elif ident == "ubuntu" and re.fullmatch(r"\d+\.\d+", version_id):
        lts = "LTS" in f.get("VERSION", "")
        ecosystem = f"Ubuntu:{version_id}:LTS" if lts else f"Ubuntu:{version_id}"
    elif ident == "alpine" and re.fullmatch(r"\d+\.\d+(\.\d+)*", version_id):
        major, minor = version_id.split(".")[:2]
        ecosystem = f"Alpine:v{major}.{minor}"
    else:
        ecosystem = rpm_ecosystem(ident, version_id)
    return Distro(id=ident, version_id=version_id, pretty_name=f.get("PRETTY_NAME", ""), ecosystem=ecosystem)


def rpm_ecosystem(ident: str, version_id: str) -> str | None:
    """The OSV ecosystem of an rpm-based release, as OSV names them (`Rocky Linux:9`, `AlmaLinux:8`,
    `openSUSE:Leap 15.5`, `openSUSE:Tumbleweed`, `SUSE:Linux Enterprise Server 15 SP5`).

    Red Hat's OSV ecosystem names a CPE product stream (`Red Hat:enterprise_linux:9::baseos`) that an
    image does not record; RHEL 9 images match every stream of `enterprise_linux:9`, keyed here
    as `Red Hat:9` (see `osv.match_ecosystem`).
    """
    major = version_id.split(".")[0] if re.fullmatch(r"\d+(\.\d+)*", version_id) else ""
    if ident == "rocky" and major:
        return f"Rocky Linux:{major}"
    if ident == "almalinux" and major:
        return f"AlmaLinux:{major}"
    if ident == "rhel" and major:
        return f"Red Hat:{major}"
    if ident == "opensuse-leap" and re.fullmatch(r"\d+\.\d+", version_id):
        return f"openSUSE:Leap {version_id}"
    if ident == "opensuse-tumbleweed":
        return "openSUSE:Tumbleweed"
    if ident == "sles" and major:
        minor = version_id.split(".")[1] if "." in version_id else "0"
        return f"SUSE:Linux Enterprise Server {major}" + (f" SP{minor}" if minor != "0" else "")
    return None


# Rocky Linux and AlmaLinux advisories name source packages; SUSE's and Red Hat's binary ones.
_RPM_BY_SOURCE = ("Rocky Linux:", "AlmaLinux:")


# --- rpm -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RpmPackage:
    name: str
    epoch: int
    version: str
    release: str
    arch: str
    sourcerpm: str

    @property
    def evr(self) -> str:
        vr = f"{self.version}-{self.release}" if self.release else self.version
        return f"{self.epoch}:{vr}" if self.epoch else vr


def parse_rpm_text(data: bytes) -> list[RpmPackage]:
    """The package lines the layer reader made of an rpm database."""
    out = []
    for line in data[len(RPMDB_MARKER) :].decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 6 and parts[0] != "gpg-pubkey":  # keys imported into rpm, not packages
            name, epoch, version, release, arch, srpm = parts
            out.append(RpmPackage(name, int(epoch) if epoch.isdigit() else 0, version, release, arch, srpm))
    return out


# --- dpkg ------------------------------------------------------------------------------------


def _stanzas(text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                out.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t":
            if last:
                current[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip()
            current[last] = value.strip()
    if current:
        out.append(current)
    return out


_SOURCE = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")


@dataclass(frozen=True)
class DpkgEntry:
    name: str
    version: str
    arch: str
    source: str
    source_version: str


def parse_dpkg_status(text: str, *, require_status: bool = True) -> list[DpkgEntry]:
    """Installed packages of a dpkg status file (or a distroless `status.d/` entry, which has no Status)."""
    entries: list[DpkgEntry] = []
    for s in _stanzas(text):
        name, version = s.get("Package"), s.get("Version")
        if not name or not version:
            continue
        status = s.get("Status")
        if status is not None or require_status:
            words = (status or "").split()
            if len(words) != 3 or words[1] != "ok" or words[2] != "installed":
                continue
        source, source_version = name, version
        m = _SOURCE.match(s.get("Source", "").strip())
        if m:
            source = m.group(1)
            source_version = m.group(2) or version
        entries.append(DpkgEntry(name, version, s.get("Architecture", ""), source, source_version))
    return entries


# --- apk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApkEntry:
    name: str
    version: str
    arch: str
    origin: str


def parse_apk_installed(text: str) -> list[ApkEntry]:
    entries: list[ApkEntry] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:].strip()
        if "P" in fields and "V" in fields:
            entries.append(ApkEntry(fields["P"], fields["V"], fields.get("A", ""), fields.get("o", fields["P"])))
    return entries


# --- language packages -----------------------------------------------------------------------


def parse_python_metadata(data: bytes) -> tuple[str, str] | None:
    msg = HeaderParser().parsestr(data.decode("utf-8", "replace"))
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return None
    return str(name).strip(), str(version).strip()


def parse_package_json(data: bytes) -> tuple[str, str] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    return name, version.strip().lstrip("v=")


def _node_name_from_path(path: str) -> str:
    parts = path.split("/")
    i = len(parts) - 2
    return f"{parts[i - 1]}/{parts[i]}" if parts[i - 1].startswith("@") else parts[i]


# --- Go binaries -----------------------------------------------------------------------------


def _go_packages(path: str, data: bytes, layer: str) -> list[Package]:
    """The main module (unless a development build), each dependency, and `stdlib` at the Go version."""
    text = data[len(GO_MARKER) :].decode("utf-8", "replace")
    version_line, _, modinfo = text.partition("\n")
    go_version, main, deps = parse_buildinfo(version_line, modinfo)
    out = []
    for module in ([main] if main else []) + deps:
        if module.version in ("", "(devel)"):
            continue
        plain = module.version[1:] if module.version.startswith("v") else module.version
        out.append(Package(module.path, module.version, "Go", module.path, plain, GOBINARY, "", path, layer))
    stdlib = go_semver(go_version)
    if stdlib:
        out.append(Package("stdlib", go_version, "Go", "stdlib", stdlib, GOBINARY, "", path, layer))
    return out


# --- the whole inventory ---------------------------------------------------------------------


def build_inventory(view: Squashed) -> Inventory:
    with paused_gc():
        return _build_inventory(view)


def _build_inventory(view: Squashed) -> Inventory:
    files = view.files
    distro = None
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        if candidate in files:
            distro = distro_from_os_release(files[candidate].decode("utf-8", "replace"))
            break
    packages: list[Package] = []
    os_eco = distro.ecosystem if distro else None

    dpkg_sets: dict[bytes, set[tuple[str, str]]] = {}
    apk_sets: dict[bytes, set[tuple[str, str]]] = {}
    rpm_sets: dict[bytes, set[tuple[str, str]]] = {}

    def rpm_set(content: bytes) -> set[tuple[str, str]]:
        if content not in rpm_sets:
            rpm_sets[content] = (
                {(x.name, x.evr) for x in parse_rpm_text(content)} if content.startswith(RPMDB_MARKER) else set()
            )
        return rpm_sets[content]

    def dpkg_set(content: bytes) -> set[tuple[str, str]]:
        if content not in dpkg_sets:
            text = content.decode("utf-8", "replace")
            dpkg_sets[content] = {(x.name, x.version) for x in parse_dpkg_status(text, require_status=False)}
        return dpkg_sets[content]

    def apk_set(content: bytes) -> set[tuple[str, str]]:
        if content not in apk_sets:
            text = content.decode("utf-8", "replace")
            apk_sets[content] = {(x.name, x.version) for x in parse_apk_installed(text)}
        return apk_sets[content]

    for path in sorted(files):
        data = files[path]
        if data.startswith(RPMDB_MARKER):
            by_source = (os_eco or "").startswith(_RPM_BY_SOURCE)
            for r in parse_rpm_text(data):
                key = (r.name, r.evr)
                layer = view.origin_layer(path, lambda c, key=key: key in rpm_set(c))  # type: ignore[misc]
                source = source_name(r.sourcerpm) or r.name
                primary, alt = (source, r.name) if by_source else (r.name, source)
                packages.append(
                    Package(
                        r.name,
                        r.evr,
                        os_eco or "",
                        primary,
                        r.evr,
                        OS,
                        r.arch,
                        path,
                        layer,
                        alt if alt != primary else "",
                    )
                )
        elif data.startswith(GO_MARKER):
            packages.extend(_go_packages(path, data, view.origin_layer(path, lambda c, same=data: c == same)))  # type: ignore[misc]
        elif path == "var/lib/dpkg/status" or path.startswith("var/lib/dpkg/status.d/"):
            text = data.decode("utf-8", "replace")
            for e in parse_dpkg_status(text, require_status=path == "var/lib/dpkg/status"):
                key = (e.name, e.version)
                layer = view.origin_layer(path, lambda c, key=key: key in dpkg_set(c))  # type: ignore[misc]
                packages.append(
                    Package(e.name, e.version, os_eco or "", e.source, e.source_version, OS, e.arch, path, layer)
                )
        elif path.endswith("apk/db/installed"):
            for a in parse_apk_installed(data.decode("utf-8", "replace")):
                key = (a.name, a.version)
                layer = view.origin_layer(path, lambda c, key=key: key in apk_set(c))  # type: ignore[misc]
                packages.append(Package(a.name, a.version, os_eco or "", a.origin, a.version, OS, a.arch, path, layer))
        elif path.endswith(("/METADATA", "/PKG-INFO")):
            got = parse_python_metadata(data)
            if got:
                name, version = got
                layer = view.origin_layer(path, lambda c, same=data: c == same)  # type: ignore[misc]
                packages.append(
                    Package(name, version, "PyPI", canonicalize_name(name), version, PYTHONPKG, "", path, layer)
                )
        elif path.endswith("/package.json"):
            got = parse_package_json(data)
            if got and got[0] == _node_name_from_path(path):
                name, version = got
                layer = view.origin_layer(path, lambda c, same=data: c == same)  # type: ignore[misc]
                packages.append(Package(name, version, "npm", name, version, NODEPKG, "", path, layer))
    return Inventory(distro=distro, packages=packages)
