"""Property-based fuzz of every ECR operation against the real server, inputs from botocore's model.

For each operation of the installed model, Hypothesis (derandomized, so every run sends the same
requests) generates request bodies from the operation's input shape: members with right and
wrong JSON types, lengths at and past the bounds, pattern matches and misses, enum members and
near misses, unpaired surrogates written as `\\ud800` escapes, NUL, huge and non-finite numbers,
deep nesting, invalid UTF-8 and bodies that are not JSON at all. Every request is SigV4-signed by
botocore, so it gets past authentication to the JSON decoding, the validation and the handlers.

Properties: no answer is a 5xx; every answer is an AWS JSON error or result; a request answered
4xx leaves the visible state (repositories, images, tags, policies, catalog) as it was. A valid
mutating request may succeed: its new state becomes the baseline for the next request.
"""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    TARGET_PREFIX,
    Answer,
    Baseline,
    FuzzClient,
    fuzz_settings,
    is_read_only,
    restore_fixture,
)
from tests.fuzz.strategies import Body, body_for, dumps, nested

MODEL = botocore.session.get_session().get_service_model("ecr")
OPERATIONS = sorted(MODEL.operation_names)
EXAMPLES_PER_OPERATION = 8

FUZZ_SETTINGS = fuzz_settings(EXAMPLES_PER_OPERATION)


@pytest.fixture(scope="module")
def baseline(fuzz: FuzzClient) -> Baseline:
    restore_fixture(fuzz)
    return Baseline(fuzz)


def check_answer(operation: str, body: bytes, answer: Answer) -> dict[str, Any]:
    shown = f"{operation} {body[:200]!r} -> {answer.describe()}"
    assert answer.status < 500, shown
    assert answer.headers.get("content-type") == "application/x-amz-json-1.1", shown
    document = json.loads(answer.body)
    assert isinstance(document, dict), shown
    if answer.status != 200:
        assert 400 <= answer.status < 500, shown
        assert document.get("__type"), shown
        assert isinstance(document.get("message"), str), shown
        assert answer.headers.get("x-amzn-errortype") == document["__type"], shown
    return document


def after(baseline: Baseline, operation: str, body: bytes, answer: Answer) -> None:
    if is_read_only(operation):
        return
    now = baseline.client.snapshot()
    if answer.status >= 400:
        assert now == baseline.state, f"{operation} {body[:200]!r} answered {answer.describe()} but changed state"
    baseline.state = now


@pytest.mark.parametrize("operation", OPERATIONS)
def test_operation_never_fails_on_the_server(operation: str, fuzz: FuzzClient, baseline: Baseline) -> None:
    shape = MODEL.operation_model(operation).input_shape

    first = sorted(shape.members)[0] if shape is not None and shape.members else "repositoryName"

    # Every operation gets the two inputs that answered 500 once, besides the generated ones.
    @FUZZ_SETTINGS
    @given(body=body_for(shape))
    @example(body=Body(dumps({first: nested(10_000)}).encode()))
    @example(body=Body(dumps({first: "\ud800", "tags": [{"Key": "k", "Value": "\udc00"}]}).encode()))
    def run(body: Body) -> None:
        answer = fuzz.ecr_raw(operation, body.data)
        check_answer(operation, body.data, answer)
        after(baseline, operation, body.data, answer)

    run()


ODD_TARGETS = st.one_of(
    st.sampled_from(
        [
            "",
            TARGET_PREFIX,
            TARGET_PREFIX + "NoSuchOperation",
            TARGET_PREFIX + "describeRepositories",
            "AmazonEC2ContainerRegistry_V20150921",
            TARGET_PREFIX + " DescribeRepositories",
            "DescribeRepositories",
            TARGET_PREFIX + "DescribeRepositories.Extra",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip),
)
ODD_CONTENT_TYPES = st.sampled_from(
    ["application/json", "text/plain", "", "application/x-amz-json-1.0", "application/x-amz-json-1.1; charset=latin-1"]
)


@settings(FUZZ_SETTINGS, max_examples=40)
@given(target=ODD_TARGETS, content_type=ODD_CONTENT_TYPES, body=st.sampled_from([b"{}", b"", b"{", b"[]"]))
def test_odd_targets_and_content_types(
    target: str, content_type: str, body: bytes, fuzz: FuzzClient, baseline: Baseline
) -> None:
    answer = fuzz.ecr_raw("", body, headers={"X-Amz-Target": target, "Content-Type": content_type})
    check_answer(target, body, answer)


def test_server_logged_no_traceback(fuzz: FuzzClient) -> None:
    """Runs last in this module: nothing the fuzz sent made the server log a traceback."""
    log = fuzz.live.log()
    assert "Traceback" not in log, log[-5000:]
