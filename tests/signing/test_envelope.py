"""Unit tests of the Notary Project signature envelope Moorage builds (moorage.signing): its
protected headers and shape per the JWS envelope specification, verification of chain, ES384
signature and payload, and every way verification must fail."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from jwcrypto import jwk, jws
from jwcrypto.common import JWSEHeaderParameter

from moorage.model import RegistryRef
from moorage.signing import (
    EMPTY_CONFIG_MEDIA_TYPE,
    JWS_MEDIA_TYPE,
    PAYLOAD_CONTENT_TYPE,
    SIGNATURE_ARTIFACT_TYPE,
    THUMBPRINT_ANNOTATION,
    SignatureInvalidError,
    build_envelope,
    new_leaf,
    new_root,
    rule_matches,
    signature_manifest,
    verify_envelope,
)

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
TARGET = {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + "ab" * 32,
    "size": 1234,
}
REGISTRY = RegistryRef("123456789012", "us-east-1")


def b64url_json(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def pki() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, ec.EllipticCurvePrivateKey, x509.Certificate]:
    root_key, root = new_root(REGISTRY.account_id, NOW)
    key, leaf = new_leaf(root_key, root, REGISTRY, "release_signer", NOW, NOW + timedelta(days=365))
    return root_key, root, key, leaf


def test_envelope_has_the_notary_headers_and_chain(pki: Any) -> None:
    _, root, key, leaf = pki
    env = json.loads(build_envelope(key, [leaf, root], TARGET, NOW, agent="moorage/1.0"))
    assert set(env) == {"payload", "protected", "header", "signature"}
    protected = b64url_json(env["protected"])
    assert protected == {
        "alg": "ES384",
        "cty": PAYLOAD_CONTENT_TYPE,
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": "2026-12-02T12:00:00Z",
        "crit": ["io.cncf.notary.signingScheme"],
    }
    assert b64url_json(env["payload"]) == {"targetArtifact": TARGET}
    assert env["header"]["io.cncf.notary.signingAgent"] == "moorage/1.0"
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in env["header"]["x5c"]]
    assert chain == [leaf, root]
    assert len(base64.urlsafe_b64decode(env["signature"] + "==")) == 96  # r || s, 48 bytes each


def test_certificates_meet_the_notary_requirements(pki: Any) -> None:
    _, root, _, leaf = pki
    bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert bc.critical
    assert bc.value.ca
    assert ku.critical
    assert ku.value.key_cert_sign
    leaf_ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert leaf_ku.critical
    assert leaf_ku.value.digital_signature
    assert not leaf_ku.value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    leaf.verify_directly_issued_by(root)


def test_verifies_and_a_second_library_agrees(pki: Any) -> None:
    _, root, key, leaf = pki
    envelope = build_envelope(key, [leaf, root], TARGET, NOW)
    verified = verify_envelope(envelope, [root], now=NOW + timedelta(minutes=1), expected=TARGET)
    assert verified.target == TARGET
    assert verified.signer == "release_signer"
    # the critical header must be declared understood, or jwcrypto (rightly) refuses it
    understood = {"io.cncf.notary.signingScheme": JWSEHeaderParameter("Notary signing scheme", True, True, None)}
    signature = jws.JWS(header_registry=understood)
    signature.deserialize(envelope.decode())
    public = jwk.JWK.from_pyca(leaf.public_key())
    signature.verify(public, alg="ES384")  # raises on a bad signature
    assert json.loads(signature.payload) == {"targetArtifact": TARGET}


def _tampered(envelope: bytes, **changes: Any) -> bytes:
    env = json.loads(envelope)
    env.update(changes)
    return json.dumps(env).encode()


def test_tampering_fails(pki: Any) -> None:
    _, root, key, leaf = pki
    envelope = build_envelope(key, [leaf, root], TARGET, NOW)
    later = NOW + timedelta(minutes=1)
    other = {**TARGET, "digest": "sha256:" + "cd" * 32}
    forged = _tampered(envelope, payload=b64url(json.dumps({"targetArtifact": other}).encode()))
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_envelope(forged, [root], now=later)
    with pytest.raises(SignatureInvalidError, match="signed digest"):
        verify_envelope(envelope, [root], now=later, expected=other)
    headers = b64url_json(json.loads(envelope)["protected"])
    headers["io.cncf.notary.signingTime"] = "2020-01-01T00:00:00Z"
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_envelope(_tampered(envelope, protected=b64url(json.dumps(headers).encode())), [root], now=later)
    headers["crit"] = ["io.cncf.notary.signingScheme", "io.example.unknown"]
    headers["io.example.unknown"] = "x"
    with pytest.raises(SignatureInvalidError, match="unsupported critical"):
        verify_envelope(_tampered(envelope, protected=b64url(json.dumps(headers).encode())), [root], now=later)


def test_untrusted_or_broken_chain_fails(pki: Any) -> None:
    _, root, key, leaf = pki
    other_key, other_root = new_root("210987654321", NOW)
    envelope = build_envelope(key, [leaf, root], TARGET, NOW)
    later = NOW + timedelta(minutes=1)
    with pytest.raises(SignatureInvalidError, match="trusted root"):
        verify_envelope(envelope, [other_root], now=later)
    wrong_issuer = build_envelope(key, [leaf, other_root], TARGET, NOW)
    with pytest.raises(SignatureInvalidError, match="not issued by"):
        verify_envelope(wrong_issuer, [other_root], now=later)
    with pytest.raises(SignatureInvalidError, match="not valid now"):
        verify_envelope(envelope, [root], now=NOW + timedelta(days=400))
    # a key that is not the leaf's: the chain is fine, the signature is not
    impostor = build_envelope(other_key, [leaf, root], TARGET, NOW)
    with pytest.raises(SignatureInvalidError, match="does not verify"):
        verify_envelope(impostor, [root], now=later)


def test_signature_manifest_shape(pki: Any) -> None:
    _, root, key, leaf = pki
    envelope = build_envelope(key, [leaf, root], TARGET, NOW)
    manifest = json.loads(signature_manifest(TARGET, envelope, [leaf, root], NOW))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == SIGNATURE_ARTIFACT_TYPE
    assert manifest["config"] == {
        "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert [layer["mediaType"] for layer in manifest["layers"]] == [JWS_MEDIA_TYPE]
    assert manifest["layers"][0]["size"] == len(envelope)
    assert manifest["subject"] == TARGET
    thumbs = json.loads(manifest["annotations"][THUMBPRINT_ANNOTATION])
    assert thumbs == [c.fingerprint(hashes.SHA256()).hex() for c in (leaf, root)]


@pytest.mark.parametrize(
    ("filters", "repository", "expected"),
    [
        ([], "anything/at/all", True),
        (["myapp/*"], "myapp/web", True),
        (["myapp/*"], "other/web", False),
        (["*/production"], "team/production", True),
        (["*prod*"], "a/preprod-x", True),
        (["exact"], "exact", True),
        (["exact"], "exactly", False),
    ],
)
def test_rule_filters(filters: list[str], repository: str, expected: bool) -> None:
    rule = {
        "signingProfileArn": "x",
        "repositoryFilters": [{"filter": f, "filterType": "WILDCARD_MATCH"} for f in filters],
    }
    assert rule_matches(rule, repository) is expected
