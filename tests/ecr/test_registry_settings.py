"""Registry-level operations through boto3: GetAuthorizationToken, DescribeRegistry,
GetAccountSetting, PutAccountSetting."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.ecr import ACCOUNT, ecr_client, expect_error
from tests.support.live import LiveServer


def test_get_authorization_token(ecr: Any, server: LiveServer) -> None:
    before = datetime.now(UTC)
    (data,) = ecr.get_authorization_token()["authorizationData"]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS"
    assert password
    expires = data["expiresAt"]
    assert isinstance(expires, datetime)
    assert before + timedelta(hours=12) - timedelta(seconds=10) <= expires
    assert expires <= datetime.now(UTC) + timedelta(hours=12) + timedelta(seconds=10)
    assert data["proxyEndpoint"] == f"http://{server.address}"
    # The token is exactly the Basic credential the registry endpoint takes.
    answer = httpx.get(f"{server.url}/v2/", headers={"Authorization": f"Basic {data['authorizationToken']}"})
    assert answer.status_code == 200


def test_get_authorization_token_for_registry_ids(ecr: Any) -> None:
    data = ecr.get_authorization_token(registryIds=[ACCOUNT])["authorizationData"]
    assert len(data) == 1
    assert base64.b64decode(data[0]["authorizationToken"]).startswith(b"AWS:")


def test_describe_registry(ecr: Any) -> None:
    answer = ecr.describe_registry()
    assert answer["registryId"] == ACCOUNT
    assert answer["replicationConfiguration"] == {"rules": []}


def test_registry_id_of_another_account_is_denied(ecr: Any) -> None:
    expect_error(ecr.describe_repositories, "AccessDeniedException", registryId="210987654321")


DEFAULTS = {"BLOB_MOUNTING": "DISABLED", "REGISTRY_POLICY_SCOPE": "V2", "BASIC_SCAN_TYPE_VERSION": "AWS_NATIVE"}


@pytest.fixture(scope="module")
def settings_ecr(server: LiveServer) -> Any:
    """A region of their own: account settings are per registry, and these tests change them."""
    return ecr_client(server.url, region="ap-southeast-2")


@pytest.mark.parametrize(("name", "default"), sorted(DEFAULTS.items()))
def test_account_setting_defaults(ecr: Any, name: str, default: str) -> None:
    assert {k: v for k, v in ecr.get_account_setting(name=name).items() if k != "ResponseMetadata"} == {
        "name": name,
        "value": default,
    }


def test_put_account_setting_round_trip(settings_ecr: Any, ecr: Any) -> None:
    put = settings_ecr.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    assert (put["name"], put["value"]) == ("BLOB_MOUNTING", "ENABLED")
    assert settings_ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "ENABLED"
    # Settings are regional: us-east-1 keeps its default.
    assert ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "DISABLED"
    settings_ecr.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
    assert settings_ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "DISABLED"
    put = settings_ecr.put_account_setting(name="BASIC_SCAN_TYPE_VERSION", value="AWS_NATIVE")
    assert (put["name"], put["value"]) == ("BASIC_SCAN_TYPE_VERSION", "AWS_NATIVE")
    assert settings_ecr.get_account_setting(name="BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"


def test_basic_scan_type_version_accepts_only_aws_native(settings_ecr: Any) -> None:
    """botocore's PutAccountSetting: "Valid value for basic scan type: AWS_NATIVE" (CLAIR is retired)."""
    import botocore.session

    doc = botocore.session.get_session().get_service_model("ecr").operation_model("PutAccountSetting")
    assert "Valid value for basic scan type: <code>AWS_NATIVE</code>" in doc.input_shape.members["value"].documentation
    response = expect_error(
        settings_ecr.put_account_setting, "InvalidParameterException", name="BASIC_SCAN_TYPE_VERSION", value="CLAIR"
    )
    assert response["Error"]["Message"] == (
        "Invalid parameter at 'value' failed to satisfy constraint: 'Member must satisfy enum value set: [AWS_NATIVE]'"
    )
    assert settings_ecr.get_account_setting(name="BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"


def test_invalid_account_setting(ecr: Any) -> None:
    response = expect_error(ecr.get_account_setting, "InvalidParameterException", name="NO_SUCH_SETTING")
    assert response["Error"]["Message"].startswith("Invalid parameter at 'name' failed to satisfy constraint:")
    expect_error(ecr.put_account_setting, "InvalidParameterException", name="NO_SUCH_SETTING", value="ENABLED")
    response = expect_error(ecr.put_account_setting, "InvalidParameterException", name="BLOB_MOUNTING", value="MAYBE")
    assert response["Error"]["Message"] == (
        "Invalid parameter at 'value' failed to satisfy constraint: 'Member must satisfy enum value set: "
        "[ENABLED, DISABLED]'"
    )
    assert ecr.get_account_setting(name="BLOB_MOUNTING")["value"] == "DISABLED"
