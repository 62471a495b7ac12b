"""Unit tests for moorage.lifecycle: the rule grammar (semantics.md §6.1), the evaluator (§6.2, with every
worked example of the ECR User Guide page "Examples of lifecycle policies in Amazon ECR"), archive
rules (§8) and the GetLifecyclePolicyPreview shapes (§6.3)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import botocore.validate
import pytest

from moorage.errors import InvalidRequestError
from moorage.lifecycle import (
    MAX_POLICY_LENGTH,
    Decision,
    ImageFacts,
    LifecyclePolicy,
    LifecyclePolicyError,
    Rule,
    evaluate,
    parse_policy,
    preview_result,
    preview_summary,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MESSAGE_PREFIX = (
    "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: "
)


# ------------------------------------------------------------------------------------------ helpers


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


NAMES: dict[str, str] = {}


def img(
    name: str,
    tags: Sequence[str] = (),
    days: float = 0.0,
    *,
    pulled: float | None = None,
    archived: float | None = None,
    activated: float | None = None,
    children: Sequence[str] = (),
    subject: str | None = None,
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
) -> ImageFacts:
    """An image called `name` pushed `days` ago (pulled / archived / restored that many days ago)."""
    NAMES[dg(name)] = name
    return ImageFacts(
        digest=dg(name),
        tags=tuple(tags),
        pushed_at=NOW - timedelta(days=days),
        last_pulled_at=None if pulled is None else NOW - timedelta(days=pulled),
        storage_class="ARCHIVE" if archived is not None else "STANDARD",
        transitioned_at=None if archived is None else NOW - timedelta(days=archived),
        media_type=media_type,
        children=tuple(dg(c) for c in children),
        subject=None if subject is None else dg(subject),
        activated_at=None if activated is None else NOW - timedelta(days=activated),
    )


def rule(
    priority: int,
    tag_status: str,
    count_type: str,
    count_number: int,
    *,
    prefixes: list[str] | None = None,
    patterns: list[str] | None = None,
    storage: str | None = None,
    action: str = "expire",
    description: str | None = None,
) -> dict[str, Any]:
    """A policy rule as JSON; countUnit 'days' is added for the since* count types."""
    selection: dict[str, Any] = {"tagStatus": tag_status}
    if prefixes is not None:
        selection["tagPrefixList"] = prefixes
    if patterns is not None:
        selection["tagPatternList"] = patterns
    if storage is not None:
        selection["storageClass"] = storage
    selection["countType"] = count_type
    if count_type != "imageCountMoreThan":
        selection["countUnit"] = "days"
    selection["countNumber"] = count_number
    act: dict[str, Any] = {"type": action}
    if action == "transition":
        act["targetStorageClass"] = "archive"
    out: dict[str, Any] = {"rulePriority": priority}
    if description is not None:
        out["description"] = description
    out["selection"] = selection
    out["action"] = act
    return out


def text(*rules: dict[str, Any]) -> str:
    return json.dumps({"rules": list(rules)}, indent=4)


def run(rules: Sequence[dict[str, Any]], images: Sequence[ImageFacts]) -> dict[str, tuple[int, str]]:
    """Evaluate and return {image name: (rulePriority, action)}."""
    decisions = evaluate(parse_policy(text(*rules)), images, NOW)
    return {NAMES[d.digest]: (d.rule_priority, d.action) for d in decisions}


def expired(rules: Sequence[dict[str, Any]], images: Sequence[ImageFacts]) -> set[str]:
    return {name for name, (_, action) in run(rules, images).items() if action == "EXPIRE"}


# ------------------------------------------------------------- worked examples of the User Guide (§6.2)


@dataclass(frozen=True)
class Example:
    id: str
    rules: list[dict[str, Any]]
    images: list[ImageFacts]
    expired: set[str]
    by_rule: dict[str, int] = field(default_factory=dict)


_MULTI_RULES_REPO = [
    img("A", ["beta-1", "prod-1"], 10),
    img("B", ["beta-2", "prod-2"], 9),
    img("C", ["beta-3"], 8),
]
_MULTI_TAGS_A_REPO = [
    img("A", ["alpha-1"], 12),
    img("B", ["beta-1"], 11),
    img("C", ["alpha-2", "beta-2"], 10),
    img("D", ["alpha-3"], 4),
    img("E", ["beta-3"], 3),
    img("F", ["alpha-4", "beta-4"], 2),
]
_MULTI_TAGS_B_REPO = [
    img("A", ["alpha-1", "beta-1", "gamma-1"], 10),
    img("B", ["alpha-2", "beta-2"], 9),
    img("C", ["alpha-3", "beta-3", "gamma-2"], 8),
]

UG_EXAMPLES = [
    # "Filtering on multiple rules", example A (2022 guide: tagPrefixList; current guide: tagPatternList).
    Example(
        "multiple-rules-A-prefix",
        [
            rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["prod"], description="Rule 1"),
            rule(2, "tagged", "imageCountMoreThan", 1, prefixes=["beta"], description="Rule 2"),
        ],
        _MULTI_RULES_REPO,
        {"A"},
        {"A": 1},
    ),
    Example(
        "multiple-rules-A-pattern",
        [
            rule(1, "tagged", "imageCountMoreThan", 1, patterns=["prod*"], description="Rule 1"),
            rule(2, "tagged", "imageCountMoreThan", 1, patterns=["beta*"], description="Rule 2"),
        ],
        _MULTI_RULES_REPO,
        {"A"},
        {"A": 1},
    ),
    # Example B: same repository, priorities swapped.
    Example(
        "multiple-rules-B-prefix",
        [
            rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["beta"], description="Rule 1"),
            rule(2, "tagged", "imageCountMoreThan", 1, prefixes=["prod"], description="Rule 2"),
        ],
        _MULTI_RULES_REPO,
        {"A", "B"},
        {"A": 1, "B": 1},
    ),
    Example(
        "multiple-rules-B-pattern",
        [
            rule(1, "tagged", "imageCountMoreThan", 1, patterns=["beta*"], description="Rule 1"),
            rule(2, "tagged", "imageCountMoreThan", 1, patterns=["prod*"], description="Rule 2"),
        ],
        _MULTI_RULES_REPO,
        {"A", "B"},
        {"A": 1, "B": 1},
    ),
    # "Filtering on multiple tags in a single rule", example A: images must match ALL prefixes / patterns.
    Example(
        "multiple-tags-A-prefix",
        [rule(1, "tagged", "sinceImagePushed", 5, prefixes=["alpha", "beta"], description="Rule 1")],
        _MULTI_TAGS_A_REPO,
        {"C"},
        {"C": 1},
    ),
    Example(
        "multiple-tags-A-pattern",
        [rule(1, "tagged", "sinceImagePushed", 5, patterns=["alpha*", "beta*"], description="Rule 1")],
        _MULTI_TAGS_A_REPO,
        {"C"},
        {"C": 1},
    ),
    # Example B: tags are not exclusive (extra gamma tags do not matter).
    Example(
        "multiple-tags-B-prefix",
        [rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["alpha", "beta"], description="Rule 1")],
        _MULTI_TAGS_B_REPO,
        {"A", "B"},
        {"A": 1, "B": 1},
    ),
    Example(
        "multiple-tags-B-pattern",
        [rule(1, "tagged", "imageCountMoreThan", 1, patterns=["alpha*", "beta*"], description="Rule 1")],
        _MULTI_TAGS_B_REPO,
        {"A", "B"},
        {"A": 1, "B": 1},
    ),
    # "Filtering on all images", example A: keep only the newest image of all.
    Example(
        "all-images-A",
        [rule(1, "any", "imageCountMoreThan", 1, description="Rule 1")],
        [img("A", ["alpha-1"], 4), img("B", ["beta-1"], 3), img("C", [], 2), img("D", ["alpha-2"], 1)],
        {"A", "B", "C"},
        {"A": 1, "B": 1, "C": 1},
    ),
    # Example B: all rule types; rule 3 counts A, B, C, E (claimed by rules 1 and 2) but may only act on D.
    # E ("1 day ago", listed after D) is taken as slightly newer than D (§6.2 note); E is not strictly
    # older than one day, so rule 2 keeps it.
    Example(
        "all-images-B",
        [
            rule(1, "tagged", "imageCountMoreThan", 1, patterns=["alpha*"], description="Rule 1"),
            rule(2, "untagged", "sinceImagePushed", 1, description="Rule 2"),
            rule(3, "any", "imageCountMoreThan", 1, description="Rule 3"),
        ],
        [
            img("A", ["alpha-1", "beta-1"], 4),
            img("B", [], 3),
            img("C", ["alpha-2"], 2),
            img("D", ["git hash"], 1),
            img("E", [], 1 - 1 / 1440),
        ],
        {"A", "B", "D"},
        {"A": 1, "B": 2, "D": 3},
    ),
]


@pytest.mark.parametrize("example", UG_EXAMPLES, ids=lambda e: e.id)
def test_user_guide_worked_examples(example: Example) -> None:
    outcome = run(example.rules, example.images)
    assert {name for name, (_, action) in outcome.items() if action == "EXPIRE"} == example.expired
    assert {name: prio for name, (prio, _) in outcome.items()} == example.by_rule


def test_all_images_b_counting_claimed_images_matters() -> None:
    """If rule 3 left out the images claimed by rules 1-2 when ranking, D would be the newest and kept."""
    example = next(e for e in UG_EXAMPLES if e.id == "all-images-B")
    without_claimed_counting = {"A", "B"}
    assert expired(example.rules, example.images) != without_claimed_counting


# The UG's syntax-only examples (no repository given): each parses, and acts as its text says.
SYNTAX_EXAMPLES: list[tuple[str, dict[str, Any], list[ImageFacts], dict[str, tuple[int, str]]]] = [
    (
        "image-age-prod-14-days",
        rule(1, "tagged", "sinceImagePushed", 14, patterns=["prod*"], description="Expire images older than 14 days"),
        [img("old", ["prod-1"], 15), img("new", ["prod-2"], 13), img("dev", ["dev-1"], 30)],
        {"old": (1, "EXPIRE")},
    ),
    (
        "image-age-untagged-14-days",
        rule(1, "untagged", "sinceImagePushed", 14, description="Expire images older than 14 days"),
        [img("old", [], 15), img("new", [], 13), img("tagged", ["x"], 30)],
        {"old": (1, "EXPIRE")},
    ),
    (
        "image-count-untagged-keep-one",
        rule(1, "untagged", "imageCountMoreThan", 1, description="Keep only one untagged image, expire all others"),
        [img("u1", [], 3), img("u2", [], 2), img("u3", [], 1), img("t", ["x"], 9)],
        {"u1": (1, "EXPIRE"), "u2": (1, "EXPIRE")},
    ),
    (
        "last-pulled-archive-90-days",
        rule(1, "any", "sinceImagePulled", 90, action="transition", description="Archive images not pulled in 90 days"),
        [img("cold", ["a"], 200, pulled=100), img("warm", ["b"], 200, pulled=10), img("never", [], 91)],
        {"cold": (1, "TRANSITION"), "never": (1, "TRANSITION")},
    ),
    (
        "archive-transition-365-days",
        rule(1, "any", "sinceImageTransitioned", 365, storage="archive", description="Expire archived > 365 days"),
        [img("long", ["a"], 900, archived=400), img("short", ["b"], 900, archived=100), img("live", [], 900)],
        {"long": (1, "EXPIRE")},
    ),
    (
        "archive-prod-older-than-30-days",
        rule(1, "tagged", "sinceImagePushed", 30, patterns=["prod*"], action="transition"),
        [img("p-old", ["prod"], 31), img("p-new", ["prod2"], 29), img("d-old", ["dev"], 31)],
        {"p-old": (1, "TRANSITION")},
    ),
]


@pytest.mark.parametrize(
    ("rule_json", "images", "outcome"), [e[1:] for e in SYNTAX_EXAMPLES], ids=[e[0] for e in SYNTAX_EXAMPLES]
)
def test_user_guide_syntax_examples(
    rule_json: dict[str, Any], images: list[ImageFacts], outcome: dict[str, tuple[int, str]]
) -> None:
    assert run([rule_json], images) == outcome


def test_user_guide_combining_archive_and_expire() -> None:
    rules = [
        rule(1, "any", "sinceImagePushed", 30, action="transition", description="Archive images older than 30 days"),
        rule(2, "any", "sinceImageTransitioned", 365, storage="archive", description="Expire archived > 365 days"),
    ]
    images = [
        img("fresh", ["v3"], 5),
        img("stale", ["v2"], 40),
        img("archived-long", ["v1"], 800, archived=400),
        img("archived-recent", ["v0"], 800, archived=100),
    ]
    assert run(rules, images) == {"stale": (1, "TRANSITION"), "archived-long": (2, "EXPIRE")}


# ------------------------------------------------------------------------------------------ count types


def test_image_count_more_than_keeps_newest_n() -> None:
    images = [img(f"i{n}", [f"v{n}"], n) for n in range(1, 8)]
    assert expired([rule(1, "any", "imageCountMoreThan", 3)], images) == {"i4", "i5", "i6", "i7"}
    assert expired([rule(1, "any", "imageCountMoreThan", 7)], images) == set()
    assert expired([rule(1, "any", "imageCountMoreThan", 100)], images) == set()


def test_image_count_ties_are_deterministic() -> None:
    images = [img(n, [], 1) for n in ("a", "b", "c")]
    first = expired([rule(1, "untagged", "imageCountMoreThan", 1)], images)
    assert len(first) == 2
    assert expired([rule(1, "untagged", "imageCountMoreThan", 1)], list(reversed(images))) == first


@pytest.mark.parametrize(
    ("age", "is_expired"),
    [
        (7.0, False),  # exactly N x 24 h: not strictly older
        (7.0 + 1 / 86400, True),
        (6.5, False),
        (7.5, True),
        (100.0, True),
    ],
)
def test_since_image_pushed_is_strictly_older_than_n_days(age: float, is_expired: bool) -> None:
    assert expired([rule(1, "any", "sinceImagePushed", 7)], [img("x", ["t"], age)]) == ({"x"} if is_expired else set())


@pytest.mark.parametrize(
    ("image", "archives"),
    [
        (img("pulled-recently", ["t"], 400, pulled=5), False),
        (img("pulled-long-ago", ["t"], 400, pulled=31), True),
        (img("never-pulled-old", ["t"], 31), True),  # falls back to the push time
        (img("never-pulled-new", ["t"], 29), False),
        (img("restored-not-pulled", ["t"], 400, pulled=300, activated=10), False),  # restore time counts
        (img("restored-then-pulled", ["t"], 400, pulled=40, activated=50), True),
        (img("restored-long-ago", ["t"], 400, activated=60), True),
    ],
    ids=lambda v: v.digest[:12] if isinstance(v, ImageFacts) else str(v),
)
def test_since_image_pulled(image: ImageFacts, archives: bool) -> None:
    outcome = run([rule(1, "any", "sinceImagePulled", 30, action="transition")], [image])
    assert outcome == ({NAMES[image.digest]: (1, "TRANSITION")} if archives else {})


def test_since_image_transitioned_uses_archive_time_not_push_time() -> None:
    images = [img("pushed-old-archived-recently", [], 2000, archived=91), img("archived-long", [], 300, archived=200)]
    rules = [rule(1, "any", "sinceImageTransitioned", 180, storage="archive")]
    assert run(rules, images) == {"archived-long": (1, "EXPIRE")}


def test_restored_image_is_ordered_by_activation_time() -> None:
    images = [img("old-restored", ["a"], 100, activated=1), img("mid", ["b"], 10), img("new", ["c"], 5)]
    assert expired([rule(1, "any", "imageCountMoreThan", 2)], images) == {"mid"}
    assert expired([rule(1, "any", "sinceImagePushed", 7)], images) == {"mid"}


def test_huge_count_number_does_not_overflow() -> None:
    images = [img("ancient", [], 10000)]
    assert expired([rule(1, "any", "sinceImagePushed", 2**31 - 1)], images) == set()


# ---------------------------------------------------------------------------------------- priorities


def test_higher_priority_rule_wins_and_is_reported() -> None:
    rules = [rule(1, "untagged", "sinceImagePushed", 5), rule(2, "any", "imageCountMoreThan", 1)]
    images = [img("u-old", [], 10), img("u-new", [], 2), img("t", ["x"], 1)]
    # u-old is a target of both rules; rule 1 acts; rule 2 may not touch u-new (claimed by rule 1)
    assert run(rules, images) == {"u-old": (1, "EXPIRE")}


def test_lower_rule_counts_claimed_images_but_does_not_act_on_them() -> None:
    rules = [rule(1, "tagged", "imageCountMoreThan", 100, patterns=["prod*"]), rule(2, "any", "imageCountMoreThan", 2)]
    images = [img("p1", ["prod-1"], 1), img("p2", ["prod-2"], 2), img("x1", ["dev-1"], 3), img("x2", ["dev-2"], 4)]
    # rule 2 ranks all four: the newest two are p1 and p2, so both dev images go; prod images are protected
    assert run(rules, images) == {"x1": (2, "EXPIRE"), "x2": (2, "EXPIRE")}


def test_claim_holds_even_when_higher_rule_does_not_act() -> None:
    rules = [rule(1, "tagged", "sinceImagePushed", 1000, prefixes=["release"]), rule(2, "any", "imageCountMoreThan", 1)]
    images = [img("r1", ["release-1"], 50), img("r2", ["release-2"], 40), img("n", ["nightly"], 30), img("m", [], 1)]
    assert run(rules, images) == {"n": (2, "EXPIRE")}


def test_rules_are_applied_in_priority_order_not_text_order() -> None:
    rules = [rule(10, "any", "imageCountMoreThan", 1), rule(3, "tagged", "imageCountMoreThan", 1, prefixes=["v"])]
    policy = parse_policy(text(*rules))
    assert [r.priority for r in policy.rules] == [3, 10]
    images = [img("v1", ["v1"], 3), img("v2", ["v2"], 2), img("other", ["x"], 1)]
    assert run(rules, images) == {"v1": (3, "EXPIRE")}


# -------------------------------------------------------------------------------- prefixes / patterns


@pytest.mark.parametrize(
    ("pattern", "tag", "matches"),
    [
        ("prod*", "prod", True),
        ("prod*", "prod1", True),
        ("prod*", "production-team1", True),
        ("*prod*", "repo-production", True),
        ("*prod*", "prod-team", True),
        ("prod", "prod", True),
        ("prod", "prod1", False),  # no wildcard: the whole tag must be equal
        ("prod*", "myprod", False),
        ("p*d", "prod", True),
        ("p*d", "prods", False),
        ("*", "anything", True),
        ("*-rc*", "1.0-rc1", True),
        ("a.b*", "axb", False),  # '.' is literal
        ("v?", "v1", False),  # only '*' is a wildcard
        ("Prod*", "prod", False),  # case-sensitive
        ("*test*1*2*3", "xtestA1B2C3", True),
        ("test*1*2*3*", "test1234", True),
    ],
)
def test_tag_pattern_matching(pattern: str, tag: str, matches: bool) -> None:
    rules = [rule(1, "tagged", "imageCountMoreThan", 1, patterns=[pattern])]
    images = [img("target", [tag], 2), img("newer", [tag, "zzz-newest"], 1)]
    assert expired(rules, images) == ({"target"} if matches else set())


@pytest.mark.parametrize(
    ("prefix", "tag", "matches"),
    [
        ("prod", "prod", True),
        ("prod", "prod1", True),
        ("prod", "production-team1", True),
        ("prod", "myprod", False),
        ("prod*", "prod1", False),  # no wildcards in prefixes
        ("Prod", "prod", False),
    ],
)
def test_tag_prefix_matching(prefix: str, tag: str, matches: bool) -> None:
    rules = [rule(1, "tagged", "imageCountMoreThan", 1, prefixes=[prefix])]
    images = [img("target", [tag], 2), img("newer", [tag, "zzz-newest"], 1)]
    assert expired(rules, images) == ({"target"} if matches else set())


def test_every_prefix_must_match_some_tag_and_one_tag_may_match_several() -> None:
    rules = [rule(1, "tagged", "sinceImagePushed", 1, prefixes=["v1", "v1.2"])]
    images = [img("both-on-one-tag", ["v1.2.3"], 5), img("only-v1", ["v1.0"], 5), img("split", ["v1.0", "v1.2"], 5)]
    assert expired(rules, images) == {"both-on-one-tag", "split"}


# ------------------------------------------------------------------------------------ untagged vs any


def test_untagged_rule_ignores_tagged_images_and_any_sees_both() -> None:
    images = [img("t-old", ["x"], 10), img("u-old", [], 9), img("t-new", ["y"], 2), img("u-new", [], 1)]
    assert expired([rule(1, "untagged", "sinceImagePushed", 5)], images) == {"u-old"}
    assert expired([rule(1, "any", "sinceImagePushed", 5)], images) == {"t-old", "u-old"}
    assert expired([rule(1, "untagged", "imageCountMoreThan", 1)], images) == {"u-old"}
    assert expired([rule(1, "any", "imageCountMoreThan", 1)], images) == {"t-old", "u-old", "t-new"}


def test_standard_rules_do_not_see_archived_images() -> None:
    images = [img("s1", ["a"], 3), img("s2", ["b"], 2), img("arch", ["c"], 1, archived=1), img("s3", ["d"], 0.5)]
    # imageCountMoreThan counts standard images only: s3 and s2 kept
    assert run([rule(1, "any", "imageCountMoreThan", 2)], images) == {"s1": (1, "EXPIRE")}
    # sinceImagePulled transitions standard images only
    assert run([rule(1, "any", "sinceImagePulled", 1, action="transition")], images) == {
        "s1": (1, "TRANSITION"),
        "s2": (1, "TRANSITION"),
    }


# ------------------------------------------------------------------- multi-arch indexes and referrers

INDEX = "application/vnd.oci.image.index.v1+json"


def test_index_children_are_never_expired_while_the_index_survives() -> None:
    images = [
        img("amd64", [], 30),
        img("arm64", [], 30),
        img("index", ["v1"], 29, children=["amd64", "arm64"], media_type=INDEX),
        img("loose", [], 30),
    ]
    assert run([rule(1, "untagged", "sinceImagePushed", 7)], images) == {"loose": (1, "EXPIRE")}
    # the index is the newest, so it is kept; its (older) children are targets but stay with it
    assert run([rule(1, "any", "imageCountMoreThan", 1)], images) == {"loose": (1, "EXPIRE")}


def test_index_children_follow_the_expired_index() -> None:
    images = [
        img("old-amd64", [], 30),
        img("old-arm64", [], 30),
        img("old", ["v1"], 29, children=["old-amd64", "old-arm64"], media_type=INDEX),
        img("new-amd64", [], 2),
        img("new", ["v2"], 1, children=["new-amd64"], media_type=INDEX),
    ]
    decisions = evaluate(parse_policy(text(rule(4, "tagged", "imageCountMoreThan", 1, prefixes=["v"]))), images, NOW)
    outcome = {NAMES[d.digest]: (d.rule_priority, d.action, d.cascaded_from) for d in decisions}
    assert outcome == {
        "old": (4, "EXPIRE", None),
        "old-amd64": (4, "EXPIRE", dg("old")),
        "old-arm64": (4, "EXPIRE", dg("old")),
    }
    assert NAMES[decisions[0].digest] == "old"  # the index is decided first, its children follow


def test_child_shared_with_a_surviving_index_is_kept() -> None:
    images = [
        img("shared", [], 30),
        img("own", [], 30),
        img("old", ["v1"], 29, children=["shared", "own"], media_type=INDEX),
        img("new", ["v2"], 1, children=["shared"], media_type=INDEX),
    ]
    assert expired([rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["v"])], images) == {"old", "own"}


def test_tagged_child_does_not_follow_but_may_be_acted_on_once_the_index_goes() -> None:
    images = [
        img("child", ["amd64-v1"], 10),
        img("index", ["v1"], 9, children=["child"], media_type=INDEX),
        img("newest", ["v2"], 1),
    ]
    # the tagged child is not cascaded; once its index is expired earlier in the same rule it is a
    # target in its own right (it is older than the kept newest image)
    decisions = evaluate(parse_policy(text(rule(1, "any", "imageCountMoreThan", 1))), images, NOW)
    assert [(NAMES[d.digest], d.cascaded_from) for d in decisions] == [("index", None), ("child", None)]
    # a rule that does not select the tagged child expires the index only
    assert expired([rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["v"])], images) == {"index"}


def test_referrers_follow_their_subject_transitively() -> None:
    images = [
        img("app", ["v1"], 20),
        img("sig", [], 20, subject="app"),
        img("sbom", [], 20, subject="app"),
        img("sbom-sig", [], 20, subject="sbom"),
        img("app2", ["v2"], 1),
        img("sig2", [], 1, subject="app2"),
    ]
    # untagged referrers are never expired on their own while their subject survives
    assert run([rule(1, "untagged", "imageCountMoreThan", 1)], images) == {}
    decisions = evaluate(parse_policy(text(rule(2, "tagged", "imageCountMoreThan", 1, prefixes=["v"]))), images, NOW)
    outcome = {NAMES[d.digest]: (d.rule_priority, d.action, d.cascaded_from) for d in decisions}
    assert outcome == {
        "app": (2, "EXPIRE", None),
        "sig": (2, "EXPIRE", dg("app")),
        "sbom": (2, "EXPIRE", dg("app")),
        "sbom-sig": (2, "EXPIRE", dg("sbom")),
    }


def test_tagged_referrer_still_follows_its_subject() -> None:
    images = [img("app", ["v1"], 20), img("sig", ["sha256-app.sig"], 20, subject="app"), img("app2", ["v2"], 1)]
    assert run([rule(1, "tagged", "imageCountMoreThan", 1, prefixes=["v"])], images) == {
        "app": (1, "EXPIRE"),
        "sig": (1, "EXPIRE"),
    }


def test_referrer_of_a_subject_not_in_the_repository_is_an_ordinary_image() -> None:
    images = [img("dangling", [], 20, subject="missing"), img("u", [], 1)]
    assert expired([rule(1, "untagged", "imageCountMoreThan", 1)], images) == {"dangling"}


def test_referrers_and_children_are_archived_with_their_parent() -> None:
    images = [
        img("amd64", [], 40),
        img("index", ["v1"], 40, children=["amd64"], media_type=INDEX),
        img("sig", [], 40, subject="index"),
        img("fresh", ["v2"], 1),
    ]
    assert run([rule(1, "any", "sinceImagePushed", 30, action="transition")], images) == {
        "index": (1, "TRANSITION"),
        "amd64": (1, "TRANSITION"),
        "sig": (1, "TRANSITION"),
    }


def test_child_of_an_archived_index_may_be_archived_but_not_expired() -> None:
    images = [img("amd64", [], 40), img("index", ["v1"], 40, children=["amd64"], archived=50)]
    assert run([rule(1, "untagged", "sinceImagePushed", 30, action="transition")], images) == {
        "amd64": (1, "TRANSITION")
    }
    assert run([rule(1, "untagged", "sinceImagePushed", 30)], images) == {}


def test_children_follow_an_index_expired_by_an_archive_rule_after_90_days() -> None:
    images = [
        img("old-child", [], 500, archived=200),
        img("new-child", [], 500, archived=30),  # archived separately, too recently: blocked
        img("index", ["v1"], 500, children=["old-child", "new-child"], archived=200),
        img("sig", [], 500, subject="index", archived=200),
    ]
    rules = [rule(1, "any", "sinceImageTransitioned", 180, storage="archive")]
    # new-child is kept: an archived image is never lifecycle-deleted within 90 days of archival
    assert run(rules, images) == {"index": (1, "EXPIRE"), "old-child": (1, "EXPIRE"), "sig": (1, "EXPIRE")}


# ---------------------------------------------------------------------------------- archive minimum age


def test_archived_image_is_not_expired_before_90_days_even_by_a_hand_built_rule() -> None:
    unchecked = Rule(
        priority=1,
        description=None,
        tag_status="any",
        tag_prefixes=(),
        tag_patterns=(),
        count_type="sinceImageTransitioned",
        count_unit="days",
        count_number=30,  # parse_policy would reject this (< 90)
        storage_class="archive",
        action="expire",
        target_storage_class=None,
    )
    images = [img("a60", [], 500, archived=60), img("a95", [], 500, archived=95)]
    decisions = evaluate(LifecyclePolicy((unchecked,)), images, NOW)
    assert [NAMES[d.digest] for d in decisions] == ["a95"]
    assert decisions[0].storage_class == "ARCHIVE"


def test_archived_image_without_archive_time_is_never_expired() -> None:
    image = ImageFacts(digest=dg("no-time"), tags=(), pushed_at=NOW - timedelta(days=900), storage_class="ARCHIVE")
    policy = parse_policy(text(rule(1, "any", "sinceImageTransitioned", 90, storage="archive")))
    assert evaluate(policy, [image], NOW) == []


def test_transition_does_not_touch_archived_images_and_marks_the_target() -> None:
    images = [img("s", ["a"], 50), img("a", ["b"], 50, archived=10)]
    decisions = evaluate(parse_policy(text(rule(1, "any", "sinceImagePushed", 30, action="transition"))), images, NOW)
    assert [(NAMES[d.digest], d.action, d.target_storage_class, d.storage_class) for d in decisions] == [
        ("s", "TRANSITION", "ARCHIVE", "STANDARD")
    ]


def test_duplicate_digests_are_refused() -> None:
    policy = parse_policy(text(rule(1, "any", "imageCountMoreThan", 1)))
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(policy, [img("x", [], 1), img("x", ["t"], 2)], NOW)


# ------------------------------------------------------------------------------------------ validation


def base(**selection: Any) -> dict[str, Any]:
    """rulePriority 7, tagged prefix rule (valid); `selection` keys override (None deletes)."""
    r = rule(7, "tagged", "imageCountMoreThan", 3, prefixes=["prod"])
    for key, value in selection.items():
        if value is None:
            r["selection"].pop(key, None)
        else:
            r["selection"][key] = value
    return r


def with_action(r: dict[str, Any], **action: Any) -> dict[str, Any]:
    r = json.loads(json.dumps(r))
    for key, value in action.items():
        if value is None:
            r["action"].pop(key, None)
        else:
            r["action"][key] = value
    return r


def with_rule(r: dict[str, Any], **fields: Any) -> dict[str, Any]:
    r = json.loads(json.dumps(r))
    for key, value in fields.items():
        if value is None:
            r.pop(key, None)
        else:
            r[key] = value
    return r


ARCHIVE_EXPIRE = rule(7, "any", "sinceImageTransitioned", 120, storage="archive")
PULLED = rule(7, "any", "sinceImagePulled", 30, action="transition")
PAD = " " * 100

# (id, policy text, rulePriority named, field named, message fragment)
INVALID: list[tuple[str, str, int | None, str | None, str]] = [
    ("json-syntax", '{"rules": [' + PAD, None, None, "Could not map policyString into LifecyclePolicy."),
    ("json-nan", '{"rules": NaN}' + PAD, None, None, "Could not map policyString into LifecyclePolicy."),
    ("top-level-array", "[" + PAD + "]", None, None, "Could not map policyString into LifecyclePolicy."),
    ("missing-rules", '{"Rules": []}' + PAD, None, None, 'not allowed by the schema: (["Rules"])'),
    ("missing-rules-only", "{}" + PAD, None, None, 'object has missing required properties (["rules"])'),
    ("rules-not-array", '{"rules": {}}' + PAD, None, "rules", 'allowed: ["array"]'),
    ("rules-empty", '{"rules": []}' + PAD, None, "rules", "must have at least 1 elements"),
    (
        "too-many-rules",
        text(*[rule(i, "tagged", "imageCountMoreThan", 1, prefixes=[f"p{i}"]) for i in range(1, 52)]),
        None,
        "rules",
        "must have at most 50 elements but instance has 51",
    ),
    ("rule-not-object", '{"rules": ["x"]}' + PAD, None, "rule", "instance type (string) does not match"),
    ("rule-unknown-key", text(with_rule(base(), extra=1)), 7, "rule", '(["extra"])'),
    ("rule-missing-priority", text(with_rule(base(), rulePriority=None)), None, "rule", '(["rulePriority"])'),
    ("rule-missing-selection", text(with_rule(base(), selection=None)), 7, "rule", '(["selection"])'),
    ("rule-missing-action", text(with_rule(base(), action=None)), 7, "rule", '(["action"])'),
    ("priority-zero", text(with_rule(base(), rulePriority=0)), None, "rulePriority", "(minimum: 1, found: 0)"),
    ("priority-negative", text(with_rule(base(), rulePriority=-3)), None, "rulePriority", "found: -3"),
    ("priority-string", text(with_rule(base(), rulePriority="1")), None, "rulePriority", 'allowed: ["integer"]'),
    ("priority-bool", text(with_rule(base(), rulePriority=True)), None, "rulePriority", "instance type (boolean)"),
    ("priority-float", text(with_rule(base(), rulePriority=1.5)), None, "rulePriority", "instance type (number)"),
    ("priority-too-big", text(with_rule(base(), rulePriority=2**31)), None, "rulePriority", "required maximum"),
    (
        "priority-duplicate",
        text(base(), rule(7, "untagged", "imageCountMoreThan", 1)),
        7,
        "rulePriority",
        "used by more than one rule",
    ),
    ("description-type", text(with_rule(base(), description=5)), 7, "description", 'allowed: ["string"]'),
    ("selection-type", text(with_rule(base(), selection=[])), 7, "selection", "instance type (array)"),
    ("selection-unknown-key", text(base(tagStatusX="tagged")), 7, "selection", '(["tagStatusX"])'),
    ("selection-missing-tag-status", text(base(tagStatus=None)), 7, "selection", '(["tagStatus"])'),
    ("selection-missing-count-type", text(base(countType=None)), 7, "selection", '(["countType"])'),
    ("selection-missing-count-number", text(base(countNumber=None)), 7, "selection", '(["countNumber"])'),
    ("tag-status-enum", text(base(tagStatus="TAGGED")), 7, "selection.tagStatus", "instance value (TAGGED) not found"),
    ("count-type-enum", text(base(countType="sinceImageBuilt")), 7, "selection.countType", "(sinceImageBuilt)"),
    ("storage-class-enum", text(base(storageClass="glacier")), 7, "selection.storageClass", "(glacier) not found"),
    ("count-unit-missing", text(base(countType="sinceImagePushed")), 7, "selection.countUnit", '(["countUnit"])'),
    (
        "count-unit-enum",
        text(base(countType="sinceImagePushed", countUnit="hours")),
        7,
        "selection.countUnit",
        "(hours) not found in enum",
    ),
    ("count-unit-forbidden", text(base(countUnit="days")), 7, "selection.countUnit", "not allowed by the schema"),
    ("count-number-zero", text(base(countNumber=0)), 7, "selection.countNumber", "(minimum: 1, found: 0)"),
    ("count-number-float", text(base(countNumber=1.5)), 7, "selection.countNumber", "instance type (number)"),
    ("count-number-string", text(base(countNumber="5")), 7, "selection.countNumber", "instance type (string)"),
    (
        "count-number-null",
        text(with_rule(base(), selection={**base()["selection"], "countNumber": None})),
        7,
        "selection.countNumber",
        "instance type (null)",
    ),
    ("tagged-without-list", text(base(tagPrefixList=None)), 7, "selection.tagStatus", "requires a tagPrefixList"),
    ("tagged-with-both", text(base(tagPatternList=["p*"])), 7, "selection.tagPatternList", "cannot both"),
    (
        "untagged-with-prefixes",
        text(base(tagStatus="untagged")),
        7,
        "selection.tagPrefixList",
        "only be specified with tagStatus tagged",
    ),
    (
        "any-with-patterns",
        text(base(tagStatus="any", tagPrefixList=None, tagPatternList=["a*"])),
        7,
        "selection.tagPatternList",
        "only be specified with tagStatus tagged, not any",
    ),
    ("prefix-list-empty", text(base(tagPrefixList=[])), 7, "selection.tagPrefixList", "at least 1 elements"),
    ("prefix-list-type", text(base(tagPrefixList="prod")), 7, "selection.tagPrefixList", 'allowed: ["array"]'),
    ("prefix-item-type", text(base(tagPrefixList=["a", 3])), 7, "selection.tagPrefixList[1]", "(integer)"),
    ("prefix-item-empty", text(base(tagPrefixList=[""])), 7, "selection.tagPrefixList[0]", "too short"),
    (
        "pattern-too-many-wildcards",
        text(base(tagPrefixList=None, tagPatternList=["ok*", "test*1*2*3*4*5*6"])),
        7,
        "selection.tagPatternList[1]",
        "has 6 wildcards; at most 4",
    ),
    (
        "pattern-five-wildcards",
        text(base(tagPrefixList=None, tagPatternList=["*a*b*c*d*"])),
        7,
        "selection.tagPatternList[0]",
        "has 5 wildcards",
    ),
    ("action-type", text(with_rule(base(), action="expire")), 7, "action", "instance type (string)"),
    ("action-unknown-key", text(with_action(base(), days=3)), 7, "action", '(["days"])'),
    ("action-missing-type", text(with_action(base(), type=None)), 7, "action", '(["type"])'),
    ("action-type-enum", text(with_action(base(), type="delete")), 7, "action.type", "(delete) not found in enum"),
    (
        "transition-without-target",
        text(with_action(PULLED, targetStorageClass=None)),
        7,
        "action.targetStorageClass",
        '(["targetStorageClass"])',
    ),
    (
        "transition-target-enum",
        text(with_action(PULLED, targetStorageClass="standard")),
        7,
        "action.targetStorageClass",
        "(standard) not found in enum",
    ),
    (
        "expire-with-target",
        text(with_action(base(), targetStorageClass="archive")),
        7,
        "action.targetStorageClass",
        "only valid with action type transition",
    ),
    (
        "pulled-with-expire",
        text(with_action(PULLED, type="expire", targetStorageClass=None)),
        7,
        "action.type",
        "sinceImagePulled can only be used with action type transition",
    ),
    (
        "transitioned-without-storage-class",
        text(with_rule(ARCHIVE_EXPIRE, selection={**ARCHIVE_EXPIRE["selection"], "storageClass": "standard"})),
        7,
        "selection.storageClass",
        "sinceImageTransitioned requires storageClass archive",
    ),
    (
        "transitioned-storage-class-omitted",
        text(
            with_rule(
                ARCHIVE_EXPIRE,
                selection={k: v for k, v in ARCHIVE_EXPIRE["selection"].items() if k != "storageClass"},
            )
        ),
        7,
        "selection.storageClass",
        "requires storageClass archive",
    ),
    (
        "transitioned-with-transition",
        text(with_action(ARCHIVE_EXPIRE, type="transition", targetStorageClass="archive")),
        7,
        "action.type",
        "sinceImageTransitioned can only be used with action type expire",
    ),
    (
        "transitioned-under-90-days",
        text(rule(7, "any", "sinceImageTransitioned", 89, storage="archive")),
        7,
        "selection.countNumber",
        "at least 90 days",
    ),
    (
        "count-more-than-on-archive",
        text(rule(7, "any", "imageCountMoreThan", 5, storage="archive")),
        7,
        "selection.storageClass",
        "imageCountMoreThan only supports storageClass standard",
    ),
    (
        "pushed-on-archive",
        text(rule(7, "untagged", "sinceImagePushed", 5, storage="archive")),
        7,
        "selection.storageClass",
        "sinceImagePushed only supports storageClass standard",
    ),
    (
        "pulled-on-archive",
        text(rule(7, "any", "sinceImagePulled", 5, storage="archive", action="transition")),
        7,
        "selection.storageClass",
        "sinceImagePulled only supports",
    ),
    (
        "any-not-last",
        text(rule(1, "any", "imageCountMoreThan", 5), rule(2, "untagged", "sinceImagePushed", 3)),
        1,
        "selection.tagStatus",
        "tagStatus any must have the highest rulePriority",
    ),
    (
        "two-any-rules",
        text(rule(4, "any", "imageCountMoreThan", 5), rule(9, "any", "sinceImagePushed", 30)),
        4,
        "selection.tagStatus",
        "(rulePriority 9 is higher)",
    ),
    (
        "two-untagged-rules",
        text(rule(1, "untagged", "imageCountMoreThan", 5), rule(2, "untagged", "sinceImagePushed", 3)),
        2,
        "selection.tagStatus",
        "only one rule selecting storageClass standard may select untagged images (rulePriority 1",
    ),
    (
        "duplicate-prefix-set",
        text(
            rule(1, "tagged", "imageCountMoreThan", 5, prefixes=["a", "b"]),
            rule(2, "tagged", "sinceImagePushed", 3, prefixes=["b", "a"]),
        ),
        2,
        "selection.tagPrefixList",
        "already used by the rule with rulePriority 1",
    ),
    (
        "duplicate-pattern-set",
        text(
            rule(3, "tagged", "imageCountMoreThan", 5, patterns=["v*"]),
            rule(5, "tagged", "sinceImagePushed", 3, patterns=["v*"]),
        ),
        5,
        "selection.tagPatternList",
        "unique tag sets",
    ),
]


@pytest.mark.parametrize(
    ("policy_text", "priority", "field_name", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_policies(policy_text: str, priority: int | None, field_name: str | None, fragment: str) -> None:
    with pytest.raises(LifecyclePolicyError) as caught:
        parse_policy(policy_text)
    err = caught.value
    assert isinstance(err, InvalidRequestError)
    assert err.message.startswith(MESSAGE_PREFIX)
    assert err.message.endswith("'")
    assert fragment in err.message
    assert err.rule_priority == priority
    assert err.field == field_name
    if priority is not None:
        assert f"rule with rulePriority {priority}: {field_name}: " in err.message
    elif field_name is not None and field_name != "rules":
        assert f"rules[0]: {field_name}: " in err.message


@pytest.mark.parametrize(
    ("policy_text", "fragment"),
    [
        ('{"rules":[]}', "Member must have length greater than or equal to 100"),
        (text(base()) + " " * MAX_POLICY_LENGTH, f"Member must have length less than or equal to {MAX_POLICY_LENGTH}"),
    ],
    ids=["too-short", "too-long"],
)
def test_policy_text_length(policy_text: str, fragment: str) -> None:
    with pytest.raises(LifecyclePolicyError) as caught:
        parse_policy(policy_text)
    assert (
        caught.value.message == f"Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: '{fragment}'"
    )


VALID: list[tuple[str, str]] = [
    ("four-wildcards", text(base(tagPrefixList=None, tagPatternList=["*test*1*2*3", "test*1*2*3*"]))),
    (
        "priorities-not-contiguous",
        text(rule(5, "untagged", "sinceImagePushed", 1), rule(50, "any", "imageCountMoreThan", 9)),
    ),
    (
        "any-last-per-storage-class",
        text(
            rule(1, "any", "sinceImagePushed", 30, action="transition"),
            rule(2, "any", "sinceImageTransitioned", 365, storage="archive"),
        ),
    ),
    (
        "same-prefixes-in-different-storage-classes",
        text(
            rule(1, "tagged", "sinceImagePushed", 30, prefixes=["prod"], action="transition"),
            rule(2, "tagged", "sinceImageTransitioned", 90, prefixes=["prod"], storage="archive"),
        ),
    ),
    (
        "untagged-in-each-storage-class",
        text(
            rule(1, "untagged", "sinceImagePushed", 3),
            rule(2, "untagged", "sinceImageTransitioned", 90, storage="archive"),
        ),
    ),
    (
        "prefix-and-pattern-rules-with-same-strings",
        text(
            rule(1, "tagged", "imageCountMoreThan", 3, prefixes=["prod"]),
            rule(2, "tagged", "imageCountMoreThan", 3, patterns=["prod"]),
        ),
    ),
    ("explicit-standard-storage-class", text(rule(1, "any", "imageCountMoreThan", 3, storage="standard"))),
    ("fifty-rules", text(*[rule(i, "tagged", "imageCountMoreThan", 1, prefixes=[f"p{i}"]) for i in range(1, 51)])),
] + [(e.id, text(*e.rules)) for e in UG_EXAMPLES]


@pytest.mark.parametrize("policy_text", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_policies(policy_text: str) -> None:
    policy = parse_policy(policy_text)
    assert policy.rules
    assert [r.priority for r in policy.rules] == sorted(r.priority for r in policy.rules)


def test_parsed_rule_fields() -> None:
    policy = parse_policy(
        text(
            rule(2, "tagged", "sinceImagePulled", 60, patterns=["rc-*"], action="transition", description="cold rc"),
            rule(9, "any", "sinceImageTransitioned", 365, storage="archive"),
        )
    )
    assert policy.rules == (
        Rule(
            2, "cold rc", "tagged", (), ("rc-*",), "sinceImagePulled", "days", 60, "standard", "transition", "archive"
        ),
        Rule(9, None, "any", (), (), "sinceImageTransitioned", "days", 365, "archive", "expire", None),
    )


# ---------------------------------------------------------------------------------------------- preview

MODEL = botocore.session.get_session().get_service_model("ecr")


def test_preview_shapes_match_the_botocore_model() -> None:
    images = [
        img("old", ["v1", "latest-1"], 40),
        img("untagged", [], 40),
        img("arch", ["v0"], 900, archived=400),
        img("new", ["v2"], 1),
    ]
    policy = parse_policy(
        text(
            rule(1, "tagged", "sinceImagePushed", 30, prefixes=["v"], action="transition"),
            rule(2, "untagged", "sinceImagePushed", 30),
            rule(3, "any", "sinceImageTransitioned", 365, storage="archive"),
        )
    )
    decisions = evaluate(policy, images, NOW)
    results = preview_result(decisions)
    summary = preview_summary(decisions)
    assert results == [
        {
            "imageTags": ["v1", "latest-1"],
            "imageDigest": dg("old"),
            "imagePushedAt": round((NOW - timedelta(days=40)).timestamp(), 3),
            "action": {"type": "TRANSITION", "targetStorageClass": "ARCHIVE"},
            "appliedRulePriority": 1,
            "storageClass": "STANDARD",
        },
        {
            "imageDigest": dg("untagged"),
            "imagePushedAt": round((NOW - timedelta(days=40)).timestamp(), 3),
            "action": {"type": "EXPIRE"},
            "appliedRulePriority": 2,
            "storageClass": "STANDARD",
        },
        {
            "imageTags": ["v0"],
            "imageDigest": dg("arch"),
            "imagePushedAt": round((NOW - timedelta(days=900)).timestamp(), 3),
            "action": {"type": "EXPIRE"},
            "appliedRulePriority": 3,
            "storageClass": "ARCHIVE",
        },
    ]
    assert summary == {
        "expiringImageTotalCount": 2,
        "transitioningImageTotalCounts": [{"targetStorageClass": "ARCHIVE", "imageTotalCount": 1}],
    }
    # every member name / enum value is the model's: validate against the output shapes
    validator = botocore.validate.ParamValidator()
    result_shape = MODEL.shape_for("LifecyclePolicyPreviewResult")
    for entry in results:
        assert set(entry) <= set(result_shape.members)
        report = validator.validate(entry, result_shape)
        assert not report.has_errors(), report.generate_report()
    summary_shape = MODEL.shape_for("LifecyclePolicyPreviewSummary")
    report = validator.validate(summary, summary_shape)
    assert not report.has_errors(), report.generate_report()
    enum_action = MODEL.shape_for("ImageActionType").enum
    assert {r["action"]["type"] for r in results} <= set(enum_action)


def test_preview_summary_without_transitions_omits_the_list() -> None:
    decision = Decision(dg("x"), (), 1, "EXPIRE", None, NOW)
    assert preview_summary([decision]) == {"expiringImageTotalCount": 1}
    assert preview_summary([]) == {"expiringImageTotalCount": 0}
    assert preview_result([]) == []


# ------------------------------------------------------------------------------------------ performance


def _synthetic_repository(n: int) -> list[ImageFacts]:
    images: list[ImageFacts] = []
    for i in range(n):
        kind = i % 10
        pushed = NOW - timedelta(minutes=i * 7)
        tags: tuple[str, ...]
        if kind < 2:
            tags = ()
        elif kind < 4:
            tags = (f"prod-{i}", f"sha-{i:08x}")
        elif kind < 6:
            tags = (f"release-{i // 100}.{i % 100}",)
        elif kind < 8:
            tags = (f"1.{i}-rc{i % 5}", f"build-{i}")
        else:
            tags = (f"feature-{i}",)
        images.append(
            ImageFacts(
                digest=f"sha256:{i:064x}",
                tags=tags,
                pushed_at=pushed,
                last_pulled_at=pushed + timedelta(days=1) if i % 3 == 0 else None,
                storage_class="ARCHIVE" if i % 50 == 0 else "STANDARD",
                transitioned_at=pushed + timedelta(days=10) if i % 50 == 0 else None,
                media_type="application/vnd.oci.image.manifest.v1+json",
                children=(f"sha256:{i + 1:064x}",) if i % 1000 == 1 else (),
                subject=f"sha256:{i - 1:064x}" if i % 1000 == 5 else None,
            )
        )
    return images


def test_evaluates_100k_images_with_5_rules_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    policy = parse_policy(
        text(
            rule(1, "tagged", "imageCountMoreThan", 500, patterns=["prod-*"]),
            rule(2, "tagged", "imageCountMoreThan", 1000, prefixes=["release-"]),
            rule(3, "untagged", "sinceImagePushed", 14),
            rule(4, "tagged", "sinceImagePulled", 30, patterns=["*-rc*"], action="transition"),
            rule(5, "any", "imageCountMoreThan", 20000),
        )
    )
    images = _synthetic_repository(100_000)
    start = time.perf_counter()
    decisions = evaluate(policy, images, NOW)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    results = preview_result(decisions)
    summary = preview_summary(decisions)
    preview_elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\nlifecycle: 5 rules x {len(images)} images -> {len(decisions)} decisions in {elapsed:.3f} s "
            f"(preview shaping {preview_elapsed:.3f} s)"
        )
    assert len(results) == len(decisions)
    assert summary["expiringImageTotalCount"] + sum(
        t["imageTotalCount"] for t in summary.get("transitioningImageTotalCounts", [])
    ) == len(decisions)
    assert len({d.digest for d in decisions}) == len(decisions)  # each image decided at most once
