"""Go binaries' build information: the module path and versions of the main module and its
dependencies, and the Go version (the standard library), as `go version -m` prints them.

The Go linker (1.18 and later) writes a 32-byte header at a 16-byte aligned offset of the
`.go.buildinfo` section: the magic `\\xff Go buildinf:`, the pointer size, a flags byte whose bit 1
says the two strings follow inline, then the Go version and the module information, each a
uvarint length and its bytes. The module information is framed by 16 sentinel bytes on each side
and holds tab-separated lines: `path`, `mod` (the main module), `dep`, and `=>` (a replacement of the
line before). Older binaries keep pointers instead of inline strings; they are not read.

The file is searched as a stream (one pass, fixed memory), so a layer is still read only once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ELF_MAGIC", "MAGIC", "GoModule", "find_buildinfo", "go_semver", "parse_buildinfo", "read_buildinfo"]

MAGIC = b"\xff Go buildinf:"
ELF_MAGIC = b"\x7fELF"
_ALIGN = 16
_HEADER = 32
_FLAG_INLINE = 0x2
_MAX_STRINGS = 1 << 20  # the version and module information together
_CHUNK = 1 << 20


@dataclass(frozen=True)
class GoModule:
    path: str
    version: str  # as the binary has it: v1.2.3, a pseudo-version, or "(devel)"


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise ValueError("truncated uvarint")


def find_buildinfo(data: bytes) -> tuple[str, str] | None:
    """(Go version, module information) from bytes that start at the build-info magic."""
    if not data.startswith(MAGIC) or len(data) < _HEADER:
        return None
    if not data[15] & _FLAG_INLINE:
        return None  # Go < 1.18: pointers into the data segment
    try:
        n, at = _uvarint(data, _HEADER)
        version = data[at : at + n]
        n2, at2 = _uvarint(data, at + n)
        mod = data[at2 : at2 + n2]
    except ValueError:
        return None
    if len(version) != n or len(mod) != n2:
        return None
    mod = mod[16:-16] if len(mod) >= 33 and mod[-17] == 10 else b""
    return version.decode("utf-8", "replace"), mod.decode("utf-8", "replace")


def read_buildinfo(read: Callable[[int], bytes], *, consumed: int = 0) -> tuple[str, str] | None:
    """Search a stream (its `read`, `consumed` bytes already taken from it) for the build info."""
    tail = b""
    offset = consumed  # file offset of tail[0]
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            return None
        buf = tail + chunk
        start = 0
        while True:
            i = buf.find(MAGIC, start)
            if i < 0:
                break
            if (offset + i) % _ALIGN == 0:
                need = i + _HEADER + _MAX_STRINGS
                while len(buf) < need:
                    more = read(min(_CHUNK, need - len(buf)))
                    if not more:
                        break
                    buf += more
                return find_buildinfo(buf[i:need])
            start = i + 1
        keep = len(MAGIC) - 1
        offset += len(buf) - keep
        tail = buf[-keep:]


_GO_VERSION = re.compile(r"^go(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(rc|beta)(\d+))?$")


def go_semver(version: str) -> str | None:
    """The Go toolchain version as OSV's `stdlib` package spells it: `go1.21` -> `1.21.0`,
    `go1.22rc1` -> `1.22.0-rc.1`; None for a development build."""
    m = _GO_VERSION.match(version.split()[0] if version.split() else "")
    if not m:
        return None
    major, minor, patch, pre, pre_n = m.groups()
    out = f"{major}.{minor or 0}.{patch or 0}"
    return f"{out}-{pre}.{pre_n}" if pre else out


def parse_buildinfo(version: str, modinfo: str) -> tuple[str, GoModule | None, list[GoModule]]:
    """(Go version, main module or None, dependencies with replacements applied) of a binary."""
    main: GoModule | None = None
    deps: list[GoModule] = []
    last: str | None = None  # which list the previous mod/dep line went to
    for line in modinfo.splitlines():
        parts = line.split("\t")
        kind = parts[0]
        if kind in ("mod", "dep") and len(parts) >= 3:
            module = GoModule(parts[1], parts[2])
            if kind == "mod":
                main, last = module, "mod"
            else:
                deps.append(module)
                last = "dep"
        elif kind == "=>" and len(parts) >= 2 and last:
            # A replacement: a module path and version, or a local directory (no version).
            replaced = GoModule(parts[1], parts[2]) if len(parts) >= 3 and parts[2] else None
            if last == "mod":
                main = replaced
            elif replaced is None:
                deps.pop()
            else:
                deps[-1] = replaced
            last = None
    return version, main, deps
