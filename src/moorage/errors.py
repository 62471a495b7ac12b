"""Protocol-neutral domain exceptions.

Services raise these; each wire front-end maps them to its own codes in exactly one table
(`oci/errors.py` for the registry API, `ecr/wire.py` for the ECR API). No wire name appears here.

    MoorageError
    ├── NotFoundError
    │   ├── RepositoryNotFoundError
    │   ├── ManifestUnknownError          (image / tag / digest not in the repository)
    │   ├── BlobUnknownError
    │   ├── UploadUnknownError
    │   ├── LifecyclePolicyNotFoundError
    │   ├── LifecyclePreviewNotFoundError
    │   ├── ExclusionNotFoundError        (principal not on the pull-time update exclusion list)
    │   ├── TemplateNotFoundError         (no repository creation template for the prefix)
    │   └── BackfillNotFoundError         (no replication backfill with that id)
    ├── InvalidRequestError
    │   ├── NameInvalidError
    │   ├── TagInvalidError
    │   ├── DigestInvalidError
    │   │   └── DigestMismatchError       (content does not hash to the digest given)
    │   ├── ManifestInvalidError
    │   ├── ManifestBlobUnknownError      (manifest names blobs / children that are not in the repository)
    │   ├── SizeInvalidError
    │   ├── UploadInvalidError
    │   ├── RangeNotSatisfiableError      (blob Range outside the blob)
    │   ├── PaginationInvalidError
    │   └── UnsupportedError
    ├── ConflictError
    │   ├── RepositoryAlreadyExistsError
    │   ├── RepositoryNotEmptyError
    │   ├── ImageTagAlreadyExistsError    (tag is immutable)
    │   ├── UploadOffsetMismatchError     (chunk does not start where the session ends)
    │   ├── LifecyclePreviewInProgressError
    │   ├── StorageClassUpdateError       (the image's status does not allow that storage-class change)
    │   ├── ExclusionExistsError          (principal already on the pull-time update exclusion list)
    │   ├── TemplateAlreadyExistsError    (a repository creation template for the prefix exists)
    │   ├── BackfillInProgressError       (a backfill to that destination region is in progress)
    │   └── BackfillInvalidStatusError    (the backfill's status does not allow the operation)
    ├── LimitExceededError                (a count quota, e.g. pull-time update exclusions)
    ├── TooLargeError                     (a body over its size limit)
    ├── TooManyTagsError                  (resource tags over their limit)
    ├── AuthenticationError
    └── AccessDeniedError

Secrets (secrets.py): SecretNotFoundError (a NotFoundError), SecretExistsError (a ConflictError),
SecretStateError (an InvalidRequestError: the secret's state forbids it, e.g. scheduled for
deletion; other InvalidRequestErrors there are bad parameters), SecretDecryptionError.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "BackfillInProgressError",
    "BackfillInvalidStatusError",
    "BackfillNotFoundError",
    "BlobUnknownError",
    "ConflictError",
    "DigestInvalidError",
    "DigestMismatchError",
    "ExclusionExistsError",
    "ExclusionNotFoundError",
    "ImageTagAlreadyExistsError",
    "InvalidRequestError",
    "LifecyclePolicyNotFoundError",
    "LifecyclePreviewInProgressError",
    "LifecyclePreviewNotFoundError",
    "LimitExceededError",
    "ManifestBlobUnknownError",
    "ManifestInvalidError",
    "ManifestUnknownError",
    "MoorageError",
    "NameInvalidError",
    "NotFoundError",
    "PaginationInvalidError",
    "RangeNotSatisfiableError",
    "RepositoryAlreadyExistsError",
    "RepositoryNotEmptyError",
    "RepositoryNotFoundError",
    "SizeInvalidError",
    "StorageClassUpdateError",
    "TagInvalidError",
    "TemplateAlreadyExistsError",
    "TemplateNotFoundError",
    "TooLargeError",
    "TooManyTagsError",
    "UnsupportedError",
    "UploadInvalidError",
    "UploadOffsetMismatchError",
    "UploadUnknownError",
]


class MoorageError(Exception):
    """Base of every domain error. `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(MoorageError):
    pass


class RepositoryNotFoundError(NotFoundError):
    def __init__(self, name: str, registry_id: str) -> None:
        super().__init__(f"The repository with name '{name}' does not exist in the registry with id '{registry_id}'")
        self.name = name
        self.registry_id = registry_id


class ManifestUnknownError(NotFoundError):
    """`reference` is the tag or digest asked for (the registry API); `image_id` the API's
    (imageDigest, imageTag) pair when the image was asked for by an imageId."""

    def __init__(
        self, message: str, reference: str = "", *, image_id: tuple[str | None, str | None] | None = None
    ) -> None:
        super().__init__(message)
        self.reference = reference
        self.image_id = image_id


class BlobUnknownError(NotFoundError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"blob unknown to registry: {digest}")
        self.digest = digest


class UploadUnknownError(NotFoundError):
    def __init__(self, upload_id: str) -> None:
        super().__init__(f"blob upload unknown to registry: {upload_id}")
        self.upload_id = upload_id


class InvalidRequestError(MoorageError):
    pass


class NameInvalidError(InvalidRequestError):
    pass


class TagInvalidError(InvalidRequestError):
    pass


class DigestInvalidError(InvalidRequestError):
    pass


class DigestMismatchError(DigestInvalidError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"provided digest did not match uploaded content: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ManifestInvalidError(InvalidRequestError):
    pass


class ManifestBlobUnknownError(InvalidRequestError):
    """Blobs (or, with `children`, child manifests of an index) the manifest needs are missing."""

    def __init__(self, digests: list[str], *, children: bool = False) -> None:
        what = "manifests" if children else "blobs"
        super().__init__(f"manifest references unknown {what}: " + ", ".join(digests))
        self.digests = digests
        self.children = children


class SizeInvalidError(InvalidRequestError):
    pass


class UploadInvalidError(InvalidRequestError):
    pass


class RangeNotSatisfiableError(InvalidRequestError):
    def __init__(self, size: int) -> None:
        super().__init__("requested range not satisfiable")
        self.size = size


class PaginationInvalidError(InvalidRequestError):
    pass


class UnsupportedError(InvalidRequestError):
    pass


class ConflictError(MoorageError):
    pass


class RepositoryAlreadyExistsError(ConflictError):
    def __init__(self, name: str, registry_id: str) -> None:
        super().__init__(f"The repository with name '{name}' already exists in the registry with id '{registry_id}'")
        self.name = name
        self.registry_id = registry_id


class RepositoryNotEmptyError(ConflictError):
    def __init__(self, name: str, registry_id: str) -> None:
        super().__init__(
            f"The repository with name '{name}' in registry with id '{registry_id}' cannot be deleted "
            "because it still contains images"
        )
        self.name = name
        self.registry_id = registry_id


class ImageTagAlreadyExistsError(ConflictError):
    def __init__(self, tag: str, name: str, registry_id: str) -> None:
        super().__init__(
            f"The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten "
            "because the repository is immutable."
        )
        self.tag = tag
        self.name = name
        self.registry_id = registry_id


class UploadOffsetMismatchError(ConflictError):
    """A chunk did not start at the session's current end; `size` is how many bytes it holds."""

    def __init__(self, upload_id: str, size: int) -> None:
        super().__init__(f"upload {upload_id} holds {size} bytes; the chunk must start at byte {size}")
        self.upload_id = upload_id
        self.size = size


class TooManyTagsError(MoorageError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"A repository can have at most {limit} resource tags")
        self.limit = limit


class TooLargeError(MoorageError):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} exceeds the limit of {limit} bytes")
        self.limit = limit


class AuthenticationError(MoorageError):
    pass


class AccessDeniedError(MoorageError):
    pass


class LifecyclePolicyNotFoundError(NotFoundError):
    def __init__(self, name: str, registry_id: str) -> None:
        super().__init__(
            f"Lifecycle policy does not exist for the repository with name '{name}' in the registry with id "
            f"'{registry_id}'"
        )


class LifecyclePreviewNotFoundError(NotFoundError):
    def __init__(self, name: str, registry_id: str) -> None:
        super().__init__(
            f"Lifecycle policy preview does not exist for the repository with name '{name}' in the registry with "
            f"id '{registry_id}'"
        )


class LifecyclePreviewInProgressError(ConflictError):
    def __init__(self) -> None:
        super().__init__("The previous lifecycle policy preview request has not completed. Please try again later.")


class StorageClassUpdateError(ConflictError):
    pass


class ExclusionExistsError(ConflictError):
    pass


class ExclusionNotFoundError(NotFoundError):
    pass


class LimitExceededError(MoorageError):
    pass


class TemplateAlreadyExistsError(ConflictError):
    """A repository creation template for that prefix exists already."""


class TemplateNotFoundError(NotFoundError):
    """No repository creation template for that prefix."""


class BackfillNotFoundError(NotFoundError):
    """No replication backfill with that id in the registry."""


class BackfillInProgressError(ConflictError):
    """A replication backfill to that destination region is in progress already."""


class BackfillInvalidStatusError(ConflictError):
    """The backfill's status does not allow the operation (stopping a finished one, say)."""


# -- pull-through cache --------------------------------------------------------------------------


class PullThroughRuleExistsError(ConflictError):
    def __init__(self, prefix: str, registry_id: str) -> None:
        super().__init__(
            f"A pull through cache rule with the prefix '{prefix}' already exists "
            f"in the registry with id '{registry_id}'"
        )


class PullThroughRuleNotFoundError(NotFoundError):
    def __init__(self, prefix: str, registry_id: str) -> None:
        super().__init__(
            f"The pull through cache rule with the prefix '{prefix}' does not exist "
            f"in the registry with id '{registry_id}'"
        )


class UnsupportedUpstreamError(InvalidRequestError):
    pass


class SecretNotFoundError(NotFoundError):
    pass


class UpstreamFailedError(MoorageError):
    """The upstream of a pull-through cache rule could not give an image that is not cached.
    `kind`: denied | too_many | unavailable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamTooManyRequestsError(UpstreamFailedError):
    pass


class UpstreamUnavailableError(UpstreamFailedError):
    pass


class UpstreamAccessDeniedError(UpstreamFailedError):
    pass


# -- Secrets Manager ------------------------------------------------------------------------------


class SecretExistsError(ConflictError):
    """A secret of that name exists, or a version id is taken with another value."""


class SecretStateError(InvalidRequestError):
    """The secret's state forbids the operation (e.g. it is scheduled for deletion); other
    InvalidRequestErrors of the secrets service are bad parameters."""


class SecretDecryptionError(MoorageError):
    """A stored secret value does not open under the master key."""
