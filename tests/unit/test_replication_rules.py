"""Pure parts of replication and creation templates: which destinations a repository's pushes go
to, how template prefixes match, and which failure code a remote's answer is."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from moorage.metadata.replication import TemplateRecord
from moorage.model import RegistryRef
from moorage.remote import RemoteError
from moorage.replication import FAILURE_CODES, Destination, _remote_failure, destinations_for
from moorage.templates import Template, normalize_prefix, prefix_matches

WEST = {"region": "eu-west-1", "registryId": "123456789012"}
OTHER = {"region": "us-east-1", "registryId": "210987654321"}


def test_a_rule_without_filters_matches_every_repository() -> None:
    config = {"rules": [{"destinations": [WEST]}]}
    assert destinations_for(config, "anything/at/all") == [Destination("eu-west-1", "123456789012")]


def test_filters_are_name_prefixes_and_destinations_are_unique() -> None:
    config = {
        "rules": [
            {"destinations": [WEST], "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]},
            {
                "destinations": [OTHER, WEST],
                "repositoryFilters": [
                    {"filter": "prod/api", "filterType": "PREFIX_MATCH"},
                    {"filter": "team-", "filterType": "PREFIX_MATCH"},
                ],
            },
        ]
    }
    west, other = Destination("eu-west-1", "123456789012"), Destination("us-east-1", "210987654321")
    assert destinations_for(config, "prod/api-gateway") == [west, other]
    assert destinations_for(config, "production") == [west]  # ECR's filter is a plain prefix
    assert destinations_for(config, "team-a/app") == [other, west]
    assert destinations_for(config, "dev/app") == []
    assert destinations_for({"rules": []}, "prod/app") == []
    assert destinations_for(None, "prod/app") == []


def test_template_prefixes_match_on_a_slash_boundary() -> None:
    assert normalize_prefix("prod/") == "prod"
    assert normalize_prefix("ROOT") == "ROOT"
    assert prefix_matches("prod", "prod/app")
    assert prefix_matches("prod/team", "prod/team/app")
    assert not prefix_matches("prod", "production/app")
    assert not prefix_matches("prod", "prod")
    assert prefix_matches("ROOT", "anything")


def test_a_template_survives_its_stored_document() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    template = Template(
        prefix="prod",
        applied_for=("REPLICATION", "CREATE_ON_PUSH"),
        description="d",
        encryption_type="KMS",
        kms_key="arn:aws:kms:us-east-1:123456789012:key/abc",
        resource_tags=(("team", "a"), ("tier", "1")),
        tag_mutability="IMMUTABLE_WITH_EXCLUSION",
        mutability_exclusions=("latest*",),
        repository_policy="{}",
        lifecycle_policy='{"rules": []}',
        custom_role_arn="arn:aws:iam::123456789012:role/r",
    )
    record = TemplateRecord(RegistryRef("123456789012", "us-east-1"), "prod", template.document(), at, at)
    assert Template.from_record(record) == template


@pytest.mark.parametrize(
    ("kind", "status", "code", "expected"),
    [
        ("unavailable", None, None, ("DESTINATION_UNREACHABLE", True)),
        ("unavailable", 503, None, ("DESTINATION_UNREACHABLE", True)),
        ("denied", 401, None, ("ACCESS_DENIED", False)),
        ("rejected", 400, "MANIFEST_INVALID", ("DESTINATION_REJECTED", False)),
        ("rejected", 400, "LimitExceededException", ("LIMIT_EXCEEDED", False)),
        ("not_found", 404, "BLOB_UNKNOWN", ("DESTINATION_REJECTED", False)),
    ],
)
def test_remote_answers_map_to_documented_failure_codes(
    kind: str, status: int | None, code: str | None, expected: tuple[str, bool]
) -> None:
    found = _remote_failure(RemoteError(kind, "x", status=status, code=code))
    assert found == expected
    assert found[0] in FAILURE_CODES
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"| `{found[0]}` |" in readme
