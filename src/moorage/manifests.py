"""Image manifests: parsing and validation, content negotiation, Docker <-> OCI conversion.

Pure functions over bytes; no I/O. Four formats are accepted: Docker schema 2 image manifests and
manifest lists, OCI image manifests and OCI image indexes (image spec v1.1, so `subject` and
`artifactType` are understood). Docker schema 1 and anything else is rejected with
`UnsupportedError`; malformed input is rejected with `ManifestInvalidError`. No other exception
escapes `parse` for bad input.

`MAX_MANIFEST_SIZE` is the limit the front-ends enforce (with `TooLargeError`) before calling
`parse`; `parse` itself does not check the size.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NoReturn, TypeGuard

from moorage.errors import DigestInvalidError, ManifestInvalidError, UnsupportedError
from moorage.model import Descriptor, Digest

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_FOREIGN_LAYER_GZIP",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V1",
    "DOCKER_MANIFEST_V1_SIGNED",
    "DOCKER_MANIFEST_V2",
    "IMAGE_MANIFEST_MEDIA_TYPES",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "MAX_SIZE",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "OCI_NONDISTRIBUTABLE_LAYER",
    "OCI_NONDISTRIBUTABLE_LAYER_GZIP",
    "ParsedManifest",
    "digest_of",
    "docker_to_oci",
    "negotiate",
    "oci_to_docker",
    "parse",
    "parse_accept",
]

# --- media types -------------------------------------------------------------------------------

DOCKER_MANIFEST_V2: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_MANIFEST_V1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar"

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_LAYER: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDISTRIBUTABLE_LAYER_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
FOREIGN_LAYER_TYPES: Final = frozenset(
    {
        DOCKER_FOREIGN_LAYER_GZIP,
        DOCKER_FOREIGN_LAYER,
        OCI_NONDISTRIBUTABLE_LAYER,
        OCI_NONDISTRIBUTABLE_LAYER_GZIP,
    }
)

MANIFEST_MEDIA_TYPES: Final = frozenset({DOCKER_MANIFEST_V2, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX})
INDEX_MEDIA_TYPES: Final = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_MANIFEST_MEDIA_TYPES: Final = frozenset({DOCKER_MANIFEST_V2, OCI_MANIFEST})
_DOCKER_TYPES: Final = frozenset({DOCKER_MANIFEST_V2, DOCKER_MANIFEST_LIST})
_SCHEMA1_TYPES: Final = frozenset({DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED})
_IMAGE_CONFIG_TYPES: Final = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# Content types that say nothing about the manifest format; treated like a missing Content-Type.
_GENERIC_CONTENT_TYPES: Final = frozenset({"application/json", "application/octet-stream"})

MAX_MANIFEST_SIZE: Final = 4 * 1024 * 1024
# Descriptor sizes are int64 (OCI image spec); so is the image size ECR reports, their sum.
MAX_SIZE: Final = 2**63 - 1

# Docker type -> OCI type. The inverse is used for OCI -> Docker.
_DOCKER_TO_OCI: Final[Mapping[str, str]] = MappingProxyType(
    {
        DOCKER_MANIFEST_V2: OCI_MANIFEST,
        DOCKER_MANIFEST_LIST: OCI_INDEX,
        DOCKER_CONFIG: OCI_CONFIG,
        DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
        DOCKER_LAYER: OCI_LAYER,
        DOCKER_FOREIGN_LAYER_GZIP: OCI_NONDISTRIBUTABLE_LAYER_GZIP,
        DOCKER_FOREIGN_LAYER: OCI_NONDISTRIBUTABLE_LAYER,
    }
)
_OCI_TO_DOCKER: Final[Mapping[str, str]] = MappingProxyType({v: k for k, v in _DOCKER_TO_OCI.items()})

_MAX_DEPTH: Final = 32
_EMPTY_ANNOTATIONS: Final[Mapping[str, str]] = MappingProxyType({})

JSONObject = dict[str, object]


# --- parsed form -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    """The validated content of a manifest.

    `media_type` is the effective media type (body `mediaType`, else Content-Type, else inferred).
    `artifact_type` follows the OCI distribution spec's referrers rules: the manifest's
    `artifactType`, else (OCI image manifests only) the config media type when it is not a standard
    image config. For Docker formats `subject`, `artifact_type` and `annotations` are always empty.
    """

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: Mapping[str, str]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def config_media_type(self) -> str | None:
        return None if self.config is None else self.config.media_type

    @property
    def blob_references(self) -> tuple[Digest, ...]:
        """Digests of the config and the layers, deduplicated, in manifest order. Foreign
        (non-distributable) layers are left out: they live elsewhere and need not be pushed."""
        descriptors = ((self.config,) if self.config is not None else ()) + self.layers
        return tuple(dict.fromkeys(d.digest for d in descriptors if d.media_type not in FOREIGN_LAYER_TYPES))

    @property
    def manifest_references(self) -> tuple[Digest, ...]:
        """Digests of the child manifests of an index / list, deduplicated, in order."""
        return tuple(dict.fromkeys(d.digest for d in self.manifests))

    @property
    def image_size(self) -> int:
        """Sum of the layer sizes (ECR's imageSizeInBytes); 0 for an index."""
        return sum(layer.size for layer in self.layers)


# --- decoding helpers --------------------------------------------------------------------------


def _invalid(message: str) -> NoReturn:
    raise ManifestInvalidError(message)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _object_pairs(pairs: list[tuple[str, object]]) -> JSONObject:
    result: JSONObject = {}
    for key, value in pairs:
        if key in result:
            _invalid(f"manifest has a duplicate key {_short(key)}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    _invalid(f"manifest contains the non-standard JSON constant {name}")


def _check_structure(value: object) -> None:
    """Reject absurd nesting and strings no store can hold (lone surrogates from escapes, NUL)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            _invalid(f"manifest is nested deeper than {_MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _invalid("manifest contains a string with an unpaired surrogate escape")
    if "\x00" in text:  # fields such as artifactType are stored as text, which PostgreSQL refuses NUL in
        _invalid("manifest contains a string with a NUL character")


def _decode(body: bytes) -> JSONObject:
    if not body:
        _invalid("manifest body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _invalid(f"manifest is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        value: object = json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _invalid(f"manifest is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        _invalid("manifest is not valid JSON: nested too deeply")
    except ValueError as exc:  # e.g. an integer literal with too many digits
        _invalid(f"manifest is not valid JSON: {exc}")
    if not isinstance(value, dict):
        _invalid(f"manifest must be a JSON object, not {_type_name(value)}")
    _check_structure(value)
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_str(obj: JSONObject, key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        _invalid(f"{path} must be a string, not {_type_name(value)}")
    return value


def _required_str(obj: JSONObject, key: str, path: str) -> str:
    value = _optional_str(obj, key, path)
    if value is None:
        _invalid(f"{path} is required")
    return value


def _string_list(value: object, path: str) -> list[str]:
    if not isinstance(value, list):
        _invalid(f"{path} must be an array of strings, not {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            _invalid(f"{path}[{i}] must be a string, not {_type_name(item)}")
    return value


def _annotations(obj: JSONObject, key: str, path: str) -> Mapping[str, str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        _invalid(f"{path} must be a map of strings, not {_type_name(value)}")
    result: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str):
            _invalid(f"{path}[{_short(k)}] must be a string, not {_type_name(v)}")
        result[k] = v
    return MappingProxyType(result)


def _platform(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        _invalid(f"{path} must be an object, not {_type_name(value)}")
    for key in ("architecture", "os", "os.version", "variant"):
        _optional_str(value, key, f"{path}.{key}")
    for key in ("os.features", "features"):
        if value.get(key) is not None:
            _string_list(value[key], f"{path}.{key}")
    return MappingProxyType(value)


def _descriptor(value: object, path: str) -> Descriptor:
    if not isinstance(value, dict):
        _invalid(f"{path} must be a descriptor object, not {_type_name(value)}")
    media_type = _required_str(value, "mediaType", f"{path}.mediaType")
    if not media_type:
        _invalid(f"{path}.mediaType must not be empty")
    raw_digest = _required_str(value, "digest", f"{path}.digest")
    try:
        digest = Digest.parse(raw_digest)
    except DigestInvalidError as exc:
        _invalid(f"{path}.digest: {exc.message}")
    size = value.get("size")
    if size is None:
        _invalid(f"{path}.size is required")
    if not _is_int(size):
        _invalid(f"{path}.size must be an integer, not {_type_name(size)}")
    if size < 0:
        _invalid(f"{path}.size must not be negative")
    if size > MAX_SIZE:
        _invalid(f"{path}.size must be a 64-bit integer, not {_short(size)}")
    if value.get("urls") is not None:
        _string_list(value["urls"], f"{path}.urls")
    _optional_str(value, "data", f"{path}.data")
    artifact_type = _optional_str(value, "artifactType", f"{path}.artifactType")
    annotations = _annotations(value, "annotations", f"{path}.annotations")
    raw_platform = value.get("platform")
    platform = None if raw_platform is None else _platform(raw_platform, f"{path}.platform")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type or None,
        annotations=annotations,
        platform=platform,
    )


def _descriptor_list(obj: JSONObject, key: str) -> tuple[Descriptor, ...]:
    value = obj.get(key)
    if value is None:
        _invalid(f"manifest is missing the required field {key!r}")
    if not isinstance(value, list):
        _invalid(f"{key} must be an array of descriptors, not {_type_name(value)}")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value))


def _content_media_type(content_type: str | None) -> str | None:
    """The media type of a Content-Type header, lower-cased, without parameters; None if absent."""
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type or media_type in _GENERIC_CONTENT_TYPES:
        return None
    return media_type


def _effective_media_type(obj: JSONObject, content_type: str | None) -> str:
    declared = _optional_str(obj, "mediaType", "mediaType")
    given = _content_media_type(content_type)
    if declared:
        if given is not None and given != declared.lower():
            _invalid(f"manifest media type {_short(declared)} does not match Content-Type {_short(content_type)}")
        return declared
    if given is not None:
        return given
    schema_version = obj.get("schemaVersion")
    if (_is_int(schema_version) and schema_version == 1) or "fsLayers" in obj:
        raise UnsupportedError(_unsupported_message(DOCKER_MANIFEST_V1))
    has_index = "manifests" in obj
    has_config = "config" in obj
    if has_index and not has_config:
        return OCI_INDEX
    if has_config and not has_index:
        return OCI_MANIFEST
    _invalid(
        "cannot determine the manifest media type: the body has no mediaType, no Content-Type was "
        "given, and the content is neither clearly an image manifest nor an index"
    )


def _unsupported_message(media_type: str) -> str:
    if media_type in _SCHEMA1_TYPES:
        return (
            f"Docker schema 1 manifests ({media_type}) are not supported; "
            "push a Docker schema 2 or OCI manifest instead"
        )
    return f"unsupported manifest media type {_short(media_type)}"


def _parse_object(body: bytes, content_type: str | None) -> tuple[JSONObject, ParsedManifest]:
    obj = _decode(body)
    media_type = _effective_media_type(obj, content_type)
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise UnsupportedError(_unsupported_message(media_type))

    schema_version = obj.get("schemaVersion")
    if schema_version is None:
        _invalid("manifest is missing the required field 'schemaVersion'")
    if not _is_int(schema_version) or schema_version != 2:
        _invalid(f"schemaVersion must be 2, not {_short(schema_version)}")

    docker = media_type in _DOCKER_TYPES
    if docker and not obj.get("mediaType"):
        _invalid(f"a Docker schema 2 manifest must declare its mediaType ({media_type})")

    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    if media_type in INDEX_MEDIA_TYPES:
        manifests = _descriptor_list(obj, "manifests")
    else:
        if obj.get("config") is None:
            _invalid("manifest is missing the required field 'config'")
        config = _descriptor(obj["config"], "config")
        layers = _descriptor_list(obj, "layers")

    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = _EMPTY_ANNOTATIONS
    if not docker:  # Docker schema 2 has no subject, artifactType or annotations: ignored like distribution
        if obj.get("subject") is not None:
            subject = _descriptor(obj["subject"], "subject")
        artifact_type = _optional_str(obj, "artifactType", "artifactType") or None
        annotations = _annotations(obj, "annotations", "annotations") or _EMPTY_ANNOTATIONS
        if artifact_type is None and config is not None and config.media_type not in _IMAGE_CONFIG_TYPES:
            artifact_type = config.media_type

    if sum(layer.size for layer in layers) > MAX_SIZE:
        _invalid("the layers' sizes add up to more than a 64-bit integer holds")

    parsed = ParsedManifest(
        media_type=media_type,
        config=config,
        layers=layers,
        manifests=manifests,
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )
    return obj, parsed


# --- public API --------------------------------------------------------------------------------


def parse(body: bytes, content_type: str | None) -> ParsedManifest:
    """Decode and validate a manifest pushed with the given Content-Type.

    The effective media type is the body's `mediaType`, else the Content-Type (parameters ignored;
    `application/json` and `application/octet-stream` count as absent), else it is inferred for OCI
    content (`manifests` -> index, `config` -> image manifest). Raises ManifestInvalidError for
    malformed content and UnsupportedError for formats this registry does not store.
    """
    return _parse_object(body, content_type)[1]


def digest_of(body: bytes) -> Digest:
    """The sha256 digest of a manifest body, as stored and addressed."""
    return Digest("sha256", hashlib.sha256(body).hexdigest())


def parse_accept(headers: Sequence[str]) -> list[str]:
    """Media types from Accept header values, in order, lower-cased, without parameters.

    Each value may hold comma-separated items; items with `q=0` (explicitly not acceptable) are
    dropped, as are empty items and duplicates.
    """
    return list(_parse_accept(tuple(headers)))


@functools.lru_cache(maxsize=512)
def _parse_accept(headers: tuple[str, ...]) -> tuple[str, ...]:
    # Clients send the same few Accept values on every pull: parsed once each.
    result: list[str] = []
    for header in headers:
        for item in header.split(","):
            media_type, *params = item.split(";")
            media_type = media_type.strip().lower()
            if not media_type or _rejected_by_q(params) or media_type in result:
                continue
            result.append(media_type)
    return tuple(result)


def _rejected_by_q(params: list[str]) -> bool:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip()) <= 0
            except ValueError:
                return False
    return False


def negotiate(stored_media_type: str, accept: Sequence[str]) -> bool:
    """Whether a client sending `accept` (raw or parsed Accept values) can take `stored_media_type`.

    True when nothing is listed, when `*/*` or `type/*` covers it, or on an exact match.
    """
    accepted = _parse_accept(tuple(accept))
    if not accepted:
        return True
    stored = stored_media_type.strip().lower()
    main_type = stored.split("/", 1)[0] + "/*"
    return any(item in ("*/*", stored, main_type) for item in accepted)


def _dump(obj: JSONObject) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _converted_descriptor(
    raw: object, media_type: str, *, keep_annotations: bool, keep_artifact_type: bool
) -> JSONObject:
    assert isinstance(raw, dict)  # validated by parse
    out: JSONObject = {"mediaType": media_type, "digest": raw["digest"], "size": raw["size"]}
    if raw.get("urls") is not None:
        out["urls"] = raw["urls"]
    if keep_annotations and raw.get("annotations") is not None:
        out["annotations"] = raw["annotations"]
    if raw.get("platform") is not None:
        out["platform"] = raw["platform"]
    if keep_artifact_type and raw.get("artifactType"):
        out["artifactType"] = raw["artifactType"]
    return out


def _raw_list(obj: JSONObject, key: str) -> list[object]:
    value = obj[key]
    assert isinstance(value, list)  # validated by parse
    return value


def docker_to_oci(body: bytes, media_type: str | None = None) -> bytes:
    """Convert a Docker schema 2 manifest or manifest list to an OCI image manifest or index.

    Docker config / layer / child media types are mapped to their OCI equivalents; other media types
    are carried over unchanged (OCI allows any). Child manifests of a list keep their digests, so
    only their declared media type changes. The output is compact, deterministic JSON.
    `media_type` is the stored media type (the push's Content-Type), if known.
    Raises ManifestInvalidError / UnsupportedError for invalid or non-Docker input.
    """
    obj, parsed = _parse_object(body, media_type)
    if parsed.media_type not in _DOCKER_TYPES:
        raise UnsupportedError(f"cannot convert {parsed.media_type} to OCI: not a Docker schema 2 manifest")

    def convert(raw: object, descriptor: Descriptor) -> JSONObject:
        media_type = _DOCKER_TO_OCI.get(descriptor.media_type, descriptor.media_type)
        return _converted_descriptor(raw, media_type, keep_annotations=True, keep_artifact_type=True)

    out: JSONObject = {"schemaVersion": 2, "mediaType": _DOCKER_TO_OCI[parsed.media_type]}
    if parsed.config is not None:
        out["config"] = convert(obj["config"], parsed.config)
        out["layers"] = [convert(r, d) for r, d in zip(_raw_list(obj, "layers"), parsed.layers, strict=True)]
    else:
        out["manifests"] = [convert(r, d) for r, d in zip(_raw_list(obj, "manifests"), parsed.manifests, strict=True)]
    return _dump(out)


def _to_docker_type(media_type: str) -> str | None:
    if media_type in _OCI_TO_DOCKER:
        return _OCI_TO_DOCKER[media_type]
    if media_type in _DOCKER_TO_OCI:  # already a Docker type
        return media_type
    return None


def oci_to_docker(body: bytes, media_type: str | None = None) -> bytes | None:
    """Convert an OCI image manifest or index to Docker schema 2, or None when Docker cannot express it.

    Impossible: a `subject`, an artifact type (explicit, or a non-image config such as the empty
    config), or any config / layer / child media type without a Docker equivalent (zstd layers,
    arbitrary artifact blobs) or with its own `artifactType`. Annotations are dropped: Docker
    schema 2 has none. `media_type` is the stored media type, if known.
    Raises ManifestInvalidError / UnsupportedError for invalid or non-OCI input.
    """
    obj, parsed = _parse_object(body, media_type)
    if parsed.media_type not in (OCI_MANIFEST, OCI_INDEX):
        raise UnsupportedError(f"cannot convert {parsed.media_type} to Docker: not an OCI manifest")
    if parsed.subject is not None or parsed.artifact_type is not None:
        return None

    def convert(raw: object, descriptor: Descriptor) -> JSONObject | None:
        media_type = _to_docker_type(descriptor.media_type)
        if media_type is None or descriptor.artifact_type is not None:
            return None
        return _converted_descriptor(raw, media_type, keep_annotations=False, keep_artifact_type=False)

    key = "manifests" if parsed.config is None else "layers"
    descriptors = parsed.manifests if parsed.config is None else parsed.layers
    out: JSONObject = {"schemaVersion": 2, "mediaType": _OCI_TO_DOCKER[parsed.media_type]}
    if parsed.config is not None:
        config = convert(obj["config"], parsed.config)
        if config is None:
            return None
        out["config"] = config
    converted: list[object] = []
    for raw, descriptor in zip(_raw_list(obj, key), descriptors, strict=True):
        item = convert(raw, descriptor)
        if item is None:
            return None
        converted.append(item)
    out[key] = converted
    return _dump(out)
