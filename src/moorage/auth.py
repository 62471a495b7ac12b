"""Who is calling, and for which registry.

Two faces, two authenticators, one `Principal`:

    ECR API   POST /   SigV4 (header or pre-signed query)  ─► ApiAuthenticator      ─► ApiCaller(principal, region)
    /v2/...            Basic AWS:<password>                ─► TokenRegistryAuthenticator ─► (principal, registry)

A registry password is a signed token (tokens.py, kind "registry") carrying the account, region
and principal it was issued to and its expiry; any worker or replica verifies it statelessly.
The registry a `/v2/` request addresses comes from the host name when it has the form
`<account>.dkr.ecr.<region>.<registry_domain>`, else from the token. Authentication only says
who calls and where: whether they may (another account's registry included) is decided per
request by `authz.Authorizer`. A token is bound to its region, as ECR's: a token of another
region than the endpoint's is 401 UNAUTHORIZED naming both regions. The endpoint's region is the
one its host name names; without `registry_domain` the one endpoint is the configured `region`'s;
with `registry_domain`, a request whose host names no registry (e.g. by IP) is served for the
token's own registry.

`auth.mode = "open"` (a drop-in test double) checks no signature or password: a caller whose
access key id is a 12-digit number acts as that account's root, anyone else as the default
account's root. On `/v2/`, a password from GetAuthorizationToken is read exactly as in SigV4
mode (its account and principal, its region bound to the endpoint's; its expiry is not checked);
without one (or with anything else) the caller is the root of the registry addressed. Resource
policies (repository and registry) still apply to them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from moorage import sigv4
from moorage.errors import AccessDeniedError, AuthenticationError
from moorage.identity import Identities
from moorage.model import RegistryRef
from moorage.tokens import TokenError, TokenExpiredError, TokenSigner

__all__ = [
    "AnonymousAuthenticator",
    "ApiAuthenticator",
    "ApiCaller",
    "Principal",
    "RegistryAuthenticator",
    "TokenRegistryAuthenticator",
    "registry_from_host",
]

TOKEN_EXPIRED = "Your authorization token has expired. Reauthenticate and try again."  # noqa: S105 (a message, not a password)
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_SCOPE_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([a-z0-9-]+)/")


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    arn: str
    user_name: str | None = None

    @classmethod
    def root(cls, account_id: str) -> Principal:
        return cls(account_id, f"arn:aws:iam::{account_id}:root")

    @classmethod
    def of(cls, account_id: str, user_name: str | None) -> Principal:
        if user_name is None:
            return cls.root(account_id)
        return cls(account_id, f"arn:aws:iam::{account_id}:user/{user_name}", user_name)


@dataclass(frozen=True, slots=True)
class ApiCaller:
    principal: Principal
    region: str
    access_key_id: str


def registry_from_host(host: str | None, domain: str | None) -> RegistryRef | None:
    """`<account>.dkr.ecr.<region>.<domain>[:port]` names a registry; anything else does not."""
    if not host or not domain:
        return None
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    parts = name.split(".", 4)
    if len(parts) == 5 and parts[1:3] == ["dkr", "ecr"] and parts[4] == domain and _ACCOUNT_RE.fullmatch(parts[0]):
        return RegistryRef(parts[0], parts[3])
    return None


class RegistryAuthenticator(Protocol):
    async def authenticate(
        self, headers: Mapping[str, Sequence[str]], host: str | None
    ) -> tuple[Principal, RegistryRef]:
        """The caller and the registry addressed. Raises AuthenticationError (401 with
        `challenge()`), AccessDeniedError (403, e.g. an expired token)."""
        ...

    def challenge(self, host: str | None, scheme: str = "https") -> str | None:
        """The WWW-Authenticate value for a 401 (`scheme` is the listener's), or None when
        credentials are never needed."""
        ...


VERIFIED_TOKENS_KEPT = 4096
"""How many verified registry passwords a process remembers (TokenRegistryAuthenticator)."""


def _basic_challenge(host: str | None, scheme: str) -> str:
    return f'Basic realm="{scheme}://{host or "localhost"}/",service="ecr.amazonaws.com"'


def _basic_password(headers: Mapping[str, Sequence[str]]) -> str | None:
    values = headers.get("authorization") or ()
    for value in values:
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() != "basic":
            continue
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return password if sep and user == "AWS" else None
    return None


class TokenRegistryAuthenticator:
    """SigV4 mode for `/v2/`: HTTP Basic with user `AWS` and a password from GetAuthorizationToken."""

    def __init__(self, tokens: TokenSigner, *, domain: str | None, default_region: str | None = None) -> None:
        self._tokens = tokens
        self._domain = domain
        # Without a registry domain the one /v2/ endpoint is this region's (None: the token's).
        self._default_region = default_region if domain is None else None
        # Passwords whose signature was verified, with their claims: a client sends the same
        # password on every request, and a genuine one stays genuine (the signing key never
        # changes); its expiry is checked on every use. Bounded: cleared when full.
        self._verified: dict[str, dict[str, Any]] = {}

    def issue(self, principal: Principal, registry: RegistryRef, *, expires_at: float) -> str:
        payload = {"a": registry.account_id, "r": registry.region, "p": principal.account_id}
        if principal.user_name is not None:
            payload["u"] = principal.user_name
        return self._tokens.sign("registry", payload, expires_at=expires_at)

    def claims(self, password: str, *, check_expiry: bool = True) -> dict[str, Any]:
        """The claims of a genuine password; TokenExpiredError / TokenError otherwise."""
        claims = self._verified.get(password)
        if claims is None:
            claims = self._tokens.verify("registry", password, now=None)
            if len(self._verified) >= VERIFIED_TOKENS_KEPT:
                self._verified.clear()
            self._verified[password] = claims
        if check_expiry:
            expires = claims.get("exp")
            if expires is not None and time.time() > expires:
                raise TokenExpiredError("token expired")
        return claims

    def resolve(self, claims: Mapping[str, Any], host: str | None) -> tuple[Principal, RegistryRef]:
        """The caller and registry of a request carrying a password with these claims; a token of
        another region than the endpoint's is AuthenticationError (401), as ECR answers."""
        principal = Principal.of(str(claims["p"]), claims.get("u"))
        issued_for = RegistryRef(str(claims["a"]), str(claims["r"]))
        named = registry_from_host(host, self._domain)
        if named is not None:
            registry, endpoint_region = named, named.region
        else:
            registry, endpoint_region = issued_for, self._default_region or issued_for.region
        if endpoint_region != issued_for.region:
            raise AuthenticationError(
                f"Your authorization token was issued for region {issued_for.region}, but this registry endpoint "
                f"is in region {endpoint_region}. Get a token for {endpoint_region} "
                f"(aws ecr get-login-password --region {endpoint_region}) and log in again."
            )
        return principal, registry

    async def authenticate(
        self, headers: Mapping[str, Sequence[str]], host: str | None
    ) -> tuple[Principal, RegistryRef]:
        password = _basic_password(headers)
        if password is None:
            raise AuthenticationError("authentication required")
        try:
            claims = self.claims(password)
        except TokenExpiredError:
            raise AccessDeniedError(TOKEN_EXPIRED) from None
        except TokenError:
            raise AuthenticationError("invalid authorization token") from None
        return self.resolve(claims, host)

    def challenge(self, host: str | None, scheme: str = "https") -> str | None:
        return _basic_challenge(host, scheme)


class AnonymousAuthenticator:
    """Open mode for `/v2/`: any Basic credentials or none; the host may still pick the registry,
    and a password from GetAuthorizationToken counts as in SigV4 mode (`tokens`)."""

    def __init__(
        self, registry: RegistryRef, domain: str | None = None, tokens: TokenRegistryAuthenticator | None = None
    ) -> None:
        self._registry = registry
        self._domain = domain
        self._tokens = tokens

    async def authenticate(
        self, headers: Mapping[str, Sequence[str]], host: str | None
    ) -> tuple[Principal, RegistryRef]:
        password = _basic_password(headers)
        if password is not None and self._tokens is not None:
            try:
                claims = self._tokens.claims(password, check_expiry=False)
            except TokenError:
                pass  # not a token of ours: open mode takes it anyway
            else:
                return self._tokens.resolve(claims, host)
        registry = registry_from_host(host, self._domain) or self._registry
        return Principal.root(registry.account_id), registry

    def challenge(self, host: str | None, scheme: str = "https") -> str | None:
        # Only a token of another region is refused in open mode; say how to log in again.
        return _basic_challenge(host, scheme)


class ApiAuthenticator:
    """Authenticates ECR API requests: exact SigV4 in `sigv4` mode, identity by key id in `open`."""

    def __init__(self, identities: Identities, *, mode: str, default: RegistryRef) -> None:
        self._identities = identities
        self._mode = mode
        self._default = default
        self._known_accounts: set[str] = set()

    async def authenticate(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: Mapping[str, Sequence[str]],
        body: bytes,
        *,
        service: str = "ecr",
    ) -> ApiCaller:
        """Raises sigv4.SigV4Error with AWS's code for every failure."""
        if self._mode == "open":
            return await self._open(headers)
        parsed = sigv4.parse_request_auth(method, headers, query_string)
        if parsed.security_token is not None:
            raise sigv4.SigV4Error(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        key = await self._identities.lookup(parsed.access_key_id)
        if key is None:
            raise sigv4.SigV4Error(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        sigv4.verify(
            parsed,
            secret_access_key=key.secret_access_key,
            method=method,
            path=path,
            query_string=query_string,
            headers=headers,
            payload_sha256_hex=hashlib.sha256(body).hexdigest(),
            now=datetime.now(UTC),
            expected_service=service,
        )
        return ApiCaller(Principal.of(key.account_id, key.user_name), parsed.region, key.access_key_id)

    async def _open(self, headers: Mapping[str, Sequence[str]]) -> ApiCaller:
        values = headers.get("authorization") or ()
        match = _SCOPE_RE.search(values[-1]) if values else None
        key_id, region = (match[1], match[2]) if match else ("", self._default.region)
        if _ACCOUNT_RE.fullmatch(key_id):
            if key_id not in self._known_accounts:
                await self._identities.ensure_account(key_id)
                self._known_accounts.add(key_id)
            return ApiCaller(Principal.root(key_id), region, key_id)
        return ApiCaller(Principal.root(self._default.account_id), region, key_id)
