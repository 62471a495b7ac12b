"""ECR wire concerns shared by every handler: the error type and the one domain→ECR error table,
timestamps, ARNs/URIs, and tamper-proof pagination tokens.

Errors are answered as AWS JSON 1.1 does: HTTP 400 (500 for ServerException) with
`{"__type": "<Code>", "message": "..."}` plus any modelled extra members.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any, Final, NoReturn

from moorage import errors as e
from moorage.model import PageRequest, Repository
from moorage.tokens import TokenError, TokenSigner

__all__ = [
    "MAX_JSON_DEPTH",
    "EcrError",
    "decode_body",
    "epoch",
    "map_error",
    "page_request",
    "repository_arn",
    "to_ecr",
]


class EcrError(Exception):
    """An ECR error response."""

    def __init__(self, code: str, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"__type": self.code, "message": self.message, **self.extra}


# --- request bodies -----------------------------------------------------------------------------

# ECR's input shapes nest at most 7 levels; a body nested deeper than this is refused before it
# is parsed (Python's recursive JSON decoder would otherwise hit the interpreter's recursion limit).
MAX_JSON_DEPTH: Final = 64
_NESTING_TOKEN: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_SERIALIZATION: Final = "SerializationException"


def _malformed(detail: str) -> NoReturn:
    raise EcrError(_SERIALIZATION, f"The request body is not valid JSON: {detail}")


def _json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """True when arrays/objects in `raw` nest deeper than `limit` (brackets inside strings do not
    count). Bodies with few brackets, i.e. every real request, are answered by counting alone."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for match in _NESTING_TOKEN.finditer(raw):
        token = match[0]
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def _reject_constant(name: str) -> NoReturn:
    _malformed(f"{name} is not a JSON number")


def decode_body(raw: bytes) -> Any:
    """The JSON value of an ECR request body (empty means `{}`), or SerializationException for a
    body that is not UTF-8 JSON, nests deeper than MAX_JSON_DEPTH levels or uses the non-standard
    constants NaN/Infinity. Numbers out of any modelled range (1e400, 400-digit integers) decode
    and are refused by validation; strings are checked there too (unpaired surrogates, NUL)."""
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _malformed(f"invalid UTF-8 at byte {exc.start}")
    if _json_depth_exceeds(raw, MAX_JSON_DEPTH):
        _malformed(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        _malformed(f"{exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError):  # e.g. an integer literal of more than 4300 digits
        _malformed("a value cannot be decoded")


# --- errors ------------------------------------------------------------------------------------

# Most specific first; the first matching class wins.
_TABLE: list[tuple[type[e.MoorageError], str]] = [
    (e.RepositoryNotFoundError, "RepositoryNotFoundException"),
    (e.RepositoryAlreadyExistsError, "RepositoryAlreadyExistsException"),
    (e.RepositoryNotEmptyError, "RepositoryNotEmptyException"),
    (e.ImageTagAlreadyExistsError, "ImageTagAlreadyExistsException"),
    (e.ManifestUnknownError, "ImageNotFoundException"),
    (e.UploadUnknownError, "UploadNotFoundException"),
    (e.UploadOffsetMismatchError, "InvalidLayerPartException"),
    (e.DigestMismatchError, "InvalidLayerException"),
    (e.AccessDeniedError, "AccessDeniedException"),
    (e.TooManyTagsError, "TooManyTagsException"),
    (e.LifecyclePolicyNotFoundError, "LifecyclePolicyNotFoundException"),
    (e.LifecyclePreviewNotFoundError, "LifecyclePolicyPreviewNotFoundException"),
    (e.LifecyclePreviewInProgressError, "LifecyclePolicyPreviewInProgressException"),
    (e.StorageClassUpdateError, "ImageStorageClassUpdateNotSupportedException"),
    (e.ExclusionExistsError, "ExclusionAlreadyExistsException"),
    (e.ExclusionNotFoundError, "ExclusionNotFoundException"),
    (e.LimitExceededError, "LimitExceededException"),
    (e.TemplateAlreadyExistsError, "TemplateAlreadyExistsException"),
    (e.TemplateNotFoundError, "TemplateNotFoundException"),
    (e.BackfillNotFoundError, "ReplicationBackfillNotFoundException"),
    (e.BackfillInProgressError, "ReplicationBackfillInProgressException"),
    (e.BackfillInvalidStatusError, "ReplicationBackfillInvalidStatusException"),
    (e.PullThroughRuleExistsError, "PullThroughCacheRuleAlreadyExistsException"),
    (e.PullThroughRuleNotFoundError, "PullThroughCacheRuleNotFoundException"),
    (e.UnsupportedUpstreamError, "UnsupportedUpstreamRegistryException"),
    (e.SecretNotFoundError, "SecretNotFoundException"),
    (e.UpstreamFailedError, "UnableToGetUpstreamImageException"),
    (e.AuthenticationError, "UnrecognizedClientException"),
    (e.InvalidRequestError, "InvalidParameterException"),
    (e.TooLargeError, "InvalidParameterException"),
    (e.ConflictError, "InvalidParameterException"),
    (e.NotFoundError, "InvalidParameterException"),
]


def map_error(exc: e.MoorageError) -> EcrError:
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return EcrError(code, exc.message)
    return EcrError("ServerException", "An internal error occurred", status=500)


def epoch(value: datetime) -> float:
    """Timestamps go on the wire as epoch seconds (with a fractional part)."""
    return round(value.timestamp(), 3)


def repository_arn(repo: Repository) -> str:
    return f"arn:aws:ecr:{repo.registry.region}:{repo.registry.account_id}:repository/{repo.name}"


def to_ecr(exc: Exception) -> EcrError:
    if isinstance(exc, EcrError):
        return exc
    if isinstance(exc, e.MoorageError):
        return map_error(exc)
    return EcrError("ServerException", "An internal error occurred", status=500)


def page_request(
    tokens: TokenSigner, op: str, scope: str, params: dict[str, Any], *, default: int | None = None
) -> PageRequest:
    """The page a call asks for; `nextToken` must be one this server issued for the same
    operation and scope (registry + repository)."""
    limit = params.get("maxResults", default)
    token = params.get("nextToken")
    after = None
    if token is not None:
        try:
            claims = tokens.verify("page", token, now=time.time())
        except TokenError:
            raise EcrError(
                "InvalidParameterException",
                "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid token'",
            ) from None
        if claims.get("o") != op or claims.get("s") != scope:
            raise EcrError(
                "InvalidParameterException",
                "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid token'",
            )
        after = str(claims["a"])
    return PageRequest(limit=limit, after=after)


def next_token(tokens: TokenSigner, op: str, scope: str, after: str | None) -> dict[str, str]:
    """`{"nextToken": ...}` when there is a next page, else `{}`. Tokens expire after a day."""
    if after is None:
        return {}
    return {"nextToken": tokens.sign("page", {"o": op, "s": scope, "a": after}, expires_at=time.time() + 86400)}
