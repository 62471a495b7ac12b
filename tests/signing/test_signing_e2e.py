"""Managed signing end to end, on one shared server: a signing profile made with the AWS CLI
(`aws signer`), a signing configuration put with boto3, an image and an index pushed with skopeo,
DescribeImageSigningStatus polled to COMPLETE, the signature found through the referrers API and
ListImageReferrers, pulled over /v2/ and verified here per the Notary Project specification with
`cryptography` (chain to the root `moorage admin signing-root` prints, ES384 over the JWS signing
input, the payload's digest = the image's) and again with jwcrypto; a tampered payload fails;
unmatched repositories are not signed; a revoked profile and a pusher without signer:SignPayload
end FAILED; deleting the image deletes its signature; `moorage signing verify` agrees."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwcrypto import jwk, jws
from jwcrypto.common import JWSEHeaderParameter

from tests.e2e.conftest import SERVER_ENV, fetch_verified_blob, login, make_image, need, push, skopeo
from tests.e2e.conftest import moorage_cli as moorage
from tests.support.ecr import aws_cli
from tests.support.ecr import push_image as ecr_push_image
from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer

pytestmark = pytest.mark.e2e

ACCOUNT = "123456789012"
NOTARY = "application/vnd.cncf.notary.signature"
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


class Env:
    def __init__(self, live: LiveServer, layout: Path) -> None:
        self.live = live
        self.layout = layout
        self.ecr = live.ecr()
        self.signer_api = boto3.client(
            "signer",
            endpoint_url=live.url,
            region_name="us-east-1",
            aws_access_key_id=ROOT_ACCESS_KEY_ID,
            aws_secret_access_key=ROOT_SECRET_ACCESS_KEY,
        )

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return aws_cli(self.live.url, *args, key_id=ROOT_ACCESS_KEY_ID, secret=ROOT_SECRET_ACCESS_KEY, check=check)

    def signer(self, *args: str) -> dict[str, Any]:
        out = self.aws("signer", *args).stdout
        return json.loads(out) if out.strip() else {}

    def statuses(self, repo: str, digest: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """DescribeImageSigningStatus, polled until no status is IN_PROGRESS."""
        deadline = time.monotonic() + timeout
        while True:
            found: list[dict[str, Any]] = self.ecr.describe_image_signing_status(
                repositoryName=repo, imageId={"imageDigest": digest}
            )["signingStatuses"]
            if all(s["status"] != "IN_PROGRESS" for s in found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.live.url}/v2/{repo}/referrers/{digest}", auth=self.live.auth, timeout=30)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["manifests"]
        return found

    def manifest(self, repo: str, reference: str) -> bytes:
        response = httpx.get(
            f"{self.live.url}/v2/{repo}/manifests/{reference}",
            headers={"Accept": ACCEPT},
            auth=self.live.auth,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.content


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    need("skopeo", "aws")
    root = tmp_path_factory.mktemp("signing")
    live = login(LiveServer(root / "data", env=SERVER_ENV).start(60.0))
    try:
        yield Env(live, root / "layout")
    finally:
        live.stop()


@pytest.fixture(scope="module")
def profile(env: Env) -> str:
    made = env.signer(
        "put-signing-profile",
        "--profile-name",
        "release_signer",
        "--platform-id",
        "Notation-OCI-SHA384-ECDSA",
        "--tags",
        "team=platform",
    )
    arn: str = made["arn"]
    assert arn == f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/release_signer"
    assert made["profileVersionArn"] == f"{arn}/{made['profileVersion']}"
    assert len(made["profileVersion"]) == 10
    env.ecr.put_signing_configuration(
        signingConfiguration={
            "rules": [
                {
                    "signingProfileArn": arn,
                    "repositoryFilters": [{"filter": "signed/*", "filterType": "WILDCARD_MATCH"}],
                }
            ]
        }
    )
    return arn


@pytest.fixture(scope="module")
def root_cert(env: Env, profile: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(moorage(env.live, "admin", "signing-root", "--account", ACCOUNT).encode())


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_per_spec(envelope: bytes, root: x509.Certificate, subject: dict[str, Any]) -> dict[str, Any]:
    """The Notary Project JWS verification, written here from the specification (not Moorage's
    code): shape, protected headers, x5c chain to `root`, ES384, the payload's target artifact."""
    doc = json.loads(envelope)
    assert set(doc) == {"payload", "protected", "header", "signature"}
    protected = json.loads(_b64url(doc["protected"]))
    assert protected["alg"] == "ES384"
    assert protected["cty"] == "application/vnd.cncf.notary.payload.v1+json"
    assert protected["io.cncf.notary.signingScheme"] == "notary.x509"
    assert "io.cncf.notary.signingScheme" in protected["crit"]
    assert protected["io.cncf.notary.signingTime"].endswith("Z")
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in doc["header"]["x5c"]]
    assert doc["header"]["io.cncf.notary.signingAgent"].startswith("moorage/")
    assert chain[-1] == root, "the chain ends at the account's root"
    for child, parent in itertools.pairwise(chain):
        child.verify_directly_issued_by(parent)
    public = chain[0].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    raw = _b64url(doc["signature"])
    der = encode_dss_signature(int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big"))
    public.verify(der, f"{doc['protected']}.{doc['payload']}".encode("ascii"), ec.ECDSA(hashes.SHA384()))
    payload = json.loads(_b64url(doc["payload"]))
    assert payload == {"targetArtifact": subject}
    checked: dict[str, Any] = doc
    return checked


def verify_with_jwcrypto(envelope: bytes) -> dict[str, Any]:
    doc = json.loads(envelope)
    leaf = x509.load_der_x509_certificate(base64.b64decode(doc["header"]["x5c"][0]))
    known = {"io.cncf.notary.signingScheme": JWSEHeaderParameter("Notary signing scheme", True, True, None)}
    token = jws.JWS(header_registry=known)
    token.deserialize(envelope.decode())
    token.verify(jwk.JWK.from_pyca(leaf.public_key()), alg="ES384")
    payload: dict[str, Any] = json.loads(token.payload)
    return payload


def signature_of(env: Env, repo: str, digest: str, size: int, media_type: str) -> tuple[dict[str, Any], bytes]:
    """The one signature referrer of an image: its manifest (pulled over /v2/ with skopeo) and envelope."""
    found = env.referrers(repo, digest)
    assert [r["artifactType"] for r in found] == [NOTARY]
    listed = env.ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": digest})["referrers"]
    assert [(r["digest"], r["artifactType"]) for r in listed] == [(found[0]["digest"], NOTARY)]
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{env.live.address}/{repo}@{found[0]['digest']}")
    manifest: dict[str, Any] = json.loads(raw.stdout)
    assert manifest["artifactType"] == NOTARY
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert manifest["subject"] == {"mediaType": media_type, "digest": digest, "size": size}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/jose+json"
    envelope = fetch_verified_blob(env.live, repo, layer["digest"])
    return manifest, envelope


def test_signing_profile_api(env: Env, profile: str) -> None:
    api = env.signer_api
    got = api.get_signing_profile(profileName="release_signer")
    assert got["status"] == "Active"
    assert got["platformId"] == "Notation-OCI-SHA384-ECDSA"
    assert got["arn"] == profile
    assert got["tags"] == {"team": "platform"}
    assert got["signatureValidityPeriod"] == {"value": 135, "type": "MONTHS"}
    assert [p["profileName"] for p in api.list_signing_profiles()["profiles"]] == ["release_signer"]
    api.tag_resource(resourceArn=profile, tags={"stage": "prod"})
    assert api.list_tags_for_resource(resourceArn=profile)["tags"] == {"team": "platform", "stage": "prod"}
    api.untag_resource(resourceArn=profile, tagKeys=["stage"])
    assert api.list_tags_for_resource(resourceArn=profile)["tags"] == {"team": "platform"}
    with pytest.raises(ClientError) as raised:
        api.get_signing_profile(profileName="nope_nope")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as raised:
        api.put_signing_profile(profileName="other_one", platformId="AWSLambda-SHA384-ECDSA")
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as raised:
        api.list_tags_for_resource(resourceArn=profile.replace("release_signer", "absent"))
    assert raised.value.response["Error"]["Code"] == "NotFoundException"
    unchecked = boto3.client(
        "signer",
        endpoint_url=env.live.url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_ACCESS_KEY_ID,
        aws_secret_access_key=ROOT_SECRET_ACCESS_KEY,
        config=Config(parameter_validation=False),
    )
    with pytest.raises(ClientError) as raised:
        unchecked.put_signing_profile(profileName="x", platformId="Notation-OCI-SHA384-ECDSA")
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert raised.value.response["Error"]["Message"] == (
        "1 validation error detected: Value 'x' at 'profileName' failed to satisfy constraint: "
        "Member must have length greater than or equal to 2"
    )
    config = env.ecr.get_signing_configuration()
    assert config["registryId"] == ACCOUNT
    assert config["signingConfiguration"]["rules"][0]["signingProfileArn"] == profile


def test_push_is_signed_and_verifies(env: Env, profile: str, root_cert: x509.Certificate) -> None:
    digest = make_image(env.layout, "v1", layers=1, layer_size_mb=0.01, seed=11)
    push(f"oci:{env.layout}:v1", env.live, "signed/app:v1")
    statuses = env.statuses("signed/app", digest)
    assert statuses == [{"signingProfileArn": profile, "status": "COMPLETE"}]
    body = env.manifest("signed/app", digest)
    media_type = json.loads(body)["mediaType"]
    manifest, envelope = signature_of(env, "signed/app", digest, len(body), media_type)
    doc = verify_per_spec(envelope, root_cert, {"mediaType": media_type, "digest": digest, "size": len(body)})
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in doc["header"]["x5c"]]
    thumbs = json.loads(manifest["annotations"]["io.cncf.notary.x509chain.thumbprint#S256"])
    assert thumbs == [c.fingerprint(hashes.SHA256()).hex() for c in chain]
    assert verify_with_jwcrypto(envelope)["targetArtifact"]["digest"] == digest
    # a tampered payload (another digest) fails both verifiers
    forged = dict(doc)
    target = {"mediaType": media_type, "digest": "sha256:" + "0" * 64, "size": len(body)}
    forged["payload"] = base64.urlsafe_b64encode(json.dumps({"targetArtifact": target}).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify_per_spec(json.dumps(forged).encode(), root_cert, target)
    with pytest.raises(jws.InvalidJWSSignature):
        verify_with_jwcrypto(json.dumps(forged).encode())
    out = moorage(env.live, "signing", "verify", "signed/app:v1", "--account", ACCOUNT)
    assert f"signed/app@{digest}" in out
    assert out.count("VERIFIED") == 1
    assert "VERIFIED" in out
    assert "FAILED" not in out
    # the signature itself is not signed
    sig = env.referrers("signed/app", digest)[0]["digest"]
    assert env.statuses("signed/app", sig) == []
    assert env.referrers("signed/app", sig) == []


def test_index_and_each_platform_are_signed(env: Env, profile: str, root_cert: x509.Certificate) -> None:
    layout = env.layout.parent / "multi"
    index = make_image(layout, "multi", layers=1, layer_size_mb=0.01, seed=12, platforms="linux/amd64,linux/arm64")
    push(f"oci:{layout}:multi", env.live, "signed/multi:v1", "--all")
    body = env.manifest("signed/multi", index)
    children = [m["digest"] for m in json.loads(body)["manifests"]]
    assert len(children) == 2
    for digest in [index, *children]:
        assert env.statuses("signed/multi", digest) == [{"signingProfileArn": profile, "status": "COMPLETE"}]
        raw = env.manifest("signed/multi", digest)
        media_type = json.loads(raw)["mediaType"]
        _, envelope = signature_of(env, "signed/multi", digest, len(raw), media_type)
        verify_per_spec(envelope, root_cert, {"mediaType": media_type, "digest": digest, "size": len(raw)})


def test_put_image_over_the_ecr_api_is_signed(env: Env, profile: str, root_cert: x509.Certificate) -> None:
    env.ecr.create_repository(repositoryName="signed/ecr-api")
    image = ecr_push_image(env.ecr, "signed/ecr-api", "v1")  # a Docker schema 2 manifest, by PutImage
    digest = image.manifest.digest
    assert env.statuses("signed/ecr-api", digest) == [{"signingProfileArn": profile, "status": "COMPLETE"}]
    subject = {"mediaType": image.manifest.media_type, "digest": digest, "size": image.manifest.size}
    _, envelope = signature_of(env, "signed/ecr-api", digest, image.manifest.size, image.manifest.media_type)
    verify_per_spec(envelope, root_cert, subject)


def test_unmatched_repository_is_not_signed(env: Env, profile: str) -> None:
    digest = make_image(env.layout, "plain", layers=1, layer_size_mb=0.01, seed=13)
    push(f"oci:{env.layout}:plain", env.live, "plain/app:v1")
    time.sleep(0.5)  # the consumer has had its chance
    assert env.statuses("plain/app", digest) == []
    assert env.referrers("plain/app", digest) == []
    done = subprocess.run(
        [sys.executable, "-m", "moorage", "signing", "verify", "plain/app:v1", "--data-dir", str(env.live.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "no signatures" in done.stdout


def test_revoked_profile_fails(env: Env, profile: str) -> None:
    made = env.signer_api.put_signing_profile(profileName="revoked_one", platformId="Notation-OCI-SHA384-ECDSA")
    env.ecr.put_signing_configuration(
        signingConfiguration={
            "rules": [
                {
                    "signingProfileArn": profile,
                    "repositoryFilters": [{"filter": "signed/*", "filterType": "WILDCARD_MATCH"}],
                },
                {
                    "signingProfileArn": made["arn"],
                    "repositoryFilters": [{"filter": "*revoked*", "filterType": "WILDCARD_MATCH"}],
                },
            ]
        }
    )
    env.signer_api.revoke_signing_profile(
        profileName="revoked_one",
        profileVersion=made["profileVersion"],
        reason="key compromise drill",
        effectiveTime=datetime(2026, 1, 1, tzinfo=UTC),
    )
    got = env.signer_api.get_signing_profile(profileName="revoked_one")
    assert got["status"] == "Revoked"
    assert got["revocationRecord"]["revokedBy"].endswith(":root")
    digest = make_image(env.layout, "rev", layers=1, layer_size_mb=0.01, seed=14)
    push(f"oci:{env.layout}:rev", env.live, "signed/revoked:v1")
    by_arn = {s["signingProfileArn"]: s for s in env.statuses("signed/revoked", digest)}
    assert by_arn[profile]["status"] == "COMPLETE"
    failed = by_arn[made["arn"]]
    assert failed["status"] == "FAILED"
    assert failed["failureCode"] == "SigningProfileRevoked"
    assert "Revoked" in failed["failureReason"]
    assert len(env.referrers("signed/revoked", digest)) == 1  # only the active profile signed
    listed = moorage(env.live, "events", "list", "--limit", "1000")
    actions = [
        line for line in listed.splitlines() if "Moorage Image Signing Action" in line and "signed/revoked" in line
    ]
    assert len(actions) == 2  # one per profile: the signature, and the failure


def test_pusher_without_sign_payload_fails(env: Env, profile: str) -> None:
    admin = ("admin", "--data-dir", str(env.live.data_dir))
    subprocess.run(
        [sys.executable, "-m", "moorage", *admin[:1], "create-user", "pusher", *admin[1:]],
        check=True,
        capture_output=True,
    )
    keys = subprocess.run(
        [sys.executable, "-m", "moorage", "admin", "create-access-key", "--user", "pusher", *admin[1:]],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pairs = dict(line.split("=", 1) for line in keys.split())
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage",
            "admin",
            "attach-user-policy",
            "pusher",
            "--name",
            "ecr",
            "--document",
            "-",
            *admin[1:],
        ],
        input=json.dumps(policy),
        check=True,
        capture_output=True,
        text=True,
    )
    client = boto3.client(
        "ecr",
        endpoint_url=env.live.url,
        region_name="us-east-1",
        aws_access_key_id=pairs["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=pairs["AWS_SECRET_ACCESS_KEY"],
    )
    token = base64.b64decode(client.get_authorization_token()["authorizationData"][0]["authorizationToken"]).decode()
    digest = make_image(env.layout, "user", layers=1, layer_size_mb=0.01, seed=15)
    push(f"oci:{env.layout}:user", env.live, "signed/by-user:v1", "--dest-creds", token)
    (status,) = env.statuses("signed/by-user", digest)
    assert status["status"] == "FAILED"
    assert status["failureCode"] == "AccessDenied"
    assert "user/pusher is not authorized to perform: signer:SignPayload" in status["failureReason"]
    assert env.referrers("signed/by-user", digest) == []


def test_deleting_the_image_deletes_its_signature(env: Env, profile: str) -> None:
    digest = make_image(env.layout, "gone", layers=1, layer_size_mb=0.01, seed=16)
    push(f"oci:{env.layout}:gone", env.live, "signed/gone:v1")
    assert env.statuses("signed/gone", digest)[0]["status"] == "COMPLETE"
    (sig,) = env.referrers("signed/gone", digest)
    env.ecr.batch_delete_image(repositoryName="signed/gone", imageIds=[{"imageDigest": digest}])
    listed = env.ecr.list_images(repositoryName="signed/gone")["imageIds"]
    assert listed == []
    response = httpx.get(
        f"{env.live.url}/v2/signed/gone/manifests/{sig['digest']}", headers={"Accept": ACCEPT}, auth=env.live.auth
    )
    assert response.status_code == 404


def test_a_forged_signature_is_reported(env: Env, profile: str) -> None:
    """Someone pushes a second signature manifest whose envelope's payload was changed:
    `moorage signing verify` reports it FAILED (and exits 1) beside the genuine one."""
    digest = make_image(env.layout, "forged", layers=1, layer_size_mb=0.01, seed=17)
    push(f"oci:{env.layout}:forged", env.live, "signed/forged:v1")
    assert env.statuses("signed/forged", digest)[0]["status"] == "COMPLETE"
    body = env.manifest("signed/forged", digest)
    manifest, envelope = signature_of(env, "signed/forged", digest, len(body), json.loads(body)["mediaType"])
    doc = json.loads(envelope)
    payload = json.loads(_b64url(doc["payload"]))
    payload["targetArtifact"]["size"] += 1
    doc["payload"] = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    forged = json.dumps(doc).encode()
    forged_digest = "sha256:" + hashlib.sha256(forged).hexdigest()
    up = httpx.post(
        f"{env.live.url}/v2/signed/forged/blobs/uploads/?digest={forged_digest}", content=forged, auth=env.live.auth
    )
    assert up.status_code == 201, up.text
    manifest["layers"][0].update(digest=forged_digest, size=len(forged))
    forged_manifest = json.dumps(manifest).encode()
    put = httpx.put(
        f"{env.live.url}/v2/signed/forged/manifests/sha256:{hashlib.sha256(forged_manifest).hexdigest()}",
        content=forged_manifest,
        headers={"content-type": manifest["mediaType"]},
        auth=env.live.auth,
    )
    assert put.status_code == 201, put.text
    assert len(env.referrers("signed/forged", digest)) == 2
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage",
            "signing",
            "verify",
            "signed/forged:v1",
            "--data-dir",
            str(env.live.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()[1:]
    assert sorted(line.split()[1] for line in lines) == ["FAILED", "VERIFIED"]
    failed = next(line for line in lines if "FAILED" in line)
    assert "does not verify" in failed


def _own_pki(tmp: Path) -> tuple[Path, Path, x509.Certificate]:
    """A key and chain made here (not by Moorage): a P-384 CA and a code-signing leaf."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp Signing CA")])
    usage = dict(
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True
        )
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example release")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True
        )
        .sign(ca_key, hashes.SHA384())
    )
    key_path, chain_path = tmp / "key.pem", tmp / "chain.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    chain_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca)))
    return key_path, chain_path, ca


def test_an_imported_key_signs(env: Env, profile: str, tmp_path: Path) -> None:
    key_path, chain_path, ca = _own_pki(tmp_path)
    out = moorage(
        env.live,
        "admin",
        "import-signing-key",
        "--profile",
        "imported_one",
        "--key",
        str(key_path),
        "--chain",
        str(chain_path),
    )
    arn = out.split()[0]
    assert arn == f"arn:aws:signer:us-east-1:{ACCOUNT}:/signing-profiles/imported_one"
    (tmp_path / "other").mkdir()
    other_key, _, _ = _own_pki(tmp_path / "other")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage",
            "admin",
            "import-signing-key",
            "--profile",
            "mismatch",
            "--key",
            str(other_key),
            "--chain",
            str(chain_path),
            "--data-dir",
            str(env.live.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    assert "not the key's" in refused.stderr
    env.ecr.put_signing_configuration(
        signingConfiguration={
            "rules": [
                {
                    "signingProfileArn": profile,
                    "repositoryFilters": [{"filter": "signed/*", "filterType": "WILDCARD_MATCH"}],
                },
                {
                    "signingProfileArn": arn,
                    "repositoryFilters": [{"filter": "imported/*", "filterType": "WILDCARD_MATCH"}],
                },
            ]
        }
    )
    digest = make_image(env.layout, "imported", layers=1, layer_size_mb=0.01, seed=18)
    push(f"oci:{env.layout}:imported", env.live, "imported/app:v1")
    assert env.statuses("imported/app", digest) == [{"signingProfileArn": arn, "status": "COMPLETE"}]
    body = env.manifest("imported/app", digest)
    media_type = json.loads(body)["mediaType"]
    _, envelope = signature_of(env, "imported/app", digest, len(body), media_type)
    verify_per_spec(envelope, ca, {"mediaType": media_type, "digest": digest, "size": len(body)})
    verified = moorage(env.live, "signing", "verify", "imported/app:v1")
    assert "VERIFIED" in verified
    assert "example release" in verified


def test_configuration_errors(env: Env, profile: str) -> None:
    with pytest.raises(ClientError) as raised:
        env.ecr.describe_image_signing_status(repositoryName="signed/app", imageId={"imageTag": "nope"})
    assert raised.value.response["Error"]["Code"] == "ImageNotFoundException"
    with pytest.raises(ClientError) as raised:
        env.ecr.describe_image_signing_status(repositoryName="no/such", imageId={"imageTag": "v1"})
    assert raised.value.response["Error"]["Code"] == "RepositoryNotFoundException"
    removed = env.ecr.delete_signing_configuration()
    assert removed["signingConfiguration"]["rules"]
    with pytest.raises(ClientError) as raised:
        env.ecr.get_signing_configuration()
    assert raised.value.response["Error"]["Code"] == "SigningConfigurationNotFoundException"
    with pytest.raises(ClientError) as raised:
        env.ecr.delete_signing_configuration()
    assert raised.value.response["Error"]["Code"] == "SigningConfigurationNotFoundException"
    # existing signatures stay
    digest = env.ecr.describe_images(repositoryName="signed/app")["imageDetails"]
    assert any(d.get("artifactMediaType") == NOTARY or d.get("imageManifestMediaType") for d in digest)
    with pytest.raises(ClientError) as raised:
        env.ecr.put_signing_configuration(
            signingConfiguration={"rules": [{"signingProfileArn": "arn:aws:signer:us-east-1:1:/signing-profiles/x"}]}
        )
    assert raised.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "signingProfileArn" in raised.value.response["Error"]["Message"]
    unchecked = boto3.client(
        "ecr",
        endpoint_url=env.live.url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_ACCESS_KEY_ID,
        aws_secret_access_key=ROOT_SECRET_ACCESS_KEY,
        config=Config(parameter_validation=False),
    )
    with pytest.raises(ClientError) as raised:
        unchecked.put_signing_configuration(signingConfiguration={"rules": [{"signingProfileArn": profile}] * 11})
    assert raised.value.response["Error"]["Code"] == "InvalidParameterException"
    assert raised.value.response["Error"]["Message"] == (
        "Invalid parameter at 'signingConfiguration.rules' failed to satisfy constraint: "
        "'Member must have length less than or equal to 10'"
    )
