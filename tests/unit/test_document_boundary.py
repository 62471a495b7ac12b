"""Documents inside ECR parameters (repository/registry policies, lifecycle policies) are parsed
by their own modules; malformed JSON of any kind there is an invalid policy, never an exception
that escapes as a server error."""

from __future__ import annotations

import pytest

from moorage.lifecycle import LifecyclePolicyError
from moorage.lifecycle import parse_policy as parse_lifecycle
from moorage.policy import PolicyError, PolicyKind, parse_policy

MALFORMED = [
    pytest.param("[" * 10_000, id="deep-arrays"),
    pytest.param('{"a":' * 3_000 + "1" + "}" * 3_000, id="deep-objects"),
    pytest.param('{"Version": ' + "1" * 5_000 + "}", id="huge-integer"),
    pytest.param('{"Version": NaN}', id="nan"),
]


@pytest.mark.parametrize("text", MALFORMED)
@pytest.mark.parametrize("kind", ["identity", "resource"])
def test_malformed_policy_text_is_a_policy_error(text: str, kind: PolicyKind) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text, kind=kind)


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_lifecycle_policy_text_is_a_lifecycle_policy_error(text: str) -> None:
    with pytest.raises(LifecyclePolicyError):
        parse_lifecycle(text)
