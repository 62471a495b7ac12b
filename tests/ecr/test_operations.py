"""Every operation of the installed botocore ECR model is either implemented or pending (the model's
operations minus the handlers, derived, never a hand-kept list), and a pending one answers
UnsupportedOperationException naming itself (never canned data)."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import httpx
import pytest

from moorage.ecr import all_handlers, pending_operations
from tests.support.live import LiveServer

REPO = "pending/ops"
IMAGE = {"imageTag": "v1"}
PRINCIPAL = "arn:aws:iam::123456789012:role/ci"
BACKFILL_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "all", "Effect": "Allow", "Principal": "*", "Action": "ecr:*"}],
    }
)
LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "expire untagged images",
                "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"},
            }
        ]
    }
)

# Minimal valid input of every operation that may be pending (the model's required members).
PARAMS: dict[str, dict[str, Any]] = {
    "BatchGetRepositoryScanningConfiguration": {"repositoryNames": [REPO]},
    "CreatePullThroughCacheRule": {"ecrRepositoryPrefix": "ecr-public", "upstreamRegistryUrl": "public.ecr.aws"},
    "CreateRepositoryCreationTemplate": {"prefix": "templated", "appliedFor": ["CREATE_ON_PUSH"]},
    "DeleteLifecyclePolicy": {"repositoryName": REPO},
    "DeletePullThroughCacheRule": {"ecrRepositoryPrefix": "ecr-public"},
    "DeleteRegistryPolicy": {},
    "DeleteRepositoryCreationTemplate": {"prefix": "templated"},
    "DeleteRepositoryPolicy": {"repositoryName": REPO},
    "DeleteSigningConfiguration": {},
    "DeregisterPullTimeUpdateExclusion": {"principalArn": PRINCIPAL},
    "DescribeImageReplicationStatus": {"repositoryName": REPO, "imageId": IMAGE},
    "DescribeImageScanFindings": {"repositoryName": REPO, "imageId": IMAGE},
    "DescribeImageSigningStatus": {"repositoryName": REPO, "imageId": IMAGE},
    "DescribePullThroughCacheRules": {},
    "DescribeRepositoryCreationTemplates": {},
    "DescribeReplicationBackfillResults": {"replicationBackfillId": BACKFILL_ID},
    "GetLifecyclePolicy": {"repositoryName": REPO},
    "GetLifecyclePolicyPreview": {"repositoryName": REPO},
    "GetRegistryPolicy": {},
    "GetRegistryScanningConfiguration": {},
    "GetRepositoryPolicy": {"repositoryName": REPO},
    "GetSigningConfiguration": {},
    "ListPullTimeUpdateExclusions": {},
    "ListReplicationBackfills": {},
    "PutLifecyclePolicy": {"repositoryName": REPO, "lifecyclePolicyText": LIFECYCLE},
    "PutRegistryPolicy": {"policyText": POLICY},
    "PutRegistryScanningConfiguration": {},
    "PutReplicationConfiguration": {"replicationConfiguration": {"rules": []}},
    "PutSigningConfiguration": {"signingConfiguration": {"rules": []}},
    "RegisterPullTimeUpdateExclusion": {"principalArn": PRINCIPAL},
    "SetRepositoryPolicy": {"repositoryName": REPO, "policyText": POLICY},
    "StartImageScan": {"repositoryName": REPO, "imageId": IMAGE},
    "StartLifecyclePolicyPreview": {"repositoryName": REPO},
    "StartReplicationBackfill": {"destination": {"region": "us-west-2", "registryId": "123456789012"}},
    "StopReplicationBackfill": {"replicationBackfillId": BACKFILL_ID},
    "UpdateImageStorageClass": {"repositoryName": REPO, "imageId": IMAGE, "targetStorageClass": "ARCHIVE"},
    "UpdatePullThroughCacheRule": {"ecrRepositoryPrefix": "ecr-public"},
    "UpdateRepositoryCreationTemplate": {"prefix": "templated"},
    "ValidatePullThroughCacheRule": {"ecrRepositoryPrefix": "ecr-public"},
}


def model_operations() -> set[str]:
    return set(botocore.session.get_session().get_service_model("ecr").operation_names)


def test_every_model_operation_is_handled_or_pending() -> None:
    handled, pending, model = set(all_handlers()), pending_operations(), model_operations()
    assert handled <= model, f"handlers for operations the model does not have: {sorted(handled - model)}"
    assert pending == model - handled
    assert not handled & pending
    # Which operations are not implemented yet (`pytest -rP` shows the list).
    print(f"{len(pending)} of {len(model)} operations of the model are not implemented yet:", *sorted(pending))


def test_every_pending_operation_has_minimal_input() -> None:
    """A new botocore model brings new operations: each needs its minimal input here, so that the
    test below (and tests/authz/test_no_skip.py) can call it."""
    assert not pending_operations() - PARAMS.keys(), "add minimal input to PARAMS"


def test_the_implemented_operations() -> None:
    assert set(all_handlers()) >= {
        "CreateRepository",
        "DescribeRepositories",
        "DeleteRepository",
        "PutImageTagMutability",
        "PutImageScanningConfiguration",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
        "PutImage",
        "BatchGetImage",
        "BatchDeleteImage",
        "DescribeImages",
        "ListImages",
        "ListImageReferrers",
        "BatchCheckLayerAvailability",
        "InitiateLayerUpload",
        "UploadLayerPart",
        "CompleteLayerUpload",
        "GetDownloadUrlForLayer",
        "GetAuthorizationToken",
        "DescribeRegistry",
        "GetAccountSetting",
        "PutAccountSetting",
        "SetRepositoryPolicy",
        "GetRepositoryPolicy",
        "DeleteRepositoryPolicy",
        "PutRegistryPolicy",
        "GetRegistryPolicy",
        "DeleteRegistryPolicy",
    }


def test_every_operation_of_the_model_is_implemented() -> None:
    """All 62 operations of botocore's current ECR model have a handler. (A newer botocore brings
    new operations: they are pending until implemented, and answer UnsupportedOperationException
    naming themselves; then this test names them.)"""
    model = model_operations()
    assert len(model) >= 62
    assert not pending_operations(), f"not implemented: {sorted(pending_operations())}"
    assert set(all_handlers()) == model


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "AmazonEC2ContainerRegistry_V20150921.DescribeKittens",
            "Unknown operation AmazonEC2ContainerRegistry_V20150921.DescribeKittens",
        ),
        ("SomethingElse_V1.DescribeRepositories", "Unknown operation SomethingElse_V1.DescribeRepositories"),
        ("", "The request has no X-Amz-Target header naming an operation"),
        ("AmazonEC2ContainerRegistry_V20150921." + "X" * 300, "Unknown operation AmazonEC2ContainerRegistry"),
    ],
)
def test_unknown_operation_says_what_is_unknown(server: LiveServer, target: str, message: str) -> None:
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target:
        headers["X-Amz-Target"] = target
    response = httpx.post(server.url + "/", content=b"{}", headers=headers)
    assert response.status_code == 400
    body = response.json()
    assert body["__type"] == "UnknownOperationException"
    assert body["message"].startswith(message), body
    assert len(body["message"]) < 300
