"""Installed rpm packages from an rpm database: the SQLite `rpmdb.sqlite` (rpm >= 4.16) and the
BerkeleyDB hash `Packages` (older rpm), both read in memory, never through the rpm library.

Each database row is one package's header blob, in the rpm header format (`lib/header.c`): two
big-endian int32 counts, the number of index entries `il` and the size of the data store `dl`, then
`il` entries of four big-endian int32 (tag, type, offset into the store, count), then the store.
Only the tags a scan needs are decoded: NAME, EPOCH, VERSION, RELEASE, ARCH and SOURCERPM.

The SQLite file is opened with `sqlite3`'s `deserialize`; rpm keeps it in WAL mode, so the file's
header is switched to rollback mode in memory and any committed frames of `rpmdb.sqlite-wal` are
applied first. The BerkeleyDB reader walks the hash pages of the file (page size and byte order from
its metadata page) and follows overflow chains, which is where header blobs live.
"""

from __future__ import annotations

import re
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["RpmDbError", "RpmEntry", "parse_header", "read_bdb_packages", "read_sqlite_packages", "source_name"]

_TAG_NAME, _TAG_VERSION, _TAG_RELEASE, _TAG_EPOCH, _TAG_ARCH, _TAG_SOURCERPM = 1000, 1001, 1002, 1003, 1022, 1044
_WANTED = {_TAG_NAME, _TAG_VERSION, _TAG_RELEASE, _TAG_EPOCH, _TAG_ARCH, _TAG_SOURCERPM}
_TYPE_INT32, _TYPE_STRING, _TYPE_I18NSTRING = 4, 6, 9
_MAX_ENTRIES = 1 << 16
_MAX_STORE = 256 << 20


class RpmDbError(ValueError):
    """The database or one of its headers is not in a format this reader knows."""


@dataclass(frozen=True)
class RpmEntry:
    name: str
    epoch: int  # 0 when the header has none
    version: str
    release: str
    arch: str
    sourcerpm: str  # e.g. "openssl-3.0.7-27.el9.src.rpm"; "" for gpg-pubkey pseudo-packages

    @property
    def evr(self) -> str:
        """`[epoch:]version-release`, the form OSV's rpm ecosystems use (epoch 0 left out)."""
        vr = f"{self.version}-{self.release}" if self.release else self.version
        return f"{self.epoch}:{vr}" if self.epoch else vr


_SRPM = re.compile(r"^(.+)-[^-]+-[^-]+\.(?:no)?src\.rpm$")


def source_name(sourcerpm: str) -> str:
    """The source package's name from a SOURCERPM file name (`openssl-3.0.7-27.el9.src.rpm` -> `openssl`)."""
    m = _SRPM.match(sourcerpm)
    return m.group(1) if m else ""


def parse_header(blob: bytes) -> RpmEntry | None:
    """The package a header blob describes, or None for a header without a name and version."""
    if len(blob) < 8:
        raise RpmDbError("rpm header shorter than its counts")
    il, dl = struct.unpack_from(">ii", blob, 0)
    if not (0 < il <= _MAX_ENTRIES) or not (0 <= dl <= _MAX_STORE):
        raise RpmDbError(f"rpm header with implausible counts il={il} dl={dl}")
    store_at = 8 + 16 * il
    if store_at + dl > len(blob):
        raise RpmDbError("rpm header truncated")
    store = blob[store_at : store_at + dl]
    strings: dict[int, str] = {}
    ints: dict[int, int] = {}
    for tag, kind, offset, count in struct.iter_unpack(">iiii", blob[8:store_at]):
        if tag not in _WANTED or not (0 <= offset < dl):
            continue
        if kind in (_TYPE_STRING, _TYPE_I18NSTRING):
            end = store.find(b"\0", offset)
            strings[tag] = store[offset : end if end >= 0 else dl].decode("utf-8", "replace")
        elif kind == _TYPE_INT32 and count >= 1 and offset + 4 <= dl:
            ints[tag] = struct.unpack_from(">i", store, offset)[0]
    name, version = strings.get(_TAG_NAME), strings.get(_TAG_VERSION)
    if not name or not version:
        return None
    return RpmEntry(
        name=name,
        epoch=ints.get(_TAG_EPOCH, 0),
        version=version,
        release=strings.get(_TAG_RELEASE, ""),
        arch=strings.get(_TAG_ARCH, ""),
        sourcerpm=strings.get(_TAG_SOURCERPM, ""),
    )


# --- SQLite --------------------------------------------------------------------------------------

_SQLITE_MAGIC = b"SQLite format 3\0"
_WAL_MAGICS = (0x377F0682, 0x377F0683)


def _apply_wal(db: bytearray, wal: bytes) -> bytearray:
    """The database with the WAL's committed frames written over its pages (checksums not verified;
    frames must carry the WAL header's salts, and only frames up to the last commit count)."""
    if len(wal) < 32:
        return db
    magic, _version, page_size, _ckpt, salt1, salt2 = struct.unpack_from(">IIIIII", wal, 0)
    if magic not in _WAL_MAGICS or page_size < 512 or page_size & (page_size - 1):
        return db
    frames: list[tuple[int, int]] = []  # (page number, offset of its data)
    committed: list[tuple[int, int]] = []
    size_after_commit = 0
    at = 32
    while at + 24 + page_size <= len(wal):
        page, db_size, s1, s2 = struct.unpack_from(">IIII", wal, at)
        if (s1, s2) != (salt1, salt2):
            break
        frames.append((page, at + 24))
        if db_size:
            committed, size_after_commit = list(frames), db_size
        at += 24 + page_size
    if not committed:
        return db
    out = bytearray(db[: size_after_commit * page_size].ljust(size_after_commit * page_size, b"\0"))
    for page, data_at in committed:
        if 1 <= page <= size_after_commit:
            out[(page - 1) * page_size : page * page_size] = wal[data_at : data_at + page_size]
    return out


def read_sqlite_packages(data: bytes, wal: bytes | None = None) -> list[RpmEntry]:
    """Packages of an rpm 4.16+ `rpmdb.sqlite` (table `Packages(hnum, blob)`), with its WAL applied."""
    if not data.startswith(_SQLITE_MAGIC):
        raise RpmDbError("not an SQLite database")
    db = bytearray(data)
    if wal:
        db = _apply_wal(db, wal)
    db[18:20] = b"\x01\x01"  # WAL -> rollback journal: an in-memory database cannot use a WAL
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(bytes(db))
        rows = conn.execute("SELECT blob FROM Packages ORDER BY hnum").fetchall()
    except sqlite3.Error as exc:
        raise RpmDbError(f"rpmdb.sqlite: {exc}") from exc
    finally:
        conn.close()
    return [e for (blob,) in rows if (e := parse_header(bytes(blob))) is not None]


# --- BerkeleyDB hash -----------------------------------------------------------------------------

_HASH_MAGIC = 0x061561
_P_HASH_UNSORTED, _P_HASH = 2, 13
_P_OVERFLOW = 7
_H_KEYDATA, _H_OFFPAGE = 1, 3
_PAGE_HEADER = 26


def _bdb_layout(data: bytes) -> tuple[str, int, int]:
    """(struct byte order, page size, last page number) from the metadata page."""
    if len(data) < 512:
        raise RpmDbError("BerkeleyDB file shorter than its metadata page")
    for order in ("<", ">"):
        magic, _version, page_size = struct.unpack_from(order + "III", data, 12)
        if magic == _HASH_MAGIC:
            last = struct.unpack_from(order + "I", data, 32)[0]
            if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
                raise RpmDbError(f"BerkeleyDB page size {page_size}")
            return order, page_size, last
    raise RpmDbError("not a BerkeleyDB hash database")


def _overflow(data: bytes, order: str, page_size: int, first: int, total: int) -> bytes:
    """The `total` bytes of an overflow chain starting at page `first`."""
    out = bytearray()
    page, seen = first, 0
    max_pages = len(data) // page_size
    while page and len(out) < total:
        seen += 1
        if page >= max_pages or seen > max_pages:
            raise RpmDbError("BerkeleyDB overflow chain leaves the file")
        at = page * page_size
        next_page = struct.unpack_from(order + "I", data, at + 16)[0]
        used = struct.unpack_from(order + "H", data, at + 22)[0]  # hf_offset: bytes used on the page
        if data[at + 25] != _P_OVERFLOW:
            raise RpmDbError(f"BerkeleyDB page {page} is not an overflow page")
        out += data[at + _PAGE_HEADER : at + _PAGE_HEADER + used]
        page = next_page
    return bytes(out[:total])


def _bdb_values(data: bytes) -> Iterator[bytes]:
    order, page_size, last = _bdb_layout(data)
    pages = min(last + 1, len(data) // page_size)
    for page in range(1, pages):
        at = page * page_size
        if data[at + 25] not in (_P_HASH, _P_HASH_UNSORTED):
            continue
        entries = struct.unpack_from(order + "H", data, at + 20)[0]
        if entries > (page_size - _PAGE_HEADER) // 2:
            raise RpmDbError(f"BerkeleyDB page {page} has {entries} entries")
        offsets = struct.unpack_from(order + f"{entries}H", data, at + _PAGE_HEADER)
        for i in range(1, entries, 2):  # pairs: key, then its value
            item = at + offsets[i]
            kind = data[item]
            if kind == _H_OFFPAGE:
                first, total = struct.unpack_from(order + "II", data, item + 4)
                yield _overflow(data, order, page_size, first, total)
            elif kind == _H_KEYDATA:
                end = at + (offsets[i - 1] if i else page_size)
                yield data[item + 1 : end]


def read_bdb_packages(data: bytes) -> list[RpmEntry]:
    """Packages of a BerkeleyDB `Packages` file (rpm before 4.16: CentOS 5-8, RHEL/UBI 8)."""
    out = []
    for value in _bdb_values(data):
        if len(value) < 8:
            continue  # the header-count record under key 0
        entry = parse_header(value)
        if entry is not None:
            out.append(entry)
    return out
