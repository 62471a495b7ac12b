"""Unit tests for moorage.manifests: parsing, validation, negotiation, conversion, garbage input."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from moorage import manifests as m
from moorage.errors import ManifestInvalidError, UnsupportedError
from moorage.model import Digest

JSON = dict[str, object]


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


def desc(media_type: str, n: int, size: int, **extra: object) -> JSON:
    return {"mediaType": media_type, "digest": dg(n), "size": size, **extra}


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def docker_v2() -> JSON:
    # Docker's own key order (mediaType, size, digest) on purpose.
    return {
        "schemaVersion": 2,
        "mediaType": m.DOCKER_MANIFEST_V2,
        "config": {"mediaType": m.DOCKER_CONFIG, "size": 1470, "digest": dg(1)},
        "layers": [
            {"mediaType": m.DOCKER_LAYER_GZIP, "size": 100, "digest": dg(2)},
            {"mediaType": m.DOCKER_LAYER_GZIP, "size": 200, "digest": dg(3)},
            {
                "mediaType": m.DOCKER_FOREIGN_LAYER_GZIP,
                "size": 300,
                "digest": dg(4),
                "urls": ["https://example.com/layer.tar.gz"],
            },
            {"mediaType": m.DOCKER_LAYER, "size": 5, "digest": dg(2)},
        ],
    }


def docker_list() -> JSON:
    return {
        "schemaVersion": 2,
        "mediaType": m.DOCKER_MANIFEST_LIST,
        "manifests": [
            desc(m.DOCKER_MANIFEST_V2, 10, 528, platform={"architecture": "amd64", "os": "linux"}),
            desc(
                m.DOCKER_MANIFEST_V2,
                11,
                528,
                platform={"architecture": "arm", "os": "linux", "variant": "v7", "features": ["sse4"]},
            ),
        ],
    }


def oci_manifest() -> JSON:
    return {
        "schemaVersion": 2,
        "mediaType": m.OCI_MANIFEST,
        "config": desc(m.OCI_CONFIG, 1, 1470),
        "layers": [desc(m.OCI_LAYER_GZIP, 2, 100), desc(m.OCI_LAYER_GZIP, 3, 200)],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }


def oci_index() -> JSON:
    return {
        "schemaVersion": 2,
        "mediaType": m.OCI_INDEX,
        "manifests": [
            desc(m.OCI_MANIFEST, 10, 528, platform={"architecture": "amd64", "os": "linux"}),
            desc(m.OCI_MANIFEST, 11, 528, platform={"architecture": "arm64", "os": "linux"}),
            desc(m.OCI_MANIFEST, 10, 528, platform={"architecture": "amd64", "os": "linux"}),
        ],
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
    }


def oci_artifact() -> JSON:
    return {
        "schemaVersion": 2,
        "mediaType": m.OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": desc(m.OCI_EMPTY, 0x44, 2),
        "layers": [desc("application/spdx+json", 5, 1234)],
        "subject": desc(m.OCI_MANIFEST, 9, 700),
        "annotations": {"org.example.kind": "sbom"},
    }


def oci_empty_config_no_artifact_type() -> JSON:
    return {
        "schemaVersion": 2,
        "mediaType": m.OCI_MANIFEST,
        "config": desc(m.OCI_EMPTY, 0x44, 2),
        "layers": [desc(m.OCI_EMPTY, 0x44, 2)],
    }


def oci_helm_chart() -> JSON:
    return {
        "schemaVersion": 2,
        "config": desc("application/vnd.cncf.helm.config.v1+json", 6, 150),
        "layers": [desc("application/vnd.cncf.helm.chart.content.v1.tar+gzip", 7, 4000)],
    }


def oci_index_artifact() -> JSON:
    return {
        "schemaVersion": 2,
        "mediaType": m.OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [desc(m.OCI_MANIFEST, 10, 528, artifactType="application/vnd.example.part")],
        "subject": desc(m.OCI_INDEX, 8, 300),
    }


VALID_BODIES: dict[str, Callable[[], JSON]] = {
    "docker_v2": docker_v2,
    "docker_list": docker_list,
    "oci_manifest": oci_manifest,
    "oci_index": oci_index,
    "oci_artifact": oci_artifact,
    "oci_empty_config": oci_empty_config_no_artifact_type,
    "oci_helm_chart": oci_helm_chart,
    "oci_index_artifact": oci_index_artifact,
}


@dataclass(frozen=True)
class ValidCase:
    name: str
    body: Callable[[], JSON]
    content_type: str | None
    media_type: str
    artifact_type: str | None
    blobs: tuple[int, ...]
    children: tuple[int, ...]
    image_size: int
    subject: int | None = None
    annotations: int = 0


VALID_CASES = [
    ValidCase("docker_v2", docker_v2, m.DOCKER_MANIFEST_V2, m.DOCKER_MANIFEST_V2, None, (1, 2, 3), (), 605),
    # the foreign layer (4) lives elsewhere: it is not a blob the registry must hold
    ValidCase("docker_v2_no_ct", docker_v2, None, m.DOCKER_MANIFEST_V2, None, (1, 2, 3), (), 605),
    ValidCase("docker_list", docker_list, m.DOCKER_MANIFEST_LIST, m.DOCKER_MANIFEST_LIST, None, (), (10, 11), 0),
    ValidCase("oci_manifest", oci_manifest, m.OCI_MANIFEST, m.OCI_MANIFEST, None, (1, 2, 3), (), 300, None, 1),
    ValidCase(
        "oci_manifest_ct_params",
        oci_manifest,
        m.OCI_MANIFEST + "; charset=utf-8",
        m.OCI_MANIFEST,
        None,
        (1, 2, 3),
        (),
        300,
        None,
        1,
    ),
    ValidCase(
        "oci_manifest_generic_ct",
        oci_manifest,
        "application/json",
        m.OCI_MANIFEST,
        None,
        (1, 2, 3),
        (),
        300,
        None,
        1,
    ),
    ValidCase("oci_index", oci_index, m.OCI_INDEX, m.OCI_INDEX, None, (), (10, 11), 0, None, 1),
    ValidCase(
        "oci_artifact",
        oci_artifact,
        m.OCI_MANIFEST,
        m.OCI_MANIFEST,
        "application/vnd.example.sbom.v1",
        (0x44, 5),
        (),
        1234,
        9,
        1,
    ),
    ValidCase(
        "oci_empty_config",
        oci_empty_config_no_artifact_type,
        None,
        m.OCI_MANIFEST,
        m.OCI_EMPTY,
        (0x44,),
        (),
        2,
    ),
    ValidCase(
        "oci_helm_config_as_artifact_type_ct",
        oci_helm_chart,
        m.OCI_MANIFEST,
        m.OCI_MANIFEST,
        "application/vnd.cncf.helm.config.v1+json",
        (6, 7),
        (),
        4000,
    ),
    ValidCase(
        "oci_helm_inferred",
        oci_helm_chart,
        None,
        m.OCI_MANIFEST,
        "application/vnd.cncf.helm.config.v1+json",
        (6, 7),
        (),
        4000,
    ),
    ValidCase(
        "oci_index_artifact",
        oci_index_artifact,
        None,
        m.OCI_INDEX,
        "application/vnd.example.bundle",
        (),
        (10,),
        0,
        8,
    ),
]


@pytest.mark.parametrize("case", VALID_CASES, ids=lambda c: c.name)
def test_parse_valid(case: ValidCase) -> None:
    parsed = m.parse(enc(case.body()), case.content_type)
    assert parsed.media_type == case.media_type
    assert parsed.artifact_type == case.artifact_type
    assert parsed.blob_references == tuple(Digest.parse(dg(n)) for n in case.blobs)
    assert parsed.manifest_references == tuple(Digest.parse(dg(n)) for n in case.children)
    assert parsed.image_size == case.image_size
    assert parsed.is_index == (case.media_type in m.INDEX_MEDIA_TYPES)
    assert (parsed.subject.digest if parsed.subject else None) == (
        Digest.parse(dg(case.subject)) if case.subject is not None else None
    )
    assert len(parsed.annotations) == case.annotations
    if parsed.is_index:
        assert parsed.config is None
        assert parsed.layers == ()
        assert parsed.config_media_type is None
    else:
        assert parsed.config is not None
        assert parsed.manifests == ()
        assert parsed.config_media_type == parsed.config.media_type


def test_parse_details() -> None:
    parsed = m.parse(enc(docker_list()), None)
    assert parsed.manifests[1].platform == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
        "features": ["sse4"],
    }
    artifact = m.parse(enc(oci_artifact()), None)
    assert artifact.subject is not None
    assert artifact.subject.media_type == m.OCI_MANIFEST
    assert artifact.subject.size == 700
    assert artifact.layers[0].media_type == "application/spdx+json"
    assert dict(artifact.annotations) == {"org.example.kind": "sbom"}
    index = m.parse(enc(oci_index_artifact()), None)
    assert index.manifests[0].artifact_type == "application/vnd.example.part"


def test_docker_ignores_oci_only_fields() -> None:
    body = docker_v2()
    body["subject"] = desc(m.OCI_MANIFEST, 9, 1)
    body["artifactType"] = "application/x"
    body["annotations"] = {"a": "b"}
    parsed = m.parse(enc(body), None)
    assert parsed.subject is None
    assert parsed.artifact_type is None
    assert parsed.annotations == {}


def test_null_optional_fields_are_absent() -> None:
    body = oci_manifest()
    body["subject"] = None
    body["artifactType"] = None
    body["annotations"] = None
    layers = body["layers"]
    assert isinstance(layers, list)
    layers[0]["urls"] = None
    parsed = m.parse(enc(body), m.OCI_MANIFEST)
    assert parsed.subject is None
    assert parsed.artifact_type is None
    assert parsed.annotations == {}


def test_digest_of() -> None:
    assert str(m.digest_of(b"{}")) == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def test_constants() -> None:
    assert m.MAX_MANIFEST_SIZE == 4 * 1024 * 1024
    assert frozenset({m.DOCKER_MANIFEST_V2, m.DOCKER_MANIFEST_LIST, m.OCI_MANIFEST, m.OCI_INDEX}) == (
        m.MANIFEST_MEDIA_TYPES
    )
    assert frozenset({m.DOCKER_MANIFEST_LIST, m.OCI_INDEX}) == m.INDEX_MEDIA_TYPES
    assert m.OCI_EMPTY == "application/vnd.oci.empty.v1+json"
    assert m.DOCKER_MANIFEST_V1_SIGNED == "application/vnd.docker.distribution.manifest.v1+prettyjws"


# --- rejections --------------------------------------------------------------------------------


def mutate(base: Callable[[], JSON], change: Callable[[JSON], object]) -> bytes:
    body = base()
    change(body)
    return enc(body)


def set_path(path: str, value: object) -> Callable[[JSON], object]:
    """Set a dotted path like 'layers.0.size' in a manifest dict."""

    def change(body: JSON) -> None:
        *parents, last = path.split(".")
        target = walk(body, parents)
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def walk(body: JSON, parts: list[str]) -> JSON | list[object]:
    target: object = body
    for part in parts:
        if isinstance(target, list):
            target = target[int(part)]
        else:
            assert isinstance(target, dict)
            target = target[part]
    assert isinstance(target, dict | list)
    return target


def drop(path: str) -> Callable[[JSON], object]:
    """Delete the last key of a dotted path like 'layers.1.mediaType'."""

    def change(body: JSON) -> None:
        *parents, last = path.split(".")
        target = walk(body, parents)
        assert isinstance(target, dict)
        del target[last]

    return change


def delete(key: str) -> Callable[[JSON], object]:
    return lambda body: body.pop(key)


@dataclass(frozen=True)
class BadCase:
    name: str
    body: bytes
    content_type: str | None
    error: type[Exception]
    fragment: str


SCHEMA1 = enc({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": [], "history": []})
REJECTIONS = [
    BadCase("empty", b"", None, ManifestInvalidError, "empty"),
    BadCase("invalid_utf8", b'{"a": "\xff"}', None, ManifestInvalidError, "UTF-8"),
    BadCase("invalid_json", b"{not json", None, ManifestInvalidError, "not valid JSON"),
    BadCase("array", b"[]", None, ManifestInvalidError, "JSON object, not array"),
    BadCase("string", b'"x"', None, ManifestInvalidError, "JSON object, not string"),
    BadCase("nan", b'{"schemaVersion": NaN}', None, ManifestInvalidError, "NaN"),
    BadCase("duplicate_key", b'{"a": 1, "a": 2}', None, ManifestInvalidError, "duplicate key"),
    BadCase("deep_nesting", b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", None, ManifestInvalidError, "JSON"),
    BadCase("lone_surrogate", b'{"mediaType": "\\ud800"}', None, ManifestInvalidError, "surrogate"),
    BadCase(
        "media_type_mismatch",
        enc(oci_manifest()),
        m.DOCKER_MANIFEST_V2,
        ManifestInvalidError,
        "does not match Content-Type",
    ),
    BadCase(
        "media_type_not_string",
        mutate(oci_manifest, set_path("mediaType", 5)),
        None,
        ManifestInvalidError,
        "mediaType must be a string",
    ),
    BadCase(
        "cannot_infer",
        enc({"schemaVersion": 2, "layers": []}),
        None,
        ManifestInvalidError,
        "cannot determine",
    ),
    BadCase(
        "cannot_infer_both",
        enc({"schemaVersion": 2, "config": {}, "manifests": []}),
        None,
        ManifestInvalidError,
        "cannot determine",
    ),
    BadCase("schema1_ct", SCHEMA1, m.DOCKER_MANIFEST_V1_SIGNED, UnsupportedError, "schema 1"),
    BadCase("schema1_ct_v1", SCHEMA1, m.DOCKER_MANIFEST_V1, UnsupportedError, "schema 1"),
    BadCase("schema1_inferred", SCHEMA1, None, UnsupportedError, "schema 1"),
    BadCase("schema1_json_ct", SCHEMA1, "application/json", UnsupportedError, "schema 1"),
    BadCase(
        "unknown_media_type_body",
        mutate(oci_manifest, set_path("mediaType", "application/vnd.oci.artifact.manifest.v1+json")),
        None,
        UnsupportedError,
        "application/vnd.oci.artifact.manifest.v1+json",
    ),
    BadCase("unknown_content_type", enc(oci_helm_chart()), "text/plain", UnsupportedError, "text/plain"),
    BadCase(
        "schema_version_missing",
        mutate(oci_manifest, delete("schemaVersion")),
        None,
        ManifestInvalidError,
        "schemaVersion",
    ),
    BadCase(
        "schema_version_1",
        mutate(oci_manifest, set_path("schemaVersion", 1)),
        None,
        ManifestInvalidError,
        "schemaVersion must be 2",
    ),
    BadCase(
        "schema_version_string",
        mutate(oci_manifest, set_path("schemaVersion", "2")),
        None,
        ManifestInvalidError,
        "schemaVersion must be 2",
    ),
    BadCase(
        "schema_version_float",
        mutate(oci_manifest, set_path("schemaVersion", 2.0)),
        None,
        ManifestInvalidError,
        "schemaVersion must be 2",
    ),
    BadCase(
        "docker_without_media_type",
        mutate(docker_v2, delete("mediaType")),
        m.DOCKER_MANIFEST_V2,
        ManifestInvalidError,
        "must declare its mediaType",
    ),
    BadCase("config_missing", mutate(docker_v2, delete("config")), None, ManifestInvalidError, "'config'"),
    BadCase("layers_missing", mutate(oci_manifest, delete("layers")), None, ManifestInvalidError, "'layers'"),
    BadCase(
        "layers_not_list",
        mutate(oci_manifest, set_path("layers", {})),
        None,
        ManifestInvalidError,
        "layers must be an array",
    ),
    BadCase(
        "manifests_missing",
        mutate(docker_list, delete("manifests")),
        None,
        ManifestInvalidError,
        "'manifests'",
    ),
    BadCase(
        "manifests_not_list",
        mutate(oci_index, set_path("manifests", "x")),
        None,
        ManifestInvalidError,
        "manifests must be an array",
    ),
    BadCase(
        "config_not_object",
        mutate(oci_manifest, set_path("config", [])),
        None,
        ManifestInvalidError,
        "config must be a descriptor",
    ),
    BadCase(
        "descriptor_media_type_missing",
        mutate(oci_manifest, drop("layers.1.mediaType")),
        None,
        ManifestInvalidError,
        "layers[1].mediaType is required",
    ),
    BadCase(
        "descriptor_media_type_number",
        mutate(oci_manifest, set_path("config.mediaType", 7)),
        None,
        ManifestInvalidError,
        "config.mediaType must be a string",
    ),
    BadCase(
        "descriptor_media_type_empty",
        mutate(oci_manifest, set_path("config.mediaType", "")),
        None,
        ManifestInvalidError,
        "config.mediaType must not be empty",
    ),
    BadCase(
        "descriptor_digest_invalid",
        mutate(oci_manifest, set_path("layers.0.digest", "sha256:abc")),
        None,
        ManifestInvalidError,
        "layers[0].digest: invalid digest",
    ),
    BadCase(
        "descriptor_digest_algorithm",
        mutate(docker_list, set_path("manifests.1.digest", "md5:" + "a" * 32)),
        None,
        ManifestInvalidError,
        "manifests[1].digest",
    ),
    BadCase(
        "descriptor_digest_missing",
        mutate(oci_manifest, drop("config.digest")),
        None,
        ManifestInvalidError,
        "config.digest is required",
    ),
    BadCase(
        "descriptor_size_negative",
        mutate(oci_manifest, set_path("layers.0.size", -1)),
        None,
        ManifestInvalidError,
        "layers[0].size must not be negative",
    ),
    BadCase(
        "descriptor_size_bool",
        mutate(oci_manifest, set_path("layers.0.size", True)),
        None,
        ManifestInvalidError,
        "layers[0].size must be an integer",
    ),
    BadCase(
        "descriptor_size_float",
        mutate(oci_manifest, set_path("config.size", 1.5)),
        None,
        ManifestInvalidError,
        "config.size must be an integer",
    ),
    BadCase(
        "descriptor_size_missing",
        mutate(oci_index, drop("manifests.0.size")),
        None,
        ManifestInvalidError,
        "manifests[0].size is required",
    ),
    BadCase(
        "descriptor_urls_not_strings",
        mutate(docker_v2, set_path("layers.2.urls", [1])),
        None,
        ManifestInvalidError,
        "layers[2].urls[0]",
    ),
    BadCase(
        "descriptor_platform_not_object",
        mutate(docker_list, set_path("manifests.0.platform", "linux")),
        None,
        ManifestInvalidError,
        "manifests[0].platform must be an object",
    ),
    BadCase(
        "descriptor_platform_os_number",
        mutate(docker_list, set_path("manifests.0.platform.os", 1)),
        None,
        ManifestInvalidError,
        "manifests[0].platform.os must be a string",
    ),
    BadCase(
        "descriptor_annotations_not_strings",
        mutate(oci_manifest, set_path("layers.0.annotations", {"a": 1})),
        None,
        ManifestInvalidError,
        "layers[0].annotations",
    ),
    BadCase(
        "subject_not_descriptor",
        mutate(oci_artifact, set_path("subject", "sha256:" + "0" * 64)),
        None,
        ManifestInvalidError,
        "subject must be a descriptor",
    ),
    BadCase(
        "subject_bad_digest",
        mutate(oci_artifact, set_path("subject.digest", "nope")),
        None,
        ManifestInvalidError,
        "subject.digest",
    ),
    BadCase(
        "artifact_type_not_string",
        mutate(oci_artifact, set_path("artifactType", ["x"])),
        None,
        ManifestInvalidError,
        "artifactType must be a string",
    ),
    BadCase(
        "annotations_not_map",
        mutate(oci_manifest, set_path("annotations", ["a"])),
        None,
        ManifestInvalidError,
        "annotations must be a map",
    ),
    BadCase(
        "annotations_value_not_string",
        mutate(oci_index, set_path("annotations", {"a": None})),
        None,
        ManifestInvalidError,
        "annotations['a'] must be a string",
    ),
]


@pytest.mark.parametrize("case", REJECTIONS, ids=lambda c: c.name)
def test_parse_rejects(case: BadCase) -> None:
    with pytest.raises(case.error) as info:
        m.parse(case.body, case.content_type)
    assert case.fragment in str(info.value)


def test_mismatch_message_names_both_types() -> None:
    with pytest.raises(ManifestInvalidError) as info:
        m.parse(enc(docker_v2()), m.OCI_MANIFEST)
    assert m.DOCKER_MANIFEST_V2 in str(info.value)
    assert m.OCI_MANIFEST in str(info.value)


# --- Accept negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], []),
        ([""], []),
        ([m.OCI_MANIFEST], [m.OCI_MANIFEST]),
        (
            [f"{m.OCI_MANIFEST}, {m.OCI_INDEX};q=0.9", m.DOCKER_MANIFEST_V2],
            [m.OCI_MANIFEST, m.OCI_INDEX, m.DOCKER_MANIFEST_V2],
        ),
        ([" Application/JSON ; charset=utf-8 ,, */*;q=0.5"], ["application/json", "*/*"]),
        ([f"{m.OCI_MANIFEST};q=0", m.OCI_INDEX], [m.OCI_INDEX]),
        ([f"{m.OCI_MANIFEST};q=bogus"], [m.OCI_MANIFEST]),
        ([m.OCI_INDEX, m.OCI_INDEX], [m.OCI_INDEX]),
    ],
)
def test_parse_accept(headers: list[str], expected: list[str]) -> None:
    assert m.parse_accept(headers) == expected


@pytest.mark.parametrize(
    ("stored", "accept", "expected"),
    [
        (m.OCI_MANIFEST, [], True),
        (m.OCI_MANIFEST, ["*/*"], True),
        (m.OCI_MANIFEST, ["application/*"], True),
        (m.OCI_MANIFEST, [m.OCI_MANIFEST], True),
        (m.OCI_MANIFEST, [f"{m.DOCKER_MANIFEST_V2}, {m.OCI_MANIFEST};q=0.5"], True),
        (m.OCI_MANIFEST, [m.DOCKER_MANIFEST_V2, m.DOCKER_MANIFEST_LIST], False),
        (m.DOCKER_MANIFEST_V2, [m.OCI_MANIFEST, m.OCI_INDEX], False),
        (m.DOCKER_MANIFEST_V2, [m.DOCKER_MANIFEST_V2.upper()], True),
        (m.OCI_INDEX, [f"{m.OCI_INDEX};q=0", m.OCI_MANIFEST], False),
        (m.OCI_INDEX, ["text/*"], False),
    ],
)
def test_negotiate(stored: str, accept: list[str], expected: bool) -> None:
    assert m.negotiate(stored, accept) is expected


# --- conversion --------------------------------------------------------------------------------


def test_docker_to_oci_manifest() -> None:
    out = m.docker_to_oci(enc(docker_v2()))
    assert out == m.docker_to_oci(enc(docker_v2()))  # deterministic
    assert b" " not in out  # compact
    obj = json.loads(out)
    assert list(obj) == ["schemaVersion", "mediaType", "config", "layers"]
    assert obj["mediaType"] == m.OCI_MANIFEST
    assert obj["config"] == desc(m.OCI_CONFIG, 1, 1470)
    assert [layer["mediaType"] for layer in obj["layers"]] == [
        m.OCI_LAYER_GZIP,
        m.OCI_LAYER_GZIP,
        m.OCI_NONDISTRIBUTABLE_LAYER_GZIP,
        m.OCI_LAYER,
    ]
    assert obj["layers"][2]["urls"] == ["https://example.com/layer.tar.gz"]
    parsed = m.parse(out, m.OCI_MANIFEST)
    assert parsed.artifact_type is None
    assert parsed.blob_references == m.parse(enc(docker_v2()), None).blob_references


def test_docker_to_oci_list() -> None:
    obj = json.loads(m.docker_to_oci(enc(docker_list())))
    assert list(obj) == ["schemaVersion", "mediaType", "manifests"]
    assert obj["mediaType"] == m.OCI_INDEX
    assert [c["mediaType"] for c in obj["manifests"]] == [m.OCI_MANIFEST, m.OCI_MANIFEST]
    assert obj["manifests"][1]["platform"]["variant"] == "v7"


def test_docker_to_oci_keeps_unknown_types() -> None:
    body = docker_v2()
    body["layers"] = [desc(m.OCI_LAYER_ZSTD, 2, 1)]
    obj = json.loads(m.docker_to_oci(enc(body)))
    assert obj["layers"][0]["mediaType"] == m.OCI_LAYER_ZSTD
    assert m.oci_to_docker(m.docker_to_oci(enc(body))) is None


@pytest.mark.parametrize("base", [docker_v2, docker_list], ids=["manifest", "list"])
def test_docker_oci_docker_round_trip(base: Callable[[], JSON]) -> None:
    original = base()
    back = m.oci_to_docker(m.docker_to_oci(enc(original)))
    assert back is not None
    assert json.loads(back) == original
    assert list(json.loads(back)) == list(original)
    assert m.oci_to_docker(m.docker_to_oci(back)) == back  # fixed point


def test_oci_docker_oci_round_trip() -> None:
    original = oci_manifest()
    del original["annotations"]
    docker = m.oci_to_docker(enc(original))
    assert docker is not None
    assert m.parse(docker, m.DOCKER_MANIFEST_V2).media_type == m.DOCKER_MANIFEST_V2
    assert json.loads(m.docker_to_oci(docker)) == original


def test_oci_to_docker_drops_annotations_and_maps_index() -> None:
    out = m.oci_to_docker(enc(oci_index()))
    assert out is not None
    obj = json.loads(out)
    assert list(obj) == ["schemaVersion", "mediaType", "manifests"]
    assert obj["mediaType"] == m.DOCKER_MANIFEST_LIST
    assert {c["mediaType"] for c in obj["manifests"]} == {m.DOCKER_MANIFEST_V2}
    manifest = m.oci_to_docker(enc(oci_manifest()))
    assert manifest is not None
    assert "annotations" not in json.loads(manifest)


def with_layer(media_type: str) -> Callable[[], JSON]:
    def build() -> JSON:
        body = oci_manifest()
        body["layers"] = [desc(m.OCI_LAYER_GZIP, 2, 1), desc(media_type, 3, 1)]
        return body

    return build


@pytest.mark.parametrize(
    "build",
    [
        oci_artifact,
        oci_empty_config_no_artifact_type,
        oci_helm_chart,
        oci_index_artifact,
        with_layer(m.OCI_LAYER_ZSTD),
        with_layer("application/octet-stream"),
        lambda: {**oci_manifest(), "subject": desc(m.OCI_MANIFEST, 9, 1)},
        lambda: {**oci_manifest(), "artifactType": "application/x"},
        lambda: {**oci_index(), "subject": desc(m.OCI_INDEX, 9, 1)},
        lambda: {**oci_index(), "manifests": [desc("application/vnd.example.thing", 10, 1)]},
        lambda: {**oci_index(), "manifests": [desc(m.OCI_MANIFEST, 10, 1, artifactType="application/x")]},
    ],
    ids=[
        "artifact",
        "empty_config",
        "helm",
        "index_artifact",
        "zstd_layer",
        "octet_stream_layer",
        "manifest_subject",
        "manifest_artifact_type",
        "index_subject",
        "index_unknown_child",
        "index_child_artifact_type",
    ],
)
def test_oci_to_docker_impossible(build: Callable[[], JSON]) -> None:
    assert m.oci_to_docker(enc(build())) is None


def test_conversion_rejects_wrong_family_and_invalid_input() -> None:
    with pytest.raises(UnsupportedError):
        m.docker_to_oci(enc(oci_manifest()))
    with pytest.raises(UnsupportedError):
        m.oci_to_docker(enc(docker_v2()))
    with pytest.raises(ManifestInvalidError):
        m.docker_to_oci(b"nope")
    with pytest.raises(ManifestInvalidError):
        m.oci_to_docker(b"{}")


# --- garbage input -----------------------------------------------------------------------------

CONTENT_TYPES: list[str | None] = [
    None,
    "",
    "application/json",
    "text/plain; charset=utf-8",
    ";;;",
    m.DOCKER_MANIFEST_V1_SIGNED,
    *sorted(m.MANIFEST_MEDIA_TYPES),
]


def random_value(rng: random.Random) -> object:
    choices: list[object] = [
        None,
        True,
        False,
        0,
        -1,
        2,
        2**70,
        1.5,
        "",
        "x",
        "\u00e9\U0001f600",
        dg(rng.randrange(1000)),
        "sha512:" + "a" * 128,
        [],
        {},
        [1, "a", None],
        {"mediaType": 1},
        {"mediaType": m.OCI_CONFIG, "digest": dg(1), "size": 1},
        {"architecture": ["amd64"], "os": {}},
        rng.choice(sorted(m.MANIFEST_MEDIA_TYPES)),
    ]
    nested: object = "deep"
    for _ in range(rng.randrange(1, 40)):
        nested = [nested] if rng.random() < 0.5 else {"k": nested}
    choices.append(nested)
    return rng.choice(choices)


def containers(value: object) -> list[object]:
    found: list[object] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            found.append(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def mutate_structure(rng: random.Random, body: JSON) -> bytes:
    body = copy.deepcopy(body)
    for _ in range(rng.randrange(1, 4)):
        target = rng.choice(containers(body))
        if isinstance(target, dict):
            keys = list(target)
            action = rng.random()
            if keys and action < 0.3:
                del target[rng.choice(keys)]
            elif keys and action < 0.8:
                target[rng.choice(keys)] = random_value(rng)
            else:
                target[rng.choice(["mediaType", "size", "digest", "subject", "platform", "x"])] = random_value(rng)
        elif isinstance(target, list):
            if target and rng.random() < 0.5:
                target[rng.randrange(len(target))] = random_value(rng)
            else:
                target.append(random_value(rng))
    return json.dumps(body).encode()


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    action = rng.randrange(4)
    if action == 0 and buf:
        for _ in range(rng.randrange(1, 5)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif action == 1 and buf:
        del buf[rng.randrange(len(buf)) :]
    elif action == 2:
        pos = rng.randrange(len(buf) + 1)
        buf[pos:pos] = rng.choice([b"\xff\xfe", b"\\ud800", b"[", b"}", b'"', b"NaN", b",", rng.randbytes(8)])
    else:
        start = rng.randrange(len(buf) + 1)
        del buf[start : start + rng.randrange(1, 50)]
    return bytes(buf)


def check_garbage(body: bytes, content_type: str | None) -> None:
    try:
        parsed = m.parse(body, content_type)
    except (ManifestInvalidError, UnsupportedError):
        return
    # Anything accepted must be fully usable.
    assert parsed.media_type in m.MANIFEST_MEDIA_TYPES
    _ = (parsed.blob_references, parsed.manifest_references, parsed.image_size, parsed.config_media_type)
    if parsed.media_type in (m.DOCKER_MANIFEST_V2, m.DOCKER_MANIFEST_LIST):
        converted: bytes | None = m.docker_to_oci(body, content_type)
    else:
        converted = m.oci_to_docker(body, content_type)
    if converted is not None:
        assert m.parse(converted, None).media_type in m.MANIFEST_MEDIA_TYPES


def test_garbage_input_raises_only_domain_errors() -> None:
    rng = random.Random(20240601)
    bases = [enc(build()) for build in VALID_BODIES.values()]
    for _ in range(5000):
        base_name = rng.choice(list(VALID_BODIES))
        kind = rng.random()
        if kind < 0.55:
            body = mutate_structure(rng, VALID_BODIES[base_name]())
        elif kind < 0.9:
            body = mutate_bytes(rng, rng.choice(bases))
        else:
            body = rng.randbytes(rng.randrange(0, 64))
        # Mostly no Content-Type, so that the body itself decides and validation goes deep.
        check_garbage(body, None if rng.random() < 0.6 else rng.choice(CONTENT_TYPES))


@pytest.mark.parametrize(
    "body",
    [
        b"null",
        b"1",
        b"{}",
        b'{"schemaVersion": 2}',
        b'{"manifests": 1}',
        b'{"config": null}',
        b'{"config": 1, "schemaVersion": 2, "layers": []}',
        b'{"schemaVersion": 2, "manifests": [null]}',
        b'{"schemaVersion": 2, "manifests": [[]]}',
        b'{"schemaVersion": 2, "config": {"mediaType": "a", "digest": 1, "size": 1}, "layers": []}',
        b'{"schemaVersion": 2, "manifests": [], "mediaType": null}',
        b'{"schemaVersion": 2, "manifests": [], "annotations": {"a": {}}}',
        b'{"schemaVersion": ' + b"9" * 5000 + b"}",
        b"\xef\xbb\xbf{}",
        b"\x00\x00\x00{",
    ],
)
def test_garbage_samples(body: bytes) -> None:
    for content_type in CONTENT_TYPES:
        check_garbage(body, content_type)
