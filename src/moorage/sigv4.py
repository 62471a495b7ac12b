"""AWS Signature Version 4, verified exactly as AWS documents it. Pure: no I/O, no clock.

    parse_request_auth(method, headers, query)  ─► ParsedAuth        (header form or pre-signed query form)
    caller looks up parsed.access_key_id        ─► secret            (unknown: UnrecognizedClientException)
    verify(parsed, secret_access_key=..., ...)  ─► None or SigV4Error

The canonical request follows the rules for every service but S3:

    METHOD
    canonical URI       raw path as received, dot segments and empty segments removed, then URI-encoded
                        once more (so an `%` the client sent becomes `%25`: AWS's "encode twice")
    canonical query     pairs decoded (`+` is a space), re-encoded with RFC 3986, sorted by key then value;
                        the pre-signed form leaves out X-Amz-Signature
    canonical headers   `name:value\\n` in SignedHeaders order; value trimmed, runs of spaces/tabs collapsed,
                        repeated headers joined with ","
    signed headers      as given (they must be lower-case, sorted and unique)
    payload hash        the body's SHA-256, in both forms: UNSIGNED-PAYLOAD is S3's alone (botocore's
                        SigV4QueryAuth signs the empty body's hash too); x-amz-content-sha256, when
                        sent, must be that hash and is used as sent

Error codes, as AWS JSON services (ECR) answer them:

    MissingAuthenticationTokenException  403  neither an Authorization header nor X-Amz-Algorithm
    IncompleteSignatureException         400  malformed Authorization / query parameters, a part missing,
                                              no or malformed X-Amz-Date, host not signed, bad X-Amz-Expires
    InvalidSignatureException            400  signature mismatch, wrong service or terminator in the scope,
                                              scope date != X-Amz-Date date, clock skew, expired pre-signed
                                              URL, x-amz-content-sha256 not the body's hash
    UnrecognizedClientException          400  unknown access key (raised by the caller), any security token

Messages never repeat the signature a client sent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_to_bytes

__all__ = [
    "ALGORITHM",
    "INCOMPLETE_SIGNATURE",
    "INVALID_SIGNATURE",
    "MISSING_AUTHENTICATION_TOKEN",
    "TERMINATOR",
    "UNRECOGNIZED_CLIENT",
    "ParsedAuth",
    "SigV4Error",
    "canonical_request",
    "parse_request_auth",
    "signature",
    "signing_key",
    "string_to_sign",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
MAX_PRESIGNED_EXPIRES = 604800  # one week, in seconds

MISSING_AUTHENTICATION_TOKEN = "MissingAuthenticationTokenException"  # noqa: S105 (an error code)
INCOMPLETE_SIGNATURE = "IncompleteSignatureException"
INVALID_SIGNATURE = "InvalidSignatureException"
UNRECOGNIZED_CLIENT = "UnrecognizedClientException"

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_EXPIRES_MESSAGE = f"X-Amz-Expires must be an integer number of seconds from 1 to {MAX_PRESIGNED_EXPIRES}."
_DEFAULTS: dict[str, tuple[int, str]] = {
    MISSING_AUTHENTICATION_TOKEN: (403, "Missing Authentication Token"),
    INCOMPLETE_SIGNATURE: (400, "The request signature does not conform to AWS standards."),
    INVALID_SIGNATURE: (400, SIGNATURE_MISMATCH),
    UNRECOGNIZED_CLIENT: (400, "The security token included in the request is invalid."),
}

_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
_WS_RE = re.compile(r"[ \t]+")
# The Authorization header exactly as the AWS SDKs write it: parsed by one match, to the same
# parameters the general parser finds in it (anything else takes the general parser).
_SDK_AUTHORIZATION_RE = re.compile(
    ALGORITHM + r" Credential=([^,= \t]+), SignedHeaders=([^,= \t]+), Signature=([^,= \t]+)"
)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}")
_QUERY_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_ENCODED = tuple(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256))


class SigV4Error(Exception):
    """A request that fails authentication. `code` is AWS's error code, `status` its HTTP status;
    `message` is safe to show to the caller."""

    def __init__(self, code: str, message: str | None = None) -> None:
        status, default = _DEFAULTS.get(code, (400, SIGNATURE_MISMATCH))
        self.code = code
        self.status = status
        self.message = default if message is None else message
        super().__init__(self.message)


def _incomplete(message: str) -> SigV4Error:
    return SigV4Error(INCOMPLETE_SIGNATURE, message)


def _invalid(message: str = SIGNATURE_MISMATCH) -> SigV4Error:
    return SigV4Error(INVALID_SIGNATURE, message)


@dataclass(frozen=True, slots=True)
class ParsedAuth:
    """The authentication parts of a request, before anything is checked against a secret."""

    access_key_id: str
    date: str  # YYYYMMDD, from the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str = field(repr=False)
    amz_date: str  # X-Amz-Date, YYYYMMDDTHHMMSSZ
    presigned: bool = False
    expires: int | None = None  # X-Amz-Expires of the pre-signed form
    security_token: str | None = field(default=None, repr=False)
    terminator: str = TERMINATOR

    @property
    def credential_scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


# -- parsing -----------------------------------------------------------------------------------------


def parse_request_auth(method: str, headers: Mapping[str, Sequence[str]], query_string: str | bytes) -> ParsedAuth:
    """Read the SigV4 parts of a request: the Authorization header, or the pre-signed query parameters.

    `headers` has lower-case names, each with every value received. `query_string` is the raw query
    (see `canonical_request` for how a `str` is read). `method` is unused: the signature covers it.
    """
    del method
    authorization = _values(headers, "authorization")
    query = _query_pairs(_raw(query_string))
    presigned = any(key == b"X-Amz-Algorithm" for key, _ in query)
    if authorization and presigned:
        raise _incomplete(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
            "or the Authorization header should be specified."
        )
    if presigned:
        return _parse_query_auth(headers, query)
    if not authorization:
        raise SigV4Error(MISSING_AUTHENTICATION_TOKEN)
    if len(authorization) > 1:
        raise _incomplete("Only one Authorization header may be specified.")
    return _parse_header_auth(headers, authorization[0])


def _parse_header_auth(headers: Mapping[str, Sequence[str]], authorization: str) -> ParsedAuth:
    sdk = _SDK_AUTHORIZATION_RE.fullmatch(authorization)
    if sdk is not None:
        amz_dates = _values(headers, "x-amz-date")
        if len(amz_dates) == 1:
            tokens = _values(headers, "x-amz-security-token")
            return _parsed(
                credential=sdk[1],
                signed_headers=sdk[2],
                signature=sdk[3],
                amz_date=amz_dates[0].strip(),
                presigned=False,
                expires=None,
                security_token=tokens[0] if tokens else None,
            )
    scheme, _, rest = authorization.strip().replace("\t", " ").partition(" ")
    params: dict[str, str] = {}
    malformed = False
    if scheme == ALGORITHM:
        for part in rest.split(","):
            if not part.strip():
                continue
            key, eq, value = part.strip().partition("=")
            if not eq or not key or key in params:
                malformed = True
                continue
            params[key] = value.strip()
    if malformed:
        raise _incomplete(
            "A part of the Authorization header is not a valid key=value pair (missing equal-sign) "
            f"or is repeated. Authorization={_shown_authorization(scheme, params)}"
        )
    amz_dates = _values(headers, "x-amz-date")
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if not params.get(name)
    ]
    if not amz_dates:
        problems.append("Authorization header requires existence of a 'X-Amz-Date' header.")
    if problems:
        raise _incomplete(" ".join(problems) + f" Authorization={_shown_authorization(scheme, params)}")
    if len(amz_dates) > 1:
        raise _incomplete("Only one X-Amz-Date header may be specified.")
    tokens = _values(headers, "x-amz-security-token")
    return _parsed(
        credential=params["Credential"],
        signed_headers=params["SignedHeaders"],
        signature=params["Signature"],
        amz_date=amz_dates[0].strip(),
        presigned=False,
        expires=None,
        security_token=tokens[0] if tokens else None,
    )


def _parse_query_auth(headers: Mapping[str, Sequence[str]], query: list[tuple[bytes, bytes]]) -> ParsedAuth:
    params: dict[str, str] = {}
    token: str | None = None
    for raw_key, raw_value in query:
        key = _decode(raw_key).decode("utf-8", "replace")
        if key in _QUERY_AUTH_PARAMS or key == "X-Amz-Security-Token":
            if key in params or (key == "X-Amz-Security-Token" and token is not None):
                raise _incomplete(f"The query-string parameter '{key}' may be specified only once.")
            value = _decode(raw_value).decode("utf-8", "replace")
            if key == "X-Amz-Security-Token":
                token = value
            else:
                params[key] = value
    if any(not params.get(name) for name in _QUERY_AUTH_PARAMS):
        raise _incomplete(
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', "
            "'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders' and 'X-Amz-Signature'. "
            "Re-examine the query-string parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _incomplete(f"X-Amz-Algorithm only supports '{ALGORITHM}'.")
    expires = params["X-Amz-Expires"]
    if not (expires.isascii() and expires.isdigit()) or not 1 <= int(expires) <= MAX_PRESIGNED_EXPIRES:
        raise _incomplete(_EXPIRES_MESSAGE)
    if token is None:
        tokens = _values(headers, "x-amz-security-token")
        token = tokens[0] if tokens else None
    return _parsed(
        credential=params["X-Amz-Credential"],
        signed_headers=params["X-Amz-SignedHeaders"],
        signature=params["X-Amz-Signature"],
        amz_date=params["X-Amz-Date"],
        presigned=True,
        expires=int(expires),
        security_token=token,
    )


def _parsed(
    *,
    credential: str,
    signed_headers: str,
    signature: str,
    amz_date: str,
    presigned: bool,
    expires: int | None,
    security_token: str | None,
) -> ParsedAuth:
    shape = _SHAPES.get((credential, signed_headers))
    if shape is None:
        parts = credential.split("/")
        if len(parts) != 5 or not all(parts[:4]):
            raise _incomplete(
                "Credential should be of the form '<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request', "
                f"not '{credential[:256]}'."
            )
        _amz_datetime(amz_date)
        names = tuple(signed_headers.split(";"))
        if not all(names):
            raise _incomplete("SignedHeaders must be a ';'-separated list of header names.")
        if "host" not in names:
            raise _incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        if len(_SHAPES) >= _MEMO_MAX:
            _SHAPES.clear()
        key_id, scope_date, scope_region, scope_service, scope_terminator = parts
        shape = (key_id, scope_date, scope_region, scope_service, scope_terminator, names)
        _SHAPES[(credential, signed_headers)] = shape
    else:
        _amz_datetime(amz_date)
    access_key_id, date, region, service, terminator, names = shape
    return ParsedAuth(
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        signed_headers=names,
        signature=signature,
        amz_date=amz_date,
        presigned=presigned,
        expires=expires,
        security_token=security_token,
        terminator=terminator,
    )


_MEMO_MAX = 256
# The credential scope and SignedHeaders of requests seen: both repeat on every request of a
# client for a day, and checking them costs more than looking them up. Only valid ones are kept.
_SHAPES: dict[tuple[str, str], tuple[str, str, str, str, str, tuple[str, ...]]] = {}
_DATETIMES: dict[str, datetime] = {}  # valid X-Amz-Date values seen, parsed
_SORTED_NAMES: set[tuple[str, ...]] = set()  # SignedHeaders lists seen lower-case, sorted and unique


def _shown_authorization(scheme: str, params: Mapping[str, str]) -> str:
    """The Authorization header as error messages may repeat it: never the signature, nor an unknown
    scheme's credentials."""
    if scheme != ALGORITHM:
        return scheme if _SCHEME_RE.fullmatch(scheme) else "<redacted>"
    shown = [f"{key}={params[key][:256]}" for key in ("Credential", "SignedHeaders") if key in params]
    return f"{ALGORITHM} " + ", ".join(shown) if shown else ALGORITHM


def _amz_datetime(amz_date: str) -> datetime:
    """X-Amz-Date as a UTC datetime; IncompleteSignatureException unless it is one."""
    known = _DATETIMES.get(amz_date)
    if known is not None:
        return known
    moment = _parse_amz_datetime(amz_date)
    if len(_DATETIMES) >= _MEMO_MAX:
        _DATETIMES.clear()
    _DATETIMES[amz_date] = moment
    return moment


def _parse_amz_datetime(amz_date: str) -> datetime:
    # The fixed-width digits are read by position: for this shape exactly the values strptime
    # with _AMZ_DATE_FORMAT accepts are valid datetimes, at a fraction of strptime's cost.
    if _AMZ_DATE_RE.fullmatch(amz_date):
        d = amz_date
        try:
            return datetime(
                int(d[0:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]), int(d[11:13]), int(d[13:15]), tzinfo=UTC
            )
        except ValueError:
            pass
    raise _incomplete(
        f"Date must be in ISO-8601 'basic format'. Got '{amz_date[:64]}'. See http://en.wikipedia.org/wiki/ISO_8601"
    )


def _values(headers: Mapping[str, Sequence[str]], name: str) -> Sequence[str]:
    values = headers.get(name)
    if values is None:
        return ()
    return (values,) if isinstance(values, str) else values


# -- the canonical request -----------------------------------------------------------------------------


def canonical_request(
    method: str,
    path: str | bytes,
    query_string: str | bytes,
    headers: Mapping[str, Sequence[str]],
    signed_headers: Sequence[str],
    payload_hash: str,
    *,
    presigned: bool = False,
) -> str:
    """The canonical request of SigV4 (non-S3 rules).

    `path` and `query_string` are raw, as on the wire. Bytes are used as they are (ASGI's `raw_path`
    and `query_string`); a `str` is read as bytes-in-a-string (Latin-1, as ASGI/WSGI decode), or as
    UTF-8 if it holds a character above U+00FF. `presigned` leaves X-Amz-Signature out of the query.
    A signed header the request lacks raises InvalidSignatureException.
    """
    lines = [
        method.upper(),
        canonical_uri(path),
        canonical_query_string(query_string, presigned=presigned),
    ]
    for name in signed_headers:
        values = _values(headers, name)
        if not values:
            raise _invalid()
        if len(values) == 1:
            lines.append(f"{name}:{_trim(values[0])}")
        else:
            lines.append(f"{name}:" + ",".join(_trim(value) for value in values))
    lines.append("")
    lines.append(";".join(signed_headers))
    lines.append(payload_hash)
    return "\n".join(lines)


def canonical_uri(path: str | bytes) -> str:
    if path == "/" or path == b"/":  # every AWS JSON API call
        return "/"
    raw = _raw(path)
    segments: list[bytes] = []
    for segment in raw.split(b"/"):
        if segment == b"..":
            if segments:
                segments.pop()
        elif segment and segment != b".":
            segments.append(segment)
    normalized = b"/".join(segments)
    if raw.startswith(b"/"):
        normalized = b"/" + normalized
    if raw.endswith(b"/") and segments:
        normalized += b"/"
    if not normalized:
        return "/"
    return "/".join(_encode(segment) for segment in normalized.split(b"/"))


def canonical_query_string(query_string: str | bytes, *, presigned: bool = False) -> str:
    if not query_string:
        return ""
    pairs = []
    for raw_key, raw_value in _query_pairs(_raw(query_string)):
        key = _decode(raw_key)
        if presigned and key == b"X-Amz-Signature":
            continue
        pairs.append((_encode(key), _encode(_decode(raw_value))))
    pairs.sort()
    return "&".join(f"{key}={value}" for key, value in pairs)


def _query_pairs(query: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for piece in query.split(b"&"):
        if piece:
            key, _, value = piece.partition(b"=")
            pairs.append((key, value))
    return pairs


def _raw(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _decode(component: bytes) -> bytes:
    return unquote_to_bytes(component.replace(b"+", b" "))


def _encode(data: bytes) -> str:
    return "".join([_ENCODED[b] for b in data])


def _trim(value: str) -> str:
    if "\t" not in value and "  " not in value:  # no run to collapse: the regex would change nothing
        return value.strip(" ")
    return _WS_RE.sub(" ", value.strip(" \t"))


# -- signing -------------------------------------------------------------------------------------------


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


_SIGNING_KEYS: dict[tuple[str, str, str, str], bytes] = {}
_SIGNING_KEYS_MAX = 1024


def _cached_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """`signing_key`, remembered: a key is a pure function of its inputs and changes once a day
    per access key and region, while its four HMACs cost as much as the rest of a verification."""
    index = (secret, date, region, service)
    key = _SIGNING_KEYS.get(index)
    if key is None:
        if len(_SIGNING_KEYS) >= _SIGNING_KEYS_MAX:
            _SIGNING_KEYS.clear()
        key = _SIGNING_KEYS[index] = signing_key(secret, date, region, service)
    return key


def signature(key: bytes, string_to_sign: str) -> str:
    return hmac.digest(key, string_to_sign.encode("utf-8"), "sha256").hex()


# -- verification --------------------------------------------------------------------------------------


def verify(
    parsed: ParsedAuth,
    *,
    secret_access_key: str,
    method: str,
    path: str | bytes,
    query_string: str | bytes,
    headers: Mapping[str, Sequence[str]],
    payload_sha256_hex: str,
    now: datetime,
    expected_service: str = "ecr",
    max_skew: timedelta = timedelta(minutes=15),
) -> None:
    """Raise SigV4Error unless `parsed` is a valid signature of this request by `secret_access_key`.

    The region in the scope is not checked (it picks the registry). `now` is UTC (naive is taken as
    UTC). Header form: X-Amz-Date within `max_skew` of `now`. Pre-signed form: valid from X-Amz-Date
    (less `max_skew`, for clock drift) to X-Amz-Date + X-Amz-Expires inclusive.
    """
    if parsed.security_token is not None:
        raise SigV4Error(UNRECOGNIZED_CLIENT)
    if parsed.terminator != TERMINATOR:
        raise _invalid(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{parsed.terminator[:64]}'."
        )
    if parsed.service != expected_service:
        raise _invalid(f"Credential should be scoped to correct service: '{expected_service}'.")
    request_time = _amz_datetime(parsed.amz_date)
    if parsed.date != parsed.amz_date[:8]:
        raise _invalid(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{parsed.date[:64]}' != '{parsed.amz_date[:8]}', from '{parsed.amz_date}'."
        )
    if "host" not in parsed.signed_headers:
        raise _incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    _check_time(parsed, request_time, now, max_skew)
    names = parsed.signed_headers
    if names not in _SORTED_NAMES:
        if list(names) != sorted(set(names)) or any(name != name.lower() for name in names):
            raise _invalid()
        if len(_SORTED_NAMES) >= _MEMO_MAX:
            _SORTED_NAMES.clear()
        _SORTED_NAMES.add(names)

    payload_hash = _payload_hash(headers, payload_sha256_hex)
    canonical = canonical_request(method, path, query_string, headers, names, payload_hash, presigned=parsed.presigned)
    key = _cached_signing_key(secret_access_key, parsed.date, parsed.region, parsed.service)
    expected = signature(key, string_to_sign(parsed.amz_date, parsed.credential_scope, canonical))
    if not hmac.compare_digest(expected.encode("ascii"), parsed.signature.encode("utf-8", "surrogatepass")):
        raise _invalid()


def _check_time(parsed: ParsedAuth, request_time: datetime, now: datetime, max_skew: timedelta) -> None:
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    earliest, latest = now - max_skew, now + max_skew
    if request_time > latest:
        raise _invalid(
            f"Signature not yet current: {parsed.amz_date} is still later than {_fmt(latest)} "
            f"({_fmt(now)} + {_minutes(max_skew)})"
        )
    if parsed.presigned:
        if parsed.expires is None or not 1 <= parsed.expires <= MAX_PRESIGNED_EXPIRES:
            raise _incomplete(_EXPIRES_MESSAGE)
        if now > request_time + timedelta(seconds=parsed.expires):
            raise _invalid(
                f"Request has expired: {parsed.amz_date} + {parsed.expires} seconds is earlier than {_fmt(now)}."
            )
    elif request_time < earliest:
        raise _invalid(
            f"Signature expired: {parsed.amz_date} is now earlier than {_fmt(earliest)} "
            f"({_fmt(now)} - {_minutes(max_skew)})"
        )


def _minutes(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 60)} min."


def _payload_hash(headers: Mapping[str, Sequence[str]], actual: str) -> str:
    """The payload line of the canonical request; x-amz-content-sha256, when sent, must be the body's
    hash (UNSIGNED-PAYLOAD and the streaming forms are S3's only)."""
    declared = _values(headers, "x-amz-content-sha256")
    if not declared:
        return actual
    value = declared[0].strip() if len(declared) == 1 else ""
    if not _HEX64_RE.fullmatch(value) or value.lower() != actual.lower():
        raise _invalid("The provided 'x-amz-content-sha256' header does not match what was computed.")
    return value


def _fmt(moment: datetime) -> str:
    return moment.strftime(_AMZ_DATE_FORMAT)
