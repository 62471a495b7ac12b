"""The console's sign-in, session cookie and CSRF rules, seen over plain HTTP (httpx) against the
real server: what a browser would be sent, and what it is refused."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import boto3
import httpx
import pytest

from tests.console.conftest import World, build_world
from tests.support import images as im
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = LiveServer(tmp_path_factory.mktemp("console-http") / "data").start(60.0)
    try:
        yield build_world(live, scan=False)
    finally:
        live.stop()


def browser(world: World) -> httpx.Client:
    return httpx.Client(base_url=world.live.url, follow_redirects=False, timeout=30)


def signin_token(client: httpx.Client) -> str:
    page = client.get("/console/signin")
    assert page.status_code == 200
    found = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert found
    return found[1]


def sign_in(world: World, key: tuple[str, str] | None = None, **fields: str) -> httpx.Client:
    client = browser(world)
    access, secret = key or world.root_key
    form = {"access_key_id": access, "secret_access_key": secret, "region": "us-east-1", **fields}
    answer = client.post("/console/signin", data={"signin_token": signin_token(client), **form})
    assert answer.status_code == 303, answer.text
    return client


def csrf(client: httpx.Client, path: str = "/console/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found
    return found[1]


def test_pages_need_a_session(world: World) -> None:
    client = browser(world)
    answer = client.get("/console/repositories/team/app")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/signin?next=%2Fconsole%2Frepositories%2Fteam%2Fapp"
    assert client.get("/console").headers["location"] == "/console/"
    refused = client.post("/console/repositories", data={"name": "team/new"})
    assert refused.status_code == 403
    assert "team/new" not in [r["repositoryName"] for r in world.ecr().describe_repositories()["repositories"]]


def test_the_session_cookie(world: World) -> None:
    client = browser(world)
    token = signin_token(client)
    answer = client.post(
        "/console/signin",
        data={
            "signin_token": token,
            "access_key_id": world.root_key[0],
            "secret_access_key": world.root_key[1],
            "region": "us-east-1",
            "next": "/console/status",
        },
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/status"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("moorage_console="))
    attributes = [part.strip() for part in cookie.split(";")][1:]
    assert "HttpOnly" in attributes
    assert "SameSite=Strict" in attributes
    assert "Path=/console" in attributes
    assert "Secure" not in attributes  # plain HTTP here; Secure under TLS
    max_age = int(next(a for a in attributes if a.startswith("Max-Age="))[len("Max-Age=") :])
    assert 8 * 3600 - 60 < max_age <= 8 * 3600
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert world.root_key[1] not in value  # the secret never goes into the cookie
    page = client.get("/console/")
    assert page.status_code == 200
    assert "team/app" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    # A cookie changed by one character is no session.
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    forged = browser(world)
    forged.cookies.set("moorage_console", tampered, path="/console")
    assert forged.get("/console/").status_code == 303


def test_wrong_credentials_are_refused_alike(world: World) -> None:
    for key, secret in [(world.root_key[0], "wrong-secret"), ("AKIANOSUCHKEY0000000", world.root_key[1])]:
        client = browser(world)
        answer = client.post(
            "/console/signin",
            data={"signin_token": signin_token(client), "access_key_id": key, "secret_access_key": secret},
        )
        assert answer.status_code == 401
        assert "Sign-in failed: those credentials are not valid." in answer.text
        assert not any(c.startswith("moorage_console=") for c in answer.headers.get_list("set-cookie"))


def test_the_signin_form_needs_its_own_token(world: World) -> None:
    client = browser(world)
    answer = client.post(
        "/console/signin",
        data={"signin_token": "made-up", "access_key_id": world.root_key[0], "secret_access_key": world.root_key[1]},
    )
    assert answer.status_code == 403
    assert not any(c.startswith("moorage_console=") for c in answer.headers.get_list("set-cookie"))


def test_after_signin_only_console_paths(world: World) -> None:
    client = sign_in(world, next="https://elsewhere.example/")
    # (the redirect of sign_in itself)
    again = browser(world)
    answer = again.post(
        "/console/signin",
        data={
            "signin_token": signin_token(again),
            "access_key_id": world.root_key[0],
            "secret_access_key": world.root_key[1],
            "next": "//elsewhere.example/",
        },
    )
    assert answer.headers["location"] == "/console/"
    assert client.get("/console/").status_code == 200


def test_csrf_token_on_every_post(world: World) -> None:
    client = sign_in(world)

    def names() -> list[str]:
        return [r["repositoryName"] for r in world.ecr().describe_repositories()["repositories"]]

    missing = client.post("/console/repositories", data={"name": "team/csrf-a"})
    assert missing.status_code == 403
    assert "CSRF token is missing or wrong" in missing.text
    wrong = client.post("/console/repositories", data={"name": "team/csrf-a", "csrf": "x" * 43})
    assert wrong.status_code == 403
    token = csrf(client)
    other_site = client.post(
        "/console/repositories",
        data={"name": "team/csrf-a", "csrf": token},
        headers={"origin": "http://elsewhere.example"},
    )
    assert other_site.status_code == 403
    assert "team/csrf-a" not in names()
    # Another session's token is not this session's.
    stranger = sign_in(world)
    assert client.post("/console/repositories", data={"name": "team/csrf-a", "csrf": csrf(stranger)}).status_code == 403

    made = client.post(
        "/console/repositories", data={"name": "team/csrf-a", "csrf": token}, headers={"origin": world.live.url}
    )
    assert made.status_code == 303
    assert made.headers["location"] == "/console/repositories/team/csrf-a"
    assert "team/csrf-a" in names()

    # Deleting needs the name typed again.
    unconfirmed = client.post("/console/repositories/team/csrf-a/-/delete", data={"csrf": token})
    assert unconfirmed.status_code == 400
    assert "team/csrf-a" in names()
    deleted = client.post("/console/repositories/team/csrf-a/-/delete", data={"csrf": token, "confirm": "team/csrf-a"})
    assert deleted.status_code == 303
    assert "team/csrf-a" not in names()


def test_sign_in_with_a_registry_password(world: World) -> None:
    client = browser(world)
    answer = client.post(
        "/console/signin", data={"signin_token": signin_token(client), "password": world.live.password()}
    )
    assert answer.status_code == 303
    page = client.get("/console/")
    assert page.status_code == 200
    assert "team/app" in page.text
    assert "root @ 123456789012" in page.text
    bad = browser(world)
    refused = bad.post("/console/signin", data={"signin_token": signin_token(bad), "password": "bm90IGEgdG9rZW4="})
    assert refused.status_code == 401


def test_a_restricted_user_is_refused_elsewhere(world: World) -> None:
    client = sign_in(world, world.dev_key)
    listing = client.get("/console/").text
    assert "team/app" in listing
    assert "team/tools" in listing
    assert "other/secret" not in listing
    refused = client.get("/console/repositories/other/secret")
    assert refused.status_code == 403
    assert "not authorized to perform: ecr:DescribeImages" in refused.text
    token = csrf(client)
    create = client.post("/console/repositories", data={"name": "other/new", "csrf": token})
    assert create.status_code == 403
    assert "ecr:CreateRepository" in create.text
    assert client.get("/console/registry").status_code == 200  # its sections say "Not authorized"


def test_signing_out_and_a_deleted_key_end_the_session(world: World) -> None:
    client = sign_in(world)
    out = client.post("/console/signout", data={"csrf": csrf(client)})
    assert out.status_code == 303
    assert out.headers["location"] == "/console/signin"
    assert any(c.startswith("moorage_console=;") and "Max-Age=0" in c for c in out.headers.get_list("set-cookie"))
    assert client.get("/console/").status_code == 303

    found = re.search(r"AWS_ACCESS_KEY_ID=(\S+)\nAWS_SECRET_ACCESS_KEY=(\S+)", world.admin("create-access-key"))
    assert found
    keyed = sign_in(world, (found[1], found[2]))
    assert keyed.get("/console/").status_code == 200
    world.admin("delete-access-key", found[1])
    deadline = time.monotonic() + 15  # keys are cached for a few seconds per process
    while keyed.get("/console/").status_code == 200:
        assert time.monotonic() < deadline, "the deleted key's session still works"
        time.sleep(0.5)
    assert keyed.get("/console/").headers["location"].startswith("/console/signin")


def test_the_console_can_be_switched_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("console-off") / "data"
    with LiveServer(data, env={"MOORAGE_CONSOLE__ENABLED": "false"}) as live:
        assert httpx.get(f"{live.url}/console/signin").status_code == 404
        assert httpx.get(f"{live.url}/healthz").status_code == 200


def test_the_repository_list_pages_and_searches(world: World) -> None:
    ecr = world.ecr()
    names = [f"paged/r{i:02d}" for i in range(53)]
    for name in names:
        ecr.create_repository(repositoryName=name)
    client = sign_in(world)

    def listed(page: str) -> list[str]:
        return re.findall(r'class="repo-link" href="/console/repositories/([^"]+)"', page)

    first = client.get("/console/", params={"q": "paged/"}).text
    assert listed(first) == names[:50]
    after = re.search(r'id="next-page" href="\?q=paged%2F&amp;after=([^"]+)"', first)
    assert after
    assert after[1] == "paged%2Fr49"
    second = client.get("/console/", params={"q": "paged/", "after": "paged/r49"}).text
    assert listed(second) == names[50:]
    assert 'id="next-page"' not in second
    assert listed(client.get("/console/", params={"q": "r5"}).text) == ["paged/r50", "paged/r51", "paged/r52"]


def test_switching_region_shows_that_regions_registry(world: World) -> None:
    world.live.ecr("eu-west-1").create_repository(repositoryName="europe/app")
    client = sign_in(world)
    assert "europe/app" not in client.get("/console/").text
    switched = client.post("/console/context", data={"csrf": csrf(client), "region": "eu-west-1"})
    assert switched.status_code == 303
    listing = client.get("/console/").text
    assert "europe/app" in listing
    assert "team/app" not in listing
    bad = client.post("/console/context", data={"csrf": csrf(client), "region": "mars-north-1"})
    assert bad.status_code == 400


def test_archive_and_restore_an_image(world: World) -> None:
    client = sign_in(world)
    token = csrf(client)
    digest = world.digests["tools"]
    base = f"/console/repositories/team/tools/-/images/{digest}"
    assert client.post(f"{base}/archive", data={"csrf": token}).status_code == 303
    described = world.ecr().describe_images(repositoryName="team/tools", imageIds=[{"imageDigest": digest}])
    assert described["imageDetails"][0]["imageStatus"] == "ARCHIVED"
    page = client.get(base).text
    assert "ARCHIVE (ARCHIVED)" in page
    assert client.post(f"{base}/restore", data={"csrf": token}).status_code == 303
    described = world.ecr().describe_images(repositoryName="team/tools", imageIds=[{"imageDigest": digest}])
    assert described["imageDetails"][0]["imageStatus"] in ("ACTIVATING", "ACTIVE")


def test_the_image_page_shows_its_signing_status(world: World) -> None:
    live = world.live
    signer = boto3.client(
        "signer",
        endpoint_url=live.url,
        region_name="us-east-1",
        aws_access_key_id=world.root_key[0],
        aws_secret_access_key=world.root_key[1],
    )
    arn = signer.put_signing_profile(profileName="console_signer", platformId="Notation-OCI-SHA384-ECDSA")["arn"]
    ecr = world.ecr()
    ecr.create_repository(repositoryName="signed/app")
    ecr.put_signing_configuration(
        signingConfiguration={
            "rules": [
                {
                    "signingProfileArn": arn,
                    "repositoryFilters": [{"filter": "signed/*", "filterType": "WILDCARD_MATCH"}],
                }
            ]
        }
    )
    with httpx.Client(base_url=live.url, auth=live.auth, timeout=30) as pusher:
        digest = im.push_image(pusher, "signed/app", "v1").digest
    deadline = time.monotonic() + 60
    while True:
        statuses = ecr.describe_image_signing_status(repositoryName="signed/app", imageId={"imageDigest": digest})
        if statuses["signingStatuses"] and statuses["signingStatuses"][0]["status"] != "IN_PROGRESS":
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)
    assert statuses["signingStatuses"][0]["status"] == "COMPLETE"
    client = sign_in(world)
    page = client.get(f"/console/repositories/signed/app/-/images/{digest}").text
    signature = re.search(r'<dd class="signature">(.*?)</dd>', page, re.S)
    assert signature, page
    assert "COMPLETE" in signature[1]
    assert "console_signer" in signature[1]
    # An image no rule signs says so.
    unsigned = client.get(f"/console/repositories/team/tools/-/images/{world.digests['tools']}").text
    assert "not signed" in unsigned
    ecr.delete_signing_configuration()
