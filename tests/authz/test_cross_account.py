"""Cross-account use: account B's principals and account A's registry. The resource side (A's
repository or registry policy) AND the identity side (B's root implicitly, B's users by their
policies) must both allow. On the API `registryId` selects A's registry; on `/v2/` the host name
`<account>.dkr.ecr.<region>.moorage.test` does, resolved through a private /etc/hosts (a mount
namespace of skopeo's own: the machine's /etc/hosts is never touched)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.authz.conftest import (
    ACCOUNT_A,
    ACCOUNT_B,
    World,
    allow,
    denied,
    eventually,
    grant,
    policy,
    repo_arn,
    user_arn,
)
from tests.support.ecr import DOCKER_MANIFEST, basic_auth, expect_error, push_image

PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]


def test_api_cross_account_needs_both_sides(world: World, root: Any, new_name: Callable[[], str]) -> None:
    broot, carol = world.ecr("broot"), world.ecr("carol")
    name = new_name()
    root.create_repository(repositoryName=name)
    image = push_image(root, name, "v1")
    ids = [{"imageTag": "v1"}]
    message = denied(broot.batch_get_image, registryId=ACCOUNT_A, repositoryName=name, imageIds=ids)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT_B}:root is not authorized to perform: ecr:BatchGetImage on resource: "
        f"{repo_arn(name)} because no resource-based policy allows the ecr:BatchGetImage action"
    )
    denied(broot.describe_repositories, registryId=ACCOUNT_A)
    # B's own registry is B's: the same name there is another repository.
    expect_error(broot.batch_get_image, "RepositoryNotFoundException", repositoryName=name, imageIds=ids)
    root.set_repository_policy(
        repositoryName=name, policyText=policy(grant({"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}, PULL))
    )
    got = broot.batch_get_image(registryId=ACCOUNT_A, repositoryName=name, imageIds=ids)
    assert got["images"][0]["imageManifest"] == image.manifest.text
    assert got["images"][0]["registryId"] == ACCOUNT_A
    denied(broot.list_images, registryId=ACCOUNT_A, repositoryName=name)
    # carol (account B) is named by the account-wide grant, but her own side allows nothing yet.
    assert denied(carol.batch_get_image, registryId=ACCOUNT_A, repositoryName=name, imageIds=ids).endswith(
        "because no identity-based policy allows the ecr:BatchGetImage action"
    )
    world.admin(
        "attach-user-policy",
        "--account",
        ACCOUNT_B,
        "carol",
        "--name",
        "pull-from-a",
        "--document",
        "-",
        stdin=policy(allow("ecr:GetAuthorizationToken"), allow(PULL, repo_arn("authz/*"))),
    )
    eventually(lambda: carol.batch_get_image(registryId=ACCOUNT_A, repositoryName=name, imageIds=ids))
    # A's policy naming only B's root's account still names carol; one naming another user does not.
    root.set_repository_policy(
        repositoryName=name, policyText=policy(grant({"AWS": user_arn(ACCOUNT_B, "dave")}, PULL)), force=True
    )
    denied(carol.batch_get_image, registryId=ACCOUNT_A, repositoryName=name, imageIds=ids)
    denied(broot.batch_get_image, registryId=ACCOUNT_A, repositoryName=name, imageIds=ids)


def test_unknown_repository_in_another_registry(world: World) -> None:
    region = "ap-south-1"
    a_root, broot = world.ecr("root", region), world.ecr("broot", region)
    a_root.put_registry_policy(
        policyText=policy(grant({"AWS": ACCOUNT_B}, "ecr:*", Resource=repo_arn("*", region=region)))
    )
    expect_error(
        broot.describe_repositories,
        "RepositoryNotFoundException",
        f"The repository with name 'authz/nope' does not exist in the registry with id '{ACCOUNT_A}'",
        registryId=ACCOUNT_A,
        repositoryNames=["authz/nope"],
    )
    assert broot.describe_repositories(registryId=ACCOUNT_A)["repositories"] == []
    broot.create_repository(registryId=ACCOUNT_A, repositoryName="authz/made-by-b")
    listed = a_root.describe_repositories()["repositories"]
    assert [(r["repositoryName"], r["registryId"]) for r in listed] == [("authz/made-by-b", ACCOUNT_A)]
    a_root.delete_registry_policy()


# --- /v2/ with registry host names -----------------------------------------------------------


def _skopeo_available() -> None:
    if os.geteuid() != 0 or not shutil.which("skopeo") or not shutil.which("unshare"):
        pytest.fail("needs root, skopeo and unshare (a private /etc/hosts in a mount namespace)")


def skopeo(world: World, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """skopeo with the registry host names of both accounts resolving to 127.0.0.1 through a
    private /etc/hosts bind-mounted in a mount namespace of its own."""
    hosts = tmp_path / "hosts"
    names = [world.host(account).rsplit(":", 1)[0] for account in (ACCOUNT_A, ACCOUNT_B)]
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {name}\n" for name in names))
    script = (
        f"mount --bind {shlex.quote(str(hosts))} /etc/hosts && exec skopeo --command-timeout 60s {shlex.join(args)}"
    )
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def pull(world: World, tmp_path: Path, who: str, reference: str) -> subprocess.CompletedProcess[str]:
    dest = tmp_path / f"pulled-{who}-{len(list(tmp_path.iterdir()))}"
    return skopeo(
        world,
        tmp_path,
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-creds",
        f"AWS:{world.password(who)}",
        f"docker://{reference}",
        f"dir:{dest}",
    )


def test_cross_account_pull_over_v2(world: World, root: Any, new_name: Callable[[], str], tmp_path: Path) -> None:
    _skopeo_available()
    name = new_name()
    root.create_repository(repositoryName=name)
    image = push_image(root, name, "v1")
    reference = f"{world.host(ACCOUNT_A)}/{name}:v1"
    refused = pull(world, tmp_path, "broot", reference)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() or "403" in refused.stderr, refused.stderr
    root.set_repository_policy(repositoryName=name, policyText=policy(grant({"AWS": ACCOUNT_B}, PULL)))
    done = pull(world, tmp_path, "broot", reference)
    assert done.returncode == 0, done.stderr
    pulled = sorted(p.name for p in tmp_path.glob("pulled-broot-*/*"))
    assert image.layers[0].digest.split(":")[1] in pulled
    # The A root's own pull by host name works as ever; carol needs her own side too.
    assert pull(world, tmp_path, "root", reference).returncode == 0
    world.admin(
        "attach-user-policy",
        "--account",
        ACCOUNT_B,
        "carol",
        "--name",
        "v2-pull",
        "--document",
        "-",
        stdin=policy(allow("ecr:GetAuthorizationToken"), allow(PULL, repo_arn(name))),
    )
    eventually(lambda: world.password("carol"))
    assert pull(world, tmp_path, "carol", reference).returncode == 0


def test_v2_host_names_select_the_registry(world: World, root: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    root.create_repository(repositoryName=name)
    push_image(root, name, "v1")
    url = f"{world.server.url}/v2/{name}/manifests/v1"

    def get(password: str, host: str) -> httpx.Response:
        return httpx.get(url, headers={"Authorization": basic_auth(password), "Host": host, "Accept": DOCKER_MANIFEST})

    b_password = world.password("broot")
    refused = get(b_password, world.host(ACCOUNT_A))
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "DENIED"
    # B's own registry has no such repository; A's token without a host name means A's registry.
    assert get(b_password, world.host(ACCOUNT_B)).status_code == 404
    assert get(world.password("root"), world.server.address).status_code == 200
    root.set_repository_policy(repositoryName=name, policyText=policy(grant({"AWS": ACCOUNT_B}, "ecr:BatchGetImage")))
    assert get(b_password, world.host(ACCOUNT_A)).status_code == 200
    # A token stays bound to its region.
    west = world.password("broot", "us-west-2")
    refused = get(west, world.host(ACCOUNT_A))
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert "issued for region us-west-2" in refused.json()["errors"][0]["message"]
