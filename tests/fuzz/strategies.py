"""Hypothesis strategies for the fuzz tests: ECR request bodies generated from botocore's model
shapes, and the raw JSON tokens plain `json.dumps` cannot write (huge numbers, NaN, deep nesting).

Every value strategy mixes well-formed values (enum members, pattern matches, lengths at and
around the model's bounds, names of the fixture's repositories) with wrong ones (other JSON
types, lengths past the bounds, strings outside the pattern, unpaired surrogates, NUL), so both
the validator's refusals and the handlers behind it are reached.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from botocore.model import Shape
from hypothesis import strategies as st

from tests.fuzz.conftest import ACCOUNT, BASE_REPO, CONFIG_DIGEST, LAYER_DIGEST, MANIFEST, MANIFEST_DIGEST, OTHER_REPO


class Raw(str):
    """JSON text written into the body as it is (a token json.dumps would not produce)."""

    __slots__ = ()


def dumps(value: Any) -> str:
    """JSON text of `value`; `Raw` parts verbatim, lone surrogates as `\\udXXX` escapes."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate is written as its \\u escape


class Body:
    """Request body bytes whose repr stays short (Hypothesis prints the arguments of each example)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 300 else self.data[:300] + b"..."
        return f"Body({shown!r}, {len(self.data)} bytes)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


# --- odd values shared by every shape ----------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udc00x", "a\ud83d", "\ud83d\ud83d"])
ODD_TEXT = st.one_of(
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=4), SURROGATES, st.text(max_size=4)),
    st.sampled_from(["\x00", "a\x00b", "\u0000\u0000", "\ufeff", "\u202e", "é", "😀", "\u2028", "%00", "../"]),
    st.text(max_size=12),
)
HUGE_NUMBERS = st.sampled_from(
    [
        Raw("1e400"),
        Raw("-1e400"),
        Raw("NaN"),
        Raw("Infinity"),
        Raw("-Infinity"),
        Raw("1" * 400),
        Raw("1" * 5000),  # past Python's int-string digit limit
        Raw("-0"),
        Raw("0.0000000000000000000000001"),
        Raw("1E+2"),
        2**31,
        2**63,
        -(2**63) - 1,
        10**30,
    ]
)
WRONG_TYPE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.just([]),
    st.just({}),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    HUGE_NUMBERS,
)


def nested(depth: int, leaf: Any = 1) -> Raw:
    """`depth` levels of arrays and objects around `leaf`, as raw JSON text."""
    opening = "".join('{"a":' if i % 2 else "[" for i in range(depth))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return Raw(opening + dumps(leaf) + closing)


DEEP = st.sampled_from([10, 65, 200, 1000, 5000, 100_000]).map(nested)


# --- values from shapes -------------------------------------------------------------------------

# Member names whose realistic values are the fixture's: the generator must reach the handlers.
KNOWN_VALUES: dict[str, list[Any]] = {
    "repositoryName": [BASE_REPO, OTHER_REPO, "fuzz/missing"],
    "registryId": [ACCOUNT, "210987654321"],
    "imageDigest": [MANIFEST_DIGEST, "sha256:" + "0" * 64],
    "imageTag": ["v1", "latest"],
    "layerDigest": [CONFIG_DIGEST, LAYER_DIGEST],
    "layerDigests": [[CONFIG_DIGEST, LAYER_DIGEST]],
    "imageManifest": [MANIFEST.decode()],
    "resourceArn": [f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{BASE_REPO}", "arn:aws:ecr:us-east-1:1:x"],
    "uploadId": ["0f8fad5b-d9cb-469f-a165-70867728950e"],
}


def _java_pattern(pattern: str) -> str:
    # the model's patterns are Java regexes anchored or not; generate full matches
    return pattern.removeprefix("^").removesuffix("$")


# Text for the members that hold a JSON document of their own (repository, registry and
# lifecycle policies): the same malformations one level down.
DOCUMENT_TEXT = st.sampled_from(
    [
        "[" * 10_000,
        '{"a":' * 3_000 + "1" + "}" * 3_000,
        '{"Version": ' + "1" * 5_000 + "}",
        '{"Version": NaN}',
        '{"Version": 1e400}',
        '{"Version": "2012-10-17", "Statement": [{"Sid": "\\ud800", "Effect": "Allow", "Principal": "*",'
        ' "Action": "ecr:*"}]}',
        '{"rules": [{"rulePriority": ' + "9" * 5_000 + "}]}",
        '{"rules": [{"rulePriority": 1, "description": "\\ud800\\u0000", "selection": {"tagStatus": "any",'
        ' "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}',
        "\ufeff{}",
        "",
    ]
)


def _string(shape: Shape) -> st.SearchStrategy[Any]:
    md = shape.metadata
    plausible: list[st.SearchStrategy[Any]] = []
    if shape.name.endswith("PolicyText"):
        plausible.append(DOCUMENT_TEXT)
    odd: list[st.SearchStrategy[Any]] = [ODD_TEXT]
    if md.get("enum"):
        plausible.append(st.sampled_from(md["enum"]))
        odd.append(st.sampled_from(md["enum"]).map(str.lower))
    pattern = md.get("pattern")
    if pattern:
        try:
            re.compile(pattern)
            plausible.append(st.from_regex(_java_pattern(pattern), fullmatch=True).map(lambda s: s[:300]))
        except re.error:
            pass
    if not plausible:
        plausible.append(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-/:", min_size=1, max_size=40))
    lo, hi = md.get("min"), md.get("max")
    if hi is not None and hi <= 400:
        odd.append(st.text(alphabet="ab/-_.", min_size=hi, max_size=hi + 1))
    if hi is not None and 400 < hi <= 65536:
        odd.append(st.just("x" * (hi + 1)))
    if lo is not None and lo > 0:
        odd.append(st.just("x" * (lo - 1)))
    return st.integers(min_value=0, max_value=3).flatmap(lambda i: st.one_of(odd) if i == 2 else st.one_of(plausible))


def _number(shape: Shape) -> st.SearchStrategy[Any]:
    md = shape.metadata
    lo, hi = md.get("min"), md.get("max")
    edges = [v for v in (lo, hi) if v is not None]
    around = [e + d for e in edges for d in (-1, 0, 1)]
    options: list[st.SearchStrategy[Any]] = [
        st.integers(min_value=-5, max_value=1200),
        HUGE_NUMBERS,
        st.floats(allow_nan=False, allow_infinity=False),
    ]
    if around:
        options.append(st.sampled_from(around))
    return st.one_of(options)


def _blob(shape: Shape) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
        st.sampled_from(["not base64!", "QQ", "QQ==", "=", "é"]),
        ODD_TEXT,
    )


def mostly(right: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`right` nine times in ten, else `wrong` (5, not 0: Hypothesis favours the bounds)."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda i: wrong if i == 5 else right)


def value_for(shape: Shape, depth: int = 0) -> st.SearchStrategy[Any]:
    kind = shape.type_name
    right: st.SearchStrategy[Any]
    if kind == "string":
        right = _string(shape)
    elif kind in ("integer", "long", "float", "double"):
        right = _number(shape)
    elif kind == "boolean":
        right = st.booleans()
    elif kind == "timestamp":
        right = st.one_of(st.integers(), st.text(max_size=25), HUGE_NUMBERS)
    elif kind == "blob":
        right = _blob(shape)
    elif depth > 6:
        right = st.none()
    elif kind == "list":
        hi = shape.metadata.get("max")
        size = 3 if hi is None or hi > 3 else hi + 1
        right = st.lists(value_for(shape.member, depth + 1), max_size=size)
    elif kind == "map":
        right = st.dictionaries(value_for(shape.key, depth + 1), value_for(shape.value, depth + 1), max_size=3)
    elif kind == "structure":
        right = structure_for(shape, depth + 1)
    else:
        right = WRONG_TYPE
    return mostly(right, WRONG_TYPE)


def structure_for(shape: Shape, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A structure with each member present or not (required ones usually present)."""
    required = set(shape.required_members)
    members: dict[str, st.SearchStrategy[Any]] = {}
    for name, member in shape.members.items():
        generated = value_for(member, depth)
        known = KNOWN_VALUES.get(name)
        members[name] = mostly(st.sampled_from(known), generated) if known else generated
    mandatory = {n: s for n, s in members.items() if n in required}
    optional = {n: s for n, s in members.items() if n not in required}
    extra = st.dictionaries(st.sampled_from(["unknownMember", "__type", "Nested"]), WRONG_TYPE, max_size=1)
    base = st.fixed_dictionaries(mandatory, optional=optional)
    drop = st.integers(min_value=0, max_value=9).map(lambda i: i == 5)
    return st.builds(lambda b, e, d: _drop(b, d) | e, base, extra, drop)


def _drop(value: dict[str, Any], drop: bool) -> dict[str, Any]:
    if drop and value:
        value = dict(value)
        value.pop(next(iter(value)))
    return value


# --- whole bodies --------------------------------------------------------------------------------

JUNK_BODIES = st.sampled_from(
    [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"17",
        b"{",
        b'{"repositoryName": "fuzz/base"',
        b'{"repositoryName": "\\ud800"}',
        b'{"a": "\\x41"}',
        b"\xef\xbb\xbf{}",  # UTF-8 byte order mark
        '{"repositoryName": "fuzz/base"}'.encode("utf-16"),
        b'{"repositoryName": "\xff\xfe\xfd"}',  # invalid UTF-8
        b'{"repositoryName": "\xc0\xaf"}',  # overlong encoding
        b'{"repositoryName": "\xed\xa0\x80"}',  # a surrogate encoded in UTF-8 (CESU)
        b"{" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"maxResults": 1e400}',
        b'{"maxResults": NaN}',
        b'{"maxResults": ' + b"9" * 5000 + b"}",
        b'{"repositoryName": "fuzz/base", "repositoryName": "fuzz/other"}',
        b"{}" + b" " * 10 + b"{}",
        b"\x00",
    ]
)


def body_for(shape: Shape | None) -> st.SearchStrategy[Body]:
    """Request bodies for an operation with this input shape."""
    if shape is None:
        params: st.SearchStrategy[dict[str, Any]] = st.just({})
    else:
        params = structure_for(shape)
    well_formed = params.map(lambda p: dumps(p).encode())
    names = sorted(shape.members) if shape is not None and shape.members else ["x"]
    deep_member = st.tuples(params, DEEP, st.sampled_from(names)).map(lambda t: dumps({**t[0], t[2]: t[1]}).encode())
    return mostly(well_formed, st.one_of(deep_member, JUNK_BODIES)).map(Body)
