"""`compact_json`, the encoder of every AWS JSON response and OCI JSON document: whatever the
standard library encodes, it encodes to the same value (orjson where it can, `json` where orjson
refuses), compactly and as UTF-8."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from moorage.asgi import compact_json


@dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"imageDetails": [{"imageDigest": "sha256:" + "a" * 64, "imagePushedAt": 1764812345.123, "imageTags": []}]},
        {"repositories": [{"repositoryName": "team/app", "createdAt": 1.5e-7, "n": 0}], "nextToken": None},
        {"message": 'caf\u00e9 \u2028 \U0001f600 "quoted" back\\slash \x00 \x1f'},
        [True, False, None, -1, 2**63 - 1, -(2**63), 0.1 + 0.2, 1e16],
        ("a tuple", ("nested",)),
    ],
)
def test_decodes_to_what_json_encodes(value: Any) -> None:
    out = compact_json(value)
    assert json.loads(out) == json.loads(json.dumps(value))
    out.decode("utf-8")


@pytest.mark.parametrize(
    "value",
    [
        {"size": 2**64},  # beyond orjson's 64-bit integers
        {1: "a key that is not a string"},
        {"text": "lone \ud800 surrogate"},
    ],
)
def test_what_orjson_refuses_falls_back_to_json(value: Any) -> None:
    assert compact_json(value) == json.dumps(value, separators=(",", ":")).encode()


def test_compact_and_utf8() -> None:
    assert compact_json({"a": [1, 2], "b": "\u00e9"}) == '{"a":[1,2],"b":"\u00e9"}'.encode()


@pytest.mark.parametrize("value", [object(), datetime.now(UTC), Point(1, 2)], ids=["object", "datetime", "dataclass"])
def test_what_json_refuses_still_fails(value: Any) -> None:
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        compact_json({"value": value})
