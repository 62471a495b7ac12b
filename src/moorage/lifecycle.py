"""Lifecycle policies: the ECR rule grammar and the evaluator. Pure: no I/O, no clock, no store.

Reference: /work/shared/ecr/semantics.md §6 (grammar §6.1, evaluation §6.2, API §6.3), §3.8
(`lastRecordedPullTime`), §8 (archive storage class).

- `parse_policy(text)` validates a `lifecyclePolicyText` and returns a `LifecyclePolicy`, or raises
  `LifecyclePolicyError` (an `InvalidRequestError`, so the ECR front-end answers
  `InvalidParameterException`) whose message names the rule (by `rulePriority`) and the field.
- `evaluate(policy, images, now)` decides which images a run expires or archives (`Decision`s).
- `preview_result(decisions)` / `preview_summary(decisions)` shape those decisions as the
  GetLifecyclePolicyPreview `previewResults` / `summary` members (botocore shapes
  `LifecyclePolicyPreviewResult`, `LifecyclePolicyPreviewSummary`).

Interpretations where the reference leaves room (see also §20):
- Rule 10 of §6.1 (`tagStatus: any` must have the highest `rulePriority`) and rule 11 (unique tag
  prefix / pattern sets, a single `untagged` rule) are enforced per storage class, so the UG example
  "combining archive and expire rules" (an `any` standard rule before an `any` archive rule) is valid.
  "Unique set" means no two rules of one storage class carry the same set of prefixes (or the same
  set of patterns); only `tagStatus: untagged` counts as "selecting untagged images" (an `any` rule
  next to an `untagged` one is the UG's own "all images, example B").
- `sinceImageTransitioned` with `countNumber` < 90 is rejected (not clamped); the evaluator also
  refuses to expire any archived image, including one that follows its parent, archived < 90 days ago.
- Integers (`rulePriority`, `countNumber`) must fit the model's 32-bit `integer`.
- Children of an index and referrers never act on their own while a parent survives; when the
  parent is expired / archived they follow it with the parent's rule priority. Referrers always
  follow their subject; index children follow only when untagged (a tagged child is an image in its
  own right) and when no other surviving index lists them. Following a parent overrides the "claimed
  by a higher-priority rule" protection (the follower's own selection is moot while it has a parent).
  A referrer whose subject is not among the images is an ordinary image.
- Ages: "older than N days" is strict (`now - t > N x 24 h`), per the §6.2 note on the UG example.
- Ties in push time are broken by digest, so results do not depend on the order of `images`.
- Every datetime handed in (images, `now`) must be timezone-aware.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, NoReturn

from moorage.errors import InvalidRequestError

__all__ = [
    "MAX_POLICY_LENGTH",
    "MAX_RULES",
    "MIN_ARCHIVE_DAYS",
    "MIN_POLICY_LENGTH",
    "Decision",
    "ImageFacts",
    "LifecyclePolicy",
    "LifecyclePolicyError",
    "Rule",
    "evaluate",
    "parse_policy",
    "preview_result",
    "preview_summary",
]

TagStatus = Literal["tagged", "untagged", "any"]
CountType = Literal["imageCountMoreThan", "sinceImagePushed", "sinceImagePulled", "sinceImageTransitioned"]
RuleStorageClass = Literal["standard", "archive"]
RuleAction = Literal["expire", "transition"]
StorageClass = Literal["STANDARD", "ARCHIVE"]
DecisionAction = Literal["EXPIRE", "TRANSITION"]

MIN_POLICY_LENGTH: Final = 100  # botocore LifecyclePolicyText min
MAX_POLICY_LENGTH: Final = 30720  # botocore LifecyclePolicyText max; §18 quota
MAX_RULES: Final = 50  # §18 quota: lifecycle rules per policy
MAX_WILDCARDS: Final = 4  # §6.1 rule 3: at most four '*' per pattern
MIN_ARCHIVE_DAYS: Final = 90  # §8: lifecycle may delete archived images only after 90 days in archive
_MAX_INT: Final = 2**31 - 1  # model `integer` shapes are 32-bit

_TAG_STATUSES: Final = ("tagged", "untagged", "any")
_COUNT_TYPES: Final = ("imageCountMoreThan", "sinceImagePushed", "sinceImagePulled", "sinceImageTransitioned")
_SINCE_TYPES: Final = frozenset({"sinceImagePushed", "sinceImagePulled", "sinceImageTransitioned"})
_RULE_STORAGE_CLASSES: Final = ("standard", "archive")
_ACTION_TYPES: Final = ("expire", "transition")
_TARGET_STORAGE_CLASSES: Final = ("archive",)
_COUNT_UNITS: Final = ("days",)

_TOP_KEYS: Final = frozenset({"rules"})
_RULE_KEYS: Final = frozenset({"rulePriority", "description", "selection", "action"})
_RULE_REQUIRED: Final = ("rulePriority", "selection", "action")
_SELECTION_KEYS: Final = frozenset(
    {"tagStatus", "tagPatternList", "tagPrefixList", "storageClass", "countType", "countUnit", "countNumber"}
)
_SELECTION_REQUIRED: Final = ("tagStatus", "countType", "countNumber")
_ACTION_KEYS: Final = frozenset({"type", "targetStorageClass"})

_PREFIX: Final = "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: "


# ---------------------------------------------------------------------------------------------- model


class LifecyclePolicyError(InvalidRequestError):
    """An invalid lifecycle policy text. `message` is the full ECR InvalidParameterException message;
    `rule_priority` / `field` name the offending rule and field when the failure is inside a rule."""

    def __init__(
        self, detail: str, *, rule_priority: int | None = None, field: str | None = None, validation: bool = True
    ) -> None:
        inner = f"Lifecycle policy validation failure: {detail}" if validation else detail
        super().__init__(f"{_PREFIX}'{inner}'")
        self.detail = detail
        self.rule_priority = rule_priority
        self.field = field


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule. Enum values keep the policy JSON spelling (`expire`, `archive`, ...)."""

    priority: int
    description: str | None
    tag_status: TagStatus
    tag_prefixes: tuple[str, ...]
    tag_patterns: tuple[str, ...]
    count_type: CountType
    count_unit: Literal["days"] | None
    count_number: int
    storage_class: RuleStorageClass
    action: RuleAction
    target_storage_class: Literal["archive"] | None


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """The rules of a policy, sorted by `priority` (the order they are applied in)."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the evaluator needs to know about one image (one manifest) of the repository.

    `transitioned_at` is when the image was last archived (`lastArchivedAt`); `activated_at` is when it
    was last restored from archive (`lastActivatedAt`), which replaces the push time for ordering and
    for `sinceImagePushed` / `sinceImagePulled` (§6.2, §8). `children` are the manifests an index lists;
    `subject` is the digest a referrer points at.
    """

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    last_pulled_at: datetime | None = None
    storage_class: StorageClass = "STANDARD"
    transitioned_at: datetime | None = None
    media_type: str = ""
    children: tuple[str, ...] = ()
    subject: str | None = None
    activated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One image a run expires (deletes) or transitions (archives), and the rule responsible.

    `storage_class` is the image's class before the action; `cascaded_from` is the digest of the index
    or subject whose decision this image follows (None when its own rule selected it).
    """

    digest: str
    tags: tuple[str, ...]
    rule_priority: int
    action: DecisionAction
    target_storage_class: Literal["ARCHIVE"] | None
    pushed_at: datetime
    storage_class: StorageClass = "STANDARD"
    cascaded_from: str | None = None


# --------------------------------------------------------------------------------------------- parsing


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _names(keys: Iterable[str]) -> str:
    return "[" + ",".join(json.dumps(k) for k in sorted(keys)) + "]"


class _RuleContext:
    """Raises errors that name one rule (by rulePriority once known, else by position) and a field."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.priority: int | None = None

    def fail(self, field: str, detail: str) -> NoReturn:
        who = f"rule with rulePriority {self.priority}" if self.priority is not None else f"rules[{self.index}]"
        raise LifecyclePolicyError(f"{who}: {field}: {detail}", rule_priority=self.priority, field=field)

    def mapping(self, value: object, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.type_error(value, field, "object")
        return value

    def type_error(self, value: object, field: str, allowed: str) -> NoReturn:
        self.fail(
            field,
            f'instance type ({_json_type(value)}) does not match any allowed primitive type (allowed: ["{allowed}"])',
        )

    def keys(self, obj: dict[str, Any], field: str, allowed: frozenset[str], required: Sequence[str]) -> None:
        extra = [k for k in obj if k not in allowed]
        if extra:
            self.fail(field, f"object instance has properties which are not allowed by the schema: ({_names(extra)})")
        missing = [k for k in required if k not in obj]
        if missing:
            self.fail(field, f"object has missing required properties ({_names(missing)})")

    def integer(self, value: object, field: str, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.type_error(value, field, "integer")
        if value < minimum:
            self.fail(
                field, f"numeric instance is lower than the required minimum (minimum: {minimum}, found: {value})"
            )
        if value > _MAX_INT:
            self.fail(
                field, f"numeric instance is greater than the required maximum (maximum: {_MAX_INT}, found: {value})"
            )
        return value

    def string(self, value: object, field: str) -> str:
        if not isinstance(value, str):
            self.type_error(value, field, "string")
        return value

    def enum(self, value: object, field: str, allowed: Sequence[str]) -> str:
        text = self.string(value, field)
        if text not in allowed:
            self.fail(field, f"instance value ({text}) not found in enum (possible values: {_names(allowed)})")
        return text

    def string_list(self, value: object, field: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.type_error(value, field, "array")
        if not value:
            self.fail(field, "array is too short: must have at least 1 elements but instance has 0 elements")
        items: list[str] = []
        for i, item in enumerate(value):
            text = self.string(item, f"{field}[{i}]")
            if not text:
                self.fail(f"{field}[{i}]", 'string "" is too short (length: 0, required minimum: 1)')
            items.append(text)
        return tuple(items)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(name)


def _top_error(detail: str, field: str | None = None) -> LifecyclePolicyError:
    return LifecyclePolicyError(detail if field is None else f"{field}: {detail}", field=field)


def parse_policy(text: str) -> LifecyclePolicy:
    """Validate a lifecycle policy text (§6.1) and return its rules; raise LifecyclePolicyError."""
    if len(text) < MIN_POLICY_LENGTH:
        raise LifecyclePolicyError(
            f"Member must have length greater than or equal to {MIN_POLICY_LENGTH}", validation=False
        )
    if len(text) > MAX_POLICY_LENGTH:
        raise LifecyclePolicyError(
            f"Member must have length less than or equal to {MAX_POLICY_LENGTH}", validation=False
        )
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, NaN/Infinity, huge integers, deep nesting
        raise _top_error("Could not map policyString into LifecyclePolicy.") from None
    if not isinstance(document, dict):
        raise _top_error("Could not map policyString into LifecyclePolicy.")
    extra = [k for k in document if k not in _TOP_KEYS]
    if extra:
        raise _top_error(f"object instance has properties which are not allowed by the schema: ({_names(extra)})")
    if "rules" not in document:
        raise _top_error('object has missing required properties (["rules"])')
    raw_rules = document["rules"]
    if not isinstance(raw_rules, list):
        raise _top_error(
            f'instance type ({_json_type(raw_rules)}) does not match any allowed primitive type (allowed: ["array"])',
            "rules",
        )
    if not raw_rules:
        raise _top_error("array is too short: must have at least 1 elements but instance has 0 elements", "rules")
    if len(raw_rules) > MAX_RULES:
        raise _top_error(
            f"array is too long: must have at most {MAX_RULES} elements but instance has {len(raw_rules)} elements",
            "rules",
        )
    rules = [_parse_rule(i, raw) for i, raw in enumerate(raw_rules)]
    _check_policy(rules)
    return LifecyclePolicy(tuple(sorted(rules, key=lambda r: r.priority)))


def _parse_rule(index: int, raw: object) -> Rule:
    ctx = _RuleContext(index)
    rule = ctx.mapping(raw, "rule")
    # Name the rule by its priority as early as possible: validate rulePriority first.
    if "rulePriority" in rule:
        ctx.priority = ctx.integer(rule["rulePriority"], "rulePriority", 1)
    ctx.keys(rule, "rule", _RULE_KEYS, _RULE_REQUIRED)
    priority = ctx.priority
    assert priority is not None
    description = None
    if "description" in rule:
        description = ctx.string(rule["description"], "description")

    # §6.1 schema of `selection`
    selection = ctx.mapping(rule["selection"], "selection")
    ctx.keys(selection, "selection", _SELECTION_KEYS, _SELECTION_REQUIRED)
    tag_status = ctx.enum(selection["tagStatus"], "selection.tagStatus", _TAG_STATUSES)
    count_type = ctx.enum(selection["countType"], "selection.countType", _COUNT_TYPES)
    storage_class = "standard"
    if "storageClass" in selection:
        storage_class = ctx.enum(selection["storageClass"], "selection.storageClass", _RULE_STORAGE_CLASSES)
    count_unit: str | None = None
    if count_type in _SINCE_TYPES:  # rule 4: countUnit always (and only) with since* count types
        if "countUnit" not in selection:
            ctx.fail("selection.countUnit", 'object has missing required properties (["countUnit"])')
        count_unit = ctx.enum(selection["countUnit"], "selection.countUnit", _COUNT_UNITS)
    elif "countUnit" in selection:
        ctx.fail(
            "selection.countUnit",
            'object instance has properties which are not allowed by the schema: (["countUnit"]) '
            f"(countUnit is only valid with countType sinceImagePushed, sinceImagePulled or sinceImageTransitioned, "
            f"not {count_type})",
        )
    count_number = ctx.integer(selection["countNumber"], "selection.countNumber", 1)  # rule 5
    prefixes: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    if "tagPrefixList" in selection:
        prefixes = ctx.string_list(selection["tagPrefixList"], "selection.tagPrefixList")
    if "tagPatternList" in selection:
        patterns = ctx.string_list(selection["tagPatternList"], "selection.tagPatternList")
        for i, pattern in enumerate(patterns):  # rule 3
            if pattern.count("*") > MAX_WILDCARDS:
                ctx.fail(
                    f"selection.tagPatternList[{i}]",
                    f"tag pattern '{pattern}' has {pattern.count('*')} wildcards; "
                    f"at most {MAX_WILDCARDS} '*' are allowed per pattern",
                )

    # §6.1 schema of `action`
    action = ctx.mapping(rule["action"], "action")
    ctx.keys(action, "action", _ACTION_KEYS, ("type",))
    action_type = ctx.enum(action["type"], "action.type", _ACTION_TYPES)
    target: str | None = None
    if action_type == "transition":  # rule 9
        if "targetStorageClass" not in action:
            ctx.fail("action.targetStorageClass", 'object has missing required properties (["targetStorageClass"])')
        target = ctx.enum(action["targetStorageClass"], "action.targetStorageClass", _TARGET_STORAGE_CLASSES)
    elif "targetStorageClass" in action:
        ctx.fail(
            "action.targetStorageClass",
            'object instance has properties which are not allowed by the schema: (["targetStorageClass"]) '
            "(targetStorageClass is only valid with action type transition)",
        )

    # rule 2: tag lists only with `tagged`, and exactly one of them
    if tag_status == "tagged":
        if prefixes and patterns:
            ctx.fail("selection.tagPatternList", "tagPrefixList and tagPatternList cannot both be specified in a rule")
        if not prefixes and not patterns:
            ctx.fail(
                "selection.tagStatus",
                "tagStatus tagged requires a tagPrefixList or a tagPatternList",
            )
    else:
        for name, given in (("tagPrefixList", prefixes), ("tagPatternList", patterns)):
            if given:
                ctx.fail(f"selection.{name}", f"{name} can only be specified with tagStatus tagged, not {tag_status}")

    # rules 6-8: count type vs action and storage class
    if count_type == "sinceImagePulled" and action_type != "transition":
        ctx.fail("action.type", "countType sinceImagePulled can only be used with action type transition")
    if count_type == "sinceImageTransitioned":
        if "storageClass" not in selection:
            ctx.fail("selection.storageClass", "countType sinceImageTransitioned requires storageClass archive")
        if storage_class != "archive":
            ctx.fail("selection.storageClass", "countType sinceImageTransitioned requires storageClass archive")
        if action_type != "expire":
            ctx.fail("action.type", "countType sinceImageTransitioned can only be used with action type expire")
        if count_number < MIN_ARCHIVE_DAYS:
            ctx.fail(
                "selection.countNumber",
                f"images must stay in archive at least {MIN_ARCHIVE_DAYS} days before they can be expired "
                f"(countNumber {count_number} < {MIN_ARCHIVE_DAYS})",
            )
    elif storage_class != "standard":
        ctx.fail(
            "selection.storageClass",
            f"countType {count_type} only supports storageClass standard (archive requires sinceImageTransitioned)",
        )

    return Rule(
        priority=priority,
        description=description,
        tag_status=_as_tag_status(tag_status),
        tag_prefixes=prefixes,
        tag_patterns=patterns,
        count_type=_as_count_type(count_type),
        count_unit="days" if count_unit is not None else None,
        count_number=count_number,
        storage_class="archive" if storage_class == "archive" else "standard",
        action="transition" if action_type == "transition" else "expire",
        target_storage_class="archive" if target is not None else None,
    )


def _as_tag_status(value: str) -> TagStatus:
    if value == "tagged":
        return "tagged"
    return "untagged" if value == "untagged" else "any"


def _as_count_type(value: str) -> CountType:
    if value == "sinceImagePushed":
        return "sinceImagePushed"
    if value == "sinceImagePulled":
        return "sinceImagePulled"
    return "sinceImageTransitioned" if value == "sinceImageTransitioned" else "imageCountMoreThan"


def _check_policy(rules: list[Rule]) -> None:
    """Cross-rule constraints: unique priorities; rules 10 and 11 of §6.1, per storage class."""

    def fail(rule: Rule, field: str, detail: str) -> NoReturn:
        raise LifecyclePolicyError(
            f"rule with rulePriority {rule.priority}: {field}: {detail}", rule_priority=rule.priority, field=field
        )

    seen: set[int] = set()
    for rule in rules:
        if rule.priority in seen:
            fail(rule, "rulePriority", f"rulePriority {rule.priority} is used by more than one rule; it must be unique")
        seen.add(rule.priority)
    for storage_class in _RULE_STORAGE_CLASSES:
        group = sorted((r for r in rules if r.storage_class == storage_class), key=lambda r: r.priority)
        if not group:
            continue
        highest = group[-1]
        for rule in group[:-1]:
            if rule.tag_status == "any":
                fail(
                    rule,
                    "selection.tagStatus",
                    f"a rule with tagStatus any must have the highest rulePriority of the rules selecting storageClass "
                    f"{storage_class} (rulePriority {highest.priority} is higher)",
                )
        untagged: Rule | None = None
        tag_sets: dict[tuple[str, frozenset[str]], Rule] = {}
        for rule in group:
            if rule.tag_status == "untagged":
                if untagged is not None:
                    fail(
                        rule,
                        "selection.tagStatus",
                        f"only one rule selecting storageClass {storage_class} may select untagged images "
                        f"(rulePriority {untagged.priority} already does)",
                    )
                untagged = rule
            for name, values in (("tagPrefixList", rule.tag_prefixes), ("tagPatternList", rule.tag_patterns)):
                if not values:
                    continue
                key = (name, frozenset(values))
                other = tag_sets.get(key)
                if other is not None:
                    fail(
                        rule,
                        f"selection.{name}",
                        f"the same {name} is already used by the rule with rulePriority {other.priority}; "
                        f"rules selecting storageClass {storage_class} must have unique tag sets",
                    )
                tag_sets[key] = rule


# ------------------------------------------------------------------------------------------ evaluation


def _tag_matchers(rule: Rule) -> list[Callable[[str], object]]:
    """§6.2 tag matching: an image is selected when EVERY prefix / pattern of the rule matches at least
    one of its tags. Each matcher searches the image's tags joined by newlines (tags never contain one),
    so one regex call tests all tags: `^prefix` for a prefix; `^pattern$` for a pattern, where '*'
    matches any run of characters (also none) within one tag, and the whole tag must match."""
    if rule.tag_prefixes:
        regexes = ["^" + re.escape(p) for p in rule.tag_prefixes]
    else:
        regexes = ["^" + "[^\\n]*".join(re.escape(part) for part in p.split("*")) + "$" for p in rule.tag_patterns]
    return [re.compile(r, re.MULTILINE).search for r in regexes]


def _effective_push(img: ImageFacts) -> datetime:
    """Push time, replaced by the last restore from archive (§6.2, §8)."""
    return img.activated_at if img.activated_at is not None else img.pushed_at


def _pull_reference(img: ImageFacts) -> datetime:
    """§6.2 sinceImagePulled: last recorded pull; after a restore not followed by a pull, the restore
    time; never pulled: push time."""
    if img.activated_at is not None and (img.last_pulled_at is None or img.last_pulled_at < img.activated_at):
        return img.activated_at
    return img.last_pulled_at if img.last_pulled_at is not None else img.pushed_at


def _days_before(now: datetime, days: int) -> datetime | None:
    """`now - days`, or None when that is before datetime.min (nothing can be that old)."""
    try:
        return now - timedelta(days=days)
    except OverflowError:
        return None


class _Run:
    """The state of one evaluation: decisions by image index, plus the parent/dependent graph."""

    def __init__(self, images: Sequence[ImageFacts], now: datetime) -> None:
        self.images = images
        self.archive_cutoff = _days_before(now, MIN_ARCHIVE_DAYS)
        index: dict[str, int] = {}
        for i, img in enumerate(images):
            index[img.digest] = i
        if len(index) != len(images):
            counts = Counter(img.digest for img in images)
            raise ValueError(f"duplicate image digest {next(d for d, c in counts.items() if c > 1)}")
        # parents[i]: indexes listing image i and the subject of referrer i; dependents is the reverse.
        # Both are sparse: most repositories have few indexes and referrers.
        self.parents: dict[int, list[int]] = {}
        self.dependents: dict[int, list[int]] = {}
        self.referrer_of: set[tuple[int, int]] = set()  # (referrer, subject)
        for i, img in enumerate(images):
            if img.children:
                for child in img.children:
                    c = index.get(child)
                    if c is not None and c != i:
                        self.parents.setdefault(c, []).append(i)
                        self.dependents.setdefault(i, []).append(c)
            if img.subject is not None:
                s = index.get(img.subject)
                if s is not None and s != i:
                    self.parents.setdefault(i, []).append(s)
                    self.dependents.setdefault(s, []).append(i)
                    self.referrer_of.add((i, s))
        self.decided: dict[int, Decision] = {}
        self.order: list[Decision] = []

    def may_expire_archived(self, img: ImageFacts) -> bool:
        """§8: an archived image may be lifecycle-deleted only after MIN_ARCHIVE_DAYS in archive."""
        if img.storage_class != "ARCHIVE":
            return True
        cutoff = self.archive_cutoff
        return img.transitioned_at is not None and cutoff is not None and img.transitioned_at <= cutoff

    def allowed(self, i: int, action: DecisionAction) -> bool:
        """May image i be acted on now? An image listed by an index, or referring to a subject, is acted
        on only after every such parent is: expired (to expire it), or expired / archived (to archive it)
        (§6.2: "cannot be expired/archived unless the list itself is expired/archived first")."""
        img = self.images[i]
        if action == "TRANSITION":
            if img.storage_class != "STANDARD":
                return False
        elif not self.may_expire_archived(img):
            return False
        for p in self.parents.get(i, ()):
            decision = self.decided.get(p)
            if action == "EXPIRE":
                if decision is None or decision.action != "EXPIRE":
                    return False
            elif decision is None and self.images[p].storage_class != "ARCHIVE":
                return False
        return True

    def record(self, i: int, priority: int, action: DecisionAction, cascaded_from: str | None) -> None:
        img = self.images[i]
        decision = Decision(
            img.digest,
            img.tags,
            priority,
            action,
            "ARCHIVE" if action == "TRANSITION" else None,
            img.pushed_at,
            img.storage_class,
            cascaded_from,
        )
        self.decided[i] = decision
        self.order.append(decision)

    def decide(self, i: int, priority: int, action: DecisionAction) -> None:
        """Record a rule's own decision on image i, then let its referrers / children follow it."""
        self.record(i, priority, action, None)
        if i not in self.dependents:
            return
        # Referrers follow their subject; untagged index children follow their index (§6.2, §16.3).
        stack = [i]
        while stack:
            p = stack.pop()
            for d in self.dependents.get(p, ()):
                if d in self.decided:
                    continue
                if (d, p) not in self.referrer_of and self.images[d].tags:
                    continue  # a tagged child of an index stands on its own once the index is gone
                if not self.allowed(d, action):
                    continue  # another parent survives (it may still follow that one later)
                self.record(d, priority, action, self.images[p].digest)
                stack.append(d)


def evaluate(policy: LifecyclePolicy, images: Sequence[ImageFacts], now: datetime) -> list[Decision]:
    """Decide what one lifecycle run does to `images` (all images of one repository) at `now`.

    Implements §6.2 of the reference: rules are applied in priority order (lowest number first); each
    image is acted on by at most one rule. A rule's *view* is every image its selection matches
    (tagStatus, tag prefixes / patterns, storageClass), INCLUDING images that higher-priority rules
    matched: the view is what imageCountMoreThan ranks ("lower rules still count such images"), and
    an image in the view of a higher-priority rule is "claimed" -- a lower rule may never act on it,
    even if the higher rule did not act (§6.2: "An image that matches the tag selection of a
    higher-priority rule can never be acted on by a lower-priority rule ... Lower rules still count
    such images when deciding what to act on"). Targets are acted on oldest first.
    Returns the decisions in the order they were made (rule priority, then oldest first; images that
    follow a parent come right after it).
    """
    run = _Run(images, now)
    n = len(images)
    effective = [_effective_push(img) for img in images]
    storage = [img.storage_class for img in images]
    tags = [img.tags for img in images]
    joined: list[str] | None = None  # "\n".join(tags), built once, on the first tagged rule
    # One global order, oldest first (ties broken by digest): every rule's view is a subsequence of it,
    # so nothing is sorted per rule. O(n log n) once, then O(n) per rule.
    ordered = sorted(range(n), key=[img.digest for img in images].__getitem__)
    ordered.sort(key=effective.__getitem__)  # stable: equal times stay in digest order
    claimed = bytearray(n)
    decided = run.decided
    for rule in policy.rules:
        cls: StorageClass = "ARCHIVE" if rule.storage_class == "archive" else "STANDARD"
        if rule.tag_status == "any":
            view = [i for i in ordered if storage[i] == cls]
        elif rule.tag_status == "untagged":
            view = [i for i in ordered if storage[i] == cls and not tags[i]]
        else:
            if joined is None:
                joined = ["\n".join(t) for t in tags]
            matchers = _tag_matchers(rule)
            if len(matchers) == 1:
                match = matchers[0]
                view = [i for i in ordered if storage[i] == cls and tags[i] and match(joined[i])]
            else:
                view = [i for i in ordered if storage[i] == cls and tags[i] and all(m(joined[i]) for m in matchers)]
        targets: list[int]
        if rule.count_type == "imageCountMoreThan":
            # newest `count_number` of the view are kept; the rest (the oldest) are targets
            targets = view[: max(0, len(view) - rule.count_number)]
        else:
            # strictly older than N x 24 h (§6.2: strict "older than" test)
            threshold = _days_before(now, rule.count_number)
            if threshold is None:
                targets = []
            elif rule.count_type == "sinceImagePushed":
                targets = [i for i in view if effective[i] < threshold]
            elif rule.count_type == "sinceImagePulled":
                targets = [i for i in view if _pull_reference(images[i]) < threshold]
            else:  # sinceImageTransitioned: last_archived_at of archived images
                targets = [i for i in view if (at := _transitioned(images[i])) is not None and at < threshold]
        action: DecisionAction = "TRANSITION" if rule.action == "transition" else "EXPIRE"
        deferred: list[int] = []
        parents, dependents = run.parents, run.dependents
        for i in targets:
            if claimed[i] or i in decided:
                continue
            if storage[i] == "STANDARD" and i not in parents and i not in dependents:
                run.record(i, rule.priority, action, None)  # fast path: a plain image, nothing follows it
            elif run.allowed(i, action):
                run.decide(i, rule.priority, action)
            else:
                deferred.append(i)
        # Targets held back only because a parent was decided later in this same rule get another chance.
        progress = True
        while deferred and progress:
            progress = False
            remaining: list[int] = []
            for i in deferred:
                if i in decided:
                    continue
                if run.allowed(i, action):
                    run.decide(i, rule.priority, action)
                    progress = True
                else:
                    remaining.append(i)
            deferred = remaining
        for i in view:
            claimed[i] = 1
    return run.order


def _transitioned(img: ImageFacts) -> datetime | None:
    return img.transitioned_at if img.storage_class == "ARCHIVE" else None


# ---------------------------------------------------------------------------------------------- preview


def _epoch(value: datetime) -> float:
    return round(value.timestamp(), 3)


def preview_result(decisions: Iterable[Decision]) -> list[dict[str, Any]]:
    """GetLifecyclePolicyPreview `previewResults` entries (botocore LifecyclePolicyPreviewResult).
    `imagePushedAt` is epoch seconds, as every ECR timestamp on the wire; `imageTags` is omitted for an
    untagged image (as in ImageDetail)."""
    results: list[dict[str, Any]] = []
    for d in decisions:
        action: dict[str, Any] = {"type": d.action}
        if d.target_storage_class is not None:
            action["targetStorageClass"] = d.target_storage_class
        entry: dict[str, Any] = {}
        if d.tags:
            entry["imageTags"] = list(d.tags)
        entry["imageDigest"] = d.digest
        entry["imagePushedAt"] = _epoch(d.pushed_at)
        entry["action"] = action
        entry["appliedRulePriority"] = d.rule_priority
        entry["storageClass"] = d.storage_class
        results.append(entry)
    return results


def preview_summary(decisions: Iterable[Decision]) -> dict[str, Any]:
    """GetLifecyclePolicyPreview `summary` (botocore LifecyclePolicyPreviewSummary); the transition list
    appears only when at least one image would transition (§6.3)."""
    expiring = 0
    transitioning: dict[str, int] = {}
    for d in decisions:
        if d.action == "EXPIRE":
            expiring += 1
        else:
            target = d.target_storage_class or "ARCHIVE"
            transitioning[target] = transitioning.get(target, 0) + 1
    summary: dict[str, Any] = {"expiringImageTotalCount": expiring}
    if transitioning:
        summary["transitioningImageTotalCounts"] = [
            {"targetStorageClass": target, "imageTotalCount": count} for target, count in sorted(transitioning.items())
        ]
    return summary
