"""Property-based fuzz of the registry API (`/v2/`) against the real server.

Requests follow the OCI distribution spec's forms (catalog, tag lists, manifests, blobs, uploads,
referrers) with odd repository names, references, digests and upload ids, percent-encoded and
invalid-UTF-8 path segments, bad `n`/`last`/`digest`/`mount` query parameters, bad `Range` and
`Content-Range` headers, wrong content types, credentials that are not a registry password, and
manifest bodies that are malformed (not JSON, invalid UTF-8, unpaired surrogate escapes, deep
nesting, huge numbers, wrong field types). Hypothesis is derandomized: every run sends the same
requests.

Properties: no answer is a 5xx; every error with a body is the spec's error document with a
known code; a mutating request (PUT/POST/PATCH/DELETE) answered 4xx leaves the visible state
(repositories, images, tags, policies, catalog) as it was.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    BASE_REPO,
    CONFIG,
    CONFIG_DIGEST,
    LAYER_DIGEST,
    MANIFEST,
    MANIFEST_DIGEST,
    OTHER_REPO,
    Answer,
    Baseline,
    FuzzClient,
    fuzz_settings,
    restore_fixture,
    sha256,
)
from tests.fuzz.strategies import HUGE_NUMBERS, SURROGATES, WRONG_TYPE, Body, dumps, mostly, nested

EXAMPLES = 300

# The spec's error codes, plus the two this server adds for what the spec leaves open
# (an unknown route, an unsatisfiable Range).
ERROR_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "TAG_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
        "PAGINATION_NUMBER_INVALID",
        "RANGE_INVALID",
        "NOT_FOUND",
    }
)
MUTATING = frozenset({"PUT", "POST", "PATCH", "DELETE"})

# --- path pieces ----------------------------------------------------------------------------------


def pct(text: str) -> str:
    """Percent-encode what may not go on the wire verbatim (UTF-8, then %XX), keeping `/`."""
    return quote(text, safe="/:@!$&'()*+,;=-._~")


RAW_ODD = st.sampled_from(
    ["%2F", "%2f", "%00", "%ff", "%c0%af", "%ed%a0%80", "%e2%82%ac", "%", "%zz", "%2", "..", ".", "%2e%2e", "//"]
)
TEXT = st.text(max_size=12).map(pct)
NAMES = mostly(
    st.sampled_from([BASE_REPO, BASE_REPO, OTHER_REPO, "fuzz/missing", "fuzz/new"]),
    st.one_of(
        st.sampled_from(["a", "A/b", "a..b", "-a", "a/", "/a", "a" * 257]),
        st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+){0,2}", fullmatch=True).map(lambda s: s[:40]),
        st.builds(lambda a, b: a + b, st.sampled_from([BASE_REPO, "fuzz/x"]), RAW_ODD),
        TEXT,
    ),
)
DIGESTS = st.one_of(
    st.sampled_from([MANIFEST_DIGEST, CONFIG_DIGEST, LAYER_DIGEST, "sha256:" + "0" * 64]),
    st.sampled_from(
        [
            "sha256:" + "A" * 64,
            "sha256:" + "0" * 63,
            "sha512:" + "0" * 128,
            "sha384:" + "0" * 96,
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:",
            ":",
            "sha256%3A" + "0" * 64,
            "sha256:" + "0" * 64 + "%00",
            "sha256:" + "0" * 10_000,
        ]
    ),
    st.builds(lambda s: "sha256:" + s, st.text(alphabet="0123456789abcdefXYZ:+", max_size=70)),
)
TAGS = st.one_of(
    st.sampled_from(["v1", "v2", "latest"]),
    st.sampled_from([".INVALID_MANIFEST_NAME", "-x", "a" * 128, "a" * 129, "v1%00", "%ff"]),
    st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}", fullmatch=True),
    TEXT,
)
UPLOAD_IDS = st.one_of(
    st.sampled_from(["0f8fad5b-d9cb-469f-a165-70867728950e", "..", "%00", "x" * 300]),
    st.uuids().map(str),
    TEXT,
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "abc", "1e3", "%205", "99999999999999999999", "%ff", "%00", "1.5", "+1"]),
    st.sampled_from(["9" * 5_000, "%C2%B2", "%D9%A3", "%EF%BC%91", "0" * 100 + "1", "1%00"]),
    DIGESTS.map(lambda d: quote(d, safe=":%")),
    TEXT.map(lambda t: quote(t, safe="%")),
)
QUERY_KEYS = st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType", "n", "last"])
QUERIES = st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=3).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
)


METHODS = st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "GET", "PUT", "OPTIONS"])
ROUTE_METHODS = {
    "base": ["GET", "HEAD"],
    "catalog": ["GET"],
    "tags": ["GET"],
    "manifest": ["GET", "HEAD", "PUT", "DELETE", "PUT"],
    "blob": ["GET", "HEAD", "DELETE"],
    "uploads": ["POST"],
    "upload": ["GET", "PATCH", "PUT", "DELETE", "PATCH", "PUT"],
    "referrers": ["GET"],
    "other": ["GET"],
}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str]:
    """A method and a raw path with query, mostly of a route's own methods."""
    name = draw(NAMES)
    kind = draw(
        st.sampled_from(
            [
                "base",
                "catalog",
                "tags",
                "manifest",
                "manifest",
                "blob",
                "uploads",
                "upload",
                "upload",
                "referrers",
                "other",
            ]
        )
    )
    if kind == "base":
        path = draw(st.sampled_from(["/v2/", "/v2", "/v2//", "/v2/%2e%2e/"]))
    elif kind == "catalog":
        path = draw(st.sampled_from(["/v2/_catalog", "/v2/_catalog/"]))
    elif kind == "tags":
        path = f"/v2/{name}/tags/list"
    elif kind == "manifest":
        path = f"/v2/{name}/manifests/{draw(st.one_of(TAGS, DIGESTS))}"
    elif kind == "blob":
        path = f"/v2/{name}/blobs/{draw(DIGESTS)}"
    elif kind == "uploads":
        path = f"/v2/{name}/blobs/uploads/"
    elif kind == "upload":
        path = f"/v2/{name}/blobs/uploads/{draw(UPLOAD_IDS)}"
    elif kind == "referrers":
        path = f"/v2/{name}/referrers/{draw(DIGESTS)}"
    else:
        path = draw(st.sampled_from(["/v3/", "/v2/x"])) + draw(
            st.text(alphabet="abc/_.%2Fuploadsmanifests", max_size=40)
        )
    method = draw(mostly(st.sampled_from(ROUTE_METHODS[kind]), METHODS))
    query = draw(QUERIES)
    return method, f"{path}?{query}" if query else path


# --- headers --------------------------------------------------------------------------------------

RANGES = st.one_of(
    st.sampled_from(
        [
            "bytes=0-0",
            "bytes=5-1",
            "bytes=-0",
            "bytes=-5",
            "bytes=0-",
            "bytes=0-99999999999999999999999",
            "bytes=99999999999999999999-",
            "bytes=0-1,3-4",
            "bytes=",
            "bytes=--1",
            "items=0-1",
            "bytes=a-b",
            "0-5",
        ]
    ),
    st.text(alphabet="bytes=0123456789-, */", max_size=20).map(str.strip),
)
CONTENT_RANGES = st.one_of(
    st.sampled_from(
        [
            "0-0",
            "0-9",
            "5-1",
            "bytes 0-9/10",
            "bytes */*",
            "0-99999999999999999999",
            "99999999999999999999-99999999999999999999",
            "-1-5",
            "0--5",
            "",
            "bytes=0-9",
        ]
    ),
    st.text(alphabet="bytes 0123456789-*/", max_size=20).map(str.strip),
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/json",
        "application/octet-stream",
        "text/plain",
        "application/vnd.oci.image.manifest.v1+json; charset=utf-16",
        ";",
        "",
    ]
)
AUTHORIZATIONS = st.sampled_from(
    ["Basic !!!", "Basic " + "QVdTOg==", "Bearer x", "Basic", "Digest a=b", "Basic QVdTOnNlY3JldA=="]
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, str]:
    found: dict[str, str] = {}
    if draw(st.integers(min_value=0, max_value=1)):
        found["Range"] = draw(RANGES)
    if draw(st.integers(min_value=0, max_value=1)):
        found["Content-Range"] = draw(CONTENT_RANGES)
    if draw(st.integers(min_value=0, max_value=2)):
        found["Content-Type"] = draw(CONTENT_TYPES)
    if draw(st.integers(min_value=0, max_value=3)) == 2:
        found["Accept"] = draw(CONTENT_TYPES)
    if draw(st.integers(min_value=0, max_value=9)) == 5:
        found["Authorization"] = draw(AUTHORIZATIONS)
    return found


# --- bodies ---------------------------------------------------------------------------------------

_MANIFEST_DOC: dict[str, Any] = json.loads(MANIFEST)


def _replace(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(doc))
    target: Any = out
    for key in path[:-1]:
        target = target[key] if not isinstance(target, list) else target[0]
    if isinstance(target, list):
        target[0] = value
    else:
        target[path[-1]] = value
    return out


MANIFEST_FIELDS = st.sampled_from(
    [
        ("schemaVersion",),
        ("mediaType",),
        ("config",),
        ("config", "digest"),
        ("config", "size"),
        ("config", "mediaType"),
        ("layers",),
        ("layers", "0", "digest"),
        ("layers", "0", "size"),
        ("layers", "0", "annotations"),
        ("annotations",),
        ("artifactType",),
        ("subject",),
        ("manifests",),
    ]
)
ODD_VALUES = st.one_of(
    WRONG_TYPE,
    st.sampled_from([2**63 - 1, 2**63, 2**64, -1, "a\x00", "application/vnd.oci.image.config.v1+json\x00"]),
    HUGE_NUMBERS,
    SURROGATES,
    st.just("\x00"),
    st.just({"k": "\ud800"}),
    st.sampled_from([10, 1_000, 100_000]).map(nested),
)
MUTATED_MANIFESTS = st.builds(
    lambda path, value: dumps(_replace(_MANIFEST_DOC, path, value)).encode(), MANIFEST_FIELDS, ODD_VALUES
)
BODIES = st.one_of(
    st.just(b""),
    st.just(MANIFEST),
    st.just(CONFIG),
    MUTATED_MANIFESTS,
    MUTATED_MANIFESTS,
    st.sampled_from(
        [
            b"{",
            b"null",
            b"[]",
            b"\xff\xfe",
            b'{"schemaVersion": 2, "mediaType": "\xed\xa0\x80"}',
            b"[" * 100_000,
            b'{"schemaVersion":1,"fsLayers":[]}',
            MANIFEST.decode().encode("utf-16"),
            b"\xef\xbb\xbf" + MANIFEST,
        ]
    ),
    st.binary(max_size=64),
).map(Body)

FUZZ_SETTINGS = fuzz_settings(EXAMPLES)


@pytest.fixture(scope="module")
def upload_id(fuzz: FuzzClient) -> str:
    """An open upload session in the fixture repository, for PATCH/PUT/GET to reach a real one."""
    restore_fixture(fuzz)
    answer = fuzz.v2("POST", f"/v2/{BASE_REPO}/blobs/uploads/")
    assert answer.status == 202, answer.describe()
    return answer.headers["docker-upload-uuid"]


@pytest.fixture(scope="module")
def baseline(fuzz: FuzzClient, upload_id: str) -> Baseline:
    return Baseline(fuzz)


def check_answer(method: str, path: str, answer: Answer) -> None:
    shown = f"{method} {path} -> {answer.describe()}"
    assert answer.status < 500, shown
    registry_api = path == "/v2" or path.startswith(("/v2/", "/v2?"))
    if answer.status >= 400 and method != "HEAD" and answer.body and registry_api:
        document = json.loads(answer.body)
        errors = document["errors"]
        assert isinstance(errors, list), shown
        assert errors, shown
        assert errors[0]["code"] in ERROR_CODES, shown
        assert isinstance(errors[0]["message"], str), shown


@FUZZ_SETTINGS
@given(request=requests(), extra=headers(), body=BODIES, use_upload=st.integers(min_value=0, max_value=2))
@example(request=("PUT", f"/v2/{BASE_REPO}/manifests/v2"), extra={}, body=Body(b"[" * 100_000), use_upload=1)
@example(
    request=("PUT", f"/v2/{BASE_REPO}/manifests/v2"),
    extra={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    body=Body(MANIFEST.replace(b'"layers"', b'"annotations":{"k":"\\ud800"},"layers"')),
    use_upload=1,
)
@example(request=("GET", "/v2/_catalog?n=99999999999999999999"), extra={}, body=Body(b""), use_upload=1)
@example(request=("GET", f"/v2/{BASE_REPO}%ff/tags/list"), extra={}, body=Body(b""), use_upload=1)
def test_registry_api_never_fails_on_the_server(
    request: tuple[str, str],
    extra: dict[str, str],
    body: Body,
    use_upload: int,
    fuzz: FuzzClient,
    baseline: Baseline,
    upload_id: str,
) -> None:
    method, path = request
    if use_upload == 0 and "/blobs/uploads/" in path:  # sometimes address the open session
        head, _, _ = path.partition("/blobs/uploads/")
        path = f"{head}/blobs/uploads/{upload_id}"
    answer = fuzz.v2(method, path, headers=extra, body=body.data)
    check_answer(method, path, answer)
    if method in MUTATING:
        now = fuzz.snapshot()
        if answer.status >= 400:
            assert now == baseline.state, f"{method} {path} answered {answer.describe()} but changed state"
        baseline.state = now


NUL_ARTIFACT_TYPE = MANIFEST.replace(b'"layers"', b'"artifactType":"\\u0000","layers"')


@settings(FUZZ_SETTINGS, max_examples=60)
@given(
    reference=st.one_of(st.sampled_from(["v1", "v2", "fuzz"]), DIGESTS),
    content_type=st.one_of(st.none(), CONTENT_TYPES),
    body=st.one_of(MUTATED_MANIFESTS, MUTATED_MANIFESTS, MUTATED_MANIFESTS, st.just(MANIFEST)).map(Body),
)
@example(reference="v2", content_type=None, body=Body(MANIFEST.replace(b'"size":1088', b'"size":%d' % 2**63)))
@example(reference="v2", content_type=None, body=Body(NUL_ARTIFACT_TYPE))
def test_manifest_push_never_fails_on_the_server(
    reference: str, content_type: str | None, body: Body, fuzz: FuzzClient, baseline: Baseline
) -> None:
    """Pushes of malformed manifests that reference the fixture's blobs, so they get past the
    blob checks to everything stored from a manifest."""
    path = f"/v2/{BASE_REPO}/manifests/{reference}"
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = fuzz.v2("PUT", path, headers=headers, body=body.data)
    check_answer("PUT", path, answer)
    now = fuzz.snapshot()
    if answer.status >= 400:
        assert now == baseline.state, f"PUT {path} answered {answer.describe()} but changed state"
    baseline.state = now


def test_blob_upload_with_bad_chunks_is_never_a_server_error(fuzz: FuzzClient) -> None:
    """A monolithic upload of the wrong content names the digest as invalid, and stores nothing."""
    wrong = sha256(b"something else")
    answer = fuzz.v2("POST", f"/v2/{BASE_REPO}/blobs/uploads/?digest={wrong}", body=b"content")
    assert answer.status == 400, answer.describe()
    assert json.loads(answer.body)["errors"][0]["code"] == "DIGEST_INVALID"
    assert fuzz.v2("HEAD", f"/v2/{BASE_REPO}/blobs/{wrong}").status == 404


@pytest.mark.parametrize("upload", ["%00", "x" * 300, "0F8FAD5B-D9CB-469F-A165-70867728950E", "a%ed%a0%80"])
@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_upload_id_that_is_not_one_of_ours_is_unknown(method: str, upload: str, fuzz: FuzzClient) -> None:
    """Upload ids are UUIDs the server made: any other text is answered before it reaches a store."""
    answer = fuzz.v2(method, f"/v2/{BASE_REPO}/blobs/uploads/{upload}?digest={LAYER_DIGEST}", body=b"x")
    assert answer.status == 404, answer.describe()
    assert json.loads(answer.body)["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def test_server_logged_no_traceback(fuzz: FuzzClient) -> None:
    """Runs last in this module: nothing the fuzz sent made the server log a traceback."""
    log = fuzz.live.log()
    assert "Traceback" not in log, log[-5000:]
