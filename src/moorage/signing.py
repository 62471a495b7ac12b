"""Managed signing (semantics §16.1): AWS Signer profiles with keys Moorage holds, the registry's
signing configuration, and the outbox consumer that signs every image pushed to a matching
repository with a Notary Project signature stored as a referrer of the image.

    PutSigningProfile ─► per-account root CA (created once, ECDSA P-384) ─► leaf per profile
                         (keys sealed with the master key, like access-key secrets)
    push (either face) ─► Registry push hook, in the push's transaction: the rules of the
                          registry's signing configuration that match the repository ─►
                          IN_PROGRESS rows per profile, with the pushing principal
    ECR Image Action PUSH in the outbox ─► SigningSink (a Sink of delivery.EventDispatcher,
                          lease "events/signing"), per IN_PROGRESS row:
        profile missing / Canceled / Revoked ─► FAILED
        the pusher not allowed signer:SignPayload on the profile ─► FAILED
        JWS envelope (ES384 over the payload {"targetArtifact": descriptor}) and the signature
        manifest (artifactType application/vnd.cncf.notary.signature, subject = the image),
        stored through Uploads and Registry.put_manifest like any push ─► COMPLETE
        every outcome writes a `Moorage Image Signing Action` event.

Signatures are never signed themselves (their push matches no rule: the hook skips manifests of
the signature artifact type). The envelope follows the Notary Project signature specification
with the `notary.x509` signing scheme (AWS Signer's `notary.x509.signingAuthority` needs a
certificate only AWS can issue); a verifier trusts the account's root (`moorage admin
signing-root`) as a CA trust store.

Failure codes (`failureCode` of DescribeImageSigningStatus; ECR's is a free string):
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import re
import secrets
import string
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moorage import events as ev
from moorage import manifests as mf
from moorage.clock import Clock
from moorage.delivery import DeliveryError
from moorage.errors import InvalidRequestError, ManifestUnknownError, MoorageError, RepositoryNotFoundError
from moorage.identity import Identities
from moorage.metadata import MetadataStore, Transaction
from moorage.metadata.outbox import StoredEvent
from moorage.metadata.signing import SigningProfileRecord, SigningRoot, SigningStatusRecord
from moorage.model import Digest, Image, RegistryRef, Repository, RepositoryName
from moorage.registry import Registry
from moorage.uploads import Uploads

__all__ = [
    "EMPTY_CONFIG_MEDIA_TYPE",
    "FAILURE_CODES",
    "JWS_MEDIA_TYPE",
    "PAYLOAD_CONTENT_TYPE",
    "PLATFORM_ID",
    "SIGNATURE_ARTIFACT_TYPE",
    "SIGNING_SCHEME",
    "THUMBPRINT_ANNOTATION",
    "ProfileNotFoundError",
    "SignatureCheck",
    "SignatureInvalidError",
    "Signing",
    "SigningConfigurationNotFoundError",
    "SigningSink",
    "Verified",
    "build_envelope",
    "new_leaf",
    "new_root",
    "parse_profile_arn",
    "profile_arn",
    "rule_matches",
    "signature_manifest",
    "signing_profile_registry",
    "verify_envelope",
]

log = logging.getLogger("moorage.signing")

PLATFORM_ID = "Notation-OCI-SHA384-ECDSA"
PLATFORM_DISPLAY_NAME = "Notation for Container Registries"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
JWS_MEDIA_TYPE = "application/jose+json"
PAYLOAD_CONTENT_TYPE = "application/vnd.cncf.notary.payload.v1+json"
THUMBPRINT_ANNOTATION = "io.cncf.notary.x509chain.thumbprint#S256"
SIGNING_SCHEME = "notary.x509"
SIGNING_TIME = "io.cncf.notary.signingTime"
SCHEME_HEADER = "io.cncf.notary.signingScheme"
SIGNING_AGENT = "io.cncf.notary.signingAgent"
_KNOWN_CRITICAL = frozenset({SCHEME_HEADER, "io.cncf.notary.expiry"})
SINK_NAME = "signing"
MAX_RULES = 10
DEFAULT_VALIDITY = (135, "MONTHS")  # AWS Signer's default signatureValidityPeriod
_ROOT_VALIDITY = timedelta(days=365 * 20)
_SKEW = timedelta(minutes=5)

FAILURE_CODES: dict[str, str] = {
    "SigningProfileNotFound": "the signing profile of the rule does not exist",
    "SigningProfileCanceled": "the signing profile was canceled (CancelSigningProfile)",
    "SigningProfileRevoked": "the signing profile was revoked (RevokeSigningProfile)",
    "AccessDenied": "the pushing principal is not allowed signer:SignPayload on the signing profile",
    "ImageNotFound": "the image was deleted before it was signed",
    "UnsupportedPlatform": "the signing profile's platform is not Notation-OCI-SHA384-ECDSA",
}
__doc__ = (__doc__ or "") + "".join(f"\n    {code:<24} {meaning}" for code, meaning in FAILURE_CODES.items()) + "\n"


class SigningConfigurationNotFoundError(MoorageError):
    """The registry has no signing configuration (ECR's SigningConfigurationNotFoundException)."""


class ProfileNotFoundError(MoorageError):
    """No such signing profile (AWS Signer's ResourceNotFoundException)."""


class SignatureInvalidError(Exception):
    """A signature envelope that does not verify; the message says why."""


def profile_arn(registry: RegistryRef, name: str) -> str:
    return f"arn:aws:signer:{registry.region}:{registry.account_id}:/signing-profiles/{name}"


_PROFILE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:signer:([a-z0-9-]+):([0-9]{12}):/signing-profiles/([a-zA-Z0-9_]{2,})")


def parse_profile_arn(arn: str) -> tuple[RegistryRef, str] | None:
    match = _PROFILE_ARN.fullmatch(arn)
    return None if match is None else (RegistryRef(match[2], match[1]), match[3])


def signing_profile_registry(arn: str) -> RegistryRef | None:
    """The account and region that own a signing profile ARN."""
    parsed = parse_profile_arn(arn)
    return None if parsed is None else parsed[0]


# -- the certificates ------------------------------------------------------------------------


def new_root(account_id: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The account's root CA: P-384, basicConstraints CA (critical), keyUsage keyCertSign (critical)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Moorage"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, account_id),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Moorage Signing Root {account_id}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + _ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def new_leaf(
    root_key: ec.EllipticCurvePrivateKey,
    root: x509.Certificate,
    registry: RegistryRef,
    name: str,
    now: datetime,
    until: datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A profile's signing certificate: P-384, keyUsage digitalSignature only (critical), EKU codeSigning."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Moorage"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{registry.account_id}/{registry.region}"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(min(until, root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA384())
    )
    return key, cert


def _pem_chain(chain: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)


def _load_chain(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC private key")
    return key


def thumbprints(chain: Sequence[x509.Certificate]) -> list[str]:
    return [c.fingerprint(hashes.SHA256()).hex() for c in chain]


# -- the envelope ----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: object) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise SignatureInvalidError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_envelope(
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
    target: Mapping[str, Any],
    now: datetime,
    *,
    agent: str = "moorage",
) -> bytes:
    """The JWS (flattened JSON serialization) of the Notary Project signature of `target` (an OCI
    descriptor with mediaType, digest and size), ES384 with the leaf `chain[0]`'s key."""
    protected = {
        "alg": "ES384",
        "cty": PAYLOAD_CONTENT_TYPE,
        SCHEME_HEADER: SIGNING_SCHEME,
        SIGNING_TIME: _rfc3339(now),
        "crit": [SCHEME_HEADER],
    }
    payload = {"targetArtifact": {k: target[k] for k in ("mediaType", "digest", "size")}}
    protected_b64 = _b64url(json.dumps(protected, separators=(",", ":")).encode())
    payload_b64 = _b64url(json.dumps(payload, separators=(",", ":")).encode())
    der = key.sign(f"{protected_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    envelope = {
        "payload": payload_b64,
        "protected": protected_b64,
        "header": {
            "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain],
            SIGNING_AGENT: agent,
        },
        "signature": _b64url(raw),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def signature_manifest(
    subject: Mapping[str, Any], envelope: bytes, chain: Sequence[x509.Certificate], now: datetime
) -> bytes:
    """The OCI image manifest that stores `envelope` as a referrer of `subject`."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {
                "mediaType": JWS_MEDIA_TYPE,
                "digest": "sha256:" + hashlib.sha256(envelope).hexdigest(),
                "size": len(envelope),
            }
        ],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {
            THUMBPRINT_ANNOTATION: json.dumps(thumbprints(chain), separators=(",", ":")),
            "org.opencontainers.image.created": _rfc3339(now),
        },
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified envelope says."""

    target: dict[str, Any]
    signing_time: str
    chain: list[x509.Certificate]

    @property
    def signer(self) -> str:
        names = self.chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else self.chain[0].subject.rfc4514_string()


def _check_ca(cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound as exc:
        raise SignatureInvalidError(f"CA certificate {cert.subject.rfc4514_string()} lacks {exc.oid}") from None
    if not (bc.critical and bc.value.ca and ku.critical and ku.value.key_cert_sign):
        raise SignatureInvalidError(f"certificate {cert.subject.rfc4514_string()} is not a CA certificate")


def _check_leaf(cert: x509.Certificate) -> None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        raise SignatureInvalidError("the signing certificate has no keyUsage") from None
    if not (ku.critical and ku.value.digital_signature) or ku.value.key_cert_sign:
        raise SignatureInvalidError("the signing certificate's keyUsage does not allow signing")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        if bc.value.ca:
            raise SignatureInvalidError("the signing certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass


def verify_envelope(
    envelope: bytes,
    trusted_roots: Sequence[x509.Certificate],
    *,
    now: datetime,
    expected: Mapping[str, Any] | None = None,
) -> Verified:
    """Verify a JWS Notary Project signature: its shape and critical headers, the x5c chain up to
    one of `trusted_roots` (issuers, CA constraints, validity at `now`), ES384 over the JWS
    signing input with the leaf's key, and (with `expected`) that the payload's target artifact
    is that descriptor. Raises SignatureInvalidError saying what failed."""
    try:
        doc = json.loads(envelope)
    except ValueError:
        raise SignatureInvalidError("the envelope is not JSON") from None
    if not isinstance(doc, dict) or set(doc) - {"payload", "protected", "header", "signature"}:
        raise SignatureInvalidError("the envelope is not a flattened JWS JSON serialization")
    for member in ("payload", "protected", "signature", "header"):
        if member not in doc:
            raise SignatureInvalidError(f"the envelope has no {member}")
    try:
        protected = json.loads(_unb64url(doc["protected"]))
        payload = json.loads(_unb64url(doc["payload"]))
    except ValueError:
        raise SignatureInvalidError("the protected header or payload is not JSON") from None
    if not isinstance(protected, dict) or protected.get("alg") != "ES384":
        raise SignatureInvalidError("alg is not ES384")
    if protected.get("cty") != PAYLOAD_CONTENT_TYPE:
        raise SignatureInvalidError("cty is not " + PAYLOAD_CONTENT_TYPE)
    if protected.get(SCHEME_HEADER) != SIGNING_SCHEME:
        raise SignatureInvalidError(f"signing scheme is not {SIGNING_SCHEME}")
    crit = protected.get("crit")
    if not isinstance(crit, list) or SCHEME_HEADER not in crit:
        raise SignatureInvalidError("crit does not list the signing scheme")
    for name in crit:
        if name not in _KNOWN_CRITICAL or name not in protected:
            raise SignatureInvalidError(f"unsupported critical header {name!r}")
    signing_time = protected.get(SIGNING_TIME)
    if not isinstance(signing_time, str):
        raise SignatureInvalidError("no signing time")
    header = doc["header"]
    x5c = header.get("x5c") if isinstance(header, dict) else None
    if not isinstance(x5c, list) or not x5c:
        raise SignatureInvalidError("no x5c certificate chain")
    try:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
    except (ValueError, TypeError):
        raise SignatureInvalidError("x5c holds something that is not a DER certificate") from None
    leaf = chain[0]
    _check_leaf(leaf)
    for child, parent in itertools.pairwise(chain):
        _check_ca(parent)
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise SignatureInvalidError(
                f"{child.subject.rfc4514_string()} is not issued by the next certificate"
            ) from None
    for cert in chain:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SignatureInvalidError(f"certificate {cert.subject.rfc4514_string()} is not valid now")
    top = chain[-1]
    trusted = {r.fingerprint(hashes.SHA256()) for r in trusted_roots}
    if top.fingerprint(hashes.SHA256()) not in trusted:
        raise SignatureInvalidError("the certificate chain does not end at a trusted root")
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp384r1":
        raise SignatureInvalidError("the signing key is not ECDSA P-384 (alg ES384)")
    raw = _unb64url(doc["signature"])
    if len(raw) != 96:
        raise SignatureInvalidError("an ES384 signature is 96 bytes")
    der = encode_dss_signature(int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big"))
    try:
        public.verify(der, f"{doc['protected']}.{doc['payload']}".encode("ascii"), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SignatureInvalidError("the signature does not verify") from None
    target = payload.get("targetArtifact") if isinstance(payload, dict) else None
    if not isinstance(target, dict):
        raise SignatureInvalidError("the payload has no targetArtifact")
    if expected is not None:
        for k in ("mediaType", "digest", "size"):
            if target.get(k) != expected.get(k):
                raise SignatureInvalidError(f"the signed {k} {target.get(k)!r} is not the image's {expected.get(k)!r}")
    return Verified(target, signing_time, chain)


# -- rules -----------------------------------------------------------------------------------


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def rule_matches(rule: Mapping[str, Any], repository: str) -> bool:
    """A rule without filters matches every repository; `*` in a filter is any sequence."""
    filters = rule.get("repositoryFilters") or []
    return not filters or any(_wildcard(f["filter"]).fullmatch(repository) for f in filters)


def _doc_key(registry: RegistryRef) -> str:
    return f"doc/{registry.account_id}/{registry.region}/signing"


SignAllowed = Callable[[str, str], Awaitable[bool]]
"""(principal ARN, signing profile ARN) -> whether the principal may signer:SignPayload with it
(the composition root asks the Authorizer)."""


def _new_version() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(10))


def _validity_end(now: datetime, value: int, unit: str) -> datetime:
    days = {"DAYS": 1, "MONTHS": 30, "YEARS": 365}[unit]
    return now + timedelta(days=days * value)


class Signing:
    """Profiles, root CAs, the signing configuration, statuses, and the signing itself."""

    def __init__(
        self,
        metadata: MetadataStore,
        identities: Identities,
        registry: Registry,
        uploads: Uploads,
        *,
        clock: Clock,
        agent: str = "moorage",
    ) -> None:
        self._metadata = metadata
        self._identities = identities
        self._registry = registry
        self._uploads = uploads
        self._clock = clock
        self._agent = agent

    # -- roots ---------------------------------------------------------------------------

    async def _root(self, account_id: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        async with self._metadata.transaction() as tx:
            stored = await tx.signing.root(account_id)
        if stored is None:
            key, cert = new_root(account_id, self._clock.now())
            sealed = self._identities.seal(f"signing-root/{account_id}", _key_pem(key))
            candidate = SigningRoot(account_id, sealed, _pem_chain([cert]), self._clock.now())
            async with self._metadata.transaction(write=True) as tx:
                stored = await tx.signing.put_root(candidate)
        key_pem = self._identities.unseal(f"signing-root/{account_id}", stored.key_ciphertext)
        return _load_key(key_pem), x509.load_pem_x509_certificate(stored.cert_pem.encode())

    async def root_pem(self, account_id: str) -> str:
        """The account's root certificate (created on first use), PEM."""
        _, cert = await self._root(account_id)
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    # -- profiles ------------------------------------------------------------------------

    async def put_profile(
        self,
        registry: RegistryRef,
        name: str,
        platform_id: str,
        *,
        validity: tuple[int, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> SigningProfileRecord:
        if platform_id != PLATFORM_ID:
            raise InvalidRequestError(f"Unsupported platformId '{platform_id}'; Moorage signs with {PLATFORM_ID}")
        value, unit = validity or DEFAULT_VALIDITY
        async with self._metadata.transaction() as tx:
            existing = await tx.signing.profile(registry, name)
        if existing is not None:
            if existing.status != "Active":
                raise InvalidRequestError(
                    f"A signing profile named {name} was {existing.status.lower()}; its name cannot be reused"
                )
            return existing  # PutSigningProfile again with an Active name: the same profile
        root_key, root = await self._root(registry.account_id)
        now = self._clock.now()
        key, leaf = new_leaf(root_key, root, registry, name, now, _validity_end(now, value, unit))
        version = _new_version()
        record = SigningProfileRecord(
            registry,
            name,
            version,
            platform_id,
            "Active",
            value,
            unit,
            self._identities.seal(f"signing-profile/{profile_arn(registry, name)}", _key_pem(key)),
            _pem_chain([leaf, root]),
            now,
            dict(tags or {}),
        )
        async with self._metadata.transaction(write=True) as tx:
            if await tx.signing.profile(registry, name) is None:
                await tx.signing.put_profile(record)
            stored = await tx.signing.profile(registry, name)
        assert stored is not None
        return stored

    async def import_profile(
        self, registry: RegistryRef, name: str, key_pem: str, chain_pem: str
    ) -> SigningProfileRecord:
        """Create (or replace the key and chain of) an Active profile with an existing ECDSA P-384
        key and its certificate chain (leaf first, root last), checked as a verifier would."""
        try:
            key = _load_key(key_pem)
            chain = _load_chain(chain_pem)
        except (ValueError, TypeError):
            raise InvalidRequestError(
                "the key must be an unencrypted PEM EC private key, the chain PEM certificates"
            ) from None
        if not chain or key.curve.name != "secp384r1":
            raise InvalidRequestError(f"{PLATFORM_ID} needs an ECDSA P-384 key and its certificate chain")
        if chain[0].public_key() != key.public_key():
            raise InvalidRequestError("the first certificate of the chain is not the key's")
        try:
            _check_leaf(chain[0])
            for child, parent in itertools.pairwise(chain):
                _check_ca(parent)
                child.verify_directly_issued_by(parent)
        except SignatureInvalidError as exc:
            raise InvalidRequestError(str(exc)) from None
        except (ValueError, TypeError, InvalidSignature):
            raise InvalidRequestError("each certificate of the chain must be issued by the next") from None
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            existing = await tx.signing.profile(registry, name)
            record = SigningProfileRecord(
                registry,
                name,
                existing.version if existing is not None else _new_version(),
                PLATFORM_ID,
                "Active",
                *(DEFAULT_VALIDITY if existing is None else (existing.validity_value, existing.validity_type)),
                self._identities.seal(f"signing-profile/{profile_arn(registry, name)}", _key_pem(key)),
                _pem_chain(chain),
                existing.created_at if existing is not None else now,
                existing.tags if existing is not None else {},
            )
            await tx.signing.put_profile(record)
        return record

    async def trusted_roots(self, registry: RegistryRef) -> list[x509.Certificate]:
        """What `verify_image` trusts: the account's root, and the roots of imported chains."""
        roots = {
            c.fingerprint(hashes.SHA256()): c
            for c in [x509.load_pem_x509_certificate((await self.root_pem(registry.account_id)).encode())]
        }
        async with self._metadata.transaction() as tx:
            for profile in await tx.signing.profiles(registry):
                top = _load_chain(profile.cert_chain)[-1]
                roots.setdefault(top.fingerprint(hashes.SHA256()), top)
        return list(roots.values())

    async def profile(self, registry: RegistryRef, name: str) -> SigningProfileRecord:
        async with self._metadata.transaction() as tx:
            found = await tx.signing.profile(registry, name)
        if found is None:
            raise ProfileNotFoundError(f"Signing profile {name} does not exist.")
        return found

    async def profile_by_arn(self, arn: str) -> SigningProfileRecord | None:
        parsed = parse_profile_arn(arn)
        if parsed is None:
            return None
        async with self._metadata.transaction() as tx:
            return await tx.signing.profile(*parsed)

    async def profiles(
        self,
        registry: RegistryRef,
        *,
        include_canceled: bool = False,
        platform_id: str | None = None,
        statuses: Sequence[str] = (),
    ) -> list[SigningProfileRecord]:
        async with self._metadata.transaction() as tx:
            found = list(await tx.signing.profiles(registry))
        if statuses:
            found = [p for p in found if p.status in statuses]
        elif not include_canceled:
            found = [p for p in found if p.status != "Canceled"]
        if platform_id is not None:
            found = [p for p in found if p.platform_id == platform_id]
        return found

    async def _change(
        self, registry: RegistryRef, name: str, change: Callable[[SigningProfileRecord], SigningProfileRecord]
    ) -> SigningProfileRecord:
        async with self._metadata.transaction(write=True) as tx:
            found = await tx.signing.profile(registry, name)
            if found is None:
                raise ProfileNotFoundError(f"Signing profile {name} does not exist.")
            changed = change(found)
            await tx.signing.put_profile(changed)
        return changed

    async def cancel_profile(self, registry: RegistryRef, name: str) -> None:
        await self._change(registry, name, lambda p: p if p.status != "Active" else replace(p, status="Canceled"))

    async def revoke_profile(
        self, registry: RegistryRef, name: str, version: str, reason: str, effective: datetime, by: str
    ) -> SigningProfileRecord:
        def revoke(p: SigningProfileRecord) -> SigningProfileRecord:
            if p.version != version:
                raise InvalidRequestError(f"Profile version {version} does not match the profile {name}.")
            if p.status == "Revoked":
                raise InvalidRequestError(f"Signing profile {name} is already revoked.")
            return replace(
                p,
                status="Revoked",
                status_reason=reason,
                revoked_at=self._clock.now(),
                revoked_by=by,
                revocation_effective_from=effective,
            )

        return await self._change(registry, name, revoke)

    async def tag_profile(self, arn: str, tags: Mapping[str, str]) -> None:
        parsed = self._tag_target(arn)
        await self._change(*parsed, lambda p: replace(p, tags={**p.tags, **tags}))

    async def untag_profile(self, arn: str, keys: Sequence[str]) -> None:
        parsed = self._tag_target(arn)
        await self._change(*parsed, lambda p: replace(p, tags={k: v for k, v in p.tags.items() if k not in keys}))

    async def profile_tags(self, arn: str) -> dict[str, str]:
        found = await self.profile(*self._tag_target(arn))
        return found.tags

    @staticmethod
    def _tag_target(arn: str) -> tuple[RegistryRef, str]:
        parsed = parse_profile_arn(arn)
        if parsed is None:
            raise ProfileNotFoundError(f"Resource {arn} not found.")
        return parsed

    # -- configuration and statuses ------------------------------------------------------

    async def configuration(self, registry: RegistryRef) -> dict[str, Any]:
        async with self._metadata.transaction() as tx:
            text = await tx.kv.get(_doc_key(registry))
        config = json.loads(text) if text else None
        if config is None:
            raise SigningConfigurationNotFoundError(
                f"Signing configuration not found for registry id '{registry.account_id}'"
            )
        return dict(config)

    async def put_configuration(self, registry: RegistryRef, config: Mapping[str, Any]) -> dict[str, Any]:
        rules = list(config.get("rules") or [])
        if len(rules) > MAX_RULES:
            raise InvalidRequestError(
                "Invalid parameter at 'signingConfiguration.rules' failed to satisfy constraint: "
                f"'Member must have length less than or equal to {MAX_RULES}'"
            )
        stored: dict[str, Any] = {"rules": []}
        for rule in rules:
            entry: dict[str, Any] = {"signingProfileArn": rule["signingProfileArn"]}
            if rule.get("repositoryFilters"):
                entry["repositoryFilters"] = [
                    {"filter": f["filter"], "filterType": f["filterType"]} for f in rule["repositoryFilters"]
                ]
            stored["rules"].append(entry)
        async with self._metadata.transaction(write=True) as tx:
            await tx.kv.put(_doc_key(registry), json.dumps(stored))
        return stored

    async def delete_configuration(self, registry: RegistryRef) -> dict[str, Any]:
        """Remove the configuration; the signatures made under it stay."""
        async with self._metadata.transaction(write=True) as tx:
            text = await tx.kv.get(_doc_key(registry))
            config = json.loads(text) if text else None
            if config is None:
                raise SigningConfigurationNotFoundError(
                    f"Signing configuration not found for registry id '{registry.account_id}'"
                )
            await tx.kv.put(_doc_key(registry), "null")  # the kv table has no delete: null is "none"
        return dict(config)

    async def statuses(self, registry: RegistryRef, repository: str, digest: Digest) -> list[SigningStatusRecord]:
        async with self._metadata.transaction() as tx:
            return list(await tx.signing.statuses(registry, repository, str(digest)))

    async def on_push(
        self, tx: Transaction, repo: Repository, image: Image, principal: str | None, now: datetime
    ) -> int:
        """The Registry push hook: in the push's transaction, IN_PROGRESS rows for each profile
        whose rule matches the repository (none for signatures themselves). An image already
        signed by a profile, whose signature is still there, is not signed again. WORK_SIGNING
        when it recorded a row: the signing consumer passes over every other push."""
        if image.artifact_type == SIGNATURE_ARTIFACT_TYPE or principal is None:
            return 0
        text = await tx.kv.get(_doc_key(repo.registry))
        config = json.loads(text) if text else None
        if not config:
            return 0
        arns = list(
            dict.fromkeys(r["signingProfileArn"] for r in config.get("rules", []) if rule_matches(r, repo.name))
        )
        if not arns:
            return 0
        current = {s.profile_arn: s for s in await tx.signing.statuses(repo.registry, repo.name, str(image.digest))}
        rows = []
        for arn in arns:
            done = current.get(arn)
            if done is not None and done.status == "COMPLETE" and done.signature_digest is not None:
                kept = await tx.images.get(repo.id, Digest.parse(done.signature_digest), with_body=False)
                if kept is not None:
                    continue
            rows.append(
                SigningStatusRecord(
                    repo.registry, repo.name, str(image.digest), arn, "IN_PROGRESS", now, principal_arn=principal
                )
            )
        await tx.signing.put_statuses(rows)
        return ev.WORK_SIGNING if rows else 0

    # -- signing -------------------------------------------------------------------------

    async def sign(
        self, registry: RegistryRef, name: RepositoryName, digest: Digest, allowed: SignAllowed
    ) -> list[SigningStatusRecord]:
        """Sign the image with every profile whose status is IN_PROGRESS; record the outcomes."""
        rows = [s for s in await self.statuses(registry, name, digest) if s.status == "IN_PROGRESS"]
        done = []
        for row in rows:
            done.append(await self._sign_one(row, registry, name, digest, allowed))
        return done

    async def _sign_one(
        self,
        row: SigningStatusRecord,
        registry: RegistryRef,
        name: RepositoryName,
        digest: Digest,
        allowed: SignAllowed,
    ) -> SigningStatusRecord:
        now = self._clock.now()
        code: str | None = None
        reason: str | None = None
        signature: str | None = None
        profile = await self.profile_by_arn(row.profile_arn)
        if profile is None:
            code, reason = "SigningProfileNotFound", f"The signing profile {row.profile_arn} does not exist"
        elif profile.status != "Active":
            code = "SigningProfileCanceled" if profile.status == "Canceled" else "SigningProfileRevoked"
            reason = f"The signing profile {row.profile_arn} is {profile.status}"
        elif profile.platform_id != PLATFORM_ID:
            code, reason = (
                "UnsupportedPlatform",
                f"The signing profile's platform {profile.platform_id} cannot sign images",
            )
        elif row.principal_arn is None or not await allowed(row.principal_arn, row.profile_arn):
            code = "AccessDenied"
            reason = (
                f"User: {row.principal_arn} is not authorized to perform: signer:SignPayload "
                f"on resource: {row.profile_arn}"
            )
        else:
            try:
                image = await self._registry.get_manifest(registry, name, str(digest), with_body=False)
                signature = str(await self._store_signature(profile, image))
            except (ManifestUnknownError, RepositoryNotFoundError):
                code, reason = "ImageNotFound", f"The image {digest} no longer exists in the repository {name}"
        status = "FAILED" if code else "COMPLETE"
        result = replace(
            row, status=status, failure_code=code, failure_reason=reason, signature_digest=signature, updated_at=now
        )
        async with self._metadata.transaction(write=True) as tx:
            current = {s.profile_arn: s for s in await tx.signing.statuses(registry, name, str(digest))}.get(
                row.profile_arn
            )
            if current is not None:  # not deleted with its image meanwhile
                await tx.signing.put_statuses([result])
            await tx.events.add(
                [
                    ev.signing_action(
                        registry, name, digest, row.profile_arn, now, signature=signature, failure=(code, reason)
                    )
                ]
            )
        if code:
            log.info("signing %s@%s with %s failed: %s", name, digest, row.profile_arn, code)
        return result

    async def verify_image(
        self, registry: RegistryRef, name: RepositoryName, reference: str
    ) -> tuple[Image, list[SignatureCheck]]:
        image = await self._registry.get_manifest(registry, name, reference, with_body=False)
        roots = await self.trusted_roots(registry)
        expected = {"mediaType": image.media_type, "digest": str(image.digest), "size": image.size}
        checks = []
        for sig in await self._registry.referrers(registry, name, image.digest, SIGNATURE_ARTIFACT_TYPE):
            checks.append(await self._check(registry, name, sig, roots, expected))
        return image, checks

    async def _check(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        sig: Image,
        roots: Sequence[x509.Certificate],
        expected: Mapping[str, Any],
    ) -> SignatureCheck:
        try:
            manifest = json.loads(sig.body or b"{}")
            layers = [layer for layer in manifest.get("layers", []) if layer.get("mediaType") == JWS_MEDIA_TYPE]
            if len(layers) != 1:
                return SignatureCheck(sig.digest, False, "the signature manifest has no single JWS layer")
            digest = Digest.parse(layers[0]["digest"])
            envelope = await _read_all(await self._registry.open_blob(registry, name, digest))
            if "sha256:" + hashlib.sha256(envelope).hexdigest() != str(digest):
                return SignatureCheck(sig.digest, False, "the envelope blob does not match its digest")
            subject = manifest.get("subject") or {}
            if subject.get("digest") != expected["digest"]:
                return SignatureCheck(sig.digest, False, "the signature's subject is not the image")
            verified = verify_envelope(envelope, roots, now=self._clock.now(), expected=expected)
        except SignatureInvalidError as exc:
            return SignatureCheck(sig.digest, False, str(exc))
        except (MoorageError, ValueError, KeyError) as exc:
            return SignatureCheck(sig.digest, False, f"cannot read the signature: {exc}")
        thumbs = json.dumps(thumbprints(verified.chain), separators=(",", ":"))
        if (manifest.get("annotations") or {}).get(THUMBPRINT_ANNOTATION) != thumbs:
            return SignatureCheck(sig.digest, False, "the thumbprint annotation does not match the certificate chain")
        return SignatureCheck(sig.digest, True, f"signed by {verified.signer} at {verified.signing_time}")

    async def _store_signature(self, profile: SigningProfileRecord, image: Image) -> Digest:
        chain = _load_chain(profile.cert_chain)
        key = _load_key(self._identities.unseal(f"signing-profile/{profile.arn}", profile.key_ciphertext))
        now = self._clock.now()
        target = {"mediaType": image.media_type, "digest": str(image.digest), "size": image.size}
        envelope = build_envelope(key, chain, target, now, agent=self._agent)
        registry, name = image.registry, RepositoryName(image.repository)
        for blob in (EMPTY_CONFIG, envelope):
            await self._uploads.upload_blob(
                registry, name, Digest("sha256", hashlib.sha256(blob).hexdigest()), _once(blob)
            )
        body = signature_manifest(target, envelope, chain, now)
        put = await self._registry.put_manifest(registry, name, body, mf.OCI_MANIFEST, create_repository=False)
        return put.image.digest


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The verification of one signature of an image (`moorage signing verify`, the console)."""

    signature: Digest
    ok: bool
    detail: str  # the signer and signing time when ok, else what failed
    profile: str | None = None


async def _read_all(stream: Any) -> bytes:
    if stream.path is not None:
        return bytes(stream.path.read_bytes())
    parts = [chunk async for chunk in stream.chunks]
    return b"".join(parts)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class SigningSink:
    """The outbox consumer that signs pushed images (see the module documentation)."""

    name = SINK_NAME

    def __init__(self, signing: Signing, *, allowed: SignAllowed) -> None:
        self._signing = signing
        self._allowed = allowed

    def accepts(self, event: StoredEvent) -> bool:
        return (
            event.detail_type == ev.IMAGE_ACTION
            and ev.wants(event.work, ev.WORK_SIGNING)
            and '"action-type":"PUSH"' in event.body
            and SIGNATURE_ARTIFACT_TYPE not in event.body
        )

    async def close(self) -> None:
        return None

    async def deliver(self, event: StoredEvent) -> None:
        detail = json.loads(event.body)["detail"]
        registry = RegistryRef(event.account_id, event.region)
        name = RepositoryName(detail["repository-name"])
        digest = Digest.parse(detail["image-digest"])
        try:
            await self._signing.sign(registry, name, digest, self._allowed)
        except Exception as exc:  # the database went away, say: retried with backoff
            log.exception("signing of %s@%s failed", name, digest)
            raise DeliveryError(f"signing failed: {type(exc).__name__}: {exc}") from exc
