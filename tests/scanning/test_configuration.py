"""Registry scanning configuration: WILDCARD filters and the effective frequency (semantics §13.1)."""

from __future__ import annotations

import pytest

from moorage.scanning.service import Scanning, filter_matches

NAMES = ["prod", "repo-prod", "prod-repo", "repo-prod-repo", "prodrepo"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("prod", NAMES),
        ("*prod", ["prod", "repo-prod"]),
        ("prod*", ["prod", "prod-repo", "prodrepo"]),
        ("*prod*", NAMES),
        ("prod*repo", ["prod-repo", "prodrepo"]),
    ],
)
def test_wildcard_filters_match_as_the_ecr_user_guide_table_says(pattern: str, expected: list[str]) -> None:
    assert [n for n in NAMES if filter_matches(pattern, n)] == expected


def _rule(frequency: str, pattern: str) -> dict[str, object]:
    return {"scanFrequency": frequency, "repositoryFilters": [{"filter": pattern, "filterType": "WILDCARD"}]}


def test_effective_frequency() -> None:
    basic = {"scanType": "BASIC", "rules": [_rule("SCAN_ON_PUSH", "prod*")]}
    assert Scanning.effective(basic, "prod-api", False).scan_frequency == "SCAN_ON_PUSH"
    assert Scanning.effective(basic, "dev-api", False).scan_frequency == "MANUAL"
    # The repository's own (legacy) scanOnPush still counts under BASIC ...
    assert Scanning.effective(basic, "dev-api", True).scan_frequency == "SCAN_ON_PUSH"
    enhanced = {"scanType": "ENHANCED", "rules": [_rule("SCAN_ON_PUSH", "*"), _rule("CONTINUOUS_SCAN", "prod")]}
    # ... not under ENHANCED, where CONTINUOUS_SCAN wins when both rules match.
    both = Scanning.effective(enhanced, "prod-api", False)
    assert both.scan_frequency == "CONTINUOUS_SCAN"
    assert both.applied_filters == [{"filter": "prod", "filterType": "WILDCARD"}]
    assert Scanning.effective(enhanced, "dev", True).scan_frequency == "SCAN_ON_PUSH"
    assert Scanning.effective({"scanType": "ENHANCED", "rules": []}, "dev", True).scan_frequency == "MANUAL"
    # CONTINUOUS_SCAN means nothing under BASIC.
    assert Scanning.effective(
        {"scanType": "BASIC", "rules": [_rule("CONTINUOUS_SCAN", "*")]}, "x", False
    ).scan_frequency == ("MANUAL")
