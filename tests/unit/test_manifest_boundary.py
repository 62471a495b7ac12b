"""Manifest parsing refuses what no store can hold: sizes past int64 (one descriptor, or the
layers together: ECR's imageSizeInBytes is their sum) and NUL in any string (PostgreSQL text
refuses it; artifactType and media types are stored as text)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moorage import manifests as m
from moorage.errors import ManifestInvalidError

DIGEST = "sha256:" + "a" * 64


def manifest(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": m.OCI_MANIFEST,
        "config": {"mediaType": m.OCI_CONFIG, "digest": DIGEST, "size": 2},
        "layers": [{"mediaType": m.OCI_LAYER, "digest": DIGEST, "size": 3}],
    }
    doc.update(changes)
    return doc


def invalid(doc: dict[str, Any]) -> str:
    with pytest.raises(ManifestInvalidError) as info:
        m.parse(json.dumps(doc).encode(), m.OCI_MANIFEST)
    return info.value.message


def layer(size: int) -> dict[str, Any]:
    return {"mediaType": m.OCI_LAYER, "digest": DIGEST, "size": size}


def test_largest_int64_size_is_accepted() -> None:
    parsed = m.parse(json.dumps(manifest(layers=[layer(m.MAX_SIZE)])).encode(), m.OCI_MANIFEST)
    assert parsed.image_size == 2**63 - 1


@pytest.mark.parametrize("size", [2**63, 2**70, 10**30])
def test_layer_size_past_int64_is_invalid(size: int) -> None:
    assert invalid(manifest(layers=[layer(size)])) == f"layers[0].size must be a 64-bit integer, not {size}"


def test_config_size_past_int64_is_invalid() -> None:
    doc = manifest(config={"mediaType": m.OCI_CONFIG, "digest": DIGEST, "size": 2**63})
    assert invalid(doc) == f"config.size must be a 64-bit integer, not {2**63}"


def test_layer_sizes_adding_up_past_int64_are_invalid() -> None:
    doc = manifest(layers=[layer(2**62), layer(2**62)])
    assert invalid(doc) == "the layers' sizes add up to more than a 64-bit integer holds"


@pytest.mark.parametrize(
    "changes",
    [
        {"artifactType": "application/x\u0000"},
        {"annotations": {"k": "a\u0000b"}},
        {"annotations": {"k\u0000": "v"}},
        {"config": {"mediaType": "application/x\u0000", "digest": DIGEST, "size": 2}},
    ],
    ids=["artifactType", "annotation-value", "annotation-key", "config-media-type"],
)
def test_nul_in_any_string_is_invalid(changes: dict[str, Any]) -> None:
    assert invalid(manifest(**changes)) == "manifest contains a string with a NUL character"
