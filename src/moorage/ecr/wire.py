"""ECR wire concerns shared by every handler: the error type and the one domain→ECR error table,
timestamps, ARNs/URIs, and tamper-proof pagination tokens.

Errors are answered as AWS JSON 1.1 does: HTTP 400 (500 for ServerException) with
`{"__type": "<Code>", "message": "..."}` plus any modelled extra members.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from moorage import errors as e
from moorage.model import PageRequest, Repository
from moorage.tokens import TokenError, TokenSigner

__all__ = ["EcrError", "epoch", "map_error", "page_request", "repository_arn", "to_ecr"]


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
