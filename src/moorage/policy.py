"""The IAM policy language, as AWS documents it, for repository, registry and identity policies.

Pure: no I/O, no clock. Three layers:

    parse_policy(text, kind=...)      JSON text ─► PolicyDocument   (validates; compiles every
                                      wildcard, CIDR, date and number once)
    evaluate(doc, ctx)                one document ─► "ALLOW" | "DENY" | "NONE" (explicit Deny wins)
    decide(identity=, resource=, …)   all applicable documents ─► Decision (AWS's cross-policy rules)

Evaluation rules implemented (IAM User Guide, "Policy evaluation logic" and "Condition operators"):

- An explicit Deny in any applicable policy denies.
- Same account (caller account == resource account): an Allow from an identity-based OR a
  resource-based policy suffices. Cross account: both sides must allow. The account root has an
  implicit identity-side Allow (it has no identity policies); it can still be denied explicitly.
  Service and anonymous callers have no identity policies: only resource policies can allow them.
- Action names match case-insensitively; ARNs (Resource, Arn* operators) case-sensitively.
  `*` matches any run of characters and `?` one character. In Arn* operators each of the six
  colon-separated ARN parts is matched on its own (as AWS does).
- Condition key names are case-insensitive. Several operators, several keys: AND. Several values
  for one key: OR, except negated operators (StringNotEquals, NotIpAddress, …) where they NOR.
- A key missing from the request: positive operators are false, negated operators true;
  `…IfExists` is true; `ForAllValues:` is true and `ForAnyValue:` false (empty list = missing).
  A multi-valued key used without a set operator matches when any of its values matches.
- Principal `"*"` / `{"AWS": "*"}` matches every caller. An account id or
  `arn:aws:iam::<acct>:root` matches every principal of that account; user ARNs match exactly;
  role ARNs match the role and its assumed-role sessions. Partial wildcards are rejected.
  NotPrincipal (Deny only) exempts a caller only when all its identities are listed: the
  account and the user (or the account and the role for a role session), as AWS requires.
- Policy variables (`${aws:username}`, `${aws:PrincipalTag/team, 'default'}`, `${*}`, `${?}`,
  `${$}`) are expanded in Resource/NotResource and String*/Arn* condition values, in version
  2012-10-17 only. An element whose variable has no value (and no default) does not match.

Decisions where AWS is silent or inconsistent (see also the test module):
- Sid must be unique in identity policies (IAM's rule; alphanumeric only there). Resource
  policies accept duplicate Sids (ECR documents "need not be unique").
- Condition operator names are accepted case-insensitively; element names are case-sensitive.
- `Version` may be omitted (IAM then assumes 2008-10-17, without policy variables).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, TypeAlias

from moorage.errors import InvalidRequestError

__all__ = [
    "MAX_POLICY_LENGTH",
    "REGISTRY_POLICY_V1_ACTIONS",
    "Condition",
    "ContextValue",
    "Decision",
    "PolicyDocument",
    "PolicyError",
    "PolicyKind",
    "Principal",
    "PrincipalType",
    "RequestContext",
    "Statement",
    "Verdict",
    "access_denied_message",
    "check_ecr_actions",
    "check_registry_policy_scope",
    "decide",
    "evaluate",
    "explain",
    "parse_policy",
    "statement_matches",
]

MAX_POLICY_LENGTH = 10_240
"""botocore ECR model: RepositoryPolicyText and RegistryPolicyText are both max 10,240."""

VERSIONS = ("2012-10-17", "2008-10-17")
REGISTRY_POLICY_V1_ACTIONS = frozenset(
    {"ecr:replicateimage", "ecr:batchimportupstreamimage", "ecr:createrepository", "ecr:*"}
)

PolicyKind: TypeAlias = Literal["identity", "resource"]
Verdict: TypeAlias = Literal["ALLOW", "DENY", "NONE"]
PrincipalType: TypeAlias = Literal["root", "user", "role", "service", "anonymous"]
DenialKind: TypeAlias = Literal["explicit-identity", "explicit-resource", "no-identity-allow", "no-resource-allow"]
ContextScalar: TypeAlias = str | bool | int | datetime
ContextValue: TypeAlias = str | list[str] | bool | int | datetime
PolicyScalar: TypeAlias = str | int | float | bool


class PolicyError(InvalidRequestError):
    """A policy document ECR would refuse (InvalidParameterException). `detail` says what is wrong."""

    def __init__(self, detail: str, *, parameter: str = "PolicyText", constraint: str | None = None) -> None:
        constraint = constraint or f"Invalid policy document: {detail}"
        super().__init__(f"Invalid parameter at '{parameter}' failed to satisfy constraint: '{constraint}'")
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Wildcard patterns and policy variables.
#
# A pattern is kept "encoded": the wildcards `*` and `?` written in the policy become the private
# use characters below, so that text substituted from a policy variable (or `${*}`) stays literal.

_STAR = "\ue000"
_QMARK = "\ue001"
_WILD_SPLIT = re.compile(f"([{_STAR}{_QMARK}])")
_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_VAR_BODY_RE = re.compile(r"\s*([A-Za-z0-9-]+:[^\s,']+)\s*(?:,\s*'([^']*)'\s*)?")

Piece: TypeAlias = str | tuple[str, str | None]
"""An encoded literal, or a policy variable: (lower-cased key, default)."""

Template: TypeAlias = tuple[Piece, ...]
MatchMode: TypeAlias = Literal["glob", "arn", "exact"]


def _encode(text: str) -> str:
    return text.replace("*", _STAR).replace("?", _QMARK)


def _decode(text: str) -> str:
    return text.replace(_STAR, "*").replace(_QMARK, "?")


def _is_wild(encoded: str) -> bool:
    return _STAR in encoded or _QMARK in encoded


def _template(text: str, *, variables: bool, where: str) -> Template:
    if _STAR in text or _QMARK in text:
        raise PolicyError(f"{where}: value contains a reserved character")
    if not variables or "${" not in text:
        return (_encode(text),)
    pieces: list[Piece] = []
    pos = 0
    for m in _VAR_RE.finditer(text):
        if m.start() > pos:
            pieces.append(_encode(text[pos : m.start()]))
        body = m.group(1)
        if body in ("*", "?", "$"):
            pieces.append(body)  # literal character, not a wildcard
        else:
            vm = _VAR_BODY_RE.fullmatch(body)
            if vm is None:
                raise PolicyError(f"{where}: invalid policy variable '${{{body}}}'")
            pieces.append((vm.group(1).lower(), vm.group(2)))
        pos = m.end()
    if pos < len(text):
        pieces.append(_encode(text[pos:]))
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return tuple(merged)


def _glob_regex(encoded: str, *, segment: bool = False) -> str:
    star, qmark = ("[^:]*", "[^:]") if segment else (".*", ".")
    out: list[str] = []
    for part in _WILD_SPLIT.split(encoded):
        if part == _STAR:
            out.append(star)
        elif part == _QMARK:
            out.append(qmark)
        elif part:
            out.append(re.escape(part))
    return "".join(out)


def _arn_regex(encoded: str) -> str:
    """Each of the six ARN parts is matched separately; wildcards in the last (the resource, which
    may itself contain colons) span anything."""
    parts = encoded.split(":", 5)
    return ":".join(_glob_regex(p, segment=i < 5) for i, p in enumerate(parts))


@lru_cache(maxsize=2048)
def _compile(encoded: str, mode: MatchMode) -> re.Pattern[str]:
    source = _arn_regex(encoded) if mode == "arn" else _glob_regex(encoded)
    return re.compile(source, re.DOTALL)


class _Matcher:
    """A list of patterns compiled for one kind of matching: `glob` (Resource, Action, StringLike),
    `arn` (Arn* operators) or `exact` (StringEquals*, wildcards are literal). `fold` = ignore case."""

    __slots__ = ("_any", "_exact", "_fold", "_mode", "_regex", "_templates")

    def __init__(self, patterns: Iterable[Template], mode: MatchMode, *, fold: bool = False) -> None:
        self._mode: MatchMode = mode
        self._fold = fold
        self._any = False
        exact: set[str] = set()
        wild: list[str] = []
        templates: list[Template] = []
        for tpl in patterns:
            if len(tpl) != 1 or not isinstance(tpl[0], str):
                templates.append(tuple(p.casefold() if fold and isinstance(p, str) else p for p in tpl))
                continue
            enc = tpl[0].casefold() if fold else tpl[0]
            if mode == "exact" or not _is_wild(enc):
                exact.add(_decode(enc))
            elif enc == _STAR:
                self._any = True
            else:
                wild.append(_arn_regex(enc) if mode == "arn" else _glob_regex(enc))
        self._exact = frozenset(exact)
        self._regex = re.compile("|".join(f"(?:{w})" for w in wild), re.DOTALL) if wild else None
        self._templates = tuple(templates)

    def matches(self, value: str, ctx: RequestContext) -> bool:
        if self._any:
            return True
        if self._fold:
            value = value.casefold()
        if value in self._exact:
            return True
        if self._regex is not None and self._regex.fullmatch(value) is not None:
            return True
        for tpl in self._templates:
            enc = ctx.expand(tpl)
            if enc is None:
                continue
            if self._fold:
                enc = enc.casefold()
            if self._mode == "exact" or not _is_wild(enc):
                if _decode(enc) == value:
                    return True
            elif _compile(enc, self._mode).fullmatch(value) is not None:
                return True
        return False


# --------------------------------------------------------------------------------------------
# Request context.

_ASSUMED_ROLE_RE = re.compile(r"arn:(aws[a-z-]*):sts::([0-9]{12}):assumed-role/([^/]+)/.+")
_ROLE_RE = re.compile(r"arn:aws[a-z-]*:iam::([0-9]{12}):role/(?:.*/)?([^/]+)")
_PRINCIPAL_TYPE_KEY = {"root": "Account", "user": "User", "role": "AssumedRole", "anonymous": "Anonymous"}


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _scalar_text(value: ContextScalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


@dataclass(frozen=True)
class RequestContext:
    """One request to authorize. `context` holds condition keys (any case); the principal keys
    (aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalType, aws:username,
    aws:PrincipalIsAWSService, aws:PrincipalServiceName) are derived unless given there.
    `principal_type` "role" takes an assumed-role session ARN (or a role ARN)."""

    principal_arn: str
    principal_account: str
    principal_type: PrincipalType
    username: str | None
    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)
    _keys: dict[str, ContextValue] = field(init=False, repr=False, compare=False)
    _action: str = field(init=False, repr=False, compare=False)
    _role: tuple[str, str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys: dict[str, ContextValue] = {}
        if self.principal_type == "service":
            keys["aws:principalisawsservice"] = True
            keys["aws:principalservicename"] = self.principal_arn
        elif self.principal_type != "anonymous":
            keys["aws:principalisawsservice"] = False
            keys["aws:principalarn"] = self.principal_arn
            keys["aws:principalaccount"] = self.principal_account
        if self.principal_type in _PRINCIPAL_TYPE_KEY:
            keys["aws:principaltype"] = _PRINCIPAL_TYPE_KEY[self.principal_type]
        if self.username is not None:
            keys["aws:username"] = self.username
        role = None
        if self.principal_type == "role":
            if m := _ASSUMED_ROLE_RE.fullmatch(self.principal_arn):
                role = (m.group(2), m.group(3))
                # AWS: a session's aws:PrincipalArn is its role's ARN (the role path is not known here)
                keys["aws:principalarn"] = f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}"
            elif m := _ROLE_RE.fullmatch(self.principal_arn):
                role = (m.group(1), m.group(2))
        for key, value in self.context.items():
            keys[key.lower()] = value
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_action", self.action.casefold())
        object.__setattr__(self, "_role", role)

    def get(self, key: str) -> ContextValue | None:
        """The value of a condition key (case-insensitive), or None when the request lacks it."""
        return self._keys.get(key.lower())

    def expand(self, template: Template) -> str | None:
        """An encoded pattern with its policy variables replaced; None if one has no value."""
        out: list[str] = []
        for piece in template:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = self._keys.get(piece[0])
            if value is None or isinstance(value, list):
                if piece[1] is None:
                    return None
                out.append(piece[1])
            else:
                out.append(_scalar_text(value))
        return "".join(out)


# --------------------------------------------------------------------------------------------
# Conditions.

_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "LessThanEquals": operator.le,
    "GreaterThan": operator.gt,
    "GreaterThanEquals": operator.ge,
}
_OPERATORS = (
    ["StringEquals", "StringEqualsIgnoreCase", "StringLike", "Bool", "BinaryEquals", "IpAddress", "Null"]
    + ["ArnEquals", "ArnLike"]
    + [f"Numeric{c}" for c in _COMPARE]
    + [f"Date{c}" for c in _COMPARE]
    + list(_NEGATED)
)
_CANONICAL = {name.lower(): name for name in _OPERATORS}
_SET_OPERATORS = {"foranyvalue": "ForAnyValue", "forallvalues": "ForAllValues"}
_CONDITION_KEY_RE = re.compile(r"[A-Za-z0-9-]+:[^\x00-\x1f]+")
_EPOCH_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")

_Test: TypeAlias = Callable[[ContextScalar, "RequestContext"], bool]


def _number(value: object) -> float | None:
    if isinstance(value, bool | datetime):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _date_text(text: str) -> float | None:
    text = text.strip()
    if _EPOCH_RE.fullmatch(text):
        return float(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _epoch(value: object) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _date_text(value)
    return None


def _boolean(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return None


@lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    """One operator applied to one key: `"StringEquals": {"aws:ResourceTag/team": ["a", "b"]}`."""

    operator: str  # as written
    base: str  # canonical operator without set operator / IfExists, e.g. "StringNotEquals"
    key: str  # as written
    values: tuple[PolicyScalar, ...]
    set_operator: Literal["ForAnyValue", "ForAllValues"] | None
    if_exists: bool
    negated: bool
    _key: str = field(repr=False, compare=False)
    _test: _Test = field(repr=False, compare=False)
    _null: frozenset[bool] = field(repr=False, compare=False, default=frozenset())

    def holds(self, ctx: RequestContext) -> bool:
        raw = ctx._keys.get(self._key)
        missing = raw is None or (isinstance(raw, list) and not raw)
        if self.base == "Null":
            return missing in self._null
        if missing:
            if self.if_exists or self.set_operator == "ForAllValues":
                return True
            if self.set_operator == "ForAnyValue":
                return False
            return self.negated
        test, negated = self._test, self.negated
        if isinstance(raw, list):
            if self.set_operator == "ForAllValues":
                return all(test(v, ctx) != negated for v in raw)
            return any(test(v, ctx) != negated for v in raw)
        assert raw is not None
        return test(raw, ctx) != negated


def _condition_values(raw: object, where: str) -> tuple[PolicyScalar, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise PolicyError(f"{where} must have at least one value")
    out: list[PolicyScalar] = []
    for item in items:
        if not isinstance(item, str | int | float | bool):
            raise PolicyError(f"{where} values must be strings, numbers or booleans, got {_json_type(item)}")
        out.append(item)
    return tuple(out)


def _value_text(value: PolicyScalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compile_test(family: str, base: str, values: tuple[PolicyScalar, ...], where: str, variables: bool) -> _Test:
    """The positive test for one request value (negation is applied by the caller)."""
    if family in ("String", "Arn"):
        templates = [_template(_value_text(v), variables=variables, where=where) for v in values]
        if family == "Arn":
            matcher = _Matcher(templates, "arn")
        elif base == "StringLike":
            matcher = _Matcher(templates, "glob")
        else:
            matcher = _Matcher(templates, "exact", fold=base == "StringEqualsIgnoreCase")
        return lambda v, ctx: matcher.matches(_scalar_text(v), ctx)
    if family in ("Numeric", "Date"):
        compare = _COMPARE[base[len(family) :]]
        convert = _number if family == "Numeric" else _epoch
        bounds: list[float] = []
        for v in values:
            bound = convert(v)
            if bound is None:
                kind = "a number" if family == "Numeric" else "an ISO 8601 date or epoch seconds"
                raise PolicyError(f"{where}: {_value_text(v)!r} is not {kind}")
            bounds.append(bound)
        frozen_bounds = tuple(bounds)

        def numeric(v: ContextScalar, ctx: RequestContext) -> bool:
            n = convert(v)
            return n is not None and any(compare(n, b) for b in frozen_bounds)

        return numeric
    if family == "Bool":
        flags: set[bool] = set()
        for v in values:
            flag = _boolean(v)
            if flag is None:
                raise PolicyError(f"{where}: {_value_text(v)!r} is not 'true' or 'false'")
            flags.add(flag)
        return lambda v, ctx: _boolean(v) in flags
    if family == "Binary":
        blobs: set[bytes] = set()
        for v in values:
            blob = _b64(v) if isinstance(v, str) else None
            if blob is None:
                raise PolicyError(f"{where}: {_value_text(v)!r} is not base64")
            blobs.add(blob)
        return lambda v, ctx: isinstance(v, str) and _b64(v) in blobs
    # IP addresses
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for v in values:
        if not isinstance(v, str):
            raise PolicyError(f"{where}: {_value_text(v)!r} is not an IP address or CIDR block")
        try:
            networks.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise PolicyError(f"{where}: {v!r} is not an IP address or CIDR block") from None
    frozen_networks = tuple(networks)

    def in_network(v: ContextScalar, ctx: RequestContext) -> bool:
        address = _ip(v) if isinstance(v, str) else None
        return address is not None and any(address in net for net in frozen_networks)

    return in_network


def _family(base: str) -> str:
    positive = _NEGATED.get(base, base)
    for family in ("String", "Numeric", "Date", "Arn", "Binary"):
        if positive.startswith(family):
            return family
    return {"Bool": "Bool", "IpAddress": "Ip", "Null": "Null"}[positive]


def _parse_conditions(raw: object, where: str, variables: bool) -> tuple[Condition, ...]:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be an object mapping condition operators to keys, got {_json_type(raw)}")
    out: list[Condition] = []
    for op, block in raw.items():
        here = f"{where}.{op}"
        set_op: Literal["ForAnyValue", "ForAllValues"] | None = None
        name = op
        if ":" in op:
            prefix, name = op.split(":", 1)
            if prefix.lower() not in _SET_OPERATORS:
                raise PolicyError(f"{where}: unknown set operator '{prefix}' (expected ForAnyValue or ForAllValues)")
            set_op = "ForAnyValue" if prefix.lower() == "foranyvalue" else "ForAllValues"
        if_exists = name.lower().endswith("ifexists") and name.lower() not in _CANONICAL
        if if_exists:
            name = name[: -len("IfExists")]
        base = _CANONICAL.get(name.lower())
        if base is None:
            raise PolicyError(f"{where}: unknown condition operator '{op}'")
        if base == "Null" and (if_exists or set_op):
            raise PolicyError(f"{where}: the Null operator takes neither IfExists nor a set operator ('{op}')")
        if not isinstance(block, dict):
            raise PolicyError(f"{here} must be an object mapping condition keys to values, got {_json_type(block)}")
        if not block:
            raise PolicyError(f"{here} has no condition keys")
        family = _family(base)
        for key, value in block.items():
            if not _CONDITION_KEY_RE.fullmatch(key):
                raise PolicyError(f"{here}: '{key}' is not a condition key (expected prefix:name, e.g. aws:SourceIp)")
            at = f"{here}.{key}"
            values = _condition_values(value, at)
            null: frozenset[bool] = frozenset()
            if family == "Null":
                flags = [_boolean(v) for v in values]
                if any(f is None for f in flags):
                    raise PolicyError(f"{at}: Null takes 'true' or 'false'")
                null = frozenset(f for f in flags if f is not None)
                test: _Test = _never
            else:
                test = _compile_test(family, _NEGATED.get(base, base), values, at, variables)
            out.append(
                Condition(
                    operator=op,
                    base=base,
                    key=key,
                    values=values,
                    set_operator=set_op,
                    if_exists=if_exists,
                    negated=base in _NEGATED,
                    _key=key.lower(),
                    _test=test,
                    _null=null,
                )
            )
    return tuple(out)


def _never(value: ContextScalar, ctx: RequestContext) -> bool:
    return False


# --------------------------------------------------------------------------------------------
# Principals.

_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_ROOT_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::([0-9]{12}):root")
_IAM_ARN_RE = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::([0-9]{12}):(user|role|assumed-role|federated-user)/\S+")
_SERVICE_RE = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+", re.IGNORECASE)
_PRINCIPAL_KEYS = ("AWS", "Service", "Federated", "CanonicalUser")


@dataclass(frozen=True, slots=True)
class Principal:
    """A Principal / NotPrincipal element. Federated and CanonicalUser entries are accepted but
    never match (no such callers reach this registry)."""

    everyone: bool
    aws: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    federated: tuple[str, ...] = ()
    canonical_users: tuple[str, ...] = ()
    _accounts: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _arns: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _roles: frozenset[tuple[str, str]] = field(default=frozenset(), repr=False, compare=False)
    _services: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def matches(self, ctx: RequestContext) -> bool:
        """Principal semantics: does the element name the caller?"""
        if self.everyone:
            return True
        kind = ctx.principal_type
        if kind == "service":
            return ctx.principal_arn.lower() in self._services
        if kind == "anonymous":
            return False
        if ctx.principal_account in self._accounts or ctx.principal_arn in self._arns:
            return True
        return ctx._role is not None and ctx._role in self._roles

    def exempts(self, ctx: RequestContext) -> bool:
        """NotPrincipal semantics: is every identity of the caller listed (account, then user or role)?"""
        if self.everyone:
            return True
        kind = ctx.principal_type
        if kind == "service":
            return ctx.principal_arn.lower() in self._services
        if kind == "anonymous" or ctx.principal_account not in self._accounts:
            return False
        if kind == "root":
            return True
        if ctx.principal_arn in self._arns:
            return True
        return ctx._role is not None and ctx._role in self._roles


def _strings(raw: object, where: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise PolicyError(f"{where} must not be an empty list")
    for item in items:
        if not isinstance(item, str):
            raise PolicyError(f"{where} must be a string or a list of strings, got {_json_type(item)}")
    return tuple(str(item) for item in items)


def _parse_principal(raw: object, where: str) -> Principal:
    if raw == "*":
        return Principal(everyone=True)
    if not isinstance(raw, dict):
        raise PolicyError(f'{where} must be "*" or an object such as {{"AWS": ...}}, got {json.dumps(raw)[:60]}')
    if not raw:
        raise PolicyError(f"{where} must name at least one principal")
    everyone = False
    lists: dict[str, tuple[str, ...]] = {}
    accounts: set[str] = set()
    arns: set[str] = set()
    roles: set[tuple[str, str]] = set()
    services: set[str] = set()
    for key, value in raw.items():
        if key not in _PRINCIPAL_KEYS:
            raise PolicyError(
                f"{where}: unknown principal type '{key}' (expected AWS, Service, Federated, CanonicalUser)"
            )
        entries = _strings(value, f"{where}.{key}")
        lists[key] = entries
        for entry in entries:
            if key == "AWS" and entry == "*":
                everyone = True
                continue
            if "*" in entry or "?" in entry:
                raise PolicyError(
                    f"{where}.{key}: '{entry}' has a wildcard; Principal supports only \"*\" alone "
                    "(use a condition on aws:PrincipalArn instead)"
                )
            if key == "AWS":
                if _ACCOUNT_RE.fullmatch(entry):
                    accounts.add(entry)
                elif m := _ROOT_ARN_RE.fullmatch(entry):
                    accounts.add(m.group(1))
                elif m := _IAM_ARN_RE.fullmatch(entry):
                    arns.add(entry)
                    if m.group(2) == "role" and (rm := _ROLE_RE.fullmatch(entry)):
                        roles.add((rm.group(1), rm.group(2)))
                else:
                    raise PolicyError(
                        f"{where}.AWS: invalid principal '{entry}' (expected an account id, "
                        "arn:aws:iam::<account>:root, or a user or role ARN)"
                    )
            elif key == "Service":
                if not _SERVICE_RE.fullmatch(entry):
                    raise PolicyError(f"{where}.Service: invalid service principal '{entry}'")
                services.add(entry.lower())
    return Principal(
        everyone=everyone,
        aws=lists.get("AWS", ()),
        services=lists.get("Service", ()),
        federated=lists.get("Federated", ()),
        canonical_users=lists.get("CanonicalUser", ()),
        _accounts=frozenset(accounts),
        _arns=frozenset(arns),
        _roles=frozenset(roles),
        _services=frozenset(services),
    )


# --------------------------------------------------------------------------------------------
# Statements and documents.

_ACTION_RE = re.compile(r"[A-Za-z0-9-]+:[A-Za-z0-9*?_-]+")
_IDENTITY_SID_RE = re.compile(r"[A-Za-z0-9]*")
_STATEMENT_KEYS = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
)
_TOP_KEYS = ("Version", "Id", "Statement")


@dataclass(frozen=True, slots=True)
class Statement:
    index: int
    sid: str | None
    effect: Literal["Allow", "Deny"]
    principal: Principal | None  # None in identity policies
    not_principal: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...] | None  # None: omitted (a resource policy's own resource)
    not_resource: bool
    conditions: tuple[Condition, ...]
    _actions: _Matcher = field(repr=False, compare=False)
    _resources: _Matcher | None = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"statement '{self.sid}'" if self.sid else f"statement #{self.index}"


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    kind: PolicyKind
    version: str
    id: str | None
    statements: tuple[Statement, ...]
    name: str | None = None
    """A label used in Decision reasons, e.g. "repository policy of 'app'"."""
    _denies: tuple[Statement, ...] = field(default=(), repr=False, compare=False)
    _allows: tuple[Statement, ...] = field(default=(), repr=False, compare=False)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"duplicate key '{key}'")
        out[key] = value
    return out


def _bad_constant(name: str) -> object:
    raise PolicyError(f"{name} is not a valid JSON value")


def _exactly_one(raw: dict[str, object], positive: str, where: str, *, required: bool) -> str | None:
    negative = "Not" + positive
    if positive in raw and negative in raw:
        raise PolicyError(f"{where} has both {positive} and {negative}; use one")
    if positive in raw:
        return positive
    if negative in raw:
        return negative
    if required:
        raise PolicyError(f"{where} must have {positive} or {negative}")
    return None


def _parse_statement(raw: object, index: int, kind: PolicyKind, variables: bool) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be an object, got {_json_type(raw)}")
    for key in raw:
        if key not in _STATEMENT_KEYS:
            raise PolicyError(f"{where}: unknown element '{key}' (expected one of {', '.join(_STATEMENT_KEYS)})")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError(f"{where}.Sid must be a string, got {_json_type(sid)}")
    if kind == "identity" and sid is not None and not _IDENTITY_SID_RE.fullmatch(sid):
        raise PolicyError(f"{where}.Sid '{sid}' may contain only letters and digits in an identity-based policy")
    if "Effect" not in raw:
        raise PolicyError(f"{where} must have an Effect")
    effect = raw["Effect"]
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{where}.Effect must be 'Allow' or 'Deny', got {json.dumps(effect)[:60]}")

    principal_key = _exactly_one(raw, "Principal", where, required=False)
    principal = None
    if kind == "identity":
        if principal_key is not None:
            raise PolicyError(f"{where}: {principal_key} is not allowed in an identity-based policy")
    else:
        if principal_key is None:
            raise PolicyError(f"{where} must have Principal or NotPrincipal in a resource-based policy")
        if principal_key == "NotPrincipal" and effect == "Allow":
            raise PolicyError(f"{where}: NotPrincipal can be used only with Effect Deny")
        principal = _parse_principal(raw[principal_key], f"{where}.{principal_key}")

    action_key = _exactly_one(raw, "Action", where, required=True)
    assert action_key is not None
    actions = _strings(raw[action_key], f"{where}.{action_key}")
    for action in actions:
        if action != "*" and not _ACTION_RE.fullmatch(action):
            raise PolicyError(
                f"{where}.{action_key}: '{action}' is not an action (expected service:Action, e.g. ecr:BatchGetImage)"
            )
    action_matcher = _Matcher(((_encode(a),) for a in actions), "glob", fold=True)

    resource_key = _exactly_one(raw, "Resource", where, required=kind == "identity")
    resources = None
    resource_matcher = None
    if resource_key is not None:
        resources = _strings(raw[resource_key], f"{where}.{resource_key}")
        templates = []
        for resource in resources:
            if resource != "*" and not (resource.startswith("arn:") and resource.count(":") >= 5):
                raise PolicyError(
                    f"{where}.{resource_key}: '{resource}' is not \"*\" or an ARN "
                    "(arn:partition:service:region:account:resource)"
                )
            templates.append(_template(resource, variables=variables, where=f"{where}.{resource_key}"))
        resource_matcher = _Matcher(templates, "glob")

    conditions: tuple[Condition, ...] = ()
    if "Condition" in raw:
        conditions = _parse_conditions(raw["Condition"], f"{where}.Condition", variables)

    return Statement(
        index=index,
        sid=sid,
        effect="Allow" if effect == "Allow" else "Deny",
        principal=principal,
        not_principal=principal_key == "NotPrincipal",
        actions=actions,
        not_action=action_key == "NotAction",
        resources=resources,
        not_resource=resource_key == "NotResource",
        conditions=conditions,
        _actions=action_matcher,
        _resources=resource_matcher,
    )


def parse_policy(
    text: str,
    *,
    kind: PolicyKind,
    name: str | None = None,
    max_length: int = MAX_POLICY_LENGTH,
) -> PolicyDocument:
    """Validate and compile a policy document; PolicyError says precisely what is wrong."""
    if len(text) > max_length:
        raise PolicyError(f"the policy is {len(text)} characters long; the maximum is {max_length}")
    if not text.strip():
        raise PolicyError("the policy text is empty")
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_bad_constant)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError):  # an integer of more than 4300 digits; nesting past the stack
        raise PolicyError("not valid JSON: a value cannot be decoded or the document is nested too deeply") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"the policy must be a JSON object, got {_json_type(raw)}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise PolicyError(f"unknown top-level element '{key}' (expected Version, Id, Statement)")
    version = raw.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise PolicyError(f"Version must be '2012-10-17' or '2008-10-17', got {json.dumps(version)[:60]}")
    assert isinstance(version, str)
    policy_id = raw.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise PolicyError(f"Id must be a string, got {_json_type(policy_id)}")
    if "Statement" not in raw:
        raise PolicyError("the policy has no Statement")
    raw_statements = raw["Statement"]
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list):
        raise PolicyError(f"Statement must be an object or a list of objects, got {_json_type(raw_statements)}")
    if not raw_statements:
        raise PolicyError("Statement must not be empty")
    variables = version == "2012-10-17"
    statements = tuple(_parse_statement(s, i, kind, variables) for i, s in enumerate(raw_statements))
    if kind == "identity":
        seen: set[str] = set()
        for statement in statements:
            if statement.sid:
                if statement.sid in seen:
                    raise PolicyError(f"Sid '{statement.sid}' is used by more than one statement")
                seen.add(statement.sid)
    return PolicyDocument(
        kind=kind,
        version=version,
        id=policy_id,
        statements=statements,
        name=name,
        _denies=tuple(s for s in statements if s.effect == "Deny"),
        _allows=tuple(s for s in statements if s.effect == "Allow"),
    )


def check_ecr_actions(doc: PolicyDocument) -> None:
    """A repository or registry policy may name only ECR's actions (`ecr:...`, or `*`): ECR refuses
    e.g. a statement whose only action is `s3:GetObject`. Checked for Action and NotAction alike."""
    for statement in doc.statements:
        key = "NotAction" if statement.not_action else "Action"
        for action in statement.actions:
            service = action.partition(":")[0]
            if action != "*" and not re.fullmatch(_glob_regex(_encode(service.lower())), "ecr"):
                raise PolicyError(f"Statement[{statement.index}].{key}: '{action}' is not an ECR action")


def check_registry_policy_scope(doc: PolicyDocument, scope: str) -> None:
    """REGISTRY_POLICY_SCOPE V1 lets a registry policy name only the replication / pull-through
    actions (ecr:ReplicateImage, ecr:BatchImportUpstreamImage, ecr:CreateRepository, ecr:*)."""
    if scope != "V1":
        return
    for statement in doc.statements:
        bad = (
            "NotAction"
            if statement.not_action
            else next((a for a in statement.actions if a.lower() not in REGISTRY_POLICY_V1_ACTIONS), None)
        )
        if bad is not None:
            raise PolicyError(
                f"{bad} is not allowed in Statement[{statement.index}] when REGISTRY_POLICY_SCOPE is V1",
                constraint="Invalid registry policy provided",
            )


# --------------------------------------------------------------------------------------------
# Evaluation.


def statement_matches(statement: Statement, ctx: RequestContext) -> bool:
    """Does the statement apply to the request (action, resource, principal and every condition)?"""
    if statement._actions.matches(ctx._action, ctx) == statement.not_action:
        return False
    resources = statement._resources
    if resources is not None and resources.matches(ctx.resource, ctx) == statement.not_resource:
        return False
    principal = statement.principal
    if principal is not None:
        if statement.not_principal:
            if principal.exempts(ctx):
                return False
        elif not principal.matches(ctx):
            return False
    return all(condition.holds(ctx) for condition in statement.conditions)


def explain(doc: PolicyDocument, ctx: RequestContext) -> tuple[Verdict, Statement | None]:
    """The document's verdict and the statement that decided it (None for "NONE")."""
    for statement in doc._denies:
        if statement_matches(statement, ctx):
            return "DENY", statement
    for statement in doc._allows:
        if statement_matches(statement, ctx):
            return "ALLOW", statement
    return "NONE", None


def evaluate(doc: PolicyDocument, ctx: RequestContext) -> Verdict:
    """One document: "DENY" if any statement denies, else "ALLOW" if one allows, else "NONE"."""
    return explain(doc, ctx)[0]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    denial: DenialKind | None = None
    policy: str | None = None  # the deciding document's name (or kind)
    sid: str | None = None


def _policy_label(doc: PolicyDocument) -> str:
    return doc.name or f"{doc.kind}-based policy"


def decide(
    *,
    identity: Sequence[PolicyDocument],
    resource: Sequence[PolicyDocument],
    ctx: RequestContext,
    resource_account: str,
    is_root: bool,
) -> Decision:
    """AWS's cross-policy decision for one request."""
    allowed_by: tuple[PolicyDocument, Statement] | None = None
    identity_allows = False
    for doc in identity:
        verdict, statement = explain(doc, ctx)
        if verdict == "DENY":
            assert statement is not None
            return _explicit_deny("explicit-identity", doc, statement)
        if verdict == "ALLOW" and not identity_allows:
            assert statement is not None
            identity_allows = True
            allowed_by = allowed_by or (doc, statement)
    resource_allows = False
    for doc in resource:
        verdict, statement = explain(doc, ctx)
        if verdict == "DENY":
            assert statement is not None
            return _explicit_deny("explicit-resource", doc, statement)
        if verdict == "ALLOW" and not resource_allows:
            assert statement is not None
            resource_allows = True
            allowed_by = allowed_by or (doc, statement)

    action = ctx.action
    no_identity = Decision(False, f"no identity-based policy allows the {action} action", "no-identity-allow")
    no_resource = Decision(False, f"no resource-based policy allows the {action} action", "no-resource-allow")
    if ctx.principal_type in ("service", "anonymous"):
        return _allowed(allowed_by) if resource_allows else no_resource
    same_account = ctx.principal_account == resource_account
    if is_root:
        if same_account:
            return Decision(True, "the account root has full access to its own account's resources")
        identity_allows = True
    if same_account:
        return _allowed(allowed_by) if identity_allows or resource_allows else no_identity
    if not resource_allows:
        return no_resource
    if not identity_allows:
        return no_identity
    return _allowed(allowed_by)


def _explicit_deny(denial: DenialKind, doc: PolicyDocument, statement: Statement) -> Decision:
    label = _policy_label(doc)
    return Decision(False, f"explicitly denied by {label}, {statement.label}", denial, label, statement.sid)


def _allowed(by: tuple[PolicyDocument, Statement] | None) -> Decision:
    assert by is not None
    doc, statement = by
    label = _policy_label(doc)
    return Decision(True, f"allowed by {label}, {statement.label}", None, label, statement.sid)


def access_denied_message(ctx: RequestContext, reason: Decision | str) -> str:
    """AccessDeniedException text as AWS words it. A Decision is rendered with AWS's wording
    (never naming the policy or Sid); a string is used as given after "because"."""
    head = f"User: {ctx.principal_arn} is not authorized to perform: {ctx.action} on resource: {ctx.resource}"
    if isinstance(reason, Decision):
        if reason.denial == "explicit-identity":
            return f"{head} with an explicit deny in an identity-based policy"
        if reason.denial == "explicit-resource":
            return f"{head} with an explicit deny in a resource-based policy"
        reason = reason.reason
    if reason.startswith(("with ", "because ")):
        return f"{head} {reason}"
    return f"{head} because {reason}"
