"""Who is calling, and for which registry.

`Principal` is the authenticated caller. A `RegistryAuthenticator` turns the headers of a `/v2/`
request into a principal and the registry the request addresses. This milestone ships the
anonymous implementation (every caller is the default account's root); SigV4 verification and
ECR registry passwords plug in behind the same interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from moorage.model import RegistryRef

__all__ = ["AnonymousAuthenticator", "Principal", "RegistryAuthenticator"]


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    arn: str
    user_name: str | None = None

    @classmethod
    def root(cls, account_id: str) -> Principal:
        return cls(account_id, f"arn:aws:iam::{account_id}:root")


class RegistryAuthenticator(Protocol):
    async def authenticate(
        self, headers: Mapping[str, Sequence[str]], host: str | None
    ) -> tuple[Principal, RegistryRef]:
        """The caller and the registry addressed. Raises AuthenticationError (answered 401 with
        the challenge from `challenge()`)."""
        ...

    def challenge(self, host: str | None) -> str | None:
        """The WWW-Authenticate value for a 401, or None when no credentials are ever needed."""
        ...


class AnonymousAuthenticator:
    """Everyone is the root of the default account, addressing the default registry."""

    def __init__(self, registry: RegistryRef) -> None:
        self._registry = registry
        self._principal = Principal.root(registry.account_id)

    async def authenticate(
        self, headers: Mapping[str, Sequence[str]], host: str | None
    ) -> tuple[Principal, RegistryRef]:
        return self._principal, self._registry

    def challenge(self, host: str | None) -> str | None:
        return None
