"""Every operation of botocore's ECR model is either implemented or explicitly pending, and a
pending one answers UnsupportedOperationException naming itself (never canned data)."""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from moorage.ecr import PENDING_OPERATIONS, all_handlers

REPO = "pending/ops"
IMAGE = {"imageTag": "v1"}
PRINCIPAL = "arn:aws:iam::123456789012:role/ci"
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
    "GetLifecyclePolicy": {"repositoryName": REPO},
    "GetLifecyclePolicyPreview": {"repositoryName": REPO},
    "GetRegistryPolicy": {},
    "GetRegistryScanningConfiguration": {},
    "GetRepositoryPolicy": {"repositoryName": REPO},
    "GetSigningConfiguration": {},
    "ListPullTimeUpdateExclusions": {},
    "PutLifecyclePolicy": {"repositoryName": REPO, "lifecyclePolicyText": LIFECYCLE},
    "PutRegistryPolicy": {"policyText": POLICY},
    "PutRegistryScanningConfiguration": {},
    "PutReplicationConfiguration": {"replicationConfiguration": {"rules": []}},
    "PutSigningConfiguration": {"signingConfiguration": {"rules": []}},
    "RegisterPullTimeUpdateExclusion": {"principalArn": PRINCIPAL},
    "SetRepositoryPolicy": {"repositoryName": REPO, "policyText": POLICY},
    "StartImageScan": {"repositoryName": REPO, "imageId": IMAGE},
    "StartLifecyclePolicyPreview": {"repositoryName": REPO},
    "UpdateImageStorageClass": {"repositoryName": REPO, "imageId": IMAGE, "targetStorageClass": "ARCHIVE"},
    "UpdatePullThroughCacheRule": {"ecrRepositoryPrefix": "ecr-public"},
    "UpdateRepositoryCreationTemplate": {"prefix": "templated"},
    "ValidatePullThroughCacheRule": {"ecrRepositoryPrefix": "ecr-public"},
}


def model_operations() -> set[str]:
    return set(botocore.session.get_session().get_service_model("ecr").operation_names)


def test_every_model_operation_is_handled_or_pending() -> None:
    handled = set(all_handlers())
    assert not handled & PENDING_OPERATIONS, "an operation is both implemented and pending"
    assert handled | PENDING_OPERATIONS == model_operations()


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


@pytest.mark.parametrize("operation", sorted(PENDING_OPERATIONS))
def test_pending_operation_is_unsupported(ecr: Any, operation: str) -> None:
    assert operation in PARAMS, f"add minimal input for {operation} to PARAMS"
    method = getattr(ecr, xform_name(operation))
    with pytest.raises(ecr.exceptions.ClientError) as info:
        method(**PARAMS[operation])
    error = info.value.response["Error"]
    assert error["Code"] == "UnsupportedOperationException", info.value.response
    assert operation in error["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
