"""ECR's input validation: botocore's ECR model through the shared validator of
`moorage.validation` (the rules and their wording are documented there)."""

from __future__ import annotations

from moorage.validation import (
    INVALID_PARAMETER,
    SERIALIZATION,
    VALIDATION,
    InputValidator,
    ValidationFailure,
    operation_names,
)

__all__ = [
    "INVALID_PARAMETER",
    "SERIALIZATION",
    "VALIDATION",
    "InputValidator",
    "ValidationFailure",
    "operation_names",
]
