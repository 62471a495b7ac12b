"""Console sessions: a signed, expiring cookie, and the CSRF token every form carries.

    cookie  moorage_console = base64url(JSON payload) "." base64url(HMAC-SHA256(key, payload))
            HttpOnly; SameSite=Strict; Path=/console; Secure under TLS; Max-Age = what is left

The key is derived from the master key (`derive_key`), so every worker and replica sharing the
master key accepts the same cookie, and a new master key ends every session. The payload names
the principal (account, user), how it signed in (an access key id, or a registry password and its
expiry) and the region and registry account it acts in; nothing secret. The CSRF token is
HMAC(key, "csrf" + the session's random nonce): per session, checked in constant time on every
POST. Before sign-in, the sign-in form is protected by a double-submit token (a random cookie
whose value the form repeats).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = [
    "COOKIE",
    "FLASH_COOKIE",
    "PRE_COOKIE",
    "Session",
    "SessionCodec",
    "derive_key",
]

COOKIE = "moorage_console"
PRE_COOKIE = "moorage_console_signin"
FLASH_COOKIE = "moorage_console_flash"


def derive_key(master_key: bytes) -> bytes:
    """The console's signing key: HMAC of the master key with a fixed label (never the master key itself)."""
    return hmac.new(master_key, b"moorage console session v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    account_id: str
    user_name: str | None
    region: str
    registry_account: str
    method: str  # "key" or "password"
    access_key_id: str | None
    expires_at: float
    nonce: str

    def switched(self, *, region: str | None = None, registry_account: str | None = None) -> Session:
        return replace(
            self,
            region=region or self.region,
            registry_account=registry_account or self.registry_account,
        )


class SessionCodec:
    """Signs and verifies session cookies and CSRF tokens with one derived key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, label: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, label + b"\0" + data, hashlib.sha256).digest()

    def new(
        self,
        account_id: str,
        user_name: str | None,
        region: str,
        *,
        method: str,
        access_key_id: str | None,
        expires_at: float,
    ) -> Session:
        return Session(
            account_id, user_name, region, account_id, method, access_key_id, expires_at, secrets.token_hex(16)
        )

    def encode(self, session: Session) -> str:
        payload = json.dumps(asdict(session), separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}"

    def decode(self, value: str | None, *, now: float) -> Session | None:
        """The session of a genuine, unexpired cookie; None for anything else."""
        if not value or len(value) > 4096 or "." not in value:
            return None
        body, _, mac = value.partition(".")
        try:
            payload = _unb64(body)
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(b"session", payload)):
            return None
        try:
            data: dict[str, Any] = json.loads(payload)
            session = Session(**data)
        except (ValueError, TypeError):
            return None
        if not isinstance(session.expires_at, int | float) or session.expires_at <= now:
            return None
        return session

    def csrf(self, session: Session) -> str:
        return _b64(self._mac(b"csrf", session.nonce.encode()))

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf(session).encode())

    def sign_text(self, text: str) -> str:
        """`text` with a MAC (flash messages: only the server can have written them)."""
        raw = text.encode()
        return f"{_b64(raw)}.{_b64(self._mac(b'flash', raw))}"

    def unsign_text(self, value: str | None) -> str | None:
        if not value or "." not in value or len(value) > 4096:
            return None
        body, _, mac = value.partition(".")
        try:
            raw, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(b"flash", raw)):
            return None
        return raw.decode("utf-8", "replace")
