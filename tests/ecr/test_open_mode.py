"""`--auth open` (a drop-in test double) and `POST /_moorage/reset`."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.ecr import ACCOUNT, DOCKER_MANIFEST, basic_auth, ecr_client, push_image, registry_password
from tests.support.live import LiveServer


def unique(stem: str) -> str:
    return f"ecr/{stem}-{uuid.uuid4().hex[:8]}"


def test_open_mode_takes_any_credentials(open_server: LiveServer) -> None:
    name = unique("open")
    anyone = ecr_client(open_server.url, key_id="ANYTHING", secret="whatever")
    record = anyone.create_repository(repositoryName=name)["repository"]
    assert record["repositoryArn"] == f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}"
    someone_else = ecr_client(open_server.url, key_id="AKIASOMEONEELSE", secret="other")
    assert [
        r["repositoryName"] for r in someone_else.describe_repositories(repositoryNames=[name])["repositories"]
    ] == [name]
    # The region in the signature still picks the registry.
    west = ecr_client(open_server.url, key_id="ANYTHING", secret="x", region="us-west-2")
    assert name not in [r["repositoryName"] for r in west.describe_repositories()["repositories"]]


def test_open_mode_numeric_key_id_is_an_account(open_server: LiveServer) -> None:
    account = "444455556666"
    name = unique("acct")
    client = ecr_client(open_server.url, key_id=account, secret="irrelevant")
    record = client.create_repository(repositoryName=name)["repository"]
    assert record["repositoryArn"] == f"arn:aws:ecr:us-east-1:{account}:repository/{name}"
    assert record["registryId"] == account
    assert client.describe_registry()["registryId"] == account
    # The default account does not see it.
    default = ecr_client(open_server.url, key_id="ANYTHING", secret="x")
    assert name not in [r["repositoryName"] for r in default.describe_repositories()["repositories"]]


def test_open_mode_registry_needs_no_credentials(open_server: LiveServer) -> None:
    client = ecr_client(open_server.url, key_id="ANYTHING", secret="x")
    name = unique("v2")
    client.create_repository(repositoryName=name)
    image = push_image(client, name, "v1")
    assert httpx.get(f"{open_server.url}/v2/").status_code == 200
    got = httpx.get(f"{open_server.url}/v2/{name}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert got.status_code == 200
    assert got.content == image.manifest.data


def test_open_mode_v2_uses_the_passwords_account_like_sigv4_mode(open_server: LiveServer) -> None:
    account = "777788889999"
    client = ecr_client(open_server.url, key_id=account, secret="irrelevant")
    name = unique("pwd")
    client.create_repository(repositoryName=name)
    image = push_image(client, name, "v1")
    password = registry_password(client)
    url = f"{open_server.url}/v2/{name}/manifests/v1"
    got = httpx.get(url, headers={"Authorization": basic_auth(password), "Accept": DOCKER_MANIFEST})
    assert got.status_code == 200, got.text
    assert got.content == image.manifest.data
    # Without a password (or with one that is not ours) the caller is the default account's root.
    for headers in ({}, {"Authorization": basic_auth("not-a-token")}):
        missing = httpx.get(url, headers=headers)
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["message"] == (
            f"The repository with name '{name}' does not exist in the registry with id '{ACCOUNT}'"
        )
    # A token of another region is refused as in SigV4 mode.
    west = registry_password(ecr_client(open_server.url, key_id=account, secret="x", region="us-west-2"))
    refused = httpx.get(url, headers={"Authorization": basic_auth(west)})
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert "issued for region us-west-2" in refused.json()["errors"][0]["message"]


def test_reset_is_refused_without_allow_reset(server: LiveServer, ecr: Any, repo: str) -> None:
    response = httpx.post(f"{server.url}/_moorage/reset")
    assert response.status_code == 403
    assert ecr.describe_repositories(repositoryNames=[repo])["repositories"]


def test_reset_wipes_registry_state_but_not_credentials(domain_server: LiveServer) -> None:
    client = ecr_client(domain_server.url)
    name = unique("reset")
    client.create_repository(repositoryName=name)
    push_image(client, name, "v1")
    client.put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    response = httpx.post(f"{domain_server.url}/_moorage/reset")
    assert response.status_code == 204
    # Same client, same (SigV4-checked) credentials: still accepted, and the registry is empty.
    assert client.describe_repositories()["repositories"] == []
    assert client.get_account_setting(name="BLOB_MOUNTING")["value"] == "DISABLED"
    client.create_repository(repositoryName=name)
    assert client.list_images(repositoryName=name)["imageIds"] == []
    assert httpx.get(f"{domain_server.url}/_moorage/reset").status_code == 405


def test_reset_in_open_mode(open_server: LiveServer) -> None:
    client = ecr_client(open_server.url, key_id="ANYTHING", secret="x")
    client.create_repository(repositoryName=unique("wipe"))
    assert httpx.post(f"{open_server.url}/_moorage/reset").status_code == 204
    assert client.describe_repositories()["repositories"] == []
