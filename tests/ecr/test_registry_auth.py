"""`/v2/` authentication in sigv4 mode: HTTP Basic `AWS:<password>` from GetAuthorizationToken."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support.ecr import (
    ACCOUNT,
    DOCKER_MANIFEST,
    REGISTRY_DOMAIN,
    basic_auth,
    ecr_client,
    push_image,
    registry_password,
)
from tests.support.live import LiveServer

# The realm has the scheme of the listener: these servers listen on plain HTTP.
CHALLENGE = re.compile(r'Basic realm="http://127\.0\.0\.1:[0-9]+/",service="ecr\.amazonaws\.com"')


def codes(response: httpx.Response) -> list[str]:
    return [str(e["code"]) for e in response.json()["errors"]]


def test_no_credentials_is_challenged(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/v2/")
    assert response.status_code == 401
    assert CHALLENGE.fullmatch(response.headers["www-authenticate"]), response.headers["www-authenticate"]
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert codes(response) == ["UNAUTHORIZED"]


def test_wrong_password(server: LiveServer, ecr: Any) -> None:
    password = registry_password(ecr)
    for wrong in ("nope", password[:-2] + ("xx" if not password.endswith("xx") else "yy"), password + "a"):
        response = httpx.get(f"{server.url}/v2/", headers={"Authorization": basic_auth(wrong)})
        assert response.status_code == 401
        assert CHALLENGE.fullmatch(response.headers["www-authenticate"])
    # The SigV4 secret is not a registry password.
    response = httpx.get(f"{server.url}/v2/", auth=("AWS", "ecr/TestSecretKey"))
    assert response.status_code == 401


def test_valid_token_reads_what_the_api_pushed(server: LiveServer, ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "v1")
    headers = {"Authorization": basic_auth(registry_password(ecr)), "Accept": image.manifest.media_type}
    assert httpx.get(f"{server.url}/v2/", headers=headers).status_code == 200
    manifest = httpx.get(f"{server.url}/v2/{repo}/manifests/v1", headers=headers)
    assert manifest.status_code == 200
    assert manifest.content == image.manifest.data
    assert manifest.headers["docker-content-digest"] == image.manifest.digest
    assert httpx.get(f"{server.url}/v2/{repo}/manifests/v1").status_code == 401


def test_token_of_another_region_is_denied(domain_server: LiveServer) -> None:
    east = ecr_client(domain_server.url)
    name = f"ecr/cross-region-{uuid.uuid4().hex[:8]}"
    east.create_repository(repositoryName=name)
    push_image(east, name, "v1")
    west_password = registry_password(ecr_client(domain_server.url, region="us-west-2"))
    east_host = f"{ACCOUNT}.dkr.ecr.us-east-1.{REGISTRY_DOMAIN}:{domain_server.port}"
    url = f"{domain_server.url}/v2/{name}/manifests/v1"
    refused = httpx.get(url, headers={"Authorization": basic_auth(west_password), "Host": east_host})
    assert refused.status_code == 401
    assert codes(refused) == ["UNAUTHORIZED"]
    message = refused.json()["errors"][0]["message"]
    assert "issued for region us-west-2" in message, message
    assert "in region us-east-1" in message, message
    assert refused.headers["www-authenticate"] == f'Basic realm="http://{east_host}/",service="ecr.amazonaws.com"'
    # The same request with a token of the region the host names is served.
    east_password = registry_password(east)
    served = httpx.get(
        url, headers={"Authorization": basic_auth(east_password), "Host": east_host, "Accept": DOCKER_MANIFEST}
    )
    assert served.status_code == 200, served.text
    # Another account's registry host is refused too.
    other_host = f"210987654321.dkr.ecr.us-east-1.{REGISTRY_DOMAIN}:{domain_server.port}"
    other = httpx.get(url, headers={"Authorization": basic_auth(east_password), "Host": other_host})
    assert other.status_code == 403
    assert codes(other) == ["DENIED"]


def test_registry_host_names_with_a_domain(domain_server: LiveServer) -> None:
    """ECR's exact form: `<account>.dkr.ecr.<region>.<domain>`, no port, and https for proxyEndpoint."""
    east = ecr_client(domain_server.url)
    name = f"ecr/uri-{uuid.uuid4().hex[:8]}"
    record = east.create_repository(repositoryName=name)["repository"]
    host = f"{ACCOUNT}.dkr.ecr.us-east-1.{REGISTRY_DOMAIN}"
    assert record["repositoryUri"] == f"{host}/{name}"
    assert east.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"] == f"{host}/{name}"
    assert east.get_authorization_token()["authorizationData"][0]["proxyEndpoint"] == f"https://{host}"
    west = ecr_client(domain_server.url, region="us-west-2")
    assert west.get_authorization_token()["authorizationData"][0]["proxyEndpoint"] == (
        f"https://{ACCOUNT}.dkr.ecr.us-west-2.{REGISTRY_DOMAIN}"
    )


def test_public_port_goes_into_registry_host_names(tmp_path: Path) -> None:
    env = {"MOORAGE_REGISTRY_DOMAIN": REGISTRY_DOMAIN, "MOORAGE_PUBLIC_PORT": "8443"}
    with LiveServer(tmp_path / "data", env=env) as live:
        client = live.ecr()
        name = f"ecr/port-{uuid.uuid4().hex[:8]}"
        record = client.create_repository(repositoryName=name)["repository"]
        host = f"{ACCOUNT}.dkr.ecr.us-east-1.{REGISTRY_DOMAIN}:8443"
        assert record["repositoryUri"] == f"{host}/{name}"
        assert client.get_authorization_token()["authorizationData"][0]["proxyEndpoint"] == f"https://{host}"


def test_public_port_without_a_domain_changes_nothing(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "data", env={"MOORAGE_PUBLIC_PORT": "8443"}) as live:
        client = live.ecr()
        record = client.create_repository(repositoryName="ecr/no-domain")["repository"]
        assert record["repositoryUri"] == f"{live.address}/ecr/no-domain"
        assert client.get_authorization_token()["authorizationData"][0]["proxyEndpoint"] == f"http://{live.address}"


def test_without_a_registry_domain_the_endpoint_is_the_configured_regions(
    server: LiveServer, ecr: Any, repo: str
) -> None:
    """One /v2/ endpoint without registry_domain: the configured region's (us-east-1). A token of
    another region is refused as ECR refuses it, 401 naming the regions, not 404 NAME_UNKNOWN."""
    push_image(ecr, repo, "v1")
    west_password = registry_password(ecr_client(server.url, region="us-west-2"))
    url = f"{server.url}/v2/{repo}/manifests/v1"
    response = httpx.get(url, headers={"Authorization": basic_auth(west_password)})
    assert response.status_code == 401
    assert codes(response) == ["UNAUTHORIZED"]
    message = response.json()["errors"][0]["message"]
    assert "issued for region us-west-2" in message, message
    assert "in region us-east-1" in message, message
    assert CHALLENGE.fullmatch(response.headers["www-authenticate"])
    assert httpx.get(f"{server.url}/v2/", headers={"Authorization": basic_auth(west_password)}).status_code == 401
    east = httpx.get(url, headers={"Authorization": basic_auth(registry_password(ecr)), "Accept": DOCKER_MANIFEST})
    assert east.status_code == 200
