"""Build real tar layers in memory from the scanner fixtures."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def osv_records() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((DATA / "osv").glob("*.json"))]


def ms_package_json(version: str) -> bytes:
    """Debian's real `ms` package.json with its version set (derived; see data/SOURCE.md)."""
    doc = json.loads(fixture("npm/ms-2.1.3.package.json"))
    doc["version"] = version
    return json.dumps(doc, indent=2).encode()


Entry = tuple[str, bytes | None] | tuple[str, str, str]  # (path, data) file; (path, "symlink"|"hardlink", target)


def tar_layer(entries: list[Any], *, compress: bool = True, executable: tuple[str, ...] = ()) -> bytes:
    """A layer tar: (path, bytes) files, (path, None) directories, (path, "symlink"/"hardlink", target) links;
    files named in `executable` get mode 0755."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            info.mtime = 1_700_000_000
            if len(entry) == 3:
                info.type = tarfile.SYMTYPE if entry[1] == "symlink" else tarfile.LNKTYPE
                info.linkname = entry[2]
                tar.addfile(info)
            elif entry[1] is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(entry[1])
                info.mode = 0o755 if entry[0] in executable else 0o644
                tar.addfile(info, io.BytesIO(entry[1]))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def base_layer(status: str = "dpkg/status.bookworm-older-openssl") -> list[Any]:
    return [
        ("usr/lib/os-release", fixture("dpkg/os-release.bookworm")),
        ("etc/os-release", "symlink", "../usr/lib/os-release"),
        ("var/lib/dpkg/status", fixture(status)),
        (
            "usr/lib/python3/dist-packages/requests-2.30.0.dist-info/METADATA",
            fixture("python/requests-2.30.0.METADATA"),
        ),
        ("app/node_modules/ms/package.json", ms_package_json("0.7.0")),
        ("app/node_modules/@types/ms/package.json", fixture("npm/types-ms.package.json")),
        ("app/package.json", fixture("npm/ms-2.1.3.package.json")),
    ]
