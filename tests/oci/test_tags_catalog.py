"""Tag listing and the catalog, with `n` / `last` pagination and `Link` headers."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import pytest

from tests.support.images import error_codes, push_blob, push_image, push_manifest


def tag_all(client: httpx.Client, name: str, tags: list[str]) -> None:
    manifest = push_image(client, name)
    shuffled = list(tags)
    random.shuffle(shuffled)
    for tag in shuffled:
        push_manifest(client, name, tag, manifest)


def follow(
    client: httpx.Client, url: str, key: str, *, until: Callable[[list[str]], bool] | None = None
) -> tuple[list[str], list[list[str]]]:
    """GET `url` and every `rel="next"` page after it (stopping early after a page for which
    `until` is true); returns all items and the pages."""
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        pages.append(list(response.json()[key]))
        next_link = response.links.get("next")
        next_url = next_link["url"] if next_link else None
        if until is not None and until(pages[-1]):
            break
        assert len(pages) < 1000, "pagination does not end"
    return [item for page in pages for item in page], pages


# Lower-case only: byte order and case-insensitive order agree on these.
TAGS = ["1.0", "1.0.1", "10", "2", "a", "a-b", "a.b", "a_b", "latest", "v1", "v1.2.3", "zz"]


def test_tags_list(client: httpx.Client, repo: str) -> None:
    tag_all(client, repo, TAGS)

    response = client.get(f"/v2/{repo}/tags/list")

    assert response.status_code == 200
    assert response.json() == {"name": repo, "tags": sorted(TAGS)}
    assert "link" not in response.headers


def test_tags_order_is_case_insensitive(client: httpx.Client, repo: str) -> None:
    tags = ["B", "a", "C", "b1"]
    tag_all(client, repo, tags)

    response = client.get(f"/v2/{repo}/tags/list")

    assert response.json()["tags"] == ["a", "B", "b1", "C"]


@pytest.mark.parametrize("n", [1, 2, 5, 11])
def test_tags_pagination_follows_links(client: httpx.Client, repo: str, n: int) -> None:
    tag_all(client, repo, TAGS)

    collected, pages = follow(client, f"/v2/{repo}/tags/list?n={n}", "tags")

    assert collected == sorted(TAGS)
    assert all(len(page) == n for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= n
    assert len(pages) == -(-len(TAGS) // n)


def test_tags_link_header_format(client: httpx.Client, repo: str) -> None:
    tag_all(client, repo, TAGS)

    response = client.get(f"/v2/{repo}/tags/list", params={"n": 3})

    assert response.json()["tags"] == sorted(TAGS)[:3]
    link = response.headers["link"]
    assert link.startswith(f"</v2/{repo}/tags/list?")
    assert link.endswith('>; rel="next"')
    assert "n=3" in link
    assert f"last={sorted(TAGS)[2]}" in link


def test_tags_page_exactly_the_size_of_the_list_has_no_link(client: httpx.Client, repo: str) -> None:
    tag_all(client, repo, TAGS)

    exact = client.get(f"/v2/{repo}/tags/list", params={"n": len(TAGS)})
    larger = client.get(f"/v2/{repo}/tags/list", params={"n": 1000})

    for response in (exact, larger):
        assert response.json()["tags"] == sorted(TAGS)
        assert "link" not in response.headers


def test_tags_last(client: httpx.Client, repo: str) -> None:
    tag_all(client, repo, TAGS)
    ordered = sorted(TAGS)

    with_n = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": "a"})
    without_n = client.get(f"/v2/{repo}/tags/list", params={"last": "a"})
    between = client.get(f"/v2/{repo}/tags/list", params={"last": "b"})
    past_end = client.get(f"/v2/{repo}/tags/list", params={"last": "zzz"})

    after_a = ordered[ordered.index("a") + 1 :]
    assert with_n.json()["tags"] == after_a[:2]
    assert without_n.json()["tags"] == after_a
    assert between.json()["tags"] == [t for t in ordered if t > "b"]
    assert past_end.json()["tags"] == []


def test_tags_n_zero(client: httpx.Client, repo: str) -> None:
    tag_all(client, repo, TAGS)

    response = client.get(f"/v2/{repo}/tags/list", params={"n": 0})

    assert response.status_code == 200
    assert response.json() == {"name": repo, "tags": []}
    assert "link" not in response.headers


@pytest.mark.parametrize("n", ["abc", "-1", "1.5", "0x10"])
def test_tags_invalid_n(client: httpx.Client, repo: str, n: str) -> None:
    tag_all(client, repo, TAGS[:2])

    response = client.get(f"/v2/{repo}/tags/list", params={"n": n})

    assert response.status_code == 400
    assert error_codes(response) == ["PAGINATION_NUMBER_INVALID"]


def test_tags_of_repository_without_tags(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"only a blob")

    response = client.get(f"/v2/{repo}/tags/list")

    assert response.status_code == 200
    assert response.json() == {"name": repo, "tags": []}


def test_tags_of_unknown_repository(client: httpx.Client, repo: str) -> None:
    for params in ({}, {"n": "0"}, {"n": "5"}):
        response = client.get(f"/v2/{repo}/tags/list", params=params)
        assert response.status_code == 404
        assert error_codes(response) == ["NAME_UNKNOWN"]


# --- catalog -----------------------------------------------------------------------------------


def make_repositories(client: httpx.Client, new_repo: Callable[[], str], count: int) -> tuple[str, list[str]]:
    """`count` repositories under one fresh prefix; returns the prefix and the sorted names."""
    prefix = new_repo()
    names = [f"{prefix}/r{i:02d}" for i in range(count)]
    for name in random.sample(names, len(names)):
        push_blob(client, name, name.encode())
    return prefix, sorted(names)


def test_catalog_lists_repositories_in_order(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    _, names = make_repositories(client, new_repo, 3)

    response = client.get("/v2/_catalog")

    assert response.status_code == 200
    repositories = response.json()["repositories"]
    assert repositories == sorted(repositories)
    assert len(set(repositories)) == len(repositories)
    assert set(names) <= set(repositories)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_catalog_pagination_follows_links(client: httpx.Client, new_repo: Callable[[], str], n: int) -> None:
    prefix, names = make_repositories(client, new_repo, 7)

    def past_prefix(page: list[str]) -> bool:
        return any(not name.startswith(prefix + "/") for name in page)

    collected, pages = follow(client, f"/v2/_catalog?n={n}&last={prefix}", "repositories", until=past_prefix)

    assert collected[: len(names)] == names
    assert all(len(page) == n for page in pages[:-1])


def test_catalog_pagination_walks_everything(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    _, names = make_repositories(client, new_repo, 3)
    everything = client.get("/v2/_catalog").json()["repositories"]

    collected, pages = follow(client, "/v2/_catalog?n=25", "repositories")

    assert collected == everything
    assert set(names) <= set(collected)
    assert all(len(page) == 25 for page in pages[:-1])
    assert "link" not in client.get(f"/v2/_catalog?n={len(everything) + 10}").headers


def test_catalog_last(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    prefix, names = make_repositories(client, new_repo, 5)

    first = client.get("/v2/_catalog", params={"n": 2, "last": prefix})
    second = client.get("/v2/_catalog", params={"n": 2, "last": names[1]})

    assert first.json()["repositories"] == names[:2]
    assert "link" in first.headers
    assert second.json()["repositories"] == names[2:4]
    collected, _ = follow(client, f"/v2/_catalog?n=2&last={prefix}", "repositories")
    assert [name for name in collected if name.startswith(prefix + "/")] == names


def test_catalog_n_zero(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    make_repositories(client, new_repo, 1)

    response = client.get("/v2/_catalog", params={"n": 0})

    assert response.status_code == 200
    assert response.json() == {"repositories": []}
    assert "link" not in response.headers


@pytest.mark.parametrize("n", ["abc", "-1", "1e3"])
def test_catalog_invalid_n(client: httpx.Client, n: str) -> None:
    response = client.get("/v2/_catalog", params={"n": n})

    assert response.status_code == 400
    assert error_codes(response) == ["PAGINATION_NUMBER_INVALID"]
