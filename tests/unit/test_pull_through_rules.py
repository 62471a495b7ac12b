"""Rule selection and upstream naming of the pull-through cache (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime

from moorage.metadata import PullThroughRule
from moorage.model import RegistryRef
from moorage.pull_through import known_upstream, match_rule

REGISTRY = RegistryRef("123456789012", "us-east-1")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _rule(prefix: str, upstream_prefix: str = "ROOT") -> PullThroughRule:
    return PullThroughRule(REGISTRY, prefix, "quay.io", "quay", upstream_prefix, None, None, NOW)


def test_longest_slash_boundary_prefix_wins_then_root() -> None:
    rules = [_rule("ROOT"), _rule("team"), _rule("team/sub")]
    matched = match_rule(rules, "team/sub/app")
    assert matched is not None
    assert (matched[0].prefix, matched[1]) == ("team/sub", "app")
    matched = match_rule(rules, "team/app")
    assert matched is not None
    assert (matched[0].prefix, matched[1]) == ("team", "app")
    matched = match_rule(rules, "teamster/app")  # not a '/' boundary: the ROOT rule, whole name upstream
    assert matched is not None
    assert (matched[0].prefix, matched[1]) == ("ROOT", "teamster/app")
    assert match_rule([_rule("team")], "other/app") is None
    assert match_rule([_rule("team")], "team") is None


def test_upstream_repository_prefix_replaces_the_ecr_prefix() -> None:
    matched = match_rule([_rule("mirror", "library")], "mirror/nginx")
    assert matched is not None
    assert matched[1] == "library/nginx"


def _hub(prefix: str, upstream_prefix: str = "ROOT") -> PullThroughRule:
    return PullThroughRule(REGISTRY, prefix, "registry-1.docker.io", "docker-hub", upstream_prefix, None, None, NOW)


def test_docker_hub_single_component_maps_to_library() -> None:
    matched = match_rule([_hub("hub")], "hub/alpine")
    assert matched is not None
    assert matched[1] == "library/alpine"
    matched = match_rule([_hub("ROOT")], "alpine")  # a ROOT rule: the whole name is the path
    assert matched is not None
    assert matched[1] == "library/alpine"


def test_docker_hub_paths_with_a_namespace_map_unchanged() -> None:
    for name, path in (
        ("hub/library/alpine", "library/alpine"),  # ECR's spelling of official images
        ("hub/bitnami/redis", "bitnami/redis"),
        ("hub/a/b/c", "a/b/c"),
    ):
        matched = match_rule([_hub("hub")], name)
        assert matched is not None
        assert matched[1] == path, name


def test_library_mapping_is_docker_hub_only_and_yields_to_upstream_prefix() -> None:
    matched = match_rule([_rule("q")], "q/alpine")  # quay.io: no `library/`
    assert matched is not None
    assert matched[1] == "alpine"
    matched = match_rule([_hub("hub", "bitnami")], "hub/redis")
    assert matched is not None
    assert matched[1] == "bitnami/redis"


def test_known_upstreams() -> None:
    assert known_upstream("registry-1.docker.io") == "docker-hub"
    assert known_upstream("public.ecr.aws") == "ecr-public"
    assert known_upstream("myreg.azurecr.io") == "azure-container-registry"
    assert known_upstream("111122223333.dkr.ecr.eu-west-1.amazonaws.com") == "ecr"
    assert known_upstream("mirror.corp:5000") is None
