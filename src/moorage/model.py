"""Value types shared by the services, the stores and both front-ends.

Everything here is a frozen dataclass or a validated string: no I/O, no framework.
A registry is one `(account_id, region)` pair (`RegistryRef`); every repository, image, upload
and setting belongs to exactly one registry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, NewType, TypeVar

from moorage.errors import DigestInvalidError, NameInvalidError, PaginationInvalidError, TagInvalidError

__all__ = [
    "BlobInfo",
    "ByteRange",
    "Descriptor",
    "Digest",
    "Image",
    "ImageStatus",
    "Page",
    "PageRequest",
    "RegistryRef",
    "Repository",
    "RepositoryName",
    "UploadSession",
    "UploadState",
    "parse_repository_name",
    "parse_tag",
]

T = TypeVar("T")

# The OCI distribution spec and botocore's RepositoryName shape share this grammar.
_NAME_STRICT_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX_RE = re.compile(r"[a-f0-9]+")

MAX_NAME_LENGTH = 256

RepositoryName = NewType("RepositoryName", str)
ImageStatus = Literal["ACTIVE", "ARCHIVED", "ACTIVATING"]


def parse_repository_name(value: str) -> RepositoryName:
    """Validate a repository name (2-256 characters, lower-case path components); raise NameInvalidError."""
    if not (2 <= len(value) <= MAX_NAME_LENGTH) or not _NAME_STRICT_RE.fullmatch(value):
        raise NameInvalidError(f"invalid repository name: {value[:300]!r}")
    return RepositoryName(value)


def parse_tag(value: str) -> str:
    """Validate a tag against the OCI tag grammar; raise TagInvalidError."""
    if not _TAG_RE.fullmatch(value):
        raise TagInvalidError(f"invalid tag: {value[:200]!r}")
    return value


@dataclass(frozen=True, slots=True)
class RegistryRef:
    """One registry: an account in a region."""

    account_id: str
    region: str


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest `algorithm:hex`. Only sha256 and sha512 are accepted (OCI image spec)."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: str) -> Digest:
        algorithm, sep, hexpart = value.partition(":")
        length = _ALGORITHMS.get(algorithm)
        if not sep or length is None:
            raise DigestInvalidError(f"invalid digest: {value[:200]!r}")
        if len(hexpart) != length or not _HEX_RE.fullmatch(hexpart):
            raise DigestInvalidError(f"invalid digest: {value[:200]!r}")
        return cls(algorithm, hexpart)

    @staticmethod
    def looks_like(value: str) -> bool:
        """True when `value` has the shape `alg:encoded` of a digest reference (not a tag)."""
        return ":" in value

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range; `end` None means to the end of the blob."""

    start: int
    end: int | None = None

    def resolve(self, size: int) -> tuple[int, int] | None:
        """The concrete inclusive (start, end) inside a blob of `size` bytes, or None if unsatisfiable."""
        if self.start >= size:
            return None
        end = size - 1 if self.end is None else min(self.end, size - 1)
        if end < self.start:
            return None
        return self.start, end


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] | None = None
    platform: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class UploadState:
    """Opaque backend staging state of one upload; returned by the BlobStore, never mutated."""

    upload_id: str
    size: int
    backend: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UploadSession:
    registry: RegistryRef
    repository: RepositoryName
    upload_id: str
    state: UploadState
    created_at: datetime
    updated_at: datetime
    part_sizes: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return self.state.size


@dataclass(frozen=True, slots=True)
class Repository:
    registry: RegistryRef
    name: RepositoryName
    created_at: datetime
    tag_mutability: str = "MUTABLE"
    mutability_exclusions: tuple[str, ...] = ()
    scan_on_push: bool = False
    encryption_type: str = "AES256"
    kms_key: str | None = None
    id: int = 0


@dataclass(frozen=True, slots=True)
class Image:
    """One manifest stored in one repository, with the tags that point at it."""

    registry: RegistryRef
    repository: RepositoryName
    digest: Digest
    media_type: str
    size: int
    pushed_at: datetime
    tags: tuple[str, ...] = ()
    artifact_type: str | None = None
    subject: Digest | None = None
    config_media_type: str | None = None
    image_size: int = 0
    last_pulled_at: datetime | None = None
    body: bytes | None = None
    # "STANDARD" or "ARCHIVE" (ECR storage classes); a restore sets `last_activated_at` to the time it
    # completes, so the image is ACTIVATING until then (see `status`).
    storage_class: str = "STANDARD"
    last_archived_at: datetime | None = None
    last_activated_at: datetime | None = None

    def status(self, now: datetime) -> ImageStatus:
        """ECR `imageStatus` at `now`: ARCHIVED, ACTIVATING (a restore not complete yet) or ACTIVE."""
        if self.storage_class == "ARCHIVE":
            return "ARCHIVED"
        if self.last_activated_at is not None and self.last_activated_at > now:
            return "ACTIVATING"
        return "ACTIVE"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """`limit` items after the key `after` (exclusive), in lexical order."""

    limit: int | None = None
    after: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise PaginationInvalidError("page size must not be negative")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_after: str | None = None
