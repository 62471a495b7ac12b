"""No request path skips authorization: a principal with no permissions (but a registry password:
`nobody` may call GetAuthorizationToken and nothing else) is refused by EVERY implemented operation
of the ECR model and EVERY `/v2/` route but `GET /v2/`, in ECR's error shapes, and nothing changes.
The model's operations not implemented yet answer UnsupportedOperationException to everyone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import botocore.session
import httpx
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from moorage.ecr import all_handlers
from moorage.oci import blobs, manifests
from moorage.registry import ACCOUNT_SETTINGS
from tests.authz.conftest import ACCOUNT_A, World, repo_arn, user_arn
from tests.ecr.test_operations import PARAMS as PENDING_PARAMS
from tests.support.ecr import basic_auth, push_image

REGION = "ca-central-1"
TARGET = "authz/target"
SOURCE = "authz/source"
NOBODY = user_arn(ACCOUNT_A, "nobody")


def _operations() -> list[str]:
    names = set(botocore.session.get_session().get_service_model("ecr").operation_names)
    return sorted((names & set(all_handlers())) - {"GetAuthorizationToken"})


@pytest.fixture(scope="module")
def target(world: World) -> dict[str, Any]:
    """A registry of its own with a repository holding an image, a tagged source repository and
    an upload session in progress: everything a request could change."""
    root = world.ecr("root", REGION)
    root.create_repository(repositoryName=TARGET, tags=[{"Key": "team", "Value": "a"}])
    root.create_repository(repositoryName=SOURCE)
    image = push_image(root, TARGET, "v1", oci=True)
    push_image(root, SOURCE, "s1")
    password = world.password("root", REGION)
    started = httpx.post(f"{world.server.url}/v2/{TARGET}/blobs/uploads/", auth=("AWS", password))
    assert started.status_code == 202, started.text
    upload = started.headers["location"]
    patched = httpx.patch(f"{world.server.url}{upload}", content=b"0123456789", auth=("AWS", password))
    assert patched.status_code == 202
    return {"image": image, "upload": upload, "root_password": password}


def snapshot(world: World, target: dict[str, Any]) -> dict[str, Any]:
    root = world.ecr("root", REGION)

    def attempt(call: Callable[..., Any], **params: Any) -> Any:
        try:
            answer = call(**params)
        except ClientError as exc:
            return exc.response["Error"]["Code"]
        answer.pop("ResponseMetadata", None)
        return answer

    auth = ("AWS", target["root_password"])
    image = target["image"]
    return {
        "repositories": attempt(root.describe_repositories),
        "images": {name: attempt(root.describe_images, repositoryName=name) for name in (TARGET, SOURCE)},
        "tags": attempt(root.list_tags_for_resource, resourceArn=repo_arn(TARGET, region=REGION)),
        "repository_policy": attempt(root.get_repository_policy, repositoryName=TARGET),
        "registry_policy": attempt(root.get_registry_policy),
        "settings": {name: attempt(root.get_account_setting, name=name) for name in ACCOUNT_SETTINGS},
        "upload": httpx.get(f"{world.server.url}{target['upload']}", auth=auth).headers.get("range"),
        "blobs": [
            httpx.head(f"{world.server.url}/v2/{TARGET}/blobs/{b.digest}", auth=auth).status_code
            for b in (image.config, *image.layers)
        ],
        "other_operations": {
            op: attempt(getattr(root, xform_name(op)), **_params(op))
            for op in ("GetLifecyclePolicy", "ListPullTimeUpdateExclusions", "DescribeRegistry")
        },
    }


def _params(operation: str, upload_id: str = "00000000-0000-0000-0000-000000000000") -> dict[str, Any]:
    """Minimal valid input (the model's required members) aimed at the target repository (and
    its upload session in progress)."""
    image_id = {"imageTag": "v1"}
    digest = "sha256:" + "a" * 64
    mine: dict[str, dict[str, Any]] = {
        "CreateRepository": {"repositoryName": "authz/created-by-nobody", "tags": [{"Key": "k", "Value": "v"}]},
        "DescribeRepositories": {},
        "DeleteRepository": {"force": True},
        "PutImageTagMutability": {"imageTagMutability": "IMMUTABLE"},
        "PutImageScanningConfiguration": {"imageScanningConfiguration": {"scanOnPush": True}},
        "TagResource": {"tags": [{"Key": "team", "Value": "b"}]},
        "UntagResource": {"tagKeys": ["team"]},
        "ListTagsForResource": {},
        "PutImage": {"imageManifest": json.dumps({"schemaVersion": 2}), "imageTag": "evil"},
        "BatchGetImage": {"imageIds": [image_id]},
        "BatchDeleteImage": {"imageIds": [image_id]},
        "DescribeImages": {},
        "ListImages": {},
        "ListImageReferrers": {"subjectId": {"imageDigest": digest}},
        "BatchCheckLayerAvailability": {"layerDigests": [digest]},
        "InitiateLayerUpload": {},
        "UploadLayerPart": {"uploadId": upload_id, "partFirstByte": 10, "partLastByte": 10, "layerPartBlob": b"a"},
        "CompleteLayerUpload": {"uploadId": upload_id, "layerDigests": [digest]},
        "GetDownloadUrlForLayer": {"layerDigest": digest},
        "DescribeRegistry": {},
        "GetAccountSetting": {"name": "BLOB_MOUNTING"},
        "PutAccountSetting": {"name": "BLOB_MOUNTING", "value": "ENABLED"},
    }
    params = dict(mine.get(operation, PENDING_PARAMS.get(operation, {})))
    assert operation in mine or operation in PENDING_PARAMS, f"add minimal input for {operation}"
    shape = botocore.session.get_session().get_service_model("ecr").operation_model(operation).input_shape
    members = set(shape.members) if shape is not None else set()
    if "repositoryName" in members:
        params["repositoryName"] = TARGET
    if "repositoryNames" in members and "repositoryNames" in params:
        params["repositoryNames"] = [TARGET]
    if "resourceArn" in members:
        params["resourceArn"] = repo_arn(TARGET, region=REGION)
    return params


def test_every_ecr_operation_refuses_a_principal_without_permissions(world: World, target: dict[str, Any]) -> None:
    before = snapshot(world, target)
    nobody = world.ecr("nobody", REGION)
    wrong: list[str] = []
    for operation in _operations():
        try:
            getattr(nobody, xform_name(operation))(**_params(operation, target["upload"].rsplit("/", 1)[1]))
        except ClientError as exc:
            error = exc.response["Error"]
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            prefix = f"User: {NOBODY} is not authorized to perform: ecr:"
            if error["Code"] != "AccessDeniedException" or status != 400 or not error["Message"].startswith(prefix):
                wrong.append(f"{operation}: {status} {error['Code']}: {error['Message']}")
        else:
            wrong.append(f"{operation}: allowed")
    assert not wrong, "\n".join(wrong)
    assert snapshot(world, target) == before


def _v2_requests(target: dict[str, Any]) -> dict[tuple[str, str], list[tuple[str, str, dict[str, Any]]]]:
    """A concrete request for every registry route (and the variants with more needs)."""
    image = target["image"]
    layer = image.layers[0].digest
    body = image.manifest.data
    upload = target["upload"]
    digest_of_body = "sha256:" + hashlib.sha256(b"new").hexdigest()
    return {
        ("manifest", "GET"): [("GET", f"/v2/{TARGET}/manifests/v1", {})],
        ("manifest", "HEAD"): [("HEAD", f"/v2/{TARGET}/manifests/v1", {})],
        ("manifest", "PUT"): [
            (
                "PUT",
                f"/v2/{TARGET}/manifests/evil",
                {"content": body, "headers": {"content-type": image.manifest.media_type}},
            )
        ],
        ("manifest", "DELETE"): [("DELETE", f"/v2/{TARGET}/manifests/{image.manifest.digest}", {})],
        ("referrers", "GET"): [("GET", f"/v2/{TARGET}/referrers/{image.manifest.digest}", {})],
        ("tags", "GET"): [("GET", f"/v2/{TARGET}/tags/list", {})],
        ("catalog", "GET"): [("GET", "/v2/_catalog", {})],
        ("blob", "GET"): [("GET", f"/v2/{TARGET}/blobs/{layer}", {})],
        ("blob", "HEAD"): [("HEAD", f"/v2/{TARGET}/blobs/{layer}", {})],
        ("blob", "DELETE"): [("DELETE", f"/v2/{TARGET}/blobs/{layer}", {})],
        ("uploads", "POST"): [
            ("POST", f"/v2/{TARGET}/blobs/uploads/", {}),
            ("POST", f"/v2/{TARGET}/blobs/uploads/", {"params": {"digest": digest_of_body}, "content": b"new"}),
            ("POST", f"/v2/{TARGET}/blobs/uploads/", {"params": {"mount": layer, "from": SOURCE}}),
        ],
        ("upload", "GET"): [("GET", upload, {})],
        ("upload", "PATCH"): [("PATCH", upload, {"content": b"more"})],
        ("upload", "PUT"): [("PUT", upload, {"params": {"digest": digest_of_body}, "content": b"x"})],
        ("upload", "DELETE"): [("DELETE", upload, {})],
    }


def test_every_registry_route_refuses_a_principal_without_permissions(world: World, target: dict[str, Any]) -> None:
    requests = _v2_requests(target)
    assert set(requests) == set(manifests.HANDLERS) | set(blobs.HANDLERS), "a registry route has no request here"
    before = snapshot(world, target)
    password = world.password("nobody", REGION)
    wrong: list[str] = []
    with httpx.Client(base_url=world.server.url, timeout=30) as client:
        assert client.get("/v2/", headers={"Authorization": basic_auth(password)}).status_code == 200
        for route, variants in requests.items():
            for method, path, extra in variants:
                for authorization, status in ((basic_auth(password), 403), (None, 401)):
                    headers = dict(extra.get("headers", {}))
                    if authorization is not None:
                        headers["Authorization"] = authorization
                    kwargs = {k: v for k, v in extra.items() if k != "headers"}
                    response = client.request(method, path, headers=headers, **kwargs)
                    codes = [] if method == "HEAD" else [e["code"] for e in response.json()["errors"]]
                    expected = [] if method == "HEAD" else ["DENIED" if status == 403 else "UNAUTHORIZED"]
                    if response.status_code != status or codes != expected:
                        wrong.append(f"{route} {method} {path} {kwargs}: {response.status_code} {response.text[:200]}")
                    elif status == 403 and method != "HEAD":
                        message = response.json()["errors"][0]["message"]
                        if not message.startswith(f"User: {NOBODY} is not authorized to perform: ecr:"):
                            wrong.append(f"{route} {method}: message {message!r}")
    assert not wrong, "\n".join(wrong)
    assert snapshot(world, target) == before
