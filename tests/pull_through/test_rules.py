"""Pull-through cache rules over boto3 against the real server: ECR's shapes, validation, limits
and errors, and ValidatePullThroughCacheRule really contacting loopback upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer
from tests.support.upstream import Distribution, TokenFront, push


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    registry = Distribution(tmp_path_factory.mktemp("upstream")).start()
    with httpx.Client(base_url=registry.url) as c:
        push(c, "library/alpine", "3")
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("ptc")
    live = LiveServer(root / "data", env={"MOORAGE_PULL_THROUGH_CACHE__ALLOW_HTTP_UPSTREAMS": "true"}).start()
    yield live
    live.stop()


@pytest.fixture
def ecr(server: LiveServer) -> Iterator[Any]:
    client = server.ecr()
    yield client
    for rule in client.describe_pull_through_cache_rules()["pullThroughCacheRules"]:
        client.delete_pull_through_cache_rule(ecrRepositoryPrefix=rule["ecrRepositoryPrefix"])


def _code(info: pytest.ExceptionInfo[Exception]) -> str:
    return str(info.value.response["Error"]["Code"])  # type: ignore[attr-defined]


def test_create_describe_update_delete(ecr: Any, server: LiveServer) -> None:
    # credentialArn must name an existing secret (SecretNotFoundException otherwise)
    secrets = server.secretsmanager()
    arn = secrets.create_secret(Name="ecr-pullthroughcache/hub", SecretString="{}")["ARN"]
    new_arn = secrets.create_secret(Name="ecr-pullthroughcache/hub2", SecretString="{}")["ARN"]
    created = ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix="docker-hub", upstreamRegistryUrl="registry-1.docker.io", credentialArn=arn
    )
    assert created["ecrRepositoryPrefix"] == "docker-hub"
    assert created["upstreamRegistry"] == "docker-hub"  # inferred from the known host, and echoed
    assert created["registryId"] == "123456789012"
    assert created["credentialArn"] == arn
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="mirror/", upstreamRegistryUrl="https://mirror.corp:5000/v")
    rules = ecr.describe_pull_through_cache_rules()["pullThroughCacheRules"]
    assert [r["ecrRepositoryPrefix"] for r in rules] == ["docker-hub", "mirror"]
    assert "upstreamRegistry" not in rules[1]  # any other OCI registry: omitted
    page = ecr.describe_pull_through_cache_rules(maxResults=1)
    assert len(page["pullThroughCacheRules"]) == 1
    rest = ecr.describe_pull_through_cache_rules(maxResults=1, nextToken=page["nextToken"])
    assert rest["pullThroughCacheRules"][0]["ecrRepositoryPrefix"] == "mirror"
    assert "nextToken" not in rest

    updated = ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="docker-hub", credentialArn=new_arn)
    assert updated["credentialArn"] == new_arn
    assert "updatedAt" in updated
    deleted = ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="docker-hub")
    assert deleted["credentialArn"] == new_arn
    with pytest.raises(ecr.exceptions.PullThroughCacheRuleNotFoundException):
        ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["docker-hub"])


def test_errors(ecr: Any) -> None:
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="quay", upstreamRegistryUrl="quay.io")
    with pytest.raises(ecr.exceptions.PullThroughCacheRuleAlreadyExistsException):
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="quay/", upstreamRegistryUrl="quay.io")
    with pytest.raises(ecr.exceptions.UnsupportedUpstreamRegistryException):
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="bad", upstreamRegistryUrl="ftp://x.example")
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix="ROOT", upstreamRegistryUrl="quay.io", upstreamRepositoryPrefix="team"
        )
    with pytest.raises(ecr.exceptions.ClientError) as info:
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="Upper", upstreamRegistryUrl="quay.io")
    assert _code(info) in ("InvalidParameterException", "ValidationException")
    for missing in (ecr.update_pull_through_cache_rule, ecr.delete_pull_through_cache_rule):
        with pytest.raises(ecr.exceptions.PullThroughCacheRuleNotFoundException):
            missing(ecrRepositoryPrefix="nope")


def test_limit_of_50_rules(ecr: Any) -> None:
    for i in range(50):
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=f"p{i:02d}", upstreamRegistryUrl="quay.io")
    with pytest.raises(ecr.exceptions.LimitExceededException):
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="p50", upstreamRegistryUrl="quay.io")


def test_http_needs_the_setting(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data").start()
    try:
        with pytest.raises(live.ecr().exceptions.UnsupportedUpstreamRegistryException):
            live.ecr().create_pull_through_cache_rule(
                ecrRepositoryPrefix="loop", upstreamRegistryUrl="http://127.0.0.1:1"
            )
    finally:
        live.stop()


def test_validate_really_contacts_the_upstream(ecr: Any, upstream: Distribution) -> None:
    front = TokenFront(upstream).start()
    try:
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="hub", upstreamRegistryUrl=front.url)
        valid = ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="hub")
        assert valid["isValid"] is True
        assert valid["upstreamRegistryUrl"] == front.url
        front.fail_with = 503
        invalid = ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="hub")
        assert invalid["isValid"] is False
        assert "503" in invalid["failure"]
    finally:
        front.stop()
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="gone", upstreamRegistryUrl=front.url)
    assert ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="gone")["isValid"] is False
