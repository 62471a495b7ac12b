"""Unit tests for moorage.validation (with the ECR model): every ECR operation accepts model-generated valid input,
and each rule kind is rejected with the exact code and message."""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from typing import Any

import botocore.loaders
import botocore.session
import pytest
from botocore.model import ServiceModel, Shape

from moorage.validation import (
    INVALID_PARAMETER,
    SERIALIZATION,
    VALIDATION,
    InputValidator,
    ValidationFailure,
    _compile_pattern,
    _java_regex_to_python,
    operation_names,
)

MODEL: ServiceModel = botocore.session.get_session().get_service_model("ecr")
VALIDATOR = InputValidator()
OPS = sorted(operation_names())

DIGEST = "sha256:" + "0123456789abcdef" * 4
REPO_PATTERN = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"

# Known-good values for the patterned (and a few realistic) string shapes, by shape name.
KNOWN_GOOD: dict[str, str] = {
    "RepositoryName": "team/app",
    "RegistryId": "123456789012",
    "ImageDigest": DIGEST,
    "LayerDigest": DIGEST,
    "UploadId": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "ReplicationBackfillId": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "CredentialArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/hub-AbC123",
    "PrincipalArn": "arn:aws:iam::123456789012:role/ecr-replication",
    "SigningProfileArn": "arn:aws:signer:us-east-1:123456789012:/signing-profiles/MyProfile",
    "KmsKeyForRepositoryCreationTemplate": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef",
    "Prefix": "team",
    "PullThroughCacheRuleRepositoryPrefix": "docker-hub",
    "Region": "us-west-2",
    "RepositoryFilterValue": "team",
    "ScanningRepositoryFilterValue": "team*",
    "SigningRepositoryFilterValue": "team*",
    "ImageTagMutabilityExclusionFilterValue": "release-*",
}


def sample(shape: Shape, full: bool) -> Any:
    """A valid value for `shape`: required members only, or (`full`) every member."""
    md = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        names = list(shape.members) if full else shape.required_members
        return {name: sample(shape.members[name], full) for name in names}
    if kind == "list":
        return [sample(shape.member, full) for _ in range(max(md.get("min", 0), int(full)))]
    if kind == "map":
        return {sample(shape.key, full): sample(shape.value, full)} if full else {}
    if kind == "string":
        if shape.name in KNOWN_GOOD:
            return KNOWN_GOOD[shape.name]
        if "enum" in md:
            return md["enum"][0]
        assert "pattern" not in md, f"add a known-good value for patterned shape {shape.name}"
        return "x" * max(md.get("min", 1), 1)
    if kind in ("integer", "long"):
        return md.get("min", 1)
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return 1700000000.5
    if kind == "blob":
        return base64.b64encode(b"\0" * max(md.get("min", 1), 1)).decode()
    raise AssertionError(f"no sample for {shape.name} ({kind})")


def failure(op: str, params: object, validator: InputValidator = VALIDATOR) -> tuple[str, str]:
    with pytest.raises(ValidationFailure) as info:
        validator.validate(op, params)
    return info.value.code, info.value.message


def ipe(path: str, rule: str) -> tuple[str, str]:
    return INVALID_PARAMETER, f"Invalid parameter at '{path}' failed to satisfy constraint: '{rule}'"


def ser(message: str) -> tuple[str, str]:
    return SERIALIZATION, message


# --- the model --------------------------------------------------------------------------------


def test_operation_names_cover_the_model() -> None:
    # Counted from the installed model, never hard-coded; pyproject's botocore floor is a model
    # with the replication-backfill operations.
    assert len(OPS) == len(MODEL.operation_names) == len(set(MODEL.operation_names))
    assert {"StartReplicationBackfill", "DescribeReplicationBackfillResults"} <= operation_names()
    assert VALIDATOR.operation_names == operation_names() == frozenset(MODEL.operation_names)
    assert {"PutImage", "DescribeImages", "UpdateImageStorageClass"} <= operation_names()


def test_every_model_pattern_compiles() -> None:
    patterns = {
        MODEL.shape_for(name).metadata["pattern"]
        for name in MODEL.shape_names
        if "pattern" in MODEL.shape_for(name).metadata
    }
    assert len(patterns) >= 15
    for pattern in patterns:
        assert _java_regex_to_python(pattern) == pattern  # nothing in ECR needs translating today
        _compile_pattern(pattern)


def test_known_good_values_satisfy_their_shapes() -> None:
    for name, value in KNOWN_GOOD.items():
        md = MODEL.shape_for(name).metadata
        if "pattern" in md:
            assert _compile_pattern(md["pattern"]).fullmatch(value), name
        assert md.get("min", 0) <= len(value) <= md.get("max", 10**9), name


def test_unknown_operation_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        VALIDATOR.validate("NoSuchOperation", {})


@pytest.mark.parametrize("op", OPS)
def test_minimal_valid_input_is_accepted(op: str) -> None:
    shape = MODEL.operation_model(op).input_shape
    params = {} if shape is None else sample(shape, full=False)
    assert VALIDATOR.validate(op, params) is params


@pytest.mark.parametrize("op", OPS)
def test_full_valid_input_is_accepted(op: str) -> None:
    shape = MODEL.operation_model(op).input_shape
    params = {} if shape is None else sample(shape, full=True)
    snapshot = copy.deepcopy(params)
    assert VALIDATOR.validate(op, params) is params
    assert params == snapshot


@pytest.mark.parametrize(
    "op",
    [op for op in OPS if (s := MODEL.operation_model(op).input_shape) is not None and s.required_members],
)
def test_empty_body_reports_first_required_member(op: str) -> None:
    shape = MODEL.operation_model(op).input_shape
    first = min(shape.required_members, key=list(shape.members).index)
    code = VALIDATOR.error_code(op)
    assert code == INVALID_PARAMETER  # every ECR op with input models InvalidParameterException
    assert failure(op, {}) == ipe(first, "Member must not be null")


def test_error_code_mapping_follows_modeled_errors() -> None:
    assert VALIDATOR.error_code("CreateRepository") == INVALID_PARAMETER
    assert VALIDATOR.error_code("PutAccountSetting") == INVALID_PARAMETER  # models both
    assert VALIDATOR.error_code("DeleteSigningConfiguration") == VALIDATION  # models only VE


# --- each rule kind -------------------------------------------------------------------------------

LONG = "a" * 257
REPO_RULE = f"must satisfy regular expression '{REPO_PATTERN}'"

CASES: list[tuple[str, str, object, tuple[str, str]]] = [
    # (id, operation, params, (code, message))
    ("missing-required", "CreateRepository", {}, ipe("repositoryName", "Member must not be null")),
    (
        "null-is-missing",
        "CreateRepository",
        {"repositoryName": None},
        ipe("repositoryName", "Member must not be null"),
    ),
    (
        "string-too-short",
        "CreateRepository",
        {"repositoryName": "a"},
        ipe("repositoryName", "Member must have length greater than or equal to 2"),
    ),
    (
        "string-too-long",
        "CreateRepository",
        {"repositoryName": LONG},
        ipe("repositoryName", "Member must have length less than or equal to 256"),
    ),
    (
        "list-too-long",
        "BatchGetImage",
        {"repositoryName": "app", "imageIds": [{"imageTag": "t"}] * 101},
        ipe("imageIds", "Member must have length less than or equal to 100"),
    ),
    (
        "list-too-short",
        "BatchGetImage",
        {"repositoryName": "app", "imageIds": []},
        ipe("imageIds", "Member must have length greater than or equal to 1"),
    ),
    (
        "int-too-small",
        "DescribeRepositories",
        {"maxResults": 0},
        ipe("maxResults", "Member must have value greater than or equal to 1"),
    ),
    (
        "int-too-big",
        "DescribeRepositories",
        {"maxResults": 1001},
        ipe("maxResults", "Member must have value less than or equal to 1000"),
    ),
    (
        "bad-enum",
        "CreateRepository",
        {"repositoryName": "app", "imageTagMutability": "SOMETIMES"},
        ipe(
            "imageTagMutability",
            "Member must satisfy enum value set: "
            "[MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION, MUTABLE_WITH_EXCLUSION]",
        ),
    ),
    ("bad-pattern", "CreateRepository", {"repositoryName": "Bad_Name"}, ipe("repositoryName", REPO_RULE)),
    (
        "bad-registry-id",
        "DescribeRepositories",
        {"registryId": "12"},
        ipe("registryId", "must satisfy regular expression '[0-9]{12}'"),
    ),
    (
        "pattern-anchored-end",
        "DescribeRepositories",
        {"registryId": "1234567890123"},
        ipe("registryId", "must satisfy regular expression '[0-9]{12}'"),
    ),
    (
        "pattern-anchored-newline",
        "DescribeRepositories",
        {"registryId": "123456789012\n"},
        ipe("registryId", "must satisfy regular expression '[0-9]{12}'"),
    ),
    (
        "pattern-ascii-only",
        "DescribeRepositories",
        {"registryId": "١٢٣٤٥٦٧٨٩٠١٢"},  # Arabic-Indic digits
        ipe("registryId", "must satisfy regular expression '[0-9]{12}'"),
    ),
    (
        "nested-list-item",
        "BatchGetImage",
        {"repositoryName": "app", "imageIds": [{"imageDigest": DIGEST}, {"imageTag": ""}]},
        ipe("imageIds.2.member.imageTag", "Member must have length greater than or equal to 1"),
    ),
    (
        "nested-scalar-list-pattern",
        "CompleteLayerUpload",
        {"repositoryName": "app", "uploadId": KNOWN_GOOD["UploadId"], "layerDigests": [DIGEST, "nope"]},
        ipe("layerDigests.2.member", "must satisfy regular expression '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'"),
    ),
    (
        "nested-structure-pattern",
        "CreateRepository",
        {
            "repositoryName": "app",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "bad tag!"}],
        },
        ipe(
            "imageTagMutabilityExclusionFilters.1.member.filter",
            "must satisfy regular expression '^[0-9a-zA-Z._*-]{1,128}$'",
        ),
    ),
    (
        "nested-required",
        "TagResource",
        {"resourceArn": "arn", "tags": [{"Key": "k"}]},
        ipe("tags.1.member.Value", "Member must not be null"),
    ),
    (
        "null-list-item",
        "BatchGetImage",
        {"repositoryName": "app", "imageIds": [None]},
        ipe("imageIds.1.member", "Member must not be null"),
    ),
    (
        "first-violation-only",
        "CreateRepository",
        {"repositoryName": "Bad_Name", "imageTagMutability": "SOMETIMES"},
        ipe("repositoryName", REPO_RULE),
    ),
    (
        "model-order-not-body-order",
        "PutImage",
        {"imageTag": "", "repositoryName": "Bad_Name", "imageManifest": "{}"},
        ipe("repositoryName", REPO_RULE),
    ),
    # type mismatches
    (
        "int-as-string",
        "DescribeRepositories",
        {"maxResults": "5"},
        ser("STRING_VALUE can not be converted to an Integer"),
    ),
    (
        "int-as-float",
        "DescribeRepositories",
        {"maxResults": 5.0},
        ser("NUMBER_VALUE can not be converted to an Integer"),
    ),
    (
        "int-as-bool",
        "DescribeRepositories",
        {"maxResults": True},
        ser("BOOLEAN_VALUE can not be converted to an Integer"),
    ),
    (
        "int-overflow",
        "DescribeRepositories",
        {"maxResults": 2**31},
        ser("NUMBER_VALUE can not be converted to an Integer"),
    ),
    (
        "string-as-number",
        "CreateRepository",
        {"repositoryName": 5},
        ser("NUMBER_VALUE can not be converted to a String"),
    ),
    (
        "list-as-string",
        "DescribeRepositories",
        {"repositoryNames": "app"},
        ser("STRING_VALUE can not be converted to a List"),
    ),
    (
        "structure-as-list",
        "CreateRepository",
        {"repositoryName": "app", "imageScanningConfiguration": []},
        ser("START_ARRAY can not be converted to a Structure"),
    ),
    (
        "bool-as-string",
        "CreateRepository",
        {"repositoryName": "app", "imageScanningConfiguration": {"scanOnPush": "true"}},
        ser("STRING_VALUE can not be converted to a Boolean"),
    ),
    (
        "long-as-float",
        "UploadLayerPart",
        {
            "repositoryName": "app",
            "uploadId": KNOWN_GOOD["UploadId"],
            "partFirstByte": 1.5,
            "partLastByte": 2,
            "layerPartBlob": "AAAA",
        },
        ser("NUMBER_VALUE can not be converted to a Long"),
    ),
    (
        "blob-not-base64",
        "UploadLayerPart",
        {
            "repositoryName": "app",
            "uploadId": KNOWN_GOOD["UploadId"],
            "partFirstByte": 0,
            "partLastByte": 2,
            "layerPartBlob": "not base64!",
        },
        ser("STRING_VALUE can not be converted to a Blob"),
    ),
    (
        "type-error-beats-constraints",
        "CreateRepository",
        {"repositoryName": "Bad_Name", "imageTagMutability": 1},
        ser("NUMBER_VALUE can not be converted to a String"),
    ),
    ("body-list", "DescribeRepositories", [], ser("START_ARRAY can not be converted to a Structure")),
    ("body-string", "DescribeRepositories", "{}", ser("STRING_VALUE can not be converted to a Structure")),
    ("body-null", "DescribeRepositories", None, ser("NULL_VALUE can not be converted to a Structure")),
    ("body-number", "DescribeRepositories", 5, ser("NUMBER_VALUE can not be converted to a Structure")),
]


@pytest.mark.parametrize(("op", "params", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_is_rejected_with_exact_code_and_message(op: str, params: object, expected: tuple[str, str]) -> None:
    assert failure(op, params) == expected


@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("CreateRepository", {"repositoryName": "a--b__c/d.e", "futureMember": {"x": [1]}}),
        (
            "CreateRepository",
            {"repositoryName": "app", "encryptionConfiguration": {"encryptionType": "KMS", "new": 1}},
        ),
        ("DescribeRepositories", {"maxResults": 1}),
        ("DescribeRepositories", {"maxResults": 1000}),
        ("DescribeRepositories", {"repositoryNames": None, "registryId": None}),
        (
            "UploadLayerPart",
            {
                "repositoryName": "app",
                "uploadId": KNOWN_GOOD["UploadId"],
                "partFirstByte": 0,
                "partLastByte": 0,
                "layerPartBlob": "",
            },
        ),
        ("PutImage", {"repositoryName": "app", "imageManifest": "{}", "imageTag": "ünïcode"}),
    ],
)
def test_valid_edge_inputs_are_accepted(op: str, params: dict[str, Any]) -> None:
    assert VALIDATOR.validate(op, params) is params


# --- ValidationException form (an ECR model variant, and a synthetic model) -----------------------


def ecr_model_with_validation_only(op: str) -> ServiceModel:
    data = copy.deepcopy(botocore.loaders.create_loader().load_service_model("ecr", "service-2"))
    errors = data["operations"][op]["errors"]
    data["operations"][op]["errors"] = [e for e in errors if e["shape"] != INVALID_PARAMETER]
    return ServiceModel(data, service_name="ecr")


def viol(shown: str, path: str, rule: str) -> str:
    """One violation in AWS's collected ValidationException form."""
    return f"{shown} at '{path}' failed to satisfy constraint: {rule}"


GE_LEN = "Member must have length greater than or equal to"
LE_LEN = "Member must have length less than or equal to"
NOT_NULL = "Member must not be null"


def test_validation_exception_lists_every_violation() -> None:
    validator = InputValidator(ecr_model_with_validation_only("PutAccountSetting"))
    assert validator.error_code("PutAccountSetting") == VALIDATION
    assert failure("PutAccountSetting", {"name": ""}, validator) == (
        VALIDATION,
        "2 validation errors detected: "
        + viol("Value ''", "name", f"{GE_LEN} 1")
        + "; "
        + viol("Value null", "value", NOT_NULL),
    )
    assert failure("PutAccountSetting", {"name": "x", "value": None}, validator) == (
        VALIDATION,
        "1 validation error detected: " + viol("Value null", "value", NOT_NULL),
    )


def test_validation_exception_reports_length_and_pattern_of_one_value() -> None:
    validator = InputValidator(ecr_model_with_validation_only("CreateRepository"))
    code, message = failure("CreateRepository", {"repositoryName": "A", "registryId": "x"}, validator)
    assert code == VALIDATION
    assert message == (
        "3 validation errors detected: "
        "Value 'x' at 'registryId' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [0-9]{12}; "
        "Value 'A' at 'repositoryName' failed to satisfy constraint: "
        "Member must have length greater than or equal to 2; "
        f"Value 'A' at 'repositoryName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {REPO_PATTERN}"
    )


SYNTHETIC: dict[str, Any] = {
    "version": "2.0",
    "metadata": {
        "apiVersion": "2020-01-01",
        "endpointPrefix": "synthetic",
        "jsonVersion": "1.1",
        "protocol": "json",
        "serviceId": "Synthetic",
        "signatureVersion": "v4",
        "targetPrefix": "Synthetic",
        "uid": "synthetic-2020-01-01",
    },
    "operations": {
        "Put": {
            "name": "Put",
            "http": {"method": "POST", "requestUri": "/"},
            "input": {"shape": "PutRequest"},
            "errors": [{"shape": "ValidationException"}],
        },
        "Both": {
            "name": "Both",
            "http": {"method": "POST", "requestUri": "/"},
            "input": {"shape": "PutRequest"},
            "errors": [{"shape": "ValidationException"}, {"shape": "InvalidParameterException"}],
        },
        "Neither": {
            "name": "Neither",
            "http": {"method": "POST", "requestUri": "/"},
            "input": {"shape": "PutRequest"},
        },
        "NoInput": {"name": "NoInput", "http": {"method": "POST", "requestUri": "/"}},
    },
    "shapes": {
        "PutRequest": {
            "type": "structure",
            "required": ["name"],
            "members": {
                "name": {"shape": "Name"},
                "secret": {"shape": "Secret"},
                "labels": {"shape": "Labels"},
                "when": {"shape": "When"},
                "ratio": {"shape": "Ratio"},
                "data": {"shape": "Data"},
                "node": {"shape": "Node"},
            },
        },
        "Name": {"type": "string", "min": 2, "max": 3, "pattern": "\\p{Lower}+"},
        "Secret": {"type": "string", "max": 2, "sensitive": True},
        "Labels": {"type": "map", "key": {"shape": "LabelKey"}, "value": {"shape": "LabelValue"}, "max": 2},
        "LabelKey": {"type": "string", "min": 1, "max": 3},
        "LabelValue": {"type": "integer", "min": 0},
        "When": {"type": "timestamp"},
        "Ratio": {"type": "double", "min": 0, "max": 1},
        "Data": {"type": "blob", "max": 3},
        "Node": {"type": "structure", "members": {"child": {"shape": "Node"}, "name": {"shape": "Name"}}},
        "ValidationException": {"type": "structure", "members": {}, "exception": True},
        "InvalidParameterException": {"type": "structure", "members": {}, "exception": True},
    },
}
SYN = InputValidator(ServiceModel(SYNTHETIC, service_name="synthetic"))


def test_synthetic_error_code_mapping() -> None:
    assert SYN.error_code("Put") == VALIDATION
    assert SYN.error_code("Both") == INVALID_PARAMETER
    assert SYN.error_code("Neither") == VALIDATION
    assert SYN.validate("NoInput", {"anything": 1}) == {"anything": 1}
    assert failure("Both", {"name": "AB"}, SYN) == ipe("name", "must satisfy regular expression '\\p{Lower}+'")


def test_synthetic_accepts_every_type() -> None:
    params = {
        "name": "abc",
        "secret": "ab",
        "labels": {"a": 0, "bcd": 5},
        "when": "2024-05-01T12:00:00Z",
        "ratio": 0.5,
        "data": base64.b64encode(b"abc").decode(),
        "node": {"child": {"child": {"name": "ab"}}},
    }
    assert SYN.validate("Put", params) is params
    assert SYN.validate("Put", {"name": "ab", "when": 1700000000, "ratio": 1}) is not None


def test_synthetic_collects_violations_across_types() -> None:
    params = {
        "name": "ABCD",
        "secret": "hunter2",
        "labels": {"": 1, "b": -1, "c": None},
        "data": base64.b64encode(b"abcd").decode(),
        "ratio": 1.5,
        "node": {"child": {"child": {"name": "X"}}},
    }
    code, message = failure("Put", params, SYN)
    assert code == VALIDATION
    violations = message.split(": ", 1)[1].split("; ")
    assert message.startswith("11 validation errors detected: ")
    lower = "Member must satisfy regular expression pattern: \\p{Lower}+"
    assert violations == [
        viol("Value 'ABCD'", "name", f"{LE_LEN} 3"),
        viol("Value 'ABCD'", "name", lower),
        viol("Value", "secret", f"{LE_LEN} 2"),
        viol("Value '{=1, b=-1, c=null}'", "labels", f"{LE_LEN} 2"),
        viol("Value ''", "labels.", f"{GE_LEN} 1"),
        viol("Value '-1'", "labels.b", "Member must have value greater than or equal to 0"),
        viol("Value null", "labels.c", NOT_NULL),
        viol("Value '1.5'", "ratio", "Member must have value less than or equal to 1"),
        viol("Value 'YWJjZA=='", "data", f"{LE_LEN} 3"),
        viol("Value 'X'", "node.child.child.name", f"{GE_LEN} 2"),
        viol("Value 'X'", "node.child.child.name", lower),
    ]


def test_validation_exception_truncates_huge_values() -> None:
    code, message = failure("Put", {"name": "a" * 5000}, SYN)
    assert code == VALIDATION
    assert f"Value '{'a' * 1024}...' at 'name'" in message
    assert len(message) < 2600


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": "ab", "when": "yesterday"}, "STRING_VALUE can not be converted to a Timestamp"),
        ({"name": "ab", "when": True}, "BOOLEAN_VALUE can not be converted to a Timestamp"),
        ({"name": "ab", "when": float("nan")}, "NUMBER_VALUE can not be converted to a Timestamp"),
        ({"name": "ab", "ratio": float("inf")}, "NUMBER_VALUE can not be converted to a Double"),
        ({"name": "ab", "ratio": "0.5"}, "STRING_VALUE can not be converted to a Double"),
        ({"name": "ab", "labels": []}, "START_ARRAY can not be converted to a Map"),
        ({"name": "ab", "labels": {"a": "1"}}, "STRING_VALUE can not be converted to an Integer"),
        ({"name": "ab", "data": 5}, "NUMBER_VALUE can not be converted to a Blob"),
        ({"name": "ab", "data": "YWJ"}, "STRING_VALUE can not be converted to a Blob"),  # missing padding
        ({"name": "ab", "data": "ÿÿÿÿ"}, "STRING_VALUE can not be converted to a Blob"),
        ({"name": "ab", "node": {"child": "x"}}, "STRING_VALUE can not be converted to a Structure"),
    ],
)
def test_synthetic_type_mismatches(params: dict[str, Any], message: str) -> None:
    assert failure("Put", params, SYN) == ser(message)


def test_string_length_counts_utf16_code_units_like_java() -> None:
    assert SYN.validate("Put", {"name": "ab", "secret": "éé"}) is not None
    assert failure("Put", {"name": "ab", "secret": "é😀"}, SYN) == (  # 2 code points, 3 units
        VALIDATION,
        "1 validation error detected: Value at 'secret' failed to satisfy constraint: "
        "Member must have length less than or equal to 2",
    )


# --- Java regex translation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("java", "python"),
    [
        ("\\p{Alnum}+", "[a-zA-Z0-9]+"),
        ("[\\p{Alpha}_-]+", "[a-zA-Z_-]+"),
        ("\\P{Digit}", "[^0-9]"),
        ("\\p{IsUpper}", "[A-Z]"),
        ("a\\z", "a\\Z"),
        ("[]a]", "[\\]a]"),
        ("[^]a]", "[^\\]a]"),
        ("[a-z0-9]+((\\.|_)[a-z]+)*", "[a-z0-9]+((\\.|_)[a-z]+)*"),
    ],
)
def test_java_regex_translation(java: str, python: str) -> None:
    assert _java_regex_to_python(java) == python
    re.compile(python)


@pytest.mark.parametrize("java", ["[a-z&&[^b]]", "[a-z[0-9]]", "\\p{L}", "[\\P{Digit}]"])
def test_untranslatable_java_regex_fails_loudly(java: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        _compile_pattern(java)


# --- cost ---------------------------------------------------------------------------------------

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 1469},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST, "size": 3 * 10**6}]
        * 8,
    }
)
TYPICAL: dict[str, dict[str, Any]] = {
    "PutImage": {
        "registryId": "123456789012",
        "repositoryName": "team/app",
        "imageManifest": MANIFEST,
        "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
        "imageTag": "v1.2.3",
    },
    "DescribeImages": {
        "registryId": "123456789012",
        "repositoryName": "team/app",
        "imageIds": [{"imageDigest": DIGEST}, {"imageTag": "latest"}, {"imageTag": "v1.2.3"}],
        "maxResults": 100,
        "filter": {"tagStatus": "TAGGED"},
    },
}


def test_per_call_cost(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = 20000
    results = []
    for op, params in TYPICAL.items():
        VALIDATOR.validate(op, params)
        start = time.perf_counter()
        for _ in range(rounds):
            VALIDATOR.validate(op, params)
        results.append(f"{op} {(time.perf_counter() - start) / rounds * 1e6:.2f} µs/call")
    with capsys.disabled():
        print("\nvalidation cost: " + ", ".join(results))
