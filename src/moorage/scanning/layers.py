"""Read one layer once, as a stream, and keep only what an inventory needs.

A layer is opened by its magic bytes (gzip, zstd, plain tar), never by media type, and walked with
`tarfile` in stream mode: nothing is extracted to disk. Selected members are kept in memory (each
under a size cap), together with the layer's whiteouts, opaque directories and the links whose
path is selected. The result is small and can be cached under the layer's digest.

Two kinds of selected file are reduced to text while the layer is read, so that what is kept (and
cached) stays small: an rpm database (SQLite with its WAL, or BerkeleyDB) becomes one line per
package (`RPMDB_MARKER`), and an executable ELF file (size-bounded) with Go build information
becomes that information (`GO_MARKER`); an executable without it is not kept.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
import re
import struct
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any, cast

import zstandard

from moorage.scanning import gobinary
from moorage.scanning.rpmdb import RpmDbError, read_bdb_packages, read_sqlite_packages

# Bump when what is selected or how it is parsed changes: cached inventories are keyed by it.
EXTRACTOR_VERSION = 2

MAX_FILE_BYTES = {"dpkg": 64 << 20, "apk": 64 << 20, "os": 64 << 10, "lang": 1 << 20, "rpm": 512 << 20}
MAX_LAYER_BYTES = 8 << 30
MAX_GO_BINARY_BYTES = 256 << 20  # executables larger than this are not searched for Go build info
MIN_GO_BINARY_BYTES = 64 << 10

RPMDB_MARKER = b"#moorage-rpmdb v1\n"  # then name, epoch, version, release, arch, sourcerpm per line
GO_MARKER = b"#moorage-go-buildinfo v1\n"  # then the Go version line and the module information

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_SELECTORS: list[tuple[str, re.Pattern[str]]] = [
    ("os", re.compile(r"^(etc|usr/lib)/os-release$")),
    ("dpkg", re.compile(r"^var/lib/dpkg/status$")),
    ("dpkg", re.compile(r"^var/lib/dpkg/status\.d/[^/]+$")),
    ("apk", re.compile(r"^(usr/)?lib/apk/db/installed$")),
    ("rpm", re.compile(r"^(var/lib/rpm|usr/lib/sysimage/rpm)/(rpmdb\.sqlite|rpmdb\.sqlite-wal|Packages)$")),
    ("lang", re.compile(r"^(.*/)?[^/]+\.dist-info/METADATA$")),
    ("lang", re.compile(r"^(.*/)?[^/]+\.egg-info/PKG-INFO$")),
    ("lang", re.compile(r"^(.*/)?node_modules/(@[^/]+/)?[^/@][^/]*/package\.json$")),
]


class LayerError(Exception):
    """The layer cannot be read (corrupt, unsupported compression, too large)."""


def kind_of(path: str) -> str | None:
    """Which inventory source a normalised path belongs to, or None when it is not selected."""
    for kind, pattern in _SELECTORS:
        if pattern.match(path):
            return kind
    return None


def normalise(name: str) -> str | None:
    """A tar member name as a relative path without `./` or `/`; None for anything escaping the root."""
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    if not name or name == ".":
        return ""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/".join(parts)


@dataclass
class LayerInventory:
    """What one layer contributes: selected files, deletions, links."""

    digest: str
    files: dict[str, bytes] = field(default_factory=dict)
    whiteouts: set[str] = field(default_factory=set)
    opaque_dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)  # selected path -> target (normalised, absolute from root)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "files": {k: v.decode("utf-8", "replace") for k, v in self.files.items()},
            "whiteouts": sorted(self.whiteouts),
            "opaque_dirs": sorted(self.opaque_dirs),
            "links": self.links,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerInventory:
        return cls(
            digest=data["digest"],
            files={k: v.encode() for k, v in data["files"].items()},
            whiteouts=set(data["whiteouts"]),
            opaque_dirs=set(data["opaque_dirs"]),
            links=dict(data["links"]),
        )

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()


class _Prefixed(io.RawIOBase):
    """A readable stream that first yields `head`, then the rest of `raw`."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b)
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(view))
        view[: len(data)] = data
        return len(data)


class _Counting(io.RawIOBase):
    """Counts decompressed bytes, refusing more than `limit` (decompression bombs)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        self.count += len(data)
        if self.count > self._limit:
            raise LayerError(f"layer exceeds {self._limit} uncompressed bytes")
        memoryview(b)[: len(data)] = data
        return len(data)


def _decompressed(stream: IO[bytes]) -> IO[bytes]:
    head = stream.read(4)
    raw = io.BufferedReader(_Prefixed(head, stream))
    if head.startswith(_GZIP_MAGIC):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if head.startswith(_ZSTD_MAGIC):
        # One stream of one or more frames; the window is bounded by the library's default (128 MiB).
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        return cast(IO[bytes], reader)
    return raw


def _rpm_text(entries: list[Any]) -> bytes:
    lines = [
        "\t".join((e.name, str(e.epoch), e.version, e.release, e.arch, e.sourcerpm)).replace("\n", " ") for e in entries
    ]
    return RPMDB_MARKER + "".join(line + "\n" for line in lines).encode()


def _reduce_rpm(inv: LayerInventory, raw: dict[str, bytes]) -> None:
    """The layer's rpm databases as package lines (a WAL is applied to the database beside it)."""
    for path, data in raw.items():
        if path.endswith("-wal"):
            continue
        try:
            if path.endswith("rpmdb.sqlite"):
                entries = read_sqlite_packages(data, raw.get(path + "-wal"))
            else:
                entries = read_bdb_packages(data)
        except (RpmDbError, ValueError, IndexError, struct.error) as exc:  # a corrupt or truncated file
            raise LayerError(f"rpm database {path} in layer {inv.digest} cannot be read: {exc}") from exc
        inv.files[path] = _rpm_text(entries)


def _go_candidate(member: tarfile.TarInfo) -> bool:
    return member.isreg() and bool(member.mode & 0o111) and MIN_GO_BINARY_BYTES <= member.size <= MAX_GO_BINARY_BYTES


def _go_buildinfo(handle: IO[bytes]) -> bytes | None:
    head = handle.read(4)
    if head != gobinary.ELF_MAGIC:
        return None
    found = gobinary.read_buildinfo(handle.read, consumed=len(head))
    if found is None:
        return None
    version, modinfo = found
    return GO_MARKER + f"{version}\n{modinfo}".encode()


def read_layer(digest: str, stream: IO[bytes], *, max_layer_bytes: int = MAX_LAYER_BYTES) -> LayerInventory:
    """Stream the layer once and collect its inventory files, whiteouts, opaque dirs and links."""
    inv = LayerInventory(digest=digest)
    source = io.BufferedReader(_Counting(_decompressed(stream), max_layer_bytes), buffer_size=1 << 20)
    rpm_raw: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for member in tar:
                path = normalise(member.name)
                if not path:
                    continue
                directory, base = posixpath.split(path)
                if base == ".wh..wh..opq":
                    inv.opaque_dirs.add(directory)
                    continue
                if base.startswith(".wh."):
                    inv.whiteouts.add(posixpath.join(directory, base[4:]))
                    continue
                kind = kind_of(path)
                if kind is None:
                    if _go_candidate(member):
                        handle = tar.extractfile(member)
                        info = _go_buildinfo(handle) if handle is not None else None
                        if info is not None:
                            inv.files[path] = info
                    continue
                if member.issym():
                    target = member.linkname
                    joined = target if target.startswith("/") else posixpath.join(directory, target)
                    resolved = normalise(posixpath.normpath("/" + joined))
                    if resolved:
                        inv.links[path] = resolved
                    continue
                if member.islnk():
                    resolved = normalise(member.linkname)
                    if resolved:
                        if resolved in inv.files:
                            inv.files[path] = inv.files[resolved]
                        else:
                            inv.links[path] = resolved
                    continue
                if not member.isreg():
                    continue
                if member.size > MAX_FILE_BYTES[kind]:
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    if kind == "rpm":
                        rpm_raw[path] = handle.read()
                    else:
                        inv.files[path] = handle.read()
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile, zstandard.ZstdError) as exc:
        raise LayerError(f"layer {digest} cannot be read: {exc}") from exc
    _reduce_rpm(inv, rpm_raw)
    return inv
