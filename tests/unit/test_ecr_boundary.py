"""The ECR API's input boundary: JSON decoding (`ecr/wire.py: decode_body`) and the text rules
of validation. Nothing a client sends may escape as an exception other than the ECR error it
answers: deep nesting, non-standard constants, huge numbers, invalid UTF-8, unpaired surrogates
and NUL are all refused here, before any store sees them."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from moorage.ecr.validation import INVALID_PARAMETER, SERIALIZATION, InputValidator, ValidationFailure
from moorage.ecr.wire import MAX_JSON_DEPTH, EcrError, decode_body

VALIDATOR = InputValidator()
ARN = "arn:aws:ecr:us-east-1:123456789012:repository/team/app"


def refused(raw: bytes) -> str:
    with pytest.raises(EcrError) as info:
        decode_body(raw)
    assert info.value.code == SERIALIZATION
    assert info.value.status == 400
    return info.value.message


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_empty_body_is_an_empty_object() -> None:
    assert decode_body(b"") == {}


def test_ordinary_body_decodes() -> None:
    assert decode_body(b'{"repositoryName": "team/app", "maxResults": 5}') == {
        "repositoryName": "team/app",
        "maxResults": 5,
    }


@pytest.mark.parametrize("make", [arrays, objects], ids=["arrays", "objects"])
def test_nesting_up_to_the_limit_decodes(make: Callable[[int], bytes]) -> None:
    value = decode_body(b'{"x":' + make(MAX_JSON_DEPTH - 1) + b"}")
    assert isinstance(value, dict)


@pytest.mark.parametrize("make", [arrays, objects], ids=["arrays", "objects"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deeper_nesting_is_a_serialization_exception(make: Callable[[int], bytes], depth: int) -> None:
    message = refused(b'{"x":' + make(depth) + b"}")
    assert message == f"The request body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"


def test_unbalanced_opening_brackets_are_refused_without_recursion() -> None:
    assert "nested deeper" in refused(b"{" * 200_000)
    assert "nested deeper" in refused(b"[" * 200_000)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[{" * 5_000 + '\\"' + "]}" * 5_000
    assert decode_body(json.dumps({"policyText": text}).encode()) == {"policyText": json.loads(json.dumps(text))}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_constants_are_refused(constant: str) -> None:
    assert refused(b'{"maxResults": ' + constant.encode() + b"}") == (
        f"The request body is not valid JSON: {constant} is not a JSON number"
    )


def test_integer_literal_past_the_digit_limit_is_refused() -> None:
    message = refused(b'{"maxResults": ' + b"9" * 5000 + b"}")
    assert message == "The request body is not valid JSON: a value cannot be decoded"


@pytest.mark.parametrize(
    "raw",
    [b'{"repositoryName": "\xff"}', b'{"repositoryName": "\xed\xa0\x80"}', '{"a": 1}'.encode("utf-16")],
    ids=["invalid-byte", "encoded-surrogate", "utf-16"],
)
def test_body_that_is_not_utf8_is_refused(raw: bytes) -> None:
    assert refused(raw).startswith("The request body is not valid JSON: invalid UTF-8 at byte ")


@pytest.mark.parametrize("raw", [b"{", b"{}{}", b'{"a": }', b"\x00"])
def test_malformed_json_is_refused(raw: bytes) -> None:
    assert refused(raw).startswith("The request body is not valid JSON: ")


@pytest.mark.parametrize(
    ("number", "message"),
    [
        (b"1e400", "NUMBER_VALUE can not be converted to an Integer"),
        (b"1" * 400, "NUMBER_VALUE can not be converted to an Integer"),
        (b"-1e400", "NUMBER_VALUE can not be converted to an Integer"),
    ],
)
def test_huge_numbers_decode_and_are_refused_by_validation(number: bytes, message: str) -> None:
    params = decode_body(b'{"maxResults": ' + number + b"}")
    with pytest.raises(ValidationFailure) as info:
        VALIDATOR.validate("DescribeRepositories", params)
    assert (info.value.code, info.value.message) == (SERIALIZATION, message)


# --- text rules of validation ---------------------------------------------------------------------


def failure(operation: str, params: object) -> tuple[str, str]:
    with pytest.raises(ValidationFailure) as info:
        VALIDATOR.validate(operation, params)
    return info.value.code, info.value.message


def tag_params(key: str, value: str) -> object:
    """A TagResource body as the server decodes it, the strings written as JSON escapes."""
    raw = json.dumps({"resourceArn": ARN, "tags": [{"Key": key, "Value": value}]})
    return decode_body(raw.encode())


def test_unpaired_surrogate_in_a_tag_value_is_an_invalid_parameter() -> None:
    params = tag_params("team", "\ud800")
    assert failure("TagResource", params) == (
        INVALID_PARAMETER,
        "Invalid parameter at 'tags.1.member.Value' failed to satisfy constraint: "
        "'Member must contain only valid Unicode characters (no unpaired surrogates)'",
    )


@pytest.mark.parametrize("value", ["\udc00", "a\ud83d", "\ud83d\ud83d", "x\udfffy"])
def test_every_unpaired_surrogate_is_refused(value: str) -> None:
    code, message = failure("TagResource", tag_params(value, "v"))
    assert code == INVALID_PARAMETER
    assert "'tags.1.member.Key'" in message
    assert "no unpaired surrogates" in message


def test_a_surrogate_pair_is_one_character_and_accepted() -> None:
    params = tag_params("emoji", "\ud83d\ude00")  # json.dumps writes the pair as two escapes
    assert params == {"resourceArn": ARN, "tags": [{"Key": "emoji", "Value": "😀"}]}
    assert VALIDATOR.validate("TagResource", params) is params


def test_nul_in_a_tag_value_is_refused() -> None:
    assert failure("TagResource", tag_params("team", "a\x00b")) == (
        INVALID_PARAMETER,
        "Invalid parameter at 'tags.1.member.Value' failed to satisfy constraint: "
        "'Member must not contain the NUL character'",
    )


def test_surrogate_in_a_patterned_string_is_reported_with_the_pattern() -> None:
    code, message = failure("DescribeRepositories", {"repositoryNames": ["team/\ud800"]})
    assert code == INVALID_PARAMETER
    assert "no unpaired surrogates" in message


def test_manifest_text_with_a_surrogate_never_reaches_put_image() -> None:
    raw = json.dumps({"repositoryName": "team/app", "imageManifest": '{"schemaVersion": 2, "x": "\ud800"}'})
    code, message = failure("PutImage", decode_body(raw.encode()))
    assert code == INVALID_PARAMETER
    assert "'imageManifest'" in message
