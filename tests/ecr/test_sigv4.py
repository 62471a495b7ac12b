"""SigV4 on the ECR API, with requests signed by botocore's own signer and sent with httpx."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import httpx
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.ecr import (
    ROOT_KEY_ID,
    ROOT_SECRET,
    TARGET_PREFIX,
    ecr_client,
    expect_error,
    send,
    signed_request,
)
from tests.support.live import LiveServer


def error_of(response: httpx.Response) -> str:
    assert response.headers["x-amzn-requestid"]
    code = str(response.json()["__type"])
    assert response.headers["x-amzn-errortype"] == code
    return code


def test_valid_signature(server: LiveServer) -> None:
    response = send(signed_request(server.url, "DescribeRepositories"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-amz-json-1.1"
    assert response.headers["x-amzn-requestid"]
    assert "repositories" in response.json()


def test_wrong_secret(server: LiveServer) -> None:
    response = send(signed_request(server.url, "DescribeRepositories", secret=ROOT_SECRET + "x"))
    assert response.status_code == 400
    assert error_of(response) == "InvalidSignatureException"
    assert response.json()["message"].startswith("The request signature we calculated does not match")


def test_wrong_service_in_scope(server: LiveServer) -> None:
    response = send(signed_request(server.url, "DescribeRepositories", service="s3"))
    assert response.status_code == 400
    assert error_of(response) == "InvalidSignatureException"


def test_expired_date(server: LiveServer) -> None:
    old = datetime.now(UTC) - timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=old):
        request = signed_request(server.url, "DescribeRepositories")
    assert request.headers["X-Amz-Date"] == old.strftime("%Y%m%dT%H%M%SZ")
    response = send(request)
    assert response.status_code == 400
    assert error_of(response) == "InvalidSignatureException"
    assert "Signature expired" in response.json()["message"]


def test_date_in_the_future(server: LiveServer) -> None:
    ahead = datetime.now(UTC) + timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=ahead):
        request = signed_request(server.url, "DescribeRepositories")
    response = send(request)
    assert error_of(response) == "InvalidSignatureException"


def test_small_clock_skew_is_tolerated(server: LiveServer) -> None:
    skewed = datetime.now(UTC) - timedelta(minutes=4)
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        request = signed_request(server.url, "DescribeRepositories")
    assert send(request).status_code == 200


def test_tampered_body(server: LiveServer, new_name: Callable[[], str]) -> None:
    name = new_name()
    request = signed_request(server.url, "CreateRepository", {"repositoryName": name})
    other = json.dumps({"repositoryName": name + "-evil"}).encode()
    response = send(request, body=other)
    assert response.status_code == 400
    assert error_of(response) == "InvalidSignatureException"
    # Nothing was created, under either name.
    listed = send(signed_request(server.url, "DescribeRepositories", {"repositoryNames": [name + "-evil"]}))
    assert error_of(listed) == "RepositoryNotFoundException"


def test_missing_authorization(server: LiveServer) -> None:
    response = httpx.post(
        server.url + "/",
        content=b"{}",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "DescribeRepositories"},
    )
    assert response.status_code == 403
    assert error_of(response) == "MissingAuthenticationTokenException"


def test_unknown_access_key(server: LiveServer) -> None:
    response = send(signed_request(server.url, "DescribeRepositories", key_id="AKIANOSUCHKEY0000000"))
    assert response.status_code == 400
    assert error_of(response) == "UnrecognizedClientException"
    assert response.json()["message"] == "The security token included in the request is invalid."


def test_security_token_is_refused(server: LiveServer) -> None:
    request = signed_request(server.url, "DescribeRepositories", session_token="FwoGZXIvYXdzEXAMPLE")
    assert request.headers["X-Amz-Security-Token"] == "FwoGZXIvYXdzEXAMPLE"
    response = send(request)
    assert response.status_code == 400
    assert error_of(response) == "UnrecognizedClientException"


def test_boto3_errors_for_bad_credentials(server: LiveServer) -> None:
    expect_error(ecr_client(server.url, secret="wrong").describe_repositories, "InvalidSignatureException")
    expect_error(
        ecr_client(server.url, key_id="AKIAUNKNOWN000000000").describe_repositories, "UnrecognizedClientException"
    )


def test_presigned_query_request(server: LiveServer, repo: str) -> None:
    # botocore's query signer moves a body into the query string (it is made for query protocols), so
    # the pre-signed request carries no body: DescribeRepositories with no parameters.
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=b"",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "DescribeRepositories"},
    )
    SigV4QueryAuth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "ecr", "us-east-1", expires=300).add_auth(request)
    assert "X-Amz-Signature=" in request.url
    assert "X-Amz-Expires=300" in request.url
    assert "Authorization" not in request.headers
    response = send(request)
    assert response.status_code == 200, response.text
    assert response.headers["x-amzn-requestid"]
    assert repo in [r["repositoryName"] for r in response.json()["repositories"]]
    # The query signature covers the URL: change it and the request is refused.
    prepared = request.prepare()
    forged = httpx.post(
        prepared.url.replace("X-Amz-Expires=300", "X-Amz-Expires=600"),
        content=prepared.body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "DescribeRepositories"},
    )
    assert error_of(forged) == "InvalidSignatureException"


def test_expired_presigned_request(server: LiveServer) -> None:
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=b"",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "DescribeRegistry"},
    )
    issued = datetime.now(UTC) - timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=issued):
        SigV4QueryAuth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "ecr", "us-east-1", expires=60).add_auth(request)
    response = send(request)
    assert response.status_code == 400
    assert error_of(response) == "InvalidSignatureException"
    assert "Request has expired" in response.json()["message"]


def test_region_picks_the_registry(server: LiveServer, ecr: Any, repo: str) -> None:
    # Signed for us-west-2: accepted, and it is another (so far empty) registry.
    west = send(signed_request(server.url, "DescribeRepositories", region="us-west-2"))
    assert west.status_code == 200, west.text
    assert west.json()["repositories"] == []
    missing = send(signed_request(server.url, "DescribeRepositories", {"repositoryNames": [repo]}, region="us-west-2"))
    assert error_of(missing) == "RepositoryNotFoundException"
    created = send(signed_request(server.url, "CreateRepository", {"repositoryName": repo}, region="us-west-2"))
    assert created.status_code == 200, created.text
    assert created.json()["repository"]["repositoryArn"].startswith("arn:aws:ecr:us-west-2:")
    west_client = ecr_client(server.url, region="us-west-2")
    assert [r["repositoryName"] for r in west_client.describe_repositories()["repositories"]] == [repo]
    # us-east-1 still has its own repository of that name, and far more besides.
    east = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert east["repositoryArn"].startswith("arn:aws:ecr:us-east-1:")
    west_client.delete_repository(repositoryName=repo)
    assert ecr.describe_repositories(repositoryNames=[repo])["repositories"][0] == east


def test_unknown_target(server: LiveServer) -> None:
    for target in (TARGET_PREFIX + "DescribeKittens", "SomethingElse_V1.DescribeRepositories", ""):
        response = httpx.post(
            server.url + "/",
            content=b"{}",
            headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
        )
        assert response.status_code == 400
        assert error_of(response) == "UnknownOperationException"
    # Signed or not: the operation is looked at first.
    signed = send(signed_request(server.url, "DescribeKittens"))
    assert error_of(signed) == "UnknownOperationException"


def test_every_response_carries_a_request_id(server: LiveServer) -> None:
    responses = [
        send(signed_request(server.url, "DescribeRegistry")),
        send(signed_request(server.url, "DescribeRepositories", {"repositoryNames": ["does-not-exist"]})),
        send(signed_request(server.url, "DescribeRepositories", secret="nope")),
        send(signed_request(server.url, "NoSuchOperation")),
        httpx.post(server.url + "/", content=b"{}", headers={"X-Amz-Target": TARGET_PREFIX + "DescribeRegistry"}),
        send(signed_request(server.url, "DescribeRepositories"), body=b"not json"),
    ]
    ids = [r.headers.get("x-amzn-requestid") for r in responses]
    assert all(ids), [(r.status_code, r.headers) for r in responses]
    assert len(set(ids)) == len(ids)
    assert [r.status_code for r in responses] == [200, 400, 400, 400, 403, 400]


def test_malformed_json_body(server: LiveServer) -> None:
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=b"{not json",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET_PREFIX + "DescribeRepositories"},
    )
    SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "ecr", "us-east-1").add_auth(request)
    response = send(request)
    assert response.status_code == 400
    assert error_of(response) == "SerializationException"
