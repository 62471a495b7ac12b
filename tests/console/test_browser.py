"""The console in a real browser: Debian's headless Chromium driven through chromedriver
(tests/support/webdriver.py), against the real server with real pushes. One server and one
browser for the module; the tests run in file order and build on each other's state only where
they say so. Screenshots of every page go to the pytest tmp dir (`console-screenshots`); with
MOORAGE_DOCS_SCREENSHOTS=1 a few are also written to docs/console/ for the README."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.conftest import LIFECYCLE_POLICY, World, build_world
from tests.support.live import LiveServer
from tests.support.webdriver import CHROMEDRIVER, CHROMIUM, Browser

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
FOR_DOCS = {"repositories", "repository", "image", "lifecycle"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    live = LiveServer(tmp_path_factory.mktemp("console-browser") / "data").start(60.0)
    try:
        yield build_world(live)
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are not installed (bin/test installs them)")
    with Browser() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


def screenshot(browser: Browser, shots: Path, name: str) -> None:
    path = browser.screenshot(shots / f"{name}.png")
    if os.environ.get("MOORAGE_DOCS_SCREENSHOTS") == "1" and name in FOR_DOCS:
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS / f"{name}.png")


def sign_in(browser: Browser, world: World, key: tuple[str, str]) -> None:
    browser.delete_cookies()
    browser.get(f"{world.live.url}/console/")
    assert browser.url.startswith(f"{world.live.url}/console/signin")
    browser.find("#access_key_id").type(key[0])
    browser.find("#secret_access_key").type(key[1])
    browser.find("#signin-submit").click()
    browser.wait_for("#signout")


def cells(browser: Browser, css: str) -> list[list[str]]:
    return [[cell.text for cell in row.find_all("td")] for row in browser.find_all(f"{css} tbody tr")]


def test_sign_in_find_a_repository_and_open_an_image(world: World, browser: Browser, shots: Path) -> None:
    browser.get(f"{world.live.url}/console/signin")
    screenshot(browser, shots, "signin")
    sign_in(browser, world, world.root_key)
    names = [e.text for e in browser.find_all("a.repo-link")]
    assert names == ["other/secret", "team/app", "team/tools"]
    rows = {row[0]: row for row in cells(browser, "#repositories")}
    assert rows["team/app"][1].startswith(f"{world.live.address}/team/app")
    assert rows["team/app"][2] == "4"  # images
    screenshot(browser, shots, "repositories")

    browser.find("#q").type("app")
    browser.find("form.search button").click()
    browser.wait_for_page("q=app")
    browser.wait_for("a.repo-link")
    assert [e.text for e in browser.find_all("a.repo-link")] == ["team/app"]
    browser.find("a.repo-link").click()
    browser.wait_for("#images")
    assert browser.find("#image-total").text == "4"
    digests = [row.text for row in browser.find_all("#images tbody tr a.image-link")]
    assert len(digests) == 4
    tags = [row[1] for row in cells(browser, "#images")]
    assert sorted(tags) == ["untagged", "untagged", "v1", "v2"]
    scans = {row[1]: row[8] for row in cells(browser, "#images")}
    assert scans["v1"].startswith("COMPLETE")
    assert "HIGH 1" in scans["v1"]
    assert "MEDIUM 5" in scans["v1"]
    assert scans["v2"] == "not scanned"
    screenshot(browser, shots, "repository")

    # Filter: tagged only, tag text, sorted by size.
    browser.get(f"{world.live.url}/console/repositories/team/app?tagged=UNTAGGED")
    assert [row[1] for row in cells(browser, "#images")] == ["untagged", "untagged"]
    browser.get(f"{world.live.url}/console/repositories/team/app?tag=v&sort=size&dir=desc")
    assert [row[1] for row in cells(browser, "#images")] == ["v1", "v2"]  # v1 carries the real layer

    browser.get(f"{world.live.url}/console/repositories/team/app/-/images/{world.digests['v1']}")
    browser.wait_for("#layers")
    assert browser.find("#image-tags").text == "v1"
    layers = cells(browser, "#layers")
    assert len(layers) == 1
    assert layers[0][2] == "application/vnd.oci.image.layer.v1.tar+gzip"
    env = browser.find("#config-env").text
    assert "GREETING=ahoy" in env
    assert "org.example.team=harbour" in browser.find("#config-labels").text
    assert "COPY rootfs /" in browser.find("#config-history").text
    findings = cells(browser, "#findings-table")
    assert sorted((f[0], f[1]) for f in findings) == sorted(
        [
            ("CVE-2015-8315", "HIGH"),
            ("CVE-2023-32681", "MEDIUM"),
            ("CVE-2025-15467", "MEDIUM"),
            ("CVE-2025-15467", "MEDIUM"),
            ("CVE-2026-28387", "MEDIUM"),
            ("CVE-2026-28387", "MEDIUM"),
        ]
    )
    manifest = json.loads(browser.find("#manifest").text)
    assert manifest["layers"][0]["digest"] in browser.find("#layers").find("code").attribute("title")  # type: ignore[operator]
    screenshot(browser, shots, "image")

    # The severity filter (the select submits itself: plain JS).
    browser.run(
        "const s = document.getElementById('severity'); s.value = 'HIGH';"
        "s.dispatchEvent(new Event('change', {bubbles: true}));"
    )
    browser.wait_for("#severity option[value=HIGH][selected]")
    assert [(f[0], f[1]) for f in cells(browser, "#findings-table")] == [("CVE-2015-8315", "HIGH")]


def test_lifecycle_preview_shows_the_images_that_would_expire(world: World, browser: Browser, shots: Path) -> None:
    browser.get(f"{world.live.url}/console/repositories/team/app/-/lifecycle")
    area = browser.find("#policy")
    area.clear()
    area.type(json.dumps(LIFECYCLE_POLICY))
    browser.find("#run-preview").click()
    browser.wait_for("#preview-results")
    assert "COMPLETE" in browser.find("#preview-status").text
    assert len(browser.find_all("#preview-results tbody tr")) == 1
    digest = browser.run("return document.querySelector('#preview-results tbody tr').dataset.digest")
    assert digest == world.digests["old"]  # the older of the two untagged images
    browser.run("document.getElementById('policy-form').scrollIntoView()")
    screenshot(browser, shots, "lifecycle")

    # An invalid policy: the validator's own message.
    area = browser.find("#policy")
    area.clear()
    invalid = {**LIFECYCLE_POLICY, "rules": [{**LIFECYCLE_POLICY["rules"][0], "rulePriority": 0}]}
    area.type(json.dumps(invalid))
    browser.find("#save-policy").click()
    error = browser.wait_for("#policy-error").text
    assert "Lifecycle policy validation failure" in error
    with pytest.raises(Exception, match="LifecyclePolicyNotFoundException"):
        world.ecr().get_lifecycle_policy(repositoryName="team/app")


def test_delete_an_image_and_it_is_gone_from_the_api(world: World, browser: Browser, shots: Path) -> None:
    browser.get(f"{world.live.url}/console/repositories/team/app")
    browser.find(f"input[name=digest][value='{world.digests['v2']}']").click()
    browser.find("#delete-selected").click()
    assert "Delete the selected images" in browser.accept_alert()
    flash = browser.wait_for("p.flash").text
    assert flash == "Deleted 1 image."
    assert sorted(row[1] for row in cells(browser, "#images")) == ["untagged", "untagged", "v1"]
    listed = world.ecr().list_images(repositoryName="team/app")["imageIds"]
    assert world.digests["v2"] not in {i["imageDigest"] for i in listed}
    assert len(listed) == 3


def test_registry_and_status_pages(world: World, browser: Browser, shots: Path) -> None:
    browser.get(f"{world.live.url}/console/registry")
    assert '"scanType": "BASIC"' in browser.find("#scanning pre").text
    assert "aws ecr describe-pull-through-cache-rules" in browser.find("#pull-through").text
    assert "No registry policy." in browser.find("#registry-policy").text
    screenshot(browser, shots, "registry")
    browser.get(f"{world.live.url}/console/status")
    jobs = {row[0]: row[1] for row in cells(browser, "#jobs")}
    assert set(jobs) == {"gc", "lifecycle", "events-retention", "replication-backfill", "image-scans"}
    assert jobs["image-scans"] != "never"
    assert "KiB" in browser.find("#storage-used").text or "MiB" in browser.find("#storage-used").text
    screenshot(browser, shots, "status")


def test_phone_width_has_no_page_wide_horizontal_scroll(world: World, browser: Browser, shots: Path) -> None:
    browser.window(390, 844)
    try:
        browser.get(f"{world.live.url}/console/repositories/team/app")
        overflow = browser.run("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        screenshot(browser, shots, "repository-phone")
    finally:
        browser.window(1280, 900)


def test_a_post_without_the_csrf_token_is_refused(world: World, browser: Browser) -> None:
    browser.get(f"{world.live.url}/console/repositories/team/app")
    browser.run(
        """
        const f = document.createElement('form');
        f.method = 'post'; f.action = '/console/repositories/team/app/-/delete-images';
        const i = document.createElement('input'); i.name = 'digest'; i.value = arguments[0];
        f.appendChild(i); document.body.appendChild(f); f.submit();
        """,
        world.digests["v1"],
    )
    message = browser.wait_for("#error-message").text
    assert "CSRF token is missing or wrong" in message
    listed = world.ecr().list_images(repositoryName="team/app")["imageIds"]
    assert world.digests["v1"] in {i["imageDigest"] for i in listed}


def test_a_restricted_user_sees_only_what_its_policy_allows(world: World, browser: Browser, shots: Path) -> None:
    sign_in(browser, world, world.dev_key)
    assert browser.find(".who").text == "dev @ 123456789012"
    assert [e.text for e in browser.find_all("a.repo-link")] == ["team/app", "team/tools"]
    browser.get(f"{world.live.url}/console/repositories/team/tools")
    assert [row[1] for row in cells(browser, "#images")] == ["latest"]
    browser.get(f"{world.live.url}/console/repositories/other/secret")
    message = browser.find("#error-message").text
    assert browser.find("h1").text == "Access denied"
    assert message == (
        "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ecr:DescribeImages on resource: "
        "arn:aws:ecr:us-east-1:123456789012:repository/other/secret because no identity-based policy allows "
        "the ecr:DescribeImages action"
    )
    screenshot(browser, shots, "forbidden")
    browser.get(f"{world.live.url}/console/repositories/other/secret/-/images/{world.digests['secret']}")
    assert browser.find("h1").text == "Access denied"
    browser.get(f"{world.live.url}/console/status")
    assert browser.find("h1").text == "Access denied"


def test_sign_out(world: World, browser: Browser) -> None:
    sign_in(browser, world, world.root_key)
    browser.find("#signout").click()
    browser.wait_for("#signin-submit")
    assert not [c for c in browser.cookies() if c["name"] == "moorage_console"]
    browser.get(f"{world.live.url}/console/repositories/team/app")
    assert browser.url.startswith(f"{world.live.url}/console/signin")
