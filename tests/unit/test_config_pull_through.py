"""`[pull_through_cache]` settings: `upstream_endpoints` from TOML and the environment, its
validation, and how a rule's upstream URL is mapped to the configured address."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from moorage.clock import SystemClock
from moorage.config import (
    ConfigError,
    PullThroughCacheSettings,
    load_settings,
    render_toml,
    settings_from_json,
    settings_to_dict,
    settings_to_json,
)
from moorage.pull_through import PullThroughCache

ENV = "MOORAGE_PULL_THROUGH_CACHE__UPSTREAM_ENDPOINTS"


def test_upstream_endpoints_from_toml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "moorage.toml"
    path.write_text(
        '[pull_through_cache.upstream_endpoints]\n"registry-1.docker.io" = "https://mirror.corp:5000/hub"\n'
    )
    settings, _ = load_settings(path, {}, {})
    assert settings.pull_through_cache.upstream_endpoints == {"registry-1.docker.io": "https://mirror.corp:5000/hub"}
    assert settings_from_json(settings_to_json(settings)) == settings
    assert '"registry-1.docker.io" = "https://mirror.corp:5000/hub"' in render_toml(settings_to_dict(settings))


def test_upstream_endpoints_from_the_environment_as_json() -> None:
    settings, _ = load_settings(None, {ENV: '{"quay.io": "https://quay.mirror"}'}, {})
    assert settings.pull_through_cache.upstream_endpoints == {"quay.io": "https://quay.mirror"}
    with pytest.raises(ConfigError, match="upstream_endpoints: expected a JSON object"):
        load_settings(None, {ENV: "quay.io=https://x"}, {})


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ('{"quay.io/x": "https://m"}', "the key must be a host name"),
        ('{"quay.io": "ftp://m"}', "expected an https://host"),
        ('{"quay.io": "http://m:5000"}', "needs pull_through_cache.allow_http_upstreams"),
        ('{"quay.io": 5}', "expected a string"),
    ],
)
def test_upstream_endpoints_are_checked(mapping: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, {ENV: mapping}, {})


def test_http_endpoint_with_allow_http_upstreams() -> None:
    env = {ENV: '{"ghcr.io": "http://127.0.0.1:5001"}', "MOORAGE_PULL_THROUGH_CACHE__ALLOW_HTTP_UPSTREAMS": "1"}
    settings, _ = load_settings(None, env, {})
    assert settings.pull_through_cache.upstream_endpoints == {"ghcr.io": "http://127.0.0.1:5001"}


class _NoMetadata:
    """Just enough of a metadata store for a cache that is never asked for a rule."""

    def on_writes_committed(self, callback: Callable[[], None]) -> None:
        pass


def test_a_mapped_host_is_contacted_at_its_address_with_the_url_path_kept() -> None:
    settings = PullThroughCacheSettings(upstream_endpoints={"registry-1.docker.io": "https://mirror.corp:5000/"})
    cache = PullThroughCache(_NoMetadata(), SystemClock(), settings)  # type: ignore[arg-type]  # never read
    assert cache.endpoint(cache.base_url("registry-1.docker.io")) == "https://mirror.corp:5000"
    assert cache.endpoint(cache.base_url("https://registry-1.docker.io/team")) == "https://mirror.corp:5000/team"
    assert cache.endpoint(cache.base_url("quay.io")) == "https://quay.io"
