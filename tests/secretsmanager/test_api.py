"""The Secrets Manager face over boto3 against the real server (same port as ECR): every
operation, version stages, lookups by name / ARN / partial ARN, ListSecrets pagination and
filters, deletion with a recovery window (moved past with clock control), AWS's errors, the
values encrypted at rest, per-region secrets and authorization of a restricted user."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import httpx
import pytest
from botocore.config import Config

from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer

ACCOUNT = "123456789012"
ARN_RE = re.compile(rf"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:(?P<name>.+)-[A-Za-z0-9]{{6}}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("sm") / "data", args=["--allow-clock-control"]).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def sm(server: LiveServer) -> Any:
    return server.secretsmanager()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return f"t/{request.node.name.removeprefix('test_')[:40]}/{uuid.uuid4().hex[:6]}"


def _code(info: pytest.ExceptionInfo[Exception]) -> str:
    return str(info.value.response["Error"]["Code"])  # type: ignore[attr-defined]


def _message(info: pytest.ExceptionInfo[Exception]) -> str:
    return str(info.value.response["Error"]["Message"])  # type: ignore[attr-defined]


def test_create_get_and_version_stages(sm: Any, name: str) -> None:
    created = sm.create_secret(Name=name, SecretString='{"username":"u","accessToken":"t1"}')
    assert ARN_RE.fullmatch(created["ARN"])["name"] == name  # type: ignore[index]
    assert created["Name"] == name
    first = created["VersionId"]
    got = sm.get_secret_value(SecretId=name)
    assert got["SecretString"] == '{"username":"u","accessToken":"t1"}'
    assert got["VersionId"] == first
    assert got["VersionStages"] == ["AWSCURRENT"]
    assert got["ARN"] == created["ARN"]

    second = sm.put_secret_value(SecretId=name, SecretString="t2")
    assert second["VersionStages"] == ["AWSCURRENT"]
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "t2"
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert (previous["SecretString"], previous["VersionId"]) == ('{"username":"u","accessToken":"t1"}', first)
    assert sm.get_secret_value(SecretId=name, VersionId=first)["VersionStages"] == ["AWSPREVIOUS"]

    third = sm.put_secret_value(SecretId=name, SecretString="t3")
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert stages == {second["VersionId"]: ["AWSPREVIOUS"], third["VersionId"]: ["AWSCURRENT"]}  # first: unlabelled
    assert sm.get_secret_value(SecretId=name, VersionId=first)["VersionStages"] == []

    pending = sm.put_secret_value(SecretId=name, SecretString="t4", VersionStages=["AWSPENDING"])
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "t3"  # AWSCURRENT did not move
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPENDING")["VersionId"] == pending["VersionId"]

    token = str(uuid.uuid4())
    once = sm.put_secret_value(SecretId=name, SecretString="t5", ClientRequestToken=token)
    again = sm.put_secret_value(SecretId=name, SecretString="t5", ClientRequestToken=token)  # a retry: the same
    assert once["VersionId"] == again["VersionId"] == token
    with pytest.raises(sm.exceptions.ResourceExistsException) as info:
        sm.put_secret_value(SecretId=name, SecretString="other", ClientRequestToken=token)
    assert _message(info) == "You can't modify an existing version, you can only create a new version."

    with pytest.raises(sm.exceptions.ResourceNotFoundException) as info:
        sm.get_secret_value(SecretId=name, VersionStage="NOPE")
    assert _message(info) == "Secrets Manager can't find the specified secret value for staging label: NOPE"
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.get_secret_value(SecretId=name, VersionId=str(uuid.uuid4()))


def test_binary_secret_and_a_secret_without_value(sm: Any, name: str) -> None:
    payload = bytes(range(256))
    sm.create_secret(Name=name, SecretBinary=payload)
    got = sm.get_secret_value(SecretId=name)
    assert got["SecretBinary"] == payload
    assert "SecretString" not in got

    empty = sm.create_secret(Name=name + "-empty")
    assert "VersionId" not in empty
    with pytest.raises(sm.exceptions.ResourceNotFoundException) as info:
        sm.get_secret_value(SecretId=name + "-empty")
    assert _message(info) == "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT"


def test_lookup_by_name_full_arn_and_partial_arn(sm: Any, name: str) -> None:
    arn = sm.create_secret(Name=name, SecretString="v")["ARN"]
    partial = arn[: -len("-XXXXXX")]
    for secret_id in (name, arn, partial):
        assert sm.describe_secret(SecretId=secret_id)["ARN"] == arn
    wrong_suffix = partial + "-ZZZZZZ" if not arn.endswith("-ZZZZZZ") else partial + "-YYYYYY"
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.get_secret_value(SecretId=wrong_suffix)
    other_account = arn.replace(ACCOUNT, "210987654321")
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.get_secret_value(SecretId=other_account)


def test_update_describe_tags_and_resource_policy(sm: Any, name: str) -> None:
    created = sm.create_secret(
        Name=name, SecretString="a", Description="first", Tags=[{"Key": "team", "Value": "infra"}]
    )
    updated = sm.update_secret(SecretId=name, Description="second", KmsKeyId="alias/mine")
    assert "VersionId" not in updated  # no value given: no new version
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "a"
    with_value = sm.update_secret(SecretId=name, SecretString="b")
    assert sm.get_secret_value(SecretId=name)["VersionId"] == with_value["VersionId"]
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")["VersionId"] == created["VersionId"]

    sm.tag_resource(SecretId=name, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "core"}])
    sm.untag_resource(SecretId=name, TagKeys=["env"])
    described = sm.describe_secret(SecretId=name)
    assert described["Description"] == "second"
    assert described["KmsKeyId"] == "alias/mine"
    assert described["Tags"] == [{"Key": "team", "Value": "core"}]
    assert described["RotationEnabled"] is False
    assert "DeletedDate" not in described
    assert abs(described["CreatedDate"] - datetime.now(UTC)) < timedelta(minutes=5)
    assert described["LastChangedDate"] >= described["CreatedDate"]

    policy = sm.get_resource_policy(SecretId=name)
    assert (policy["ARN"], policy["Name"]) == (created["ARN"], name)
    assert "ResourcePolicy" not in policy
    with pytest.raises(sm.exceptions.InvalidParameterException):
        sm.tag_resource(SecretId=name, Tags=[{"Key": "aws:reserved", "Value": "x"}])


def test_list_secrets_pages_and_filters(sm: Any, request: pytest.FixtureRequest) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}/s{i}" for i in range(5)]
    for i, n in enumerate(names):
        sm.create_secret(Name=n, SecretString="x", Tags=[{"Key": f"kind-{i % 2}", "Value": f"v{i}"}])
    by_name = [{"Key": "name", "Values": [prefix]}]

    seen: list[str] = []
    page = sm.list_secrets(MaxResults=2, Filters=by_name)
    while True:
        assert len(page["SecretList"]) <= 2
        seen += [s["Name"] for s in page["SecretList"]]
        if "NextToken" not in page:
            break
        page = sm.list_secrets(MaxResults=2, Filters=by_name, NextToken=page["NextToken"])
    assert seen == names  # by CreatedDate, oldest first
    assert all("SecretVersionsToStages" in s for s in sm.list_secrets(Filters=by_name)["SecretList"])

    paginated = [s["Name"] for p in sm.get_paginator("list_secrets").paginate(Filters=by_name) for s in p["SecretList"]]
    assert paginated == names
    newest_first = sm.list_secrets(Filters=by_name, SortOrder="desc")["SecretList"]
    assert [s["Name"] for s in newest_first] == names[::-1]

    tagged = sm.list_secrets(Filters=[*by_name, {"Key": "tag-key", "Values": ["kind-1"]}])["SecretList"]
    assert [s["Name"] for s in tagged] == [names[1], names[3]]
    negated = sm.list_secrets(Filters=[*by_name, {"Key": "tag-key", "Values": ["!kind-1"]}])["SecretList"]
    assert [s["Name"] for s in negated] == [names[0], names[2], names[4]]
    values = sm.list_secrets(Filters=[*by_name, {"Key": "tag-value", "Values": ["v4", "v0"]}])["SecretList"]
    assert [s["Name"] for s in values] == [names[0], names[4]]
    assert sm.list_secrets(Filters=[{"Key": "name", "Values": [prefix.upper()]}])["SecretList"] == []  # case-sensitive

    first = sm.list_secrets(MaxResults=1, Filters=by_name)
    with pytest.raises(sm.exceptions.InvalidNextTokenException):  # a token of another listing
        sm.list_secrets(MaxResults=1, Filters=[{"Key": "name", "Values": ["x"]}], NextToken=first["NextToken"])
    with pytest.raises(sm.exceptions.InvalidNextTokenException):
        sm.list_secrets(NextToken="forged")


def test_delete_with_recovery_window_restore_and_force(sm: Any, server: LiveServer, name: str) -> None:
    arn = sm.create_secret(Name=name, SecretString="keep")["ARN"]
    with pytest.raises(sm.exceptions.InvalidParameterException) as info:
        sm.delete_secret(SecretId=name, RecoveryWindowInDays=6)
    assert _message(info) == "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
    with pytest.raises(sm.exceptions.InvalidParameterException):
        sm.delete_secret(SecretId=name, RecoveryWindowInDays=31)
    with pytest.raises(sm.exceptions.InvalidParameterException):
        sm.delete_secret(SecretId=name, RecoveryWindowInDays=7, ForceDeleteWithoutRecovery=True)

    deleted = sm.delete_secret(SecretId=name)
    assert deleted["ARN"] == arn
    assert abs(deleted["DeletionDate"] - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    with pytest.raises(sm.exceptions.InvalidRequestException) as info:
        sm.get_secret_value(SecretId=name)
    assert _message(info) == "You can't perform this operation on the secret because it was marked for deletion."
    changes: list[Callable[[], Any]] = [
        lambda: sm.put_secret_value(SecretId=name, SecretString="x"),
        lambda: sm.update_secret(SecretId=name, Description="x"),
        lambda: sm.delete_secret(SecretId=name),
    ]
    for change in changes:
        with pytest.raises(sm.exceptions.InvalidRequestException):
            change()
    with pytest.raises(sm.exceptions.InvalidRequestException):
        sm.create_secret(Name=name, SecretString="again")
    assert "DeletedDate" in sm.describe_secret(SecretId=name)
    listed = {s["Name"] for s in sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]}
    assert listed == set()
    planned = sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}], IncludePlannedDeletion=True)
    assert [s["Name"] for s in planned["SecretList"]] == [name]

    assert sm.restore_secret(SecretId=name)["ARN"] == arn
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "keep"
    assert "DeletedDate" not in sm.describe_secret(SecretId=name)

    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.describe_secret(SecretId=name)
    assert sm.create_secret(Name=name, SecretString="new")["ARN"] != arn  # the name is free again

    sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    httpx.post(f"{server.url}/_moorage/clock", json={"advance_seconds": 8 * 86400}, timeout=10).raise_for_status()
    with pytest.raises(sm.exceptions.ResourceNotFoundException):  # the window ended: gone
        sm.describe_secret(SecretId=name)
    sm.create_secret(Name=name, SecretString="after the window")


def test_errors_as_aws_answers_them(sm: Any, server: LiveServer, name: str) -> None:
    with pytest.raises(sm.exceptions.ResourceNotFoundException) as info:
        sm.get_secret_value(SecretId="no/such/secret")
    assert _message(info) == "Secrets Manager can't find the specified secret."
    token = str(uuid.uuid4())
    first = sm.create_secret(Name=name, SecretString="x", ClientRequestToken=token)
    retried = sm.create_secret(Name=name, SecretString="x", ClientRequestToken=token)  # a retry: the same answer
    assert (retried["ARN"], retried["VersionId"]) == (first["ARN"], first["VersionId"]) == (first["ARN"], token)
    with pytest.raises(sm.exceptions.ResourceExistsException) as info:
        sm.create_secret(Name=name, SecretString="y")
    assert _message(info) == f"The operation failed because the secret {name} already exists."
    with pytest.raises(sm.exceptions.InvalidParameterException) as info:
        sm.create_secret(Name=name + "2", SecretString="y", SecretBinary=b"z")
    assert "both a binary secret value and a string secret value" in _message(info)
    with pytest.raises(sm.exceptions.InvalidParameterException) as info:
        sm.create_secret(Name="bad name!", SecretString="y")
    assert _message(info).startswith("Invalid name.")
    with pytest.raises(sm.exceptions.InvalidRequestException):
        sm.put_secret_value(SecretId=name)

    unchecked = boto3.client(
        "secretsmanager",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_ACCESS_KEY_ID,
        aws_secret_access_key=ROOT_SECRET_ACCESS_KEY,
        config=Config(parameter_validation=False),
    )
    with pytest.raises(unchecked.exceptions.ClientError) as info:
        unchecked.create_secret(Name="n" * 513, SecretString="")
    assert _code(info) == "ValidationException"
    assert _message(info).startswith("2 validation errors detected: ")
    assert "at 'name' failed to satisfy constraint: Member must have length less than or equal to 512" in _message(info)
    assert "Value at 'secretString' failed to satisfy constraint" in _message(info)  # sensitive: no value shown
    with pytest.raises(unchecked.exceptions.ClientError) as info:
        unchecked.list_secrets(MaxResults=0)
    assert _code(info) == "ValidationException"
    with pytest.raises(unchecked.exceptions.ClientError) as info:
        unchecked.rotate_secret(SecretId=name)
    assert _code(info) == "UnsupportedOperationException"


def _signed(server: LiveServer, service: str, target: str, body: dict[str, Any]) -> httpx.Response:
    request = botocore.awsrequest.AWSRequest(
        "POST",
        server.url + "/",
        data=json.dumps(body).encode(),
        headers={"x-amz-target": target, "content-type": "application/x-amz-json-1.1"},
    )
    creds = botocore.credentials.Credentials(ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY)
    botocore.auth.SigV4Auth(creds, service, "us-east-1").add_auth(request)
    return httpx.post(server.url + "/", content=request.body, headers=dict(request.headers.items()), timeout=10)


def test_the_signature_must_be_scoped_to_secretsmanager(server: LiveServer) -> None:
    good = _signed(server, "secretsmanager", "secretsmanager.ListSecrets", {})
    assert good.status_code == 200, good.text
    wrong = _signed(server, "ecr", "secretsmanager.ListSecrets", {})
    assert wrong.status_code == 400  # sigv4.py: AWS answers this scope error with 400
    assert wrong.json()["__type"] == "InvalidSignatureException"
    assert "Credential should be scoped to correct service: 'secretsmanager'." in wrong.text
    # and the other way round: an ECR call signed for secretsmanager is refused by the ECR face
    ecr = _signed(server, "secretsmanager", "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories", {})
    assert ecr.status_code == 400
    assert "Credential should be scoped to correct service: 'ecr'." in ecr.text


def test_secrets_are_per_region(server: LiveServer, name: str) -> None:
    east, west = server.secretsmanager("us-east-1"), server.secretsmanager("eu-west-1")
    arn = east.create_secret(Name=name, SecretString="east")["ARN"]
    with pytest.raises(west.exceptions.ResourceNotFoundException):
        west.get_secret_value(SecretId=name)
    with pytest.raises(west.exceptions.ResourceNotFoundException):
        west.get_secret_value(SecretId=arn)
    west_arn = west.create_secret(Name=name, SecretString="west")["ARN"]
    assert ":eu-west-1:" in west_arn
    assert east.get_secret_value(SecretId=name)["SecretString"] == "east"
    assert west.get_secret_value(SecretId=name)["SecretString"] == "west"


def test_values_are_encrypted_at_rest(sm: Any, server: LiveServer, name: str) -> None:
    marker = f"plaintext-marker-{uuid.uuid4().hex}"
    binary_marker = f"binary-marker-{uuid.uuid4().hex}".encode()
    sm.create_secret(Name=name, SecretString=json.dumps({"username": "u", "accessToken": marker}))
    sm.create_secret(Name=name + "-bin", SecretBinary=binary_marker)
    assert sm.get_secret_value(SecretId=name)["SecretString"].endswith(f'"{marker}"}}')
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)
    for path in files:  # the database, its WAL, everything the server wrote
        data = path.read_bytes()
        assert marker.encode() not in data, path
        assert binary_marker not in data, path
        assert base64.b64encode(binary_marker) not in data, path
    database = next(p for p in files if p.suffix == ".db")
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT v.ciphertext FROM secret_versions v JOIN secrets s ON s.arn = v.arn WHERE s.name = ?", (name,)
        ).fetchall()
    assert len(rows) == 1
    sealed = base64.b64decode(rows[0][0])
    assert len(sealed) == 12 + len(json.dumps({"username": "u", "accessToken": marker})) + 16  # nonce + text + tag


def _admin(server: LiveServer, *args: str, stdin: str | None = None) -> str:
    command = [sys.executable, "-m", "moorage", "admin", *args, "--data-dir", str(server.data_dir)]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_restricted_user_is_authorized_per_secret(sm: Any, server: LiveServer, tmp_path: Path) -> None:
    app_arn = sm.create_secret(Name="app/db", SecretString="app-password")["ARN"]
    sm.create_secret(Name="ops/root", SecretString="ops-password")
    _admin(server, "create-user", "reader")
    out = _admin(server, "create-access-key", "--user", "reader")
    values = dict(line.split("=", 1) for line in out.strip().splitlines() if "=" in line)
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:app/*",
            }
        ],
    }
    _admin(server, "attach-user-policy", "reader", "--name", "apps", "--document", "-", stdin=json.dumps(document))
    reader = server.secretsmanager(
        access_key_id=values["AWS_ACCESS_KEY_ID"], secret_access_key=values["AWS_SECRET_ACCESS_KEY"]
    )
    assert reader.get_secret_value(SecretId="app/db")["SecretString"] == "app-password"
    assert reader.describe_secret(SecretId=app_arn)["Name"] == "app/db"
    user = f"arn:aws:iam::{ACCOUNT}:user/reader"
    with pytest.raises(reader.exceptions.ClientError) as info:
        reader.get_secret_value(SecretId="ops/root")
    assert _code(info) == "AccessDeniedException"
    assert _message(info).startswith(
        f"User: {user} is not authorized to perform: secretsmanager:GetSecretValue on resource: "
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:ops/root-"
    )
    calls: list[Callable[[], Any]] = [
        lambda: reader.put_secret_value(SecretId="app/db", SecretString="changed"),
        lambda: reader.create_secret(Name="app/new", SecretString="x"),
        lambda: reader.list_secrets(),
        lambda: reader.delete_secret(SecretId="app/db"),
    ]
    for call in calls:
        with pytest.raises(reader.exceptions.ClientError) as info:
            call()
        assert _code(info) == "AccessDeniedException"
    assert sm.get_secret_value(SecretId="app/db")["SecretString"] == "app-password"  # nothing changed


def test_error_bodies_have_the_services_shape(server: LiveServer) -> None:
    missing = _signed(server, "secretsmanager", "secretsmanager.DescribeSecret", {"SecretId": "absent"})
    assert missing.status_code == 400
    assert missing.headers["content-type"] == "application/x-amz-json-1.1"
    assert missing.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert missing.json() == {
        "__type": "ResourceNotFoundException",
        "Message": "Secrets Manager can't find the specified secret.",
    }
    unknown = _signed(server, "secretsmanager", "secretsmanager.NoSuchOperation", {})
    assert (unknown.status_code, unknown.json()["__type"]) == (400, "UnknownOperationException")
    body = _signed(server, "secretsmanager", "secretsmanager.GetSecretValue", {"SecretId": 7})
    assert body.status_code == 400
    assert body.json()["__type"] == "SerializationException"


def test_open_mode_takes_any_key(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "data", args=["--auth", "open"]) as live:
        anyone = live.secretsmanager(access_key_id="anything", secret_access_key="at-all")
        arn = anyone.create_secret(Name="open/one", SecretString="v")["ARN"]
        assert arn.startswith(f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:open/one-")
        other = live.secretsmanager(access_key_id="210987654321", secret_access_key="x")  # that account's root
        with pytest.raises(other.exceptions.ResourceNotFoundException):
            other.get_secret_value(SecretId="open/one")
        assert anyone.get_secret_value(SecretId="open/one")["SecretString"] == "v"
