"""Lifecycle policies, previews, storage classes, pull times and clock control through boto3 (and /v2/)
against live servers: the shared sigv4 server for what needs no time travel, and one server of this
module started with `--allow-clock-control --no-jobs` for what does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.ecr.conftest import ROOT_ENV
from tests.support.ecr import (
    ACCOUNT,
    DOCKER_MANIFEST,
    basic_auth,
    ecr_client,
    expect_error,
    push_image,
    registry_password,
)
from tests.support.live import LiveServer

RULE_ANY_KEEP_1: dict[str, Any] = {
    "rulePriority": 1,
    "description": "keep only the newest image",
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
    "action": {"type": "expire"},
}
ARCHIVE_AFTER_1_DAY: dict[str, Any] = {
    "rulePriority": 1,
    "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
    "action": {"type": "transition", "targetStorageClass": "archive"},
}
EXPIRE_TAGGED_AFTER_1_DAY: dict[str, Any] = {
    "rulePriority": 2,
    "selection": {
        "tagStatus": "tagged",
        "tagPrefixList": ["v"],
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 1,
    },
    "action": {"type": "expire"},
}
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
)


def policy_text(*rules: dict[str, Any]) -> str:
    return json.dumps({"rules": list(rules)})


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def wait_preview(ecr: Any, name: str, **params: Any) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        got: dict[str, Any] = ecr.get_lifecycle_policy_preview(repositoryName=name, **params)
        return got if got["status"] != "IN_PROGRESS" else None

    result: dict[str, Any] = wait_for(done)
    return result


def detail(ecr: Any, name: str, digest: str) -> dict[str, Any]:
    found: dict[str, Any] = ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": digest}])
    return dict(found["imageDetails"][0])


# ------------------------------------------------------------------------------------------- policies


def test_put_get_delete_lifecycle_policy(ecr: Any, repo: str) -> None:
    text = policy_text(RULE_ANY_KEEP_1)
    put = ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    assert {k: put[k] for k in ("registryId", "repositoryName", "lifecyclePolicyText")} == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "lifecyclePolicyText": text,
    }
    assert "lastEvaluatedAt" not in put
    got = ecr.get_lifecycle_policy(repositoryName=repo)
    assert got["lifecyclePolicyText"] == text
    assert got["lastEvaluatedAt"].timestamp() == 0  # never evaluated yet: the epoch, as ECR answers
    replaced = policy_text({**RULE_ANY_KEEP_1, "description": "replaced"})
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=replaced)
    deleted = ecr.delete_lifecycle_policy(repositoryName=repo)
    assert deleted["lifecyclePolicyText"] == replaced
    assert deleted["lastEvaluatedAt"].timestamp() == 0
    assert deleted["repositoryName"] == repo
    missing = (
        f"Lifecycle policy does not exist for the repository with name '{repo}' in the registry with id '{ACCOUNT}'"
    )
    expect_error(ecr.get_lifecycle_policy, "LifecyclePolicyNotFoundException", missing, repositoryName=repo)
    expect_error(ecr.delete_lifecycle_policy, "LifecyclePolicyNotFoundException", missing, repositoryName=repo)


def test_lifecycle_policy_errors(ecr: Any, unchecked_ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    bad = policy_text({**RULE_ANY_KEEP_1, "selection": {**RULE_ANY_KEEP_1["selection"], "countNumber": 0}})
    error = expect_error(
        ecr.put_lifecycle_policy, "InvalidParameterException", repositoryName=repo, lifecyclePolicyText=bad
    )
    message = error["Error"]["Message"]
    assert message.startswith("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: ")
    assert "rulePriority 1" in message
    assert "countNumber" in message
    expect_error(
        unchecked_ecr.put_lifecycle_policy,
        "InvalidParameterException",
        repositoryName=repo,
        lifecyclePolicyText="{}",  # under the model's 100 characters
    )
    missing = new_name()
    expect_error(
        ecr.put_lifecycle_policy,
        "RepositoryNotFoundException",
        repositoryName=missing,
        lifecyclePolicyText=policy_text(RULE_ANY_KEEP_1),
    )
    expect_error(ecr.get_lifecycle_policy_preview, "RepositoryNotFoundException", repositoryName=missing)
    expect_error(
        ecr.get_lifecycle_policy_preview,
        "LifecyclePolicyPreviewNotFoundException",
        f"Lifecycle policy preview does not exist for the repository with name '{repo}' in the registry with id "
        f"'{ACCOUNT}'",
        repositoryName=repo,
    )
    expect_error(ecr.start_lifecycle_policy_preview, "LifecyclePolicyNotFoundException", repositoryName=repo)
    expect_error(
        ecr.start_lifecycle_policy_preview,
        "InvalidParameterException",
        repositoryName=repo,
        lifecyclePolicyText=bad,
    )


def test_preview_results_summary_pagination_and_filters(ecr: Any, unchecked_ecr: Any, repo: str) -> None:
    pushed = [push_image(ecr, repo).manifest.digest for _ in range(3)]
    pushed += [push_image(ecr, repo, tag).manifest.digest for tag in ("v1", "v2")]
    text = policy_text(RULE_ANY_KEEP_1)
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    started = ecr.start_lifecycle_policy_preview(repositoryName=repo)
    assert started["status"] == "IN_PROGRESS"
    assert started["lifecyclePolicyText"] == text
    assert started["registryId"] == ACCOUNT

    preview = wait_preview(ecr, repo)
    assert preview["status"] == "COMPLETE"
    assert preview["lifecyclePolicyText"] == text
    assert preview["summary"] == {"expiringImageTotalCount": 4}
    results = preview["previewResults"]
    assert [r["imageDigest"] for r in results] == pushed[:4]  # oldest first; the newest (v2) is kept
    first = results[0]
    assert set(first) == {"imageDigest", "imagePushedAt", "action", "appliedRulePriority", "storageClass"}
    assert first["action"] == {"type": "EXPIRE"}
    assert first["appliedRulePriority"] == 1
    assert first["storageClass"] == "STANDARD"
    assert isinstance(first["imagePushedAt"], datetime)
    assert results[3]["imageTags"] == ["v1"]
    assert len(ecr.describe_images(repositoryName=repo)["imageDetails"]) == 5  # a preview changes nothing

    page1 = ecr.get_lifecycle_policy_preview(repositoryName=repo, maxResults=3)
    assert [r["imageDigest"] for r in page1["previewResults"]] == pushed[:3]
    page2 = ecr.get_lifecycle_policy_preview(repositoryName=repo, maxResults=3, nextToken=page1["nextToken"])
    assert [r["imageDigest"] for r in page2["previewResults"]] == pushed[3:4]
    assert "nextToken" not in page2
    expect_error(
        ecr.get_lifecycle_policy_preview,
        "InvalidParameterException",
        repositoryName=repo,
        nextToken=page1["nextToken"][:-2] + "xx",
    )
    expect_error(
        unchecked_ecr.get_lifecycle_policy_preview, "InvalidParameterException", repositoryName=repo, maxResults=101
    )

    tagged = ecr.get_lifecycle_policy_preview(repositoryName=repo, filter={"tagStatus": "TAGGED"})
    assert [r["imageDigest"] for r in tagged["previewResults"]] == [pushed[3]]
    by_id = ecr.get_lifecycle_policy_preview(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert [r["imageDigest"] for r in by_id["previewResults"]] == [pushed[3]]
    expect_error(
        ecr.get_lifecycle_policy_preview,
        "InvalidParameterException",
        repositoryName=repo,
        imageIds=[{"imageTag": "v1"}],
        maxResults=5,
    )

    # A supplied text is previewed instead of the attached policy (which stays as it was).
    other = policy_text({**RULE_ANY_KEEP_1, "selection": {**RULE_ANY_KEEP_1["selection"], "countNumber": 4}})
    assert ecr.start_lifecycle_policy_preview(repositoryName=repo, lifecyclePolicyText=other)["status"] == "IN_PROGRESS"
    assert wait_preview(ecr, repo)["summary"] == {"expiringImageTotalCount": 1}
    assert ecr.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"] == text


def test_deleting_the_repository_deletes_its_policy(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    ecr.create_repository(repositoryName=name)
    ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=policy_text(RULE_ANY_KEEP_1))
    ecr.delete_repository(repositoryName=name)
    ecr.create_repository(repositoryName=name)
    expect_error(ecr.get_lifecycle_policy, "LifecyclePolicyNotFoundException", repositoryName=name)


def test_clock_control_is_refused_unless_enabled(server: LiveServer) -> None:
    response = httpx.post(f"{server.url}/_moorage/clock", json={"advance_seconds": 10})
    assert response.status_code == 403


# ----------------------------------------------------------------------------- with a movable clock


class ClockServer:
    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.ecr = ecr_client(live.url)
        self.password = registry_password(self.ecr)

    def advance(self, seconds: float) -> dict[str, Any]:
        response = httpx.post(f"{self.live.url}/_moorage/clock", json={"advance_seconds": seconds}, timeout=10)
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        return state

    def manifest(self, name: str, reference: str, method: str = "GET", password: str | None = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.live.url}/v2/{name}/manifests/{reference}",
            headers={"Authorization": basic_auth(password or self.password), "Accept": DOCKER_MANIFEST},
            timeout=10,
        )

    def admin(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "moorage", "admin", *args, "--data-dir", str(self.live.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClockServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("clocked") / "data",
        args=["--auth", "sigv4", "--allow-clock-control", "--no-jobs"],
        env={**ROOT_ENV, "MOORAGE_ARCHIVE__RESTORE_DELAY": "120s"},
    )
    live.start(60.0)
    try:
        yield ClockServer(live)
    finally:
        live.stop()


def test_clock_endpoint_moves_service_time_but_not_credentials(
    clocked: ClockServer, new_name: Callable[[], str]
) -> None:
    state = httpx.get(f"{clocked.live.url}/_moorage/clock", timeout=10).json()
    assert set(state) == {"offset_seconds", "now", "real_now"}
    before = state["offset_seconds"]
    bad = httpx.post(f"{clocked.live.url}/_moorage/clock", json={"advance_seconds": -1}, timeout=10)
    assert bad.status_code == 400
    name = new_name()
    clocked.ecr.create_repository(repositoryName=name)
    moved = clocked.advance(30 * 86400)
    assert moved["offset_seconds"] == before + 30 * 86400
    assert datetime.fromisoformat(moved["now"]) > datetime.now(UTC).replace(microsecond=0)
    # SigV4 checks real time, and a registry password issued a month "ago" is still valid.
    created = clocked.ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["createdAt"]
    assert created < datetime.now(UTC)
    pushed = push_image(clocked.ecr, name, "v1")
    pushed_at = detail(clocked.ecr, name, pushed.manifest.digest)["imagePushedAt"]
    assert (pushed_at - datetime.now(UTC)).total_seconds() > 29 * 86400  # service time moved
    assert clocked.manifest(name, "v1").status_code == 200


def test_archive_restore_and_repush(clocked: ClockServer, new_name: Callable[[], str]) -> None:
    ecr, name = clocked.ecr, new_name()
    ecr.create_repository(repositoryName=name)
    image = push_image(ecr, name, "v1")
    digest = image.manifest.digest
    push_image(ecr, name, "v2")
    archived = ecr.update_image_storage_class(
        repositoryName=name, imageId={"imageTag": "v1"}, targetStorageClass="ARCHIVE"
    )
    assert archived["imageStatus"] == "ARCHIVED"
    assert archived["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    assert archived["registryId"] == ACCOUNT

    # hidden unless asked for; not pullable on either face
    assert [d["imageTags"] for d in ecr.describe_images(repositoryName=name)["imageDetails"]] == [["v2"]]
    shown = ecr.describe_images(repositoryName=name, filter={"imageStatus": "ARCHIVED"})["imageDetails"]
    assert [(d["imageDigest"], d["imageStatus"]) for d in shown] == [(digest, "ARCHIVED")]
    assert "lastArchivedAt" in shown[0]
    assert len(ecr.describe_images(repositoryName=name, filter={"imageStatus": "ANY"})["imageDetails"]) == 2
    listed = ecr.list_images(repositoryName=name, filter={"imageStatus": "ARCHIVED"})["imageIds"]
    assert listed == [{"imageDigest": digest, "imageTag": "v1"}]
    assert {"imageDigest": digest, "imageTag": "v1"} not in ecr.list_images(repositoryName=name)["imageIds"]
    got = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    assert got["images"] == []
    assert got["failures"][0]["failureCode"] == "ImageInaccessible"
    for method, reference in (("GET", "v1"), ("GET", digest), ("HEAD", "v1")):
        response = clocked.manifest(name, reference, method)
        assert response.status_code == 404
        if method == "GET":
            assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    expect_error(
        ecr.update_image_storage_class,
        "ImageStorageClassUpdateNotSupportedException",
        repositoryName=name,
        imageId={"imageDigest": digest},
        targetStorageClass="ARCHIVE",
    )
    expect_error(
        ecr.update_image_storage_class,
        "ImageNotFoundException",
        repositoryName=name,
        imageId={"imageTag": "nope"},
        targetStorageClass="ARCHIVE",
    )

    # restore: ACTIVATING for archive.restore_delay (120 s here), then ACTIVE
    restored = ecr.update_image_storage_class(
        repositoryName=name, imageId={"imageDigest": digest}, targetStorageClass="STANDARD"
    )
    assert restored["imageStatus"] == "ACTIVATING"
    assert detail(ecr, name, digest)["imageStatus"] == "ACTIVATING"
    assert clocked.manifest(name, "v1").status_code == 404
    expect_error(
        ecr.update_image_storage_class,
        "ImageStorageClassUpdateNotSupportedException",
        repositoryName=name,
        imageId={"imageDigest": digest},
        targetStorageClass="STANDARD",
    )
    clocked.advance(121)
    shown_after = wait_for(lambda: (d := detail(ecr, name, digest))["imageStatus"] == "ACTIVE" and d)
    assert "lastActivatedAt" in shown_after
    assert clocked.manifest(name, "v1").status_code == 200

    # archive again, then push the same manifest: active at once
    ecr.update_image_storage_class(repositoryName=name, imageId={"imageTag": "v1"}, targetStorageClass="ARCHIVE")
    put = ecr.put_image(repositoryName=name, imageManifest=image.manifest.text, imageTag="v1")
    assert put["image"]["imageId"]["imageDigest"] == digest
    assert detail(ecr, name, digest)["imageStatus"] == "ACTIVE"
    assert clocked.manifest(name, "v1").status_code == 200


def test_preview_with_transitions_and_archive_summary(clocked: ClockServer, new_name: Callable[[], str]) -> None:
    ecr, name = clocked.ecr, new_name()
    ecr.create_repository(repositoryName=name)
    untagged = [push_image(ecr, name).manifest.digest for _ in range(2)]
    push_image(ecr, name, "v1")
    clocked.advance(2 * 86400)
    ecr.start_lifecycle_policy_preview(
        repositoryName=name, lifecyclePolicyText=policy_text(ARCHIVE_AFTER_1_DAY, EXPIRE_TAGGED_AFTER_1_DAY)
    )
    preview = wait_preview(ecr, name)
    assert preview["summary"] == {
        "expiringImageTotalCount": 1,
        "transitioningImageTotalCounts": [{"targetStorageClass": "ARCHIVE", "imageTotalCount": 2}],
    }
    archived = [r for r in preview["previewResults"] if r["action"]["type"] == "TRANSITION"]
    assert sorted(r["imageDigest"] for r in archived) == sorted(untagged)
    assert archived[0]["action"] == {"type": "TRANSITION", "targetStorageClass": "ARCHIVE"}


def _pull_time(ecr: Any, name: str, digest: str) -> datetime | None:
    value: datetime | None = detail(ecr, name, digest).get("lastRecordedPullTime")
    return value


def test_pull_times_on_both_faces_are_coalesced(clocked: ClockServer, new_name: Callable[[], str]) -> None:
    ecr, name = clocked.ecr, new_name()
    ecr.create_repository(repositoryName=name)
    digest = push_image(ecr, name, "v1").manifest.digest
    assert clocked.manifest(name, "v1", "HEAD").status_code == 200
    time.sleep(0.3)
    assert _pull_time(ecr, name, digest) is None  # HEAD is not a pull
    assert clocked.manifest(name, "v1").status_code == 200
    first = wait_for(lambda: _pull_time(ecr, name, digest))
    clocked.advance(1800)
    ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    assert clocked.manifest(name, digest).status_code == 200
    time.sleep(0.3)
    assert _pull_time(ecr, name, digest) == first  # recorded less than an hour ago: coalesced
    clocked.advance(1900)
    ecr.batch_get_image(repositoryName=name, imageIds=[{"imageDigest": digest}])
    second = wait_for(lambda: (t := _pull_time(ecr, name, digest)) != first and t)
    assert (second - first).total_seconds() >= 3700


def test_pull_time_update_exclusions(clocked: ClockServer, new_name: Callable[[], str]) -> None:
    ecr = clocked.ecr
    arn = f"arn:aws:iam::{ACCOUNT}:user/ci-puller"
    registered = ecr.register_pull_time_update_exclusion(principalArn=arn)
    assert registered["principalArn"] == arn
    assert isinstance(registered["createdAt"], datetime)
    expect_error(ecr.register_pull_time_update_exclusion, "ExclusionAlreadyExistsException", principalArn=arn)
    expect_error(
        ecr.deregister_pull_time_update_exclusion,
        "ExclusionNotFoundException",
        principalArn=f"arn:aws:iam::{ACCOUNT}:role/nobody",
    )
    expect_error(
        ecr_client(clocked.live.url, validate=False).register_pull_time_update_exclusion,
        "InvalidParameterException",
        principalArn=f"arn:aws:iam::{ACCOUNT}:root",
    )
    assert ecr.list_pull_time_update_exclusions()["pullTimeUpdateExclusions"] == [arn]

    # A pull by the excluded user leaves lastRecordedPullTime alone; the same pull by root records it.
    clocked.admin("create-user", "ci-puller")
    key = dict(
        line.split("=", 1)
        for line in clocked.admin("create-access-key", "--user", "ci-puller").splitlines()
        if "=" in line
    )
    clocked.admin("attach-user-policy", "ci-puller", "--name", "all", "--document", "-", stdin=ALLOW_ALL)
    user = ecr_client(clocked.live.url, key_id=key["AWS_ACCESS_KEY_ID"], secret=key["AWS_SECRET_ACCESS_KEY"])
    name = new_name()
    ecr.create_repository(repositoryName=name)
    digest = push_image(ecr, name, "v1").manifest.digest
    user_password = wait_for(lambda: _try_password(user))
    assert wait_for(lambda: user.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["images"])
    assert clocked.manifest(name, "v1", password=user_password).status_code == 200
    time.sleep(0.3)
    assert _pull_time(ecr, name, digest) is None
    ecr.deregister_pull_time_update_exclusion(principalArn=arn)
    assert clocked.manifest(name, "v1", password=user_password).status_code == 200
    assert wait_for(lambda: _pull_time(ecr, name, digest))

    # at most 100 per registry; pages of the list
    arns = [f"arn:aws:iam::{ACCOUNT}:role/r{i:03d}" for i in range(100)]
    for item in arns:
        ecr.register_pull_time_update_exclusion(principalArn=item)
    expect_error(ecr.register_pull_time_update_exclusion, "LimitExceededException", principalArn=arn)
    page = ecr.list_pull_time_update_exclusions(maxResults=60)
    rest = ecr.list_pull_time_update_exclusions(maxResults=60, nextToken=page["nextToken"])
    assert page["pullTimeUpdateExclusions"] + rest["pullTimeUpdateExclusions"] == arns
    assert "nextToken" not in rest
    for item in arns:
        ecr.deregister_pull_time_update_exclusion(principalArn=item)


def _try_password(ecr: Any) -> str | None:
    try:
        return registry_password(ecr)
    except Exception:
        return None


def test_lifecycle_run_cli_applies_policy_and_records_history(
    clocked: ClockServer, new_name: Callable[[], str]
) -> None:
    ecr, name = clocked.ecr, new_name()
    ecr.create_repository(repositoryName=name)
    old = [push_image(ecr, name).manifest.digest for _ in range(2)]
    tagged = push_image(ecr, name, "v9")
    clocked.advance(2 * 86400)
    ecr.put_lifecycle_policy(
        repositoryName=name, lifecyclePolicyText=policy_text(ARCHIVE_AFTER_1_DAY, EXPIRE_TAGGED_AFTER_1_DAY)
    )
    base = [sys.executable, "-m", "moorage", "lifecycle"]
    where = ["--data-dir", str(clocked.live.data_dir), "--repository", name]
    dry = subprocess.run([*base, "run", *where, "--dry-run"], capture_output=True, text=True, timeout=60, check=True)
    assert "would archive" in dry.stdout
    assert "would expire" in dry.stdout
    assert len(ecr.describe_images(repositoryName=name)["imageDetails"]) == 3
    done = subprocess.run([*base, "run", *where], capture_output=True, text=True, timeout=60, check=True)
    assert f"expired {tagged.manifest.digest} v9 (rule 2)" in done.stdout
    assert "1 expired, 2 archived" in done.stdout
    assert ecr.describe_images(repositoryName=name)["imageDetails"] == []
    archived = ecr.describe_images(repositoryName=name, filter={"imageStatus": "ARCHIVED"})["imageDetails"]
    assert sorted(d["imageDigest"] for d in archived) == sorted(old)
    assert ecr.get_lifecycle_policy(repositoryName=name)["lastEvaluatedAt"].timestamp() > 0
    history = subprocess.run(
        [*base, "history", *where], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert len(history) == 3
    assert {line.split("\t")[2] for line in history} == {"EXPIRE", "TRANSITION"}
