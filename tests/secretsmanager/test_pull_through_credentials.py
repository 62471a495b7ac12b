"""Pull-through cache rules with upstream credentials in a secret of the server's own Secrets
Manager face: the AWS CLI flow of the issue (create-secret, create-pull-through-cache-rule,
validate-pull-through-cache-rule, podman pull) against the Debian docker-registry with htpasswd,
and a Docker Hub-like token front end; wrong credentials in the secret make validation answer
isValid false and an uncached pull fail with ECR's error; a missing secret is refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moorage.upstream import CredentialProvider, Credentials, UpstreamClient, UpstreamError
from tests.e2e.conftest import _engine, login, make_image, need, run
from tests.support import images
from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer
from tests.support.upstream import Distribution, TokenFront

USER, PASSWORD = "puller", "good-pass-123"
AUTH_FAILED = (
    "The authentication to the upstream registry failed. Verify that the credentials provided in the pull "
    "through cache rule are correct, and try again."
)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    registry = Distribution(tmp_path_factory.mktemp("htpasswd"), users={USER: PASSWORD}).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("ptc-secrets") / "data",
        env={"MOORAGE_PULL_THROUGH_CACHE__ALLOW_HTTP_UPSTREAMS": "true"},
    ).start()
    yield live
    live.stop()


def aws(server: LiveServer, *args: str) -> Any:
    """The AWS CLI, JSON output. `cli_follow_urlparam = false`, as in AWS CLI v2: else CLI v1
    fetches a parameter that starts with `http://` (the upstream URL) and sends its body."""
    config = server.data_dir.parent / "aws-config"
    config.write_text("[default]\ncli_follow_urlparam = false\n")
    command = ["aws", "--endpoint-url", server.url, "--output", "json", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ROOT_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=ROOT_SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_MAX_ATTEMPTS="1",
    )
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(command)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout) if done.stdout.strip() else {}


def _creds(password: str) -> str:
    return json.dumps({"username": USER, "accessToken": password})


def _push(upstream: Distribution, tmp_path: Path, repository: str, seed: int) -> str:
    layout = tmp_path / f"layout-{seed}"
    digest = make_image(layout, "1", layers=1, layer_size_mb=0.1, seed=seed)
    run(
        [
            "skopeo",
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{USER}:{PASSWORD}",
            f"oci:{layout}:1",
            f"docker://{upstream.host}/{repository}:v1",
        ]
    )
    return digest


def test_aws_cli_flow_then_wrong_credentials(server: LiveServer, upstream: Distribution, tmp_path: Path) -> None:
    need("aws", "skopeo", "podman")
    digest = _push(upstream, tmp_path, "team/app", seed=11)
    _push(upstream, tmp_path, "team/other", seed=12)
    assert httpx.get(f"{upstream.url}/v2/team/app/manifests/v1", timeout=10).status_code == 401  # really protected

    secret = aws(
        server,
        "secretsmanager",
        "create-secret",
        "--name",
        "ecr-pullthroughcache/upstream",
        "--secret-string",
        _creds(PASSWORD),
    )
    assert secret["Name"] == "ecr-pullthroughcache/upstream"
    rule = aws(
        server,
        "ecr",
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "up",
        "--upstream-registry-url",
        upstream.url,
        "--credential-arn",
        secret["ARN"],
    )
    assert rule["credentialArn"] == secret["ARN"]
    valid = aws(server, "ecr", "validate-pull-through-cache-rule", "--ecr-repository-prefix", "up")
    assert valid["isValid"] is True, valid
    assert valid["credentialArn"] == secret["ARN"]

    login(server)
    with _engine("podman", tmp_path / "podman") as podman:
        podman("pull", "--tls-verify=false", f"{server.address}/up/team/app:v1")
        shown = podman("images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}").stdout
    assert f"{server.address}/up/team/app:v1 {digest}" in shown

    # Wrong credentials in a rule's secret: validate says so, an uncached pull fails as ECR's does.
    bad = aws(
        server,
        "secretsmanager",
        "create-secret",
        "--name",
        "ecr-pullthroughcache/wrong",
        "--secret-string",
        _creds("wrong-password"),
    )
    aws(
        server,
        "ecr",
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "bad",
        "--upstream-registry-url",
        upstream.url,
        "--credential-arn",
        bad["ARN"],
    )
    invalid = aws(server, "ecr", "validate-pull-through-cache-rule", "--ecr-repository-prefix", "bad")
    assert invalid["isValid"] is False
    assert invalid["failure"] == AUTH_FAILED
    uncached = httpx.get(
        f"{server.url}/v2/bad/team/other/manifests/v1",
        auth=server.auth,
        headers={"accept": images.OCI_MANIFEST},
        timeout=30,
    )
    assert uncached.status_code == 403
    assert images.error_codes(uncached) == ["DENIED"]
    assert AUTH_FAILED in uncached.text
    failed = server.ecr().batch_get_image(repositoryName="bad/team/other", imageIds=[{"imageTag": "v1"}])
    assert [f["failureCode"] for f in failed["failures"]] == ["UpstreamAccessDenied"]

    # The good secret changed to a wrong password: validate reads it again.
    server.secretsmanager().put_secret_value(SecretId=secret["ARN"], SecretString=_creds("also-wrong"))
    assert aws(server, "ecr", "validate-pull-through-cache-rule", "--ecr-repository-prefix", "up")["isValid"] is False
    # Fixed in the secret, not the rule: the bad rule works now.
    server.secretsmanager().put_secret_value(SecretId=bad["ARN"], SecretString=_creds(PASSWORD))
    assert aws(server, "ecr", "validate-pull-through-cache-rule", "--ecr-repository-prefix", "bad")["isValid"] is True
    fixed = httpx.get(
        f"{server.url}/v2/bad/team/other/manifests/v1",
        auth=server.auth,
        headers={"accept": images.OCI_MANIFEST},
        timeout=30,
    )
    assert fixed.status_code == 200, fixed.text


class _Rotating(CredentialProvider):
    """Hands out the credentials of `passwords` in turn, counting the look-ups."""

    def __init__(self, *passwords: str) -> None:
        self.passwords = list(passwords)
        self.calls = 0

    async def get(self) -> Credentials | None:
        self.calls += 1
        return Credentials(USER, self.passwords[min(self.calls, len(self.passwords)) - 1])


def test_the_upstream_client_reads_credentials_when_asked_and_again_when_refused(upstream: Distribution) -> None:
    async def check(provider: _Rotating) -> str | None:
        client = UpstreamClient(upstream.url, provider)
        try:
            await client.check("team/app")
            await client.check("team/other")  # Basic is sent at once now: no second look-up
        except UpstreamError as exc:
            return exc.kind
        finally:
            await client.aclose()
        return None

    rotated = _Rotating("stale-password", PASSWORD)  # a secret rotated since the client was made
    assert asyncio.run(check(rotated)) is None
    assert rotated.calls == 2
    wrong = _Rotating("wrong")  # refused, read again, unchanged: given up
    assert asyncio.run(check(wrong)) == "denied"
    assert wrong.calls == 2
    anonymous = UpstreamClient(upstream.url)
    with pytest.raises(UpstreamError):
        asyncio.run(anonymous.check("team/app"))


def test_bearer_token_upstream_gets_the_secret_as_basic_credentials(server: LiveServer, tmp_path: Path) -> None:
    backend = Distribution(tmp_path / "open").start()  # the token front end does the authentication
    front = TokenFront(backend, users={USER: PASSWORD}).start()
    try:
        sm, ecr = server.secretsmanager(), server.ecr()
        arn = sm.create_secret(Name="ecr-pullthroughcache/token", SecretString=_creds(PASSWORD))["ARN"]
        ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="tok", upstreamRegistryUrl=front.url, credentialArn=arn)
        assert ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="tok")["isValid"] is True
        sm.put_secret_value(SecretId=arn, SecretString=_creds("nope"))
        refused = ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="tok")
        assert (refused["isValid"], refused["failure"]) == (False, AUTH_FAILED)
        sm.put_secret_value(SecretId=arn, SecretString="not json")
        assert ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="tok")["isValid"] is False
        sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)  # gone after the rule was made
        assert ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="tok")["isValid"] is False
    finally:
        front.stop()
        backend.stop()


def test_a_rule_needs_an_existing_secret(server: LiveServer, upstream: Distribution) -> None:
    ecr, sm = server.ecr(), server.secretsmanager()
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/missing-AbCdEf"
    with pytest.raises(ecr.exceptions.SecretNotFoundException):
        ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix="nos", upstreamRegistryUrl=upstream.url, credentialArn=missing
        )
    with pytest.raises(ecr.exceptions.ClientError) as info:  # the name must be ecr-pullthroughcache/...
        ecr.create_pull_through_cache_rule(
            ecrRepositoryPrefix="nos",
            upstreamRegistryUrl=upstream.url,
            credentialArn=sm.create_secret(Name="elsewhere/creds", SecretString=_creds(PASSWORD))["ARN"],
        )
    assert info.value.response["Error"]["Code"] in ("InvalidParameterException", "ValidationException")
    arn = sm.create_secret(Name="ecr-pullthroughcache/later", SecretString=_creds(PASSWORD))["ARN"]
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="nos", upstreamRegistryUrl=upstream.url)
    with pytest.raises(ecr.exceptions.SecretNotFoundException):
        ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="nos", credentialArn=missing)
    assert ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="nos", credentialArn=arn)["credentialArn"] == arn
    assert ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="nos")["isValid"] is True
