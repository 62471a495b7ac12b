"""Unit tests for moorage.sigv4: requests signed by botocore (the reference signer) must verify, and every
kind of tampering or malformation must fail with AWS's error code."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from moorage import sigv4
from moorage.sigv4 import ParsedAuth, SigV4Error, parse_request_auth, verify

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
T0 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
ENDPOINT = "https://api.ecr.us-east-1.amazonaws.com"
TARGET = "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"
JSON_TYPE = "application/x-amz-json-1.1"

Headers = dict[str, list[str]]


@dataclass
class Signed:
    """A request as the server receives it: raw path and query, lower-case multi-valued headers."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes = b""
    botocore_canonical: str = field(default="", repr=False)

    @property
    def amz_date(self) -> str:
        return self.headers["x-amz-date"][0]

    def with_headers(self, **changes: list[str] | None) -> Signed:
        headers = {k: list(v) for k, v in self.headers.items()}
        for name, values in changes.items():
            name = name.replace("_", "-")
            if values is None:
                headers.pop(name, None)
            else:
                headers[name] = values
        return replace(self, headers=headers)

    def with_authorization(self, edit: Callable[[str], str]) -> Signed:
        return self.with_headers(authorization=[edit(self.headers["authorization"][0])])


@contextmanager
def clock(at: datetime) -> Iterator[None]:
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
        yield


def sign(
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    data: bytes = b"",
    params: list[tuple[str, str]] | None = None,
    token: str | None = None,
    service: str = "ecr",
    secret: str = SECRET,
    at: datetime = T0,
    presign_expires: int | None = None,
) -> Signed:
    request = AWSRequest(method=method, url=url, data=data, params=params or {})
    for name, value in headers or []:
        request.headers[name] = value  # HTTPHeaders: assigning again adds a second value
    credentials = Credentials(AKID, secret, token)
    signer: Any
    if presign_expires is None:
        signer = botocore.auth.SigV4Auth(credentials, service, "us-east-1")
    else:
        signer = botocore.auth.SigV4QueryAuth(credentials, service, "us-east-1", expires=presign_expires)
    with clock(at):
        signer.add_auth(request)
    canonical = ""
    if presign_expires is None:  # what botocore signed, for comparing canonical requests
        authorization = request.headers["Authorization"]
        del request.headers["Authorization"]
        canonical = signer.canonical_request(request)
        request.headers["Authorization"] = authorization
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    received: Headers = {}
    for name, value in request.headers.items():
        received.setdefault(name.lower(), []).append(value)
    received.setdefault("host", [parts.netloc.removesuffix(":443")])
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    if body:
        received.setdefault("content-length", [str(len(body))])
    return Signed(method, parts.path, parts.query, received, body, canonical)


def check(
    s: Signed, *, now: datetime = T0, secret: str = SECRET, body: bytes | None = None, service: str = "ecr"
) -> ParsedAuth:
    parsed = parse_request_auth(s.method, s.headers, s.query)
    verify(
        parsed,
        secret_access_key=secret,
        method=s.method,
        path=s.path,
        query_string=s.query,
        headers=s.headers,
        payload_sha256_hex=hashlib.sha256(s.body if body is None else body).hexdigest(),
        now=now,
        expected_service=service,
    )
    return parsed


def failure(s: Signed, **kwargs: Any) -> SigV4Error:
    with pytest.raises(SigV4Error) as info:
        check(s, **kwargs)
    return info.value


def signature_of(s: Signed) -> str:
    if "authorization" in s.headers:
        return s.headers["authorization"][0].rsplit("Signature=", 1)[1]
    return s.query.rsplit("X-Amz-Signature=", 1)[1]


def json_post(**kwargs: Any) -> Signed:
    body = json.dumps({"repositoryNames": ["team/app"], "maxResults": 10}).encode()
    headers = [("X-Amz-Target", TARGET), ("Content-Type", JSON_TYPE)]
    return sign("POST", ENDPOINT + "/", headers=headers + kwargs.pop("headers", []), data=body, **kwargs)


# -- accepted ------------------------------------------------------------------------------------------

ACCEPTED: dict[str, Callable[[], Signed]] = {
    "json-post": json_post,
    "json-post-content-sha256": lambda: json_post(
        headers=[("X-Amz-Content-SHA256", hashlib.sha256(json_post().body).hexdigest())]
    ),
    "json-post-port": lambda: sign("POST", "http://localhost:5000/", headers=[("X-Amz-Target", TARGET)], data=b"{}"),
    "json-post-empty-body": lambda: sign("POST", ENDPOINT + "/", headers=[("X-Amz-Target", TARGET)]),
    "get-vanilla": lambda: sign("GET", ENDPOINT + "/"),
    "get-empty-path": lambda: sign("GET", ENDPOINT),
    "get-query-repeated-keys": lambda: sign("GET", ENDPOINT + "/?b=2&a=1&a=0&a=10&B=x"),
    "get-query-encoded": lambda: sign(
        "GET", ENDPOINT + "/?path=%2Fa%2Fb&eq=a%3Db%3D&sp=a%20b&empty=&flag&tilde=~x&uni=%C3%A9%E2%9C%93"
    ),
    "get-query-params": lambda: sign(
        "GET",
        ENDPOINT + "/",
        params=[
            ("q", "a b  c"),
            ("q", "x=y/z"),
            ("empty", ""),
            ("uni", "café ✓"),
            ("k ey", "v"),
            ("plus", "1+1"),
            ("reserved", "!*'();:@&=+$,/?#[]"),
            ("-_.~", "-_.~"),
        ],
    ),
    "path-encoded": lambda: sign("GET", ENDPOINT + "/a%20b/c%2Fd/%7Euser/x~y/-_./caf%C3%A9"),
    "path-reserved-raw": lambda: sign("GET", ENDPOINT + "/a:b@c!$'()*,;=+/"),
    "path-dot-segments": lambda: sign("GET", ENDPOINT + "/foo/../bar//baz/./qux/"),
    "path-trailing-dotdot": lambda: sign("GET", ENDPOINT + "/a/b/.."),
    "headers-spaces-and-multiple": lambda: json_post(
        headers=[
            ("X-Custom", "  a   b    c  "),
            ("X-Multi", "one"),
            ("X-Multi", "  two   three "),
            ("X-Tabs", "a\t\tb"),
            ("X-Empty", ""),
            ("My-Header", '  "quoted   value"  '),
        ]
    ),
    "sha256-header-get": lambda: sign(
        "GET", ENDPOINT + "/", headers=[("X-Amz-Content-SHA256", hashlib.sha256(b"").hexdigest())]
    ),
}


@pytest.mark.parametrize("make", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_botocore_signed_request_verifies(make: Callable[[], Signed]) -> None:
    s = make()
    parsed = check(s)
    assert parsed.access_key_id == AKID
    assert (parsed.date, parsed.region, parsed.service) == ("20240101", "us-east-1", "ecr")
    assert parsed.amz_date == "20240101T120000Z"
    assert not parsed.presigned
    assert parsed.expires is None
    assert parsed.security_token is None
    assert "host" in parsed.signed_headers


@pytest.mark.parametrize("make", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_canonical_request_equals_botocores(make: Callable[[], Signed]) -> None:
    s = make()
    parsed = parse_request_auth(s.method, s.headers, s.query)
    declared = s.headers.get("x-amz-content-sha256")
    payload = declared[0] if declared else hashlib.sha256(s.body).hexdigest()
    ours = sigv4.canonical_request(s.method, s.path, s.query, s.headers, parsed.signed_headers, payload)
    assert ours == s.botocore_canonical


def test_aws_documented_vectors() -> None:
    key = sigv4.signing_key(SECRET, "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    # aws-sig-v4-test-suite "get-vanilla"
    headers = {
        "host": ["example.amazonaws.com"],
        "x-amz-date": ["20150830T123600Z"],
        "authorization": [
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ],
    }
    s = Signed("GET", "/", "", headers)
    check(s, now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC), service="service")


def test_canonical_pieces() -> None:
    assert sigv4.canonical_uri("") == "/"
    assert sigv4.canonical_uri("//") == "/"
    assert sigv4.canonical_uri("/a%20b//./c/../d/") == "/a%2520b/d/"
    assert sigv4.canonical_uri(b"/caf\xc3\xa9") == "/caf%C3%A9"
    assert sigv4.canonical_query_string("b=2&a=&a=1&c&&d=x+y%2By") == "a=&a=1&b=2&c=&d=x%20y%2By"
    assert sigv4.canonical_query_string("X-Amz-Signature=ab&x=1", presigned=True) == "x=1"
    assert sigv4.canonical_query_string("X-Amz-Signature=ab&x=1") == "X-Amz-Signature=ab&x=1"


def test_str_path_is_read_as_latin1_bytes_or_utf8() -> None:
    raw = b"/caf\xc3\xa9"
    assert sigv4.canonical_uri(raw.decode("latin-1")) == sigv4.canonical_uri(raw)
    assert sigv4.canonical_uri("/café✓") == "/caf%C3%A9%E2%9C%93"


def test_naive_now_is_utc() -> None:
    check(json_post(), now=T0.replace(tzinfo=None))


# -- rejected: signature mismatch ----------------------------------------------------------------------


def assert_mismatch(s: Signed, **kwargs: Any) -> None:
    error = failure(s, **kwargs)
    assert error.code == "InvalidSignatureException"
    assert error.status == 400
    assert error.message == sigv4.SIGNATURE_MISMATCH


def test_wrong_secret() -> None:
    assert_mismatch(json_post(), secret=SECRET + "x")


def test_tampered_body() -> None:
    assert_mismatch(json_post(), body=b'{"repositoryNames": ["other"]}')


def test_tampered_body_with_content_sha256_header() -> None:
    s = json_post(headers=[("X-Amz-Content-SHA256", hashlib.sha256(json_post().body).hexdigest())])
    error = failure(s, body=b"{}")
    assert error.code == "InvalidSignatureException"
    assert "x-amz-content-sha256" in error.message


def test_unsigned_payload_header_rejected_for_header_auth() -> None:
    s = json_post(headers=[("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")])
    assert failure(s).code == "InvalidSignatureException"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-amz-target", "AmazonEC2ContainerRegistry_V20150921.DeleteRepository"),
        ("content-type", "application/json"),
        ("host", "evil.example.com"),
    ],
)
def test_tampered_header(name: str, value: str) -> None:
    assert_mismatch(json_post().with_headers(**{name: [value]}))


def test_extra_value_for_signed_header() -> None:
    s = json_post()
    assert_mismatch(s.with_headers(x_amz_target=[*s.headers["x-amz-target"], "x"]))


def test_signed_header_missing_from_request() -> None:
    assert_mismatch(json_post().with_headers(content_type=None))


def test_unsigned_header_may_change() -> None:
    check(json_post().with_headers(user_agent=["anything"], content_length=["1"]))


def test_tampered_path() -> None:
    s = sign("GET", ENDPOINT + "/a/b")
    assert_mismatch(replace(s, path="/a/c"))
    assert_mismatch(replace(s, path="/a%2Fb"))


def test_tampered_query() -> None:
    s = sign("GET", ENDPOINT + "/", params=[("a", "1"), ("b", "x y")])
    assert_mismatch(replace(s, query=s.query.replace("a=1", "a=2")))
    assert_mismatch(replace(s, query=s.query + "&c=3"))
    assert_mismatch(replace(s, query=""))


def test_tampered_method() -> None:
    assert_mismatch(replace(json_post(), method="PUT"))


def test_tampered_signature() -> None:
    s = json_post()
    sig = signature_of(s)
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert_mismatch(s.with_authorization(lambda a: a.replace(sig, flipped)))
    assert_mismatch(s.with_authorization(lambda a: a.replace(sig, sig.upper())))
    assert_mismatch(s.with_authorization(lambda a: a.replace(sig, "é" + sig)))


def test_signed_headers_must_be_sorted() -> None:
    s = json_post()
    assert_mismatch(s.with_authorization(lambda a: a.replace("content-type;host", "host;content-type")))
    assert_mismatch(s.with_authorization(lambda a: a.replace("content-type;host", "Content-Type;host")))


# -- rejected: missing and malformed -------------------------------------------------------------------


def test_missing_authorization() -> None:
    s = json_post().with_headers(authorization=None)
    error = failure(s)
    assert error.code == "MissingAuthenticationTokenException"
    assert error.status == 403
    assert error.message == "Missing Authentication Token"


def assert_incomplete(s: Signed, *fragments: str) -> SigV4Error:
    error = failure(s)
    assert error.code == "IncompleteSignatureException"
    assert error.status == 400
    for fragment in fragments:
        assert fragment in error.message
    original = json_post()
    assert signature_of(original) not in error.message
    return error


@pytest.mark.parametrize("part", ["Credential", "SignedHeaders", "Signature"])
def test_authorization_part_missing(part: str) -> None:
    def drop(authorization: str) -> str:
        scheme, rest = authorization.split(" ", 1)
        kept = [p for p in rest.split(", ") if not p.startswith(part + "=")]
        return scheme + " " + ", ".join(kept)

    error = assert_incomplete(
        json_post().with_authorization(drop), f"Authorization header requires '{part}' parameter."
    )
    assert error.message.count("requires") == 1
    assert "Authorization=AWS4-HMAC-SHA256" in error.message


@pytest.mark.parametrize("part", ["Credential", "SignedHeaders", "Signature"])
def test_authorization_part_empty(part: str) -> None:
    s = json_post().with_authorization(lambda a: re.sub(f"{part}=[^,]*", f"{part}=", a))
    assert_incomplete(s, f"Authorization header requires '{part}' parameter.")


def test_authorization_part_without_equal_sign() -> None:
    s = json_post().with_authorization(lambda a: a.replace("Signature=", "Signature "))
    assert_incomplete(s, "missing equal-sign")


def test_authorization_part_repeated() -> None:
    s = json_post().with_authorization(lambda a: a + ", SignedHeaders=host")
    assert_incomplete(s)


@pytest.mark.parametrize("value", ["Bearer sometoken", "AWS AKIDEXAMPLE:c2lnbmF0dXJl", "", "AWS4-HMAC-SHA256"])
def test_authorization_other_scheme(value: str) -> None:
    error = assert_incomplete(
        json_post().with_headers(authorization=[value]),
        "Authorization header requires 'Credential' parameter.",
        "Authorization header requires 'Signature' parameter.",
        "Authorization header requires 'SignedHeaders' parameter.",
    )
    assert "sometoken" not in error.message
    assert "c2lnbmF0dXJl" not in error.message


def test_two_authorization_headers() -> None:
    s = json_post()
    assert_incomplete(s.with_headers(authorization=s.headers["authorization"] * 2))


def test_missing_x_amz_date() -> None:
    assert_incomplete(json_post().with_headers(x_amz_date=None), "'X-Amz-Date'")


@pytest.mark.parametrize("value", ["2024-01-01T12:00:00Z", "20240101T120000", "20241301T120000Z", "x"])
def test_malformed_x_amz_date(value: str) -> None:
    assert_incomplete(json_post().with_headers(x_amz_date=[value]), "ISO-8601 'basic format'")


@pytest.mark.parametrize(
    "value",
    [
        "20241232T120000Z",  # no such day
        "20240230T120000Z",
        "20230229T120000Z",  # not a leap year
        "20240100T120000Z",
        "20240001T120000Z",
        "00000101T120000Z",  # year 0
        "20240101T240000Z",
        "20240101T126000Z",
        "20240101T120060Z",  # strptime reads a leap second, datetime refuses it
        "20240101T120061Z",
    ],
)
def test_impossible_x_amz_date(value: str) -> None:
    assert_incomplete(json_post().with_headers(x_amz_date=[value]), "ISO-8601 'basic format'")


def test_leap_day_x_amz_date_verifies() -> None:
    leap_day = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    parsed = check(json_post(at=leap_day), now=leap_day)
    assert parsed.amz_date == "20240229T235959Z"


def test_signing_key_of_another_day_or_secret_is_not_reused() -> None:
    # Verification remembers derived keys: a request of the next day, or signed with another
    # secret, must still be checked against its own key.
    check(json_post())
    next_day = T0 + timedelta(days=1)
    check(json_post(at=next_day), now=next_day)
    assert_mismatch(json_post(at=next_day), now=next_day, secret=SECRET + "x")
    assert_mismatch(json_post(secret=SECRET + "y"))


def test_host_not_signed() -> None:
    s = sign("POST", ENDPOINT + "/", headers=[("X-Amz-Target", TARGET)], data=b"{}")
    unsigned_host = s.with_authorization(lambda a: a.replace("host;", ""))
    assert_incomplete(unsigned_host, "'Host' or ':authority' must be a 'SignedHeader'")


@pytest.mark.parametrize(
    "credential",
    ["AKIDEXAMPLE/20240101/us-east-1/ecr", "/20240101/us-east-1/ecr/aws4_request", "AKIDEXAMPLE"],
)
def test_malformed_credential(credential: str) -> None:
    s = json_post().with_authorization(
        lambda a: a.replace("AKIDEXAMPLE/20240101/us-east-1/ecr/aws4_request", credential)
    )
    assert_incomplete(s, "Credential should be of the form")


# -- rejected: scope and time --------------------------------------------------------------------------


def test_wrong_service_in_scope() -> None:
    error = failure(json_post(service="s3"))
    assert error.code == "InvalidSignatureException"
    assert error.message == "Credential should be scoped to correct service: 'ecr'."


def test_wrong_terminator() -> None:
    s = json_post().with_authorization(lambda a: a.replace("/aws4_request", "/aws4_requesx"))
    error = failure(s)
    assert error.code == "InvalidSignatureException"
    assert "valid terminator: 'aws4_request', not 'aws4_requesx'" in error.message


def test_scope_date_differs_from_x_amz_date() -> None:
    s = json_post().with_headers(x_amz_date=["20240102T120000Z"])
    error = failure(s, now=datetime(2024, 1, 2, 12, tzinfo=UTC))
    assert error.code == "InvalidSignatureException"
    assert error.message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        "'20240101' != '20240102', from '20240102T120000Z'."
    )


def test_region_is_not_checked() -> None:
    s = sign("GET", ENDPOINT + "/")
    signer = botocore.auth.SigV4Auth(Credentials(AKID, SECRET), "ecr", "eu-west-3")
    request = AWSRequest(method="GET", url=ENDPOINT + "/")
    with clock(T0):
        signer.add_auth(request)
    s = s.with_headers(authorization=[request.headers["Authorization"]])
    assert check(s).region == "eu-west-3"


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(minutes=15), -timedelta(minutes=15)])
def test_clock_skew_within_15_minutes(offset: timedelta) -> None:
    check(json_post(), now=T0 + offset)


def test_clock_skew_request_too_old() -> None:
    error = failure(json_post(), now=T0 + timedelta(minutes=15, seconds=1))
    assert error.code == "InvalidSignatureException"
    assert error.message == (
        "Signature expired: 20240101T120000Z is now earlier than 20240101T120001Z (20240101T121501Z - 15 min.)"
    )


def test_clock_skew_request_in_future() -> None:
    error = failure(json_post(), now=T0 - timedelta(minutes=15, seconds=1))
    assert error.code == "InvalidSignatureException"
    assert error.message == (
        "Signature not yet current: 20240101T120000Z is still later than 20240101T115959Z (20240101T114459Z + 15 min.)"
    )


def test_security_token_is_unrecognized() -> None:
    s = json_post(token="FQoGZXIvYXdzEXAMPLE")
    assert parse_request_auth(s.method, s.headers, s.query).security_token == "FQoGZXIvYXdzEXAMPLE"
    error = failure(s)
    assert error.code == "UnrecognizedClientException"
    assert error.status == 400
    assert error.message == "The security token included in the request is invalid."


def test_error_defaults_and_explicit_messages() -> None:
    assert SigV4Error("UnrecognizedClientException").message == (
        "The security token included in the request is invalid."
    )
    error = SigV4Error("IncompleteSignatureException", "custom")
    assert (error.code, error.status, error.message, str(error)) == (
        "IncompleteSignatureException",
        400,
        "custom",
        "custom",
    )


def test_parsed_auth_repr_hides_signature() -> None:
    s = json_post()
    assert signature_of(s) not in repr(parse_request_auth(s.method, s.headers, s.query))


# -- pre-signed ----------------------------------------------------------------------------------------


def presigned(**kwargs: Any) -> Signed:
    params = kwargs.pop("params", [("Action", "DescribeRepositories"), ("q", "a b/c=d")])
    return sign("GET", ENDPOINT + "/", params=params, presign_expires=300, **kwargs)


def test_presigned_accepted() -> None:
    s = presigned()
    assert "authorization" not in s.headers
    parsed = check(s)
    assert parsed.presigned
    assert parsed.expires == 300
    assert parsed.signed_headers == ("host",)
    check(s, now=T0 + timedelta(seconds=300))
    check(s, now=T0 - timedelta(minutes=15))


def test_presigned_without_operation_params() -> None:
    check(presigned(params=[]))


def test_presigned_expired() -> None:
    error = failure(presigned(), now=T0 + timedelta(seconds=301))
    assert error.code == "InvalidSignatureException"
    assert error.message.startswith("Request has expired")


def test_presigned_not_yet_valid() -> None:
    assert failure(presigned(), now=T0 - timedelta(minutes=16)).code == "InvalidSignatureException"


def test_presigned_tampered() -> None:
    s = presigned()
    assert_mismatch(replace(s, query=s.query.replace("DescribeRepositories", "DeleteRepository")))
    assert_mismatch(replace(s, query=s.query + "&extra=1"))
    assert_mismatch(replace(s, path="/other"))
    assert_mismatch(replace(s, method="POST"))
    assert_mismatch(s.with_headers(host=["evil.example.com"]))
    sig = signature_of(s)
    assert_mismatch(replace(s, query=s.query.replace(sig, sig[::-1])))
    longer = s.query.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")
    assert_mismatch(replace(s, query=longer), now=T0 + timedelta(seconds=400))


def test_presigned_payload_is_the_body_hash() -> None:
    s = presigned()
    check(s.with_headers(x_amz_content_sha256=[hashlib.sha256(b"").hexdigest()]))
    assert_mismatch(s, body=b"x")
    for declared in ["UNSIGNED-PAYLOAD", hashlib.sha256(b"x").hexdigest()]:
        assert failure(s.with_headers(x_amz_content_sha256=[declared])).code == "InvalidSignatureException"


def test_presigned_security_token_is_unrecognized() -> None:
    s = presigned(token="FQoGZXIvYXdzEXAMPLE")
    assert "X-Amz-Security-Token=" in s.query
    assert failure(s).code == "UnrecognizedClientException"


@pytest.mark.parametrize(
    "param", ["X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"]
)
def test_presigned_missing_param(param: str) -> None:
    s = presigned()
    query = "&".join(p for p in s.query.split("&") if not p.startswith(param + "="))
    error = failure(replace(s, query=query))
    assert error.code == "IncompleteSignatureException"
    assert "X-Amz-Credential" in error.message


@pytest.mark.parametrize("expires", ["0", "604801", "-5", "abc", "1e3"])
def test_presigned_bad_expires(expires: str) -> None:
    s = presigned()
    error = failure(replace(s, query=s.query.replace("X-Amz-Expires=300", f"X-Amz-Expires={expires}")))
    assert error.code == "IncompleteSignatureException"
    assert "X-Amz-Expires" in error.message


def test_presigned_other_algorithm() -> None:
    s = presigned()
    query = s.query.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA512")
    assert failure(replace(s, query=query)).code == "IncompleteSignatureException"


def test_presigned_repeated_param() -> None:
    s = presigned()
    assert failure(replace(s, query=s.query + "&X-Amz-Date=20240101T120000Z")).code == ("IncompleteSignatureException")


def test_presigned_and_authorization_header() -> None:
    s = presigned().with_headers(authorization=json_post().headers["authorization"])
    assert failure(s).code == "IncompleteSignatureException"


def test_presigned_wrong_service() -> None:
    error = failure(presigned(service="sts"))
    assert error.code == "InvalidSignatureException"
    assert error.message == "Credential should be scoped to correct service: 'ecr'."


# -- what is remembered between requests -----------------------------------------------------------------


def test_a_remembered_scope_still_checks_every_signature() -> None:
    """The second request of a client takes the remembered credential scope and SignedHeaders:
    a wrong signature, body or clock must still fail there."""
    first = json_post()
    check(first)
    check(first)  # the same request again: everything remembered
    tampered = first.with_authorization(lambda value: value[:-4] + ("0000" if value[-4:] != "0000" else "1111"))
    assert failure(tampered).code == sigv4.INVALID_SIGNATURE
    assert failure(first, body=b"{}").code == sigv4.INVALID_SIGNATURE
    assert failure(first, now=T0 + timedelta(minutes=16)).message.startswith("Signature expired:")
    assert failure(first, now=T0 - timedelta(minutes=16)).message.startswith("Signature not yet current:")


def test_the_sdk_form_and_the_general_form_parse_alike() -> None:
    """The Authorization header as the SDKs write it, and the same parameters spaced and ordered
    otherwise (the general parser), give the same parse and both verify."""
    sdk = json_post()
    value = sdk.headers["authorization"][0]
    scheme, _, rest = value.partition(" ")
    parts = [part.strip() for part in rest.split(",")]
    loose = sdk.with_headers(authorization=[f"  {scheme}\t{' ,  '.join(reversed(parts))}  "])
    assert check(loose) == check(sdk)


def test_invalid_shapes_are_never_remembered() -> None:
    """A malformed credential or unsorted SignedHeaders fails every time it is sent, also after a
    valid request of the same client."""
    good = json_post()
    check(good)
    bad_scope = good.with_authorization(lambda value: value.replace("/us-east-1/", "//"))
    unsorted = good.with_authorization(lambda value: value.replace("content-type;host", "host;content-type"))
    for _ in range(2):
        assert failure(bad_scope).code == sigv4.INCOMPLETE_SIGNATURE
        assert failure(unsorted).code == sigv4.INVALID_SIGNATURE
    bad_date = good.with_headers(x_amz_date=["20240101T120000"])
    for _ in range(2):
        assert failure(bad_date).code == sigv4.INCOMPLETE_SIGNATURE
