"""The registry API's error table: every domain error's OCI code and HTTP status, declared once.

Body shape (OCI distribution spec): {"errors": [{"code": ..., "message": ..., "detail": ...}]}.
"""

from __future__ import annotations

import json
from typing import Any

from moorage import errors as e

__all__ = ["error_body", "oci_error"]

# Most specific first: the first class in this table that the error is an instance of wins.
_TABLE: list[tuple[type[e.MoorageError], str, int]] = [
    (e.RepositoryNotFoundError, "NAME_UNKNOWN", 404),
    (e.ManifestUnknownError, "MANIFEST_UNKNOWN", 404),
    (e.BlobUnknownError, "BLOB_UNKNOWN", 404),
    (e.UploadUnknownError, "BLOB_UPLOAD_UNKNOWN", 404),
    (e.NameInvalidError, "NAME_INVALID", 400),
    (e.TagInvalidError, "TAG_INVALID", 400),
    (e.ImageTagAlreadyExistsError, "TAG_INVALID", 400),
    (e.DigestInvalidError, "DIGEST_INVALID", 400),
    (e.ManifestBlobUnknownError, "MANIFEST_BLOB_UNKNOWN", 400),
    (e.ManifestInvalidError, "MANIFEST_INVALID", 400),
    (e.SizeInvalidError, "SIZE_INVALID", 400),
    (e.UploadOffsetMismatchError, "BLOB_UPLOAD_INVALID", 416),
    (e.UploadInvalidError, "BLOB_UPLOAD_INVALID", 400),
    (e.RangeNotSatisfiableError, "RANGE_INVALID", 416),
    (e.PaginationInvalidError, "PAGINATION_NUMBER_INVALID", 400),
    (e.UnsupportedError, "UNSUPPORTED", 415),
    (e.TooLargeError, "SIZE_INVALID", 413),
    (e.UpstreamTooManyRequestsError, "TOOMANYREQUESTS", 429),
    (e.UpstreamAccessDeniedError, "DENIED", 403),
    (e.UpstreamUnavailableError, "UNAVAILABLE", 503),
    (e.AuthenticationError, "UNAUTHORIZED", 401),
    (e.AccessDeniedError, "DENIED", 403),
    (e.NotFoundError, "NAME_UNKNOWN", 404),
    (e.ConflictError, "DENIED", 409),
    (e.InvalidRequestError, "UNSUPPORTED", 400),
]


def oci_error(error: e.MoorageError) -> tuple[str, int]:
    """The (code, HTTP status) for a domain error."""
    for cls, code, status in _TABLE:
        if isinstance(error, cls):
            return code, status
    return "UNKNOWN", 500


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}).encode()
