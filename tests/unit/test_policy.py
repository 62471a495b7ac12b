"""Unit tests for moorage.policy: AWS's documented ECR repository-policy examples, the tricky corners of
the IAM policy language, AWS's cross-policy decision rules, and every parse error with its message."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest

from moorage.errors import InvalidRequestError
from moorage.policy import (
    MAX_POLICY_LENGTH,
    ContextValue,
    Decision,
    PolicyDocument,
    PolicyError,
    PolicyKind,
    RequestContext,
    Verdict,
    access_denied_message,
    check_registry_policy_scope,
    decide,
    evaluate,
    explain,
    parse_policy,
    statement_matches,
)

OWNER = "111122223333"  # owns the repository
OTHER = "444455556666"
THIRD = "777788889999"
REPO = f"arn:aws:ecr:us-east-1:{OWNER}:repository/app"
PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
PUSH = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
]
Stmt = dict[str, Any]


def caller(
    who: str = "user/alice",
    account: str = OWNER,
    *,
    action: str = "ecr:BatchGetImage",
    resource: str = REPO,
    keys: Mapping[str, ContextValue] | None = None,
) -> RequestContext:
    """`who`: "root", "user/<name>", "role/<name>" (an assumed-role session), "service:<name>", "anonymous"."""
    if who == "root":
        return RequestContext(f"arn:aws:iam::{account}:root", account, "root", None, action, resource, keys or {})
    if who.startswith("user/"):
        arn = f"arn:aws:iam::{account}:{who}"
        return RequestContext(arn, account, "user", who[5:], action, resource, keys or {})
    if who.startswith("role/"):
        arn = f"arn:aws:sts::{account}:assumed-role/{who[5:]}/session-1"
        return RequestContext(arn, account, "role", None, action, resource, keys or {})
    if who.startswith("service:"):
        return RequestContext(who[8:], "", "service", None, action, resource, keys or {})
    return RequestContext("anonymous", "", "anonymous", None, action, resource, keys or {})


def policy_text(*statements: Stmt, version: str = "2012-10-17") -> str:
    return json.dumps({"Version": version, "Statement": list(statements)})


def resource_policy(*statements: Stmt, version: str = "2012-10-17", name: str | None = None) -> PolicyDocument:
    return parse_policy(policy_text(*statements, version=version), kind="resource", name=name)


def identity_policy(*statements: Stmt, version: str = "2012-10-17", name: str | None = None) -> PolicyDocument:
    return parse_policy(policy_text(*statements, version=version), kind="identity", name=name)


def allow(principal: Any = "*", action: Any = "ecr:*", **extra: Any) -> Stmt:
    """An Allow statement; `NotAction=...` replaces the Action."""
    actions = {} if "NotAction" in extra else {"Action": action}
    return {"Effect": "Allow", "Principal": principal, **actions, **extra}


def deny(principal: Any = "*", action: Any = "ecr:*", **extra: Any) -> Stmt:
    actions = {} if "NotAction" in extra else {"Action": action}
    return {"Effect": "Deny", "Principal": principal, **actions, **extra}


def aws(*principals: str) -> dict[str, Any]:
    return {"AWS": list(principals) if len(principals) > 1 else principals[0]}


def cond(**operators: dict[str, Any]) -> dict[str, Any]:
    return {"Condition": {op.replace("__", ":"): block for op, block in operators.items()}}


# ---------------------------------------------------------------------------------------------
# AWS's documented ECR repository policy examples.

CROSS_ACCOUNT_PULL = allow(aws(f"arn:aws:iam::{OTHER}:root"), PULL, Sid="AllowCrossAccountPull")
USER_PUSH = allow(aws(f"arn:aws:iam::{OWNER}:user/push-user"), PUSH, Sid="AllowPushPull")
DENY_OUTSIDE_IPS = deny(
    "*",
    "ecr:*",
    Sid="DenyOutsideCorporateNetwork",
    **cond(NotIpAddress={"aws:SourceIp": ["192.0.2.0/24", "203.0.113.0/24"]}),
)
TAGGED_PULL = allow(aws(OTHER), PULL, **cond(StringEquals={"aws:ResourceTag/team": "web"}))
ECR_TAGGED_PULL = allow(aws(OTHER), PULL, **cond(StringEquals={"ecr:ResourceTag/environment": "prod"}))
TAGGED_CREATE = allow(
    aws(OWNER),
    ["ecr:CreateRepository", "ecr:TagResource"],
    **cond(
        StringEquals={"aws:RequestTag/team": "web"},
        ForAllValues__StringEquals={"aws:TagKeys": ["team", "environment"]},
    ),
)

EXAMPLES = [
    pytest.param(
        [CROSS_ACCOUNT_PULL], caller("user/dev", OTHER), "ALLOW", id="cross-account pull: user of the account"
    ),
    pytest.param([CROSS_ACCOUNT_PULL], caller("root", OTHER), "ALLOW", id="cross-account pull: that account's root"),
    pytest.param(
        [CROSS_ACCOUNT_PULL],
        caller("user/dev", OTHER, action="ecr:GetDownloadUrlForLayer"),
        "ALLOW",
        id="cross-account pull: layer download",
    ),
    pytest.param(
        [CROSS_ACCOUNT_PULL], caller("user/dev", OTHER, action="ecr:PutImage"), "NONE", id="cross-account: no push"
    ),
    pytest.param([CROSS_ACCOUNT_PULL], caller("user/dev", THIRD), "NONE", id="cross-account pull: other accounts"),
    pytest.param([USER_PUSH], caller("user/push-user", action="ecr:PutImage"), "ALLOW", id="push user may push"),
    pytest.param(
        [USER_PUSH], caller("user/push-user", action="ecr:UploadLayerPart"), "ALLOW", id="push user may upload"
    ),
    pytest.param([USER_PUSH], caller("user/other", action="ecr:PutImage"), "NONE", id="push: other user"),
    pytest.param([USER_PUSH], caller("root", action="ecr:PutImage"), "NONE", id="push: root is not the user"),
    pytest.param([USER_PUSH], caller("user/push-user", action="ecr:DeleteRepository"), "NONE", id="push: not delete"),
    pytest.param(
        [DENY_OUTSIDE_IPS, allow()],
        caller(keys={"aws:SourceIp": "203.0.113.7"}),
        "ALLOW",
        id="source ip inside the ranges",
    ),
    pytest.param(
        [DENY_OUTSIDE_IPS, allow()], caller(keys={"aws:SourceIp": "198.51.100.1"}), "DENY", id="source ip outside"
    ),
    pytest.param([DENY_OUTSIDE_IPS, allow()], caller(), "DENY", id="source ip missing: negated operator is true, deny"),
    pytest.param(
        [TAGGED_PULL], caller("user/x", OTHER, keys={"aws:ResourceTag/team": "web"}), "ALLOW", id="resource tag"
    ),
    pytest.param(
        [TAGGED_PULL], caller("user/x", OTHER, keys={"aws:ResourceTag/team": "db"}), "NONE", id="resource tag differs"
    ),
    pytest.param([TAGGED_PULL], caller("user/x", OTHER), "NONE", id="resource tag missing"),
    pytest.param(
        [ECR_TAGGED_PULL],
        caller("user/x", OTHER, keys={"ecr:ResourceTag/environment": "prod"}),
        "ALLOW",
        id="ecr:ResourceTag",
    ),
    pytest.param(
        [TAGGED_CREATE],
        caller(action="ecr:CreateRepository", keys={"aws:RequestTag/team": "web", "aws:TagKeys": ["team"]}),
        "ALLOW",
        id="request tag + allowed tag keys",
    ),
    pytest.param(
        [TAGGED_CREATE],
        caller(
            action="ecr:CreateRepository",
            keys={"aws:RequestTag/team": "web", "aws:TagKeys": ["team", "environment"]},
        ),
        "ALLOW",
        id="request tag + all allowed tag keys",
    ),
    pytest.param(
        [TAGGED_CREATE],
        caller(action="ecr:CreateRepository", keys={"aws:RequestTag/team": "web", "aws:TagKeys": ["team", "cost"]}),
        "NONE",
        id="request tag + one tag key not allowed",
    ),
    pytest.param(
        [TAGGED_CREATE],
        caller(action="ecr:TagResource", keys={"aws:RequestTag/team": "ops", "aws:TagKeys": ["team"]}),
        "NONE",
        id="request tag value differs",
    ),
]


@pytest.mark.parametrize(("statements", "ctx", "expected"), EXAMPLES)
def test_documented_ecr_examples(statements: list[Stmt], ctx: RequestContext, expected: Verdict) -> None:
    assert evaluate(resource_policy(*statements), ctx) == expected


# ---------------------------------------------------------------------------------------------
# Tricky corners of the language (kind, statements, ctx, verdict).

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OWNER_REPOS = f"arn:aws:ecr:us-east-1:{OWNER}:repository"

TRICKY: list[Any] = [
    # NotAction / NotResource
    pytest.param(
        "resource",
        [deny("*", NotAction=PULL), allow()],
        caller(action="ecr:PutImage"),
        "DENY",
        id="NotAction+Deny: everything but pull is denied",
    ),
    pytest.param(
        "resource",
        [{"Effect": "Deny", "Principal": "*", "NotAction": PULL}, allow()],
        caller(action="ecr:BatchGetImage"),
        "ALLOW",
        id="NotAction+Deny: pull is not denied",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "NotResource": f"{OWNER_REPOS}/secret-*"}],
        caller(),
        "ALLOW",
        id="NotResource: other repository",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "NotResource": f"{OWNER_REPOS}/secret-*"}],
        caller(resource=f"{OWNER_REPOS}/secret-keys"),
        "NONE",
        id="NotResource: excluded repository",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/team-?/*"}],
        caller(resource=f"{OWNER_REPOS}/team-a/web"),
        "ALLOW",
        id="Resource wildcards * and ?",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/team-?/*"}],
        caller(resource=f"{OWNER_REPOS}/team-ab/web"),
        "NONE",
        id="Resource ? is exactly one character",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/App"}],
        caller(resource=f"{OWNER_REPOS}/app"),
        "NONE",
        id="Resource ARNs are case-sensitive",
    ),
    pytest.param(
        "resource",
        [allow(Resource=f"{OWNER_REPOS}/team-*")],
        caller(resource=f"{OWNER_REPOS}/other"),
        "NONE",
        id="Resource given in a resource policy (registry policy) restricts",
    ),
    # principals
    pytest.param("resource", [allow("*")], caller("user/x", THIRD), "ALLOW", id='Principal "*" is everyone'),
    pytest.param("resource", [allow(aws("*"))], caller("user/x", THIRD), "ALLOW", id='{"AWS": "*"} is everyone'),
    pytest.param("resource", [allow("*")], caller("service:ecr.amazonaws.com"), "ALLOW", id='"*" includes services'),
    pytest.param("resource", [allow(aws(OTHER))], caller("user/x", OTHER), "ALLOW", id="account id: its users"),
    pytest.param("resource", [allow(aws(OTHER))], caller("root", OTHER), "ALLOW", id="account id: its root"),
    pytest.param("resource", [allow(aws(OTHER))], caller("role/ci", OTHER), "ALLOW", id="account id: its roles"),
    pytest.param("resource", [allow(aws(OTHER))], caller("user/x", THIRD), "NONE", id="account id: not others"),
    pytest.param(
        "resource",
        [allow(aws(f"arn:aws:iam::{OTHER}:user/bob"))],
        caller("user/bob", OTHER),
        "ALLOW",
        id="user ARN: that user",
    ),
    pytest.param(
        "resource",
        [allow(aws(f"arn:aws:iam::{OTHER}:user/bob"))],
        caller("user/bobby", OTHER),
        "NONE",
        id="user ARN: exact, not a prefix",
    ),
    pytest.param(
        "resource",
        [allow(aws(f"arn:aws:iam::{OTHER}:user/bob"))],
        caller("root", OTHER),
        "NONE",
        id="user ARN: not the account root",
    ),
    pytest.param(
        "resource",
        [allow(aws(f"arn:aws:iam::{OTHER}:role/ops/ci"))],
        caller("role/ci", OTHER),
        "ALLOW",
        id="role ARN (with path) matches its assumed-role sessions",
    ),
    pytest.param(
        "resource",
        [allow({"Service": "replication.ecr.amazonaws.com"})],
        caller("service:replication.ecr.amazonaws.com"),
        "ALLOW",
        id="service principal: the service",
    ),
    pytest.param(
        "resource",
        [allow({"Service": "replication.ecr.amazonaws.com"})],
        caller("user/x"),
        "NONE",
        id="service principal: not users",
    ),
    pytest.param(
        "resource", [allow(aws(OWNER))], caller("service:ecr.amazonaws.com"), "NONE", id="account: not services"
    ),
    pytest.param(
        "resource",
        [deny({"AWS": [f"arn:aws:iam::{OWNER}:user/bob", f"arn:aws:iam::{OWNER}:root"]}, **{})],
        caller("user/alice"),
        "DENY",
        id="Principal list",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ArnEquals={"aws:PrincipalArn": f"arn:aws:iam::{OTHER}:role/ci"}))],
        caller("role/ci", OTHER),
        "ALLOW",
        id="a role session's aws:PrincipalArn is the role ARN",
    ),
    # NotPrincipal: a caller is exempt only if its account and its user / role are both listed
    pytest.param(
        "resource",
        [{"Effect": "Deny", "NotPrincipal": aws(f"arn:aws:iam::{OWNER}:user/bob", OWNER), "Action": "ecr:*"}],
        caller("user/bob"),
        "NONE",
        id="NotPrincipal: listed user and account are exempt",
    ),
    pytest.param(
        "resource",
        [{"Effect": "Deny", "NotPrincipal": aws(f"arn:aws:iam::{OWNER}:user/bob", OWNER), "Action": "ecr:*"}],
        caller("user/alice"),
        "DENY",
        id="NotPrincipal: other users of the account are denied",
    ),
    pytest.param(
        "resource",
        [{"Effect": "Deny", "NotPrincipal": aws(f"arn:aws:iam::{OWNER}:user/bob", OWNER), "Action": "ecr:*"}],
        caller("root"),
        "NONE",
        id="NotPrincipal: the listed account's root is exempt",
    ),
    pytest.param(
        "resource",
        [{"Effect": "Deny", "NotPrincipal": aws(f"arn:aws:iam::{OWNER}:user/bob"), "Action": "ecr:*"}],
        caller("user/bob"),
        "DENY",
        id="NotPrincipal: user without its account is still denied",
    ),
    # IfExists, Null, missing keys
    pytest.param(
        "resource",
        [allow(**cond(StringEqualsIfExists={"aws:ResourceTag/team": "web"}))],
        caller(),
        "ALLOW",
        id="IfExists: missing key matches",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringEqualsIfExists={"aws:ResourceTag/team": "web"}))],
        caller(keys={"aws:ResourceTag/team": "db"}),
        "NONE",
        id="IfExists: present key is checked",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringEquals={"aws:ResourceTag/team": "web"}))],
        caller(),
        "NONE",
        id="missing key without IfExists: no match",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringNotEquals={"aws:ResourceTag/team": "web"}))],
        caller(),
        "ALLOW",
        id="missing key, negated operator: match",
    ),
    pytest.param(
        "resource",
        [allow(**cond(Null={"aws:ResourceTag/team": "true"}))],
        caller(),
        "ALLOW",
        id="Null true: key absent",
    ),
    pytest.param(
        "resource",
        [allow(**cond(Null={"aws:ResourceTag/team": "true"}))],
        caller(keys={"aws:ResourceTag/team": "web"}),
        "NONE",
        id="Null true: key present",
    ),
    pytest.param(
        "resource",
        [allow(**cond(Null={"aws:ResourceTag/team": False}))],
        caller(keys={"aws:ResourceTag/team": "web"}),
        "ALLOW",
        id="Null false: key present",
    ),
    pytest.param(
        "resource",
        [allow(**cond(Null={"aws:TagKeys": "true"}))],
        caller(keys={"aws:TagKeys": []}),
        "ALLOW",
        id="Null: empty multi-valued key counts as absent",
    ),
    # set operators
    pytest.param(
        "resource",
        [allow(**cond(ForAllValues__StringEquals={"aws:TagKeys": ["team"]}))],
        caller(keys={"aws:TagKeys": []}),
        "ALLOW",
        id="ForAllValues: empty set is true",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ForAllValues__StringEquals={"aws:TagKeys": ["team"]}))],
        caller(),
        "ALLOW",
        id="ForAllValues: missing key is true",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ForAnyValue__StringEquals={"aws:TagKeys": ["team"]}))],
        caller(keys={"aws:TagKeys": []}),
        "NONE",
        id="ForAnyValue: empty set is false",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ForAnyValue__StringEquals={"aws:TagKeys": ["team"]}))],
        caller(keys={"aws:TagKeys": ["cost", "team"]}),
        "ALLOW",
        id="ForAnyValue: one value matches",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ForAllValues__StringNotEquals={"aws:TagKeys": ["owner", "admin"]}))],
        caller(keys={"aws:TagKeys": ["team", "admin"]}),
        "NONE",
        id="ForAllValues negated: one forbidden value fails",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ForAnyValue__StringLike={"aws:TagKeys": ["env*"]}))],
        caller(keys={"aws:TagKeys": ["team", "environment"]}),
        "ALLOW",
        id="ForAnyValue:StringLike",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringEquals={"aws:TagKeys": "team"}))],
        caller(keys={"aws:TagKeys": ["cost", "team"]}),
        "ALLOW",
        id="multi-valued key without set operator: any value",
    ),
    # case-insensitivity
    pytest.param("resource", [allow(action="ECR:batchgetIMAGE")], caller(), "ALLOW", id="action names ignore case"),
    pytest.param("resource", [allow(action="ecr:batch*")], caller(), "ALLOW", id="action wildcard ignores case"),
    pytest.param("resource", [allow(action="ecr:Get*")], caller(), "NONE", id="action wildcard does not over-match"),
    pytest.param("resource", [allow(action="ecr:BatchGetImag?")], caller(), "ALLOW", id="action ? wildcard"),
    pytest.param("resource", [allow(action="*")], caller(), "ALLOW", id='action "*"'),
    pytest.param("resource", [allow(action="s3:*")], caller(), "NONE", id="other service's actions"),
    pytest.param(
        "resource",
        [allow(**cond(IpAddress={"AWS:SOURCEIP": "10.0.0.0/8"}))],
        caller(keys={"aws:SourceIp": "10.1.2.3"}),
        "ALLOW",
        id="condition key names ignore case (policy side)",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringEquals={"aws:ResourceTag/Team": "web"}))],
        caller(keys={"AWS:RESOURCETAG/TEAM": "web"}),
        "ALLOW",
        id="condition key names ignore case (request side)",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringEquals={"aws:ResourceTag/team": "Web"}))],
        caller(keys={"aws:ResourceTag/team": "web"}),
        "NONE",
        id="StringEquals values are case-sensitive",
    ),
    pytest.param(
        "resource",
        [allow(**cond(stringequalsignorecase={"aws:ResourceTag/team": "Web"}))],
        caller(keys={"aws:ResourceTag/team": "wEB"}),
        "ALLOW",
        id="StringEqualsIgnoreCase (operator name in any case)",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringNotEquals={"aws:ResourceTag/team": ["web", "db"]}))],
        caller(keys={"aws:ResourceTag/team": "db"}),
        "NONE",
        id="negated operator with several values: NOR",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringLike={"aws:username": "dev-?-*"}))],
        caller("user/dev-a-bob"),
        "ALLOW",
        id="StringLike wildcards; aws:username derived",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringNotLike={"aws:username": "dev-*"}))],
        caller("user/dev-bob"),
        "NONE",
        id="StringNotLike",
    ),
    # dates and numbers
    pytest.param(
        "resource",
        [allow(**cond(DateGreaterThan={"aws:CurrentTime": "2025-01-01T00:00:00Z"}))],
        caller(keys={"aws:CurrentTime": NOW}),
        "ALLOW",
        id="DateGreaterThan with a datetime",
    ),
    pytest.param(
        "resource",
        [allow(**cond(DateLessThan={"aws:CurrentTime": "2025-01-01"}))],
        caller(keys={"aws:CurrentTime": NOW}),
        "NONE",
        id="DateLessThan with a date-only bound",
    ),
    pytest.param(
        "resource",
        [allow(**cond(DateLessThanEquals={"aws:CurrentTime": 1748779200}))],
        caller(keys={"aws:CurrentTime": "2025-06-01T12:00:00+00:00"}),
        "ALLOW",
        id="DateLessThanEquals epoch bound, ISO string request value",
    ),
    pytest.param(
        "resource",
        [allow(**cond(DateEquals={"aws:CurrentTime": "2025-06-01T14:00:00+02:00"}))],
        caller(keys={"aws:CurrentTime": NOW}),
        "ALLOW",
        id="DateEquals across time zones",
    ),
    pytest.param(
        "resource",
        [allow(**cond(DateNotEquals={"aws:CurrentTime": "2025-06-01T12:00:00Z"}))],
        caller(keys={"aws:CurrentTime": NOW}),
        "NONE",
        id="DateNotEquals",
    ),
    pytest.param(
        "resource",
        [allow(**cond(DateGreaterThan={"aws:CurrentTime": "2025-01-01T00:00:00Z"}))],
        caller(keys={"aws:CurrentTime": "not a date"}),
        "NONE",
        id="Date with an unparsable request value",
    ),
    pytest.param(
        "resource",
        [allow(**cond(NumericLessThan={"ecr:imageCount": "10"}))],
        caller(keys={"ecr:imageCount": 5}),
        "ALLOW",
        id="NumericLessThan",
    ),
    pytest.param(
        "resource",
        [allow(**cond(NumericLessThan={"ecr:imageCount": 10}))],
        caller(keys={"ecr:imageCount": "15"}),
        "NONE",
        id="NumericLessThan with a string request value",
    ),
    pytest.param(
        "resource",
        [allow(**cond(NumericGreaterThanEquals={"ecr:imageCount": 2.5}))],
        caller(keys={"ecr:imageCount": "2.5"}),
        "ALLOW",
        id="NumericGreaterThanEquals decimal",
    ),
    pytest.param(
        "resource",
        [allow(**cond(NumericEquals={"ecr:imageCount": 3}))],
        caller(keys={"ecr:imageCount": "three"}),
        "NONE",
        id="Numeric with a non-number request value",
    ),
    pytest.param(
        "resource",
        [allow(**cond(NumericNotEquals={"ecr:imageCount": [1, 2]}))],
        caller(keys={"ecr:imageCount": 3}),
        "ALLOW",
        id="NumericNotEquals",
    ),
    # Bool, Binary
    pytest.param(
        "resource",
        [allow(**cond(Bool={"aws:SecureTransport": "true"}))],
        caller(keys={"aws:SecureTransport": True}),
        "ALLOW",
        id='Bool "true" vs True',
    ),
    pytest.param(
        "resource",
        [allow(**cond(Bool={"aws:SecureTransport": True}))],
        caller(keys={"aws:SecureTransport": "TRUE"}),
        "ALLOW",
        id='Bool true vs "TRUE"',
    ),
    pytest.param(
        "resource",
        [allow(**cond(Bool={"aws:SecureTransport": "true"}))],
        caller(keys={"aws:SecureTransport": False}),
        "NONE",
        id="Bool false",
    ),
    pytest.param(
        "resource",
        [deny(**cond(Bool={"aws:PrincipalIsAWSService": "false"})), allow()],
        caller("service:ecr.amazonaws.com"),
        "ALLOW",
        id="aws:PrincipalIsAWSService derived",
    ),
    pytest.param(
        "resource",
        [allow(**cond(BinaryEquals={"ecr:blob": "QmluYXJ5"}))],
        caller(keys={"ecr:blob": "QmluYXJ5"}),
        "ALLOW",
        id="BinaryEquals",
    ),
    # IP addresses
    pytest.param(
        "resource",
        [allow(**cond(IpAddress={"aws:SourceIp": "2001:db8::/32"}))],
        caller(keys={"aws:SourceIp": "2001:db8:1::7"}),
        "ALLOW",
        id="IPv6 CIDR",
    ),
    pytest.param(
        "resource",
        [allow(**cond(IpAddress={"aws:SourceIp": "2001:db8::/32"}))],
        caller(keys={"aws:SourceIp": "2001:db9::1"}),
        "NONE",
        id="IPv6 outside",
    ),
    pytest.param(
        "resource",
        [allow(**cond(IpAddress={"aws:SourceIp": ["2001:db8::/32", "192.0.2.0/24"]}))],
        caller(keys={"aws:SourceIp": "192.0.2.200"}),
        "ALLOW",
        id="mixed IPv4/IPv6 list",
    ),
    pytest.param(
        "resource",
        [allow(**cond(IpAddress={"aws:SourceIp": "192.0.2.10"}))],
        caller(keys={"aws:SourceIp": "192.0.2.10"}),
        "ALLOW",
        id="bare address is a /32",
    ),
    pytest.param(
        "resource",
        [allow(**cond(IpAddress={"aws:SourceIp": "192.0.2.0/24"}))],
        caller(keys={"aws:SourceIp": "bogus"}),
        "NONE",
        id="unparsable request address",
    ),
    # ARN operators: per-segment matching
    pytest.param(
        "resource",
        [allow(**cond(ArnLike={"aws:PrincipalArn": "arn:aws:iam::*:user/dev-*"}))],
        caller("user/dev-1", THIRD),
        "ALLOW",
        id="ArnLike",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ArnEquals={"aws:SourceArn": f"arn:aws:ecr:*:{OWNER}:repository/*"}))],
        caller(keys={"aws:SourceArn": f"arn:aws:ecr:us-east-1:x:{OWNER}:repository/a"}),
        "NONE",
        id="Arn wildcard stays within its segment",
    ),
    pytest.param(
        "resource",
        [allow(**cond(ArnNotLike={"aws:PrincipalArn": f"arn:aws:iam::{OWNER}:user/*"}))],
        caller("root"),
        "ALLOW",
        id="ArnNotLike",
    ),
    # policy variables
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/${{aws:username}}/*"}],
        caller("user/alice", resource=f"{OWNER_REPOS}/alice/web"),
        "ALLOW",
        id="${aws:username} in Resource",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/${{aws:username}}/*"}],
        caller("user/bob", resource=f"{OWNER_REPOS}/alice/web"),
        "NONE",
        id="${aws:username}: other user",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/${{aws:username}}/*"}],
        caller("role/ci", resource=f"{OWNER_REPOS}/alice/web"),
        "NONE",
        id="${aws:username}: no value, no match",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/${{aws:username, 'shared'}}"}],
        caller("role/ci", resource=f"{OWNER_REPOS}/shared"),
        "ALLOW",
        id="policy variable default",
    ),
    pytest.param(
        "identity",
        [{"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/a${{*}}"}],
        caller(resource=f"{OWNER_REPOS}/abc"),
        "NONE",
        id="${*} is a literal star",
    ),
    pytest.param(
        "resource",
        [allow(**cond(StringEquals={"aws:ResourceTag/owner": "${aws:username}"}))],
        caller("user/alice", keys={"aws:ResourceTag/owner": "alice"}),
        "ALLOW",
        id="policy variable in a condition value",
    ),
    # combinations
    pytest.param(
        "resource",
        [allow(**cond(StringEquals={"aws:ResourceTag/team": "web"}, Bool={"aws:SecureTransport": "true"}))],
        caller(keys={"aws:ResourceTag/team": "web", "aws:SecureTransport": False}),
        "NONE",
        id="several operators: AND",
    ),
    pytest.param(
        "resource",
        [allow(), deny(action="ecr:BatchGetImage")],
        caller(),
        "DENY",
        id="Deny beats Allow in one document",
    ),
]


@pytest.mark.parametrize(("kind", "statements", "ctx", "expected"), TRICKY)
def test_tricky_cases(kind: PolicyKind, statements: list[Stmt], ctx: RequestContext, expected: Verdict) -> None:
    make = resource_policy if kind == "resource" else identity_policy
    doc = make(*statements)
    assert evaluate(doc, ctx) == expected


def test_policy_variables_are_literal_in_2008_10_17() -> None:
    stmt = {"Effect": "Allow", "Action": "ecr:*", "Resource": f"{OWNER_REPOS}/${{aws:username}}"}
    doc = identity_policy(stmt, version="2008-10-17")
    assert evaluate(doc, caller("user/alice", resource=f"{OWNER_REPOS}/alice")) == "NONE"
    assert evaluate(doc, caller("user/alice", resource=f"{OWNER_REPOS}/${{aws:username}}")) == "ALLOW"


def test_explain_and_statement_matches() -> None:
    doc = resource_policy(allow(Sid="Pull", action=PULL), deny(Sid="NoPush", action="ecr:PutImage"))
    verdict, statement = explain(doc, caller(action="ecr:PutImage"))
    assert verdict == "DENY"
    assert statement is not None
    assert statement.sid == "NoPush"
    assert statement_matches(doc.statements[0], caller())
    assert not statement_matches(doc.statements[1], caller())
    assert explain(doc, caller(action="ecr:ListImages")) == ("NONE", None)


def test_single_statement_object_and_defaults() -> None:
    doc = parse_policy(json.dumps({"Statement": allow()}), kind="resource")
    assert doc.version == "2008-10-17"
    assert len(doc.statements) == 1
    assert doc.statements[0].resources is None


def test_resource_policy_sids_may_repeat() -> None:
    doc = resource_policy(allow(Sid="Same"), allow(Sid="Same", action="ecr:PutImage"))
    assert [s.sid for s in doc.statements] == ["Same", "Same"]


# ---------------------------------------------------------------------------------------------
# Cross-policy decisions.

ALLOW_PULL_ID = {"Effect": "Allow", "Action": PULL, "Resource": "*"}
DENY_ALL_ID = {"Sid": "DenyAll", "Effect": "Deny", "Action": "ecr:*", "Resource": "*"}

DECISIONS = [
    # (identity statements, resource statements, ctx, is_root, allowed, denial)
    pytest.param([ALLOW_PULL_ID], [], caller(), False, True, None, id="same account: identity allow suffices"),
    pytest.param([], [allow(aws(OWNER))], caller(), False, True, None, id="same account: resource allow suffices"),
    pytest.param([], [], caller(), False, False, "no-identity-allow", id="same account: nothing allows"),
    pytest.param(
        [], [CROSS_ACCOUNT_PULL], caller("user/x", OTHER), False, False, "no-identity-allow", id="cross: resource only"
    ),
    pytest.param(
        [ALLOW_PULL_ID], [], caller("user/x", OTHER), False, False, "no-resource-allow", id="cross: identity only"
    ),
    pytest.param([ALLOW_PULL_ID], [CROSS_ACCOUNT_PULL], caller("user/x", OTHER), False, True, None, id="cross: both"),
    pytest.param(
        [ALLOW_PULL_ID],
        [allow(aws(THIRD))],
        caller("user/x", OTHER),
        False,
        False,
        "no-resource-allow",
        id="cross: resource policy names another account",
    ),
    pytest.param([], [], caller("root"), True, True, None, id="root in its own account"),
    pytest.param(
        [],
        [deny(aws(OWNER), "ecr:BatchGetImage", Sid="NoPull")],
        caller("root"),
        True,
        False,
        "explicit-resource",
        id="explicit deny beats root",
    ),
    pytest.param([], [CROSS_ACCOUNT_PULL], caller("root", OTHER), True, True, None, id="cross-account root"),
    pytest.param([], [], caller("root", OTHER), True, False, "no-resource-allow", id="cross-account root, no policy"),
    pytest.param(
        [DENY_ALL_ID], [allow()], caller(), False, False, "explicit-identity", id="identity deny beats resource allow"
    ),
    pytest.param(
        [ALLOW_PULL_ID],
        [deny(Sid="Lockdown")],
        caller(),
        False,
        False,
        "explicit-resource",
        id="resource deny beats identity allow",
    ),
    pytest.param(
        [],
        [allow({"Service": "ecr.amazonaws.com"})],
        caller("service:ecr.amazonaws.com"),
        False,
        True,
        None,
        id="service: resource policy allows",
    ),
    pytest.param(
        [ALLOW_PULL_ID],
        [],
        caller("service:ecr.amazonaws.com"),
        False,
        False,
        "no-resource-allow",
        id="service: needs the resource policy",
    ),
]


@pytest.mark.parametrize(("identity", "resource", "ctx", "is_root", "allowed", "denial"), DECISIONS)
def test_decide(
    identity: list[Stmt],
    resource: list[Stmt],
    ctx: RequestContext,
    is_root: bool,
    allowed: bool,
    denial: str | None,
) -> None:
    identity_docs = [identity_policy(*identity)] if identity else []
    resource_docs = [resource_policy(*resource)] if resource else []
    decision = decide(identity=identity_docs, resource=resource_docs, ctx=ctx, resource_account=OWNER, is_root=is_root)
    assert (decision.allowed, decision.denial) == (allowed, denial), decision.reason


def test_decision_reasons_name_the_policy_and_sid() -> None:
    repo = resource_policy(deny(Sid="Lockdown", action="ecr:PutImage"), name="repository policy of 'app'")
    decision = decide(
        identity=[], resource=[repo], ctx=caller(action="ecr:PutImage"), resource_account=OWNER, is_root=True
    )
    assert decision == Decision(
        False,
        "explicitly denied by repository policy of 'app', statement 'Lockdown'",
        "explicit-resource",
        "repository policy of 'app'",
        "Lockdown",
    )
    anonymous = identity_policy({"Effect": "Deny", "Action": "ecr:*", "Resource": "*"})
    decision = decide(identity=[anonymous], resource=[], ctx=caller(), resource_account=OWNER, is_root=False)
    assert decision.reason == "explicitly denied by identity-based policy, statement #0"
    decision = decide(identity=[], resource=[], ctx=caller("user/x", OTHER), resource_account=OWNER, is_root=False)
    assert decision.reason == "no resource-based policy allows the ecr:BatchGetImage action"
    allowed = decide(
        identity=[], resource=[resource_policy(allow(Sid="Pull"))], ctx=caller(), resource_account=OWNER, is_root=False
    )
    assert (allowed.allowed, allowed.sid) == (True, "Pull")


def test_access_denied_message() -> None:
    ctx = caller("user/x", OTHER)
    head = f"User: arn:aws:iam::{OTHER}:user/x is not authorized to perform: ecr:BatchGetImage on resource: {REPO}"
    implicit = decide(identity=[], resource=[], ctx=ctx, resource_account=OWNER, is_root=False)
    assert access_denied_message(ctx, implicit) == (
        f"{head} because no resource-based policy allows the ecr:BatchGetImage action"
    )
    explicit = decide(identity=[], resource=[resource_policy(deny())], ctx=ctx, resource_account=OWNER, is_root=False)
    assert access_denied_message(ctx, explicit) == f"{head} with an explicit deny in a resource-based policy"
    explicit = decide(
        identity=[identity_policy(DENY_ALL_ID)], resource=[], ctx=ctx, resource_account=OWNER, is_root=False
    )
    assert access_denied_message(ctx, explicit) == f"{head} with an explicit deny in an identity-based policy"
    assert access_denied_message(ctx, "no identity-based policy allows the ecr:BatchGetImage action") == (
        f"{head} because no identity-based policy allows the ecr:BatchGetImage action"
    )


# ---------------------------------------------------------------------------------------------
# Parse errors: every kind, with its message.

GOOD = {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"}


def with_statement(**changes: Any) -> str:
    statement = {**GOOD, **changes}
    return json.dumps({"Version": "2012-10-17", "Statement": [{k: v for k, v in statement.items() if v is not None}]})


def with_condition(condition: Any) -> str:
    return with_statement(Condition=condition)


PARSE_ERRORS = [
    pytest.param(
        "resource", "{", "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"
    ),
    pytest.param("resource", "  ", "the policy text is empty"),
    pytest.param("resource", "[]", "the policy must be a JSON object, got array"),
    pytest.param("resource", '{"Statement": [], "Statement": []}', "duplicate key 'Statement'"),
    pytest.param("resource", '{"Statement": [{"Effect": NaN}]}', "NaN is not a valid JSON value"),
    pytest.param("resource", '{"Version": "2012-10-17", "Statment": []}', "unknown top-level element 'Statment'"),
    pytest.param("resource", '{"Version": "2012-10-18", "Statement": []}', "Version must be '2012-10-17' or"),
    pytest.param(
        "resource", '{"Version": 2012, "Statement": []}', "Version must be '2012-10-17' or '2008-10-17', got 2012"
    ),
    pytest.param("resource", '{"Id": 5, "Statement": []}', "Id must be a string, got number"),
    pytest.param("resource", '{"Version": "2012-10-17"}', "the policy has no Statement"),
    pytest.param("resource", '{"Statement": []}', "Statement must not be empty"),
    pytest.param("resource", '{"Statement": "x"}', "Statement must be an object or a list of objects, got string"),
    pytest.param("resource", '{"Statement": [1]}', "Statement[0] must be an object, got number"),
    pytest.param("resource", with_statement(Resources="*"), "Statement[0]: unknown element 'Resources'"),
    pytest.param("resource", with_statement(Sid=1), "Statement[0].Sid must be a string, got number"),
    pytest.param(
        "identity",
        json.dumps({"Statement": {"Sid": "my sid", "Effect": "Allow", "Action": "ecr:*", "Resource": "*"}}),
        "Statement[0].Sid 'my sid' may contain only letters and digits in an identity-based policy",
    ),
    pytest.param(
        "identity",
        json.dumps({"Statement": [{"Sid": "A", "Effect": "Allow", "Action": "ecr:*", "Resource": "*"}] * 2}),
        "Sid 'A' is used by more than one statement",
    ),
    pytest.param("resource", with_statement(Effect=None), "Statement[0] must have an Effect"),
    pytest.param(
        "resource", with_statement(Effect="allow"), "Statement[0].Effect must be 'Allow' or 'Deny', got \"allow\""
    ),
    pytest.param(
        "identity", with_statement(Resource="*"), "Statement[0]: Principal is not allowed in an identity-based policy"
    ),
    pytest.param(
        "identity",
        with_statement(Principal=None, NotPrincipal="*", Resource="*"),
        "Statement[0]: NotPrincipal is not allowed in an identity-based policy",
    ),
    pytest.param(
        "resource", with_statement(Principal=None), "Statement[0] must have Principal or NotPrincipal in a resource"
    ),
    pytest.param(
        "resource", with_statement(NotPrincipal="*"), "Statement[0] has both Principal and NotPrincipal; use one"
    ),
    pytest.param(
        "resource",
        with_statement(Principal=None, NotPrincipal={"AWS": OWNER}),
        "Statement[0]: NotPrincipal can be used only with Effect Deny",
    ),
    pytest.param("resource", with_statement(Principal="everyone"), 'Statement[0].Principal must be "*" or an object'),
    pytest.param("resource", with_statement(Principal={}), "Statement[0].Principal must name at least one principal"),
    pytest.param(
        "resource", with_statement(Principal={"AWS": []}), "Statement[0].Principal.AWS must not be an empty list"
    ),
    pytest.param(
        "resource",
        with_statement(Principal={"AWS": [OWNER, 5]}),
        "Statement[0].Principal.AWS must be a string or a list of strings, got number",
    ),
    pytest.param(
        "resource", with_statement(Principal={"User": "bob"}), "Statement[0].Principal: unknown principal type 'User'"
    ),
    pytest.param(
        "resource",
        with_statement(Principal={"AWS": f"arn:aws:iam::{OWNER}:user/*"}),
        f"Statement[0].Principal.AWS: 'arn:aws:iam::{OWNER}:user/*' has a wildcard",
    ),
    pytest.param(
        "resource",
        with_statement(Principal={"AWS": "arn:aws:iam::*:root"}),
        "Statement[0].Principal.AWS: 'arn:aws:iam::*:root' has a wildcard",
    ),
    pytest.param(
        "resource", with_statement(Principal={"AWS": "bob"}), "Statement[0].Principal.AWS: invalid principal 'bob'"
    ),
    pytest.param(
        "resource", with_statement(Principal={"Service": "ecr"}), "Statement[0].Principal.Service: invalid service"
    ),
    pytest.param("resource", with_statement(NotAction="ecr:*"), "Statement[0] has both Action and NotAction; use one"),
    pytest.param("resource", with_statement(Action=None), "Statement[0] must have Action or NotAction"),
    pytest.param("resource", with_statement(Action=[]), "Statement[0].Action must not be an empty list"),
    pytest.param("resource", with_statement(Action=7), "Statement[0].Action must be a string or a list of strings"),
    pytest.param(
        "resource",
        with_statement(Action="BatchGetImage"),
        "Statement[0].Action: 'BatchGetImage' is not an action (expected service:Action",
    ),
    pytest.param("resource", with_statement(Action="ecr:"), "Statement[0].Action: 'ecr:' is not an action"),
    pytest.param("identity", with_statement(Principal=None), "Statement[0] must have Resource or NotResource"),
    pytest.param(
        "resource",
        with_statement(Resource="*", NotResource="*"),
        "Statement[0] has both Resource and NotResource; use one",
    ),
    pytest.param(
        "resource", with_statement(Resource="repository/app"), "Statement[0].Resource: 'repository/app' is not \"*\""
    ),
    pytest.param(
        "resource",
        with_statement(Resource="arn:aws:ecr:us-east-1:1:repository/${aws:user name}"),
        "Statement[0].Resource: invalid policy variable '${aws:user name}'",
    ),
    pytest.param(
        "resource", with_condition([]), "Statement[0].Condition must be an object mapping condition operators"
    ),
    pytest.param(
        "resource",
        with_condition({"StringEqual": {"aws:username": "x"}}),
        "Statement[0].Condition: unknown condition operator 'StringEqual'",
    ),
    pytest.param(
        "resource",
        with_condition({"ForSomeValues:StringEquals": {"aws:TagKeys": "x"}}),
        "Statement[0].Condition: unknown set operator 'ForSomeValues'",
    ),
    pytest.param(
        "resource",
        with_condition({"NullIfExists": {"aws:TagKeys": "true"}}),
        "Statement[0].Condition: the Null operator takes neither IfExists nor a set operator ('NullIfExists')",
    ),
    pytest.param(
        "resource",
        with_condition({"StringEquals": ["aws:username"]}),
        "Statement[0].Condition.StringEquals must be an object mapping condition keys to values, got array",
    ),
    pytest.param(
        "resource", with_condition({"StringEquals": {}}), "Statement[0].Condition.StringEquals has no condition keys"
    ),
    pytest.param(
        "resource",
        with_condition({"IpAddress": {"SourceIp": "10.0.0.0/8"}}),
        "Statement[0].Condition.IpAddress: 'SourceIp' is not a condition key",
    ),
    pytest.param(
        "resource",
        with_condition({"StringEquals": {"aws:username": None}}),
        "Statement[0].Condition.StringEquals.aws:username values must be strings, numbers or booleans, got null",
    ),
    pytest.param(
        "resource",
        with_condition({"StringEquals": {"aws:username": []}}),
        "Statement[0].Condition.StringEquals.aws:username must have at least one value",
    ),
    pytest.param(
        "resource",
        with_condition({"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}),
        "Statement[0].Condition.IpAddress.aws:SourceIp: '10.0.0.0/33' is not an IP address or CIDR block",
    ),
    pytest.param(
        "resource",
        with_condition({"NotIpAddress": {"aws:SourceIp": ["2001:db8::/129"]}}),
        "Statement[0].Condition.NotIpAddress.aws:SourceIp: '2001:db8::/129' is not an IP address or CIDR block",
    ),
    pytest.param(
        "resource",
        with_condition({"IpAddress": {"aws:SourceIp": 10}}),
        "Statement[0].Condition.IpAddress.aws:SourceIp: '10' is not an IP address or CIDR block",
    ),
    pytest.param(
        "resource",
        with_condition({"DateLessThan": {"aws:CurrentTime": "yesterday"}}),
        "Statement[0].Condition.DateLessThan.aws:CurrentTime: 'yesterday' is not an ISO 8601 date or epoch seconds",
    ),
    pytest.param(
        "resource",
        with_condition({"NumericEquals": {"ecr:count": "ten"}}),
        "Statement[0].Condition.NumericEquals.ecr:count: 'ten' is not a number",
    ),
    pytest.param(
        "resource",
        with_condition({"Bool": {"aws:SecureTransport": "yes"}}),
        "Statement[0].Condition.Bool.aws:SecureTransport: 'yes' is not 'true' or 'false'",
    ),
    pytest.param(
        "resource",
        with_condition({"BinaryEquals": {"ecr:blob": "!!"}}),
        "Statement[0].Condition.BinaryEquals.ecr:blob: '!!' is not base64",
    ),
    pytest.param(
        "resource",
        with_condition({"Null": {"aws:TagKeys": "maybe"}}),
        "Statement[0].Condition.Null.aws:TagKeys: Null takes 'true' or 'false'",
    ),
    pytest.param(
        "resource",
        "x" * (MAX_POLICY_LENGTH + 1),
        f"the policy is {MAX_POLICY_LENGTH + 1} characters long; the maximum is {MAX_POLICY_LENGTH}",
    ),
]


@pytest.mark.parametrize(("kind", "text", "detail"), PARSE_ERRORS)
def test_parse_errors(kind: PolicyKind, text: str, detail: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, kind=kind)
    assert caught.value.detail.startswith(detail), caught.value.detail
    prefix = "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid policy document: "
    assert caught.value.message == f"{prefix}{caught.value.detail}'"


def test_policy_error_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError):
        parse_policy("{}", kind="resource")


def test_max_length_matches_the_botocore_model() -> None:
    model = botocore.session.get_session().get_service_model("ecr")
    for shape in ("RepositoryPolicyText", "RegistryPolicyText"):
        assert model.shape_for(shape).metadata["max"] == MAX_POLICY_LENGTH
    padded = policy_text(allow()).ljust(MAX_POLICY_LENGTH)
    assert len(parse_policy(padded, kind="resource").statements) == 1


@pytest.mark.parametrize(
    ("actions", "ok"),
    [
        (["ecr:ReplicateImage", "ecr:CreateRepository"], True),
        (["ECR:BatchImportUpstreamImage"], True),
        (["ecr:*"], True),
        (["ecr:ReplicateImage", "ecr:BatchGetImage"], False),
    ],
)
def test_registry_policy_scope_v1(actions: list[str], ok: bool) -> None:
    doc = resource_policy(allow(aws(OTHER), actions))
    check_registry_policy_scope(doc, "V2")
    if ok:
        check_registry_policy_scope(doc, "V1")
        return
    with pytest.raises(PolicyError) as caught:
        check_registry_policy_scope(doc, "V1")
    assert caught.value.message == (
        "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided'"
    )
    assert caught.value.detail == "ecr:BatchGetImage is not allowed in Statement[0] when REGISTRY_POLICY_SCOPE is V1"


# ---------------------------------------------------------------------------------------------
# Performance: evaluate runs on every request.


def test_evaluation_is_fast() -> None:
    statements = [
        allow(aws(f"arn:aws:iam::{OTHER}:user/u{i}"), PULL, Sid=f"S{i}", **cond(StringEquals={"aws:SourceVpce": "v"}))
        for i in range(6)
    ] + [
        deny(NotAction=PULL),
        deny(**cond(NotIpAddress={"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]})),
        allow(aws(OTHER), "ecr:Batch*", **cond(ForAllValues__StringLike={"aws:TagKeys": ["team*", "env"]})),
        allow(aws(OWNER), PUSH, Resource=f"{OWNER_REPOS}/team-*"),
    ]
    doc = resource_policy(*statements)
    ctx = caller("user/x", OTHER, keys={"aws:SourceIp": "10.1.2.3", "aws:TagKeys": ["team-a", "env"]})
    assert evaluate(doc, ctx) == "ALLOW"
    runs = 20_000
    start = time.perf_counter()
    for _ in range(runs):
        evaluate(doc, ctx)
    per_call = (time.perf_counter() - start) / runs
    assert per_call < 200e-6, f"{per_call * 1e6:.1f} µs per evaluation"
