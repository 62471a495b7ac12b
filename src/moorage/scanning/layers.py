"""Read one layer once, as a stream, and keep only what an inventory needs.

A layer is opened by its magic bytes (gzip, zstd, plain tar), never by media type, and walked with
`tarfile` in stream mode: nothing is extracted to disk. Selected members are kept in memory (each
under a size cap), together with the layer's whiteouts, opaque directories and the links whose
path is selected. The result is small and can be cached under the layer's digest.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any, cast

# Bump when what is selected or how it is parsed changes: cached inventories are keyed by it.
EXTRACTOR_VERSION = 1

MAX_FILE_BYTES = {"dpkg": 64 << 20, "apk": 64 << 20, "os": 64 << 10, "lang": 1 << 20}
MAX_LAYER_BYTES = 8 << 30

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_SELECTORS: list[tuple[str, re.Pattern[str]]] = [
    ("os", re.compile(r"^(etc|usr/lib)/os-release$")),
    ("dpkg", re.compile(r"^var/lib/dpkg/status$")),
    ("dpkg", re.compile(r"^var/lib/dpkg/status\.d/[^/]+$")),
    ("apk", re.compile(r"^(usr/)?lib/apk/db/installed$")),
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
        raise LayerError("zstd-compressed layers are not supported by this scanner")
    return raw


def read_layer(digest: str, stream: IO[bytes], *, max_layer_bytes: int = MAX_LAYER_BYTES) -> LayerInventory:
    """Stream the layer once and collect its inventory files, whiteouts, opaque dirs and links."""
    inv = LayerInventory(digest=digest)
    source = io.BufferedReader(_Counting(_decompressed(stream), max_layer_bytes), buffer_size=1 << 20)
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
                    inv.files[path] = handle.read()
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise LayerError(f"layer {digest} cannot be read: {exc}") from exc
    return inv
