"""Signed, self-contained tokens: registry passwords, pagination tokens, pre-signed layer URLs.

    token = base64url(json payload) "." base64url(HMAC-SHA256(key, kind "." payload))

The key lives in the metadata store (`kv` row `secret/token-key`, created once), so every worker
process and every replica verifies what any other issued. `kind` separates the uses: a pagination
token can never pass as a password. Verification is constant-time; expired tokens are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from moorage.metadata import MetadataStore

__all__ = ["TokenError", "TokenExpiredError", "TokenSigner", "load_token_key"]

_KEY_NAME = "secret/token-key"


class TokenError(Exception):
    """The token is malformed, forged or meant for another use."""


class TokenExpiredError(TokenError):
    pass


async def load_token_key(metadata: MetadataStore) -> bytes:
    async with metadata.transaction(write=True) as tx:
        stored = await tx.kv.put_if_absent(_KEY_NAME, secrets.token_hex(32))
    return bytes.fromhex(stored)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, kind: str, body: str) -> str:
        return _b64(hmac.new(self._key, f"{kind}.{body}".encode(), hashlib.sha256).digest())

    def sign(self, kind: str, payload: dict[str, Any], *, expires_at: float | None = None) -> str:
        document = dict(payload)
        if expires_at is not None:
            document["exp"] = round(expires_at, 3)
        body = _b64(json.dumps(document, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._mac(kind, body)}"

    def verify(self, kind: str, token: str, *, now: float | None) -> dict[str, Any]:
        """The payload of a genuine, unexpired token of this kind; TokenError otherwise.
        `now=None` skips the expiry check (open mode reads a token's claims without enforcing it)."""
        body, sep, mac = token.partition(".")
        if not sep or not body or not mac:
            raise TokenError("malformed token")
        if not hmac.compare_digest(mac.encode(), self._mac(kind, body).encode()):
            raise TokenError("invalid token signature")
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            raise TokenError("malformed token") from None
        if not isinstance(payload, dict):
            raise TokenError("malformed token")
        expires = payload.get("exp")
        if expires is not None and (not isinstance(expires, int | float) or (now is not None and now > expires)):
            raise TokenExpiredError("token expired")
        return payload
