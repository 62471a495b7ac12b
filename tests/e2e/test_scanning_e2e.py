"""Image scanning end to end: images built here from real package metadata (a Debian 12 dpkg
database, a Python dist-info, node_modules) are pushed with skopeo; OSV records are imported with
`moorage vulndb import`; the aws CLI starts a scan, waits for it and lists exactly the expected
CVEs; a whiteout layer removes a package's findings; scan on push, ENHANCED findings, DescribeImages."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard
from botocore.exceptions import ClientError

from tests.e2e.conftest import login, need, push
from tests.e2e.conftest import moorage_cli as moorage
from tests.scanning.helpers import DATA, base_layer, tar_layer
from tests.support.ecr import aws_cli
from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

EXPECTED_A = [
    ("CVE-2015-8315", "ms", "0.7.0", "HIGH"),
    ("CVE-2023-32681", "requests", "2.30.0", "MEDIUM"),
    ("CVE-2025-15467", "libssl3", "3.0.18-1~deb12u1", "MEDIUM"),
    ("CVE-2025-15467", "openssl", "3.0.18-1~deb12u1", "MEDIUM"),
    ("CVE-2026-28387", "libssl3", "3.0.18-1~deb12u1", "MEDIUM"),
    ("CVE-2026-28387", "openssl", "3.0.18-1~deb12u1", "MEDIUM"),
]


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.refs: list[dict[str, Any]] = []
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}"

    def image(self, ref: str, layers: list[bytes]) -> str:
        def plain(layer: bytes) -> bytes:
            if layer.startswith(b"\x28\xb5\x2f\xfd"):
                return zstandard.ZstdDecompressor().decompressobj().decompress(layer)
            return gzip.decompress(layer)

        def media_type(layer: bytes) -> str:
            return OCI_LAYER_ZSTD if layer.startswith(b"\x28\xb5\x2f\xfd") else OCI_LAYER

        diff_ids = ["sha256:" + hashlib.sha256(plain(layer)).hexdigest() for layer in layers]
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": self.blob(config), "size": len(config)},
                "layers": [{"mediaType": media_type(x), "digest": self.blob(x), "size": len(x)} for x in layers],
            }
        ).encode()
        digest = self.blob(manifest)
        self.refs.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        )
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.refs}))
        return digest

    def index(self, ref: str, child: str) -> str:
        """An image index over one (amd64) image of the layout."""
        entry = next(r for r in self.refs if r["digest"] == child)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {k: entry[k] for k in ("mediaType", "digest", "size")}
                    | {"platform": {"architecture": "amd64", "os": "linux"}}
                ],
            }
        ).encode()
        digest = self.blob(body)
        self.refs.append(
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest,
                "size": len(body),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        )
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.refs}))
        return digest


def aws(live: LiveServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return aws_cli(
        live.url, "ecr", *args, key_id=ROOT_ACCESS_KEY_ID, secret=ROOT_SECRET_ACCESS_KEY, check=check, timeout=400
    )


def settled(ecr: Any, repo: str, digest: str, timeout: float = 60.0) -> dict[str, Any]:
    """DescribeImageScanFindings once the scan left IN_PROGRESS."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found: dict[str, Any] = ecr.describe_image_scan_findings(
                repositoryName=repo, imageId={"imageDigest": digest}
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ScanNotFoundException" or time.monotonic() > deadline:
                raise
        else:
            if found["imageScanStatus"]["status"] != "IN_PROGRESS":
                return found
        assert time.monotonic() < deadline, "scan did not finish"
        time.sleep(1)


ENHANCED_IDS = {"CVE-2015-8315", "CVE-2023-32681", "CVE-2025-15467", "CVE-2026-28387"}


def vulnerability_ids(found: dict[str, Any]) -> set[str]:
    assert found["imageScanStatus"]["status"] == "ACTIVE", found["imageScanStatus"]
    return {f["packageVulnerabilityDetails"]["vulnerabilityId"] for f in found["imageScanFindings"]["enhancedFindings"]}


def rows(findings: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    out = []
    for f in findings:
        attrs = {a["key"]: a["value"] for a in f["attributes"]}
        out.append((f["name"], attrs["package_name"], attrs["package_version"], f["severity"]))
    return sorted(out)


def test_scans_find_exactly_the_expected_vulnerabilities(tmp_path: Path) -> None:
    need("skopeo", "aws")
    layout = Layout(tmp_path / "layout")
    base = tar_layer(base_layer())
    image_a = layout.image("a", [base])
    image_b = layout.image("b", [base, tar_layer([("app/node_modules/.wh.ms", b"")])])  # deletes ms
    static = layout.image("static", [tar_layer([("app/server", b"\x7fELF static binary")])])
    layout.index("multi", image_a)
    source = f"oci:{layout.root}"

    live = login(LiveServer(tmp_path / "data").start(60.0))
    try:
        ecr = live.ecr()
        ecr.create_repository(repositoryName="scan/app")
        push(f"{source}:a", live, "scan/app:a")
        with pytest.raises(ClientError) as missing:
            ecr.describe_image_scan_findings(repositoryName="scan/app", imageId={"imageTag": "a"})
        assert missing.value.response["Error"]["Code"] == "ScanNotFoundException"

        # No database yet: the scan fails, saying why (never an empty COMPLETE).
        ecr.start_image_scan(repositoryName="scan/app", imageId={"imageTag": "a"})
        failed = settled(ecr, "scan/app", image_a)
        assert failed["imageScanStatus"] == {
            "status": "FAILED",
            "description": "No vulnerability database; run 'moorage vulndb import'",
        }

        assert "4 imported" in moorage(live, "vulndb", "import", str(DATA / "osv"))
        started = json.loads(
            aws(live, "start-image-scan", "--repository-name", "scan/app", "--image-id", "imageTag=a").stdout
        )
        assert started["imageScanStatus"] == {"status": "IN_PROGRESS"}
        aws(live, "wait", "image-scan-complete", "--repository-name", "scan/app", "--image-id", "imageTag=a")
        described = json.loads(
            aws(
                live, "describe-image-scan-findings", "--repository-name", "scan/app", "--image-id", "imageTag=a"
            ).stdout
        )
        assert described["imageScanStatus"]["status"] == "COMPLETE"
        assert rows(described["imageScanFindings"]["findings"]) == EXPECTED_A
        assert described["imageScanFindings"]["findingSeverityCounts"] == {"HIGH": 1, "MEDIUM": 5}

        # Once a day per image.
        again = aws(live, "start-image-scan", "--repository-name", "scan/app", "--image-id", "imageTag=a", check=False)
        assert again.returncode != 0
        assert "LimitExceededException" in again.stderr

        # A scan belongs to one life of the image: deleted and pushed again, the image has none.
        ecr.batch_delete_image(repositoryName="scan/app", imageIds=[{"imageTag": "a"}])
        push(f"{source}:a", live, "scan/app:a")
        with pytest.raises(ClientError) as gone:
            ecr.describe_image_scan_findings(repositoryName="scan/app", imageId={"imageTag": "a"})
        assert gone.value.response["Error"]["Code"] == "ScanNotFoundException"
        assert "imageScanStatus" not in ecr.describe_images(repositoryName="scan/app")["imageDetails"][0]
        ecr.start_image_scan(repositoryName="scan/app", imageId={"imageTag": "a"})
        assert settled(ecr, "scan/app", image_a)["imageScanStatus"]["status"] == "COMPLETE"

        # The paginator walks the findings two at a time.
        pages = ecr.get_paginator("describe_image_scan_findings").paginate(
            repositoryName="scan/app", imageId={"imageTag": "a"}, PaginationConfig={"PageSize": 2}
        )
        assert rows([f for page in pages for f in page["imageScanFindings"]["findings"]]) == EXPECTED_A

        # DescribeImages carries the scan status and summary.
        detail = ecr.describe_images(repositoryName="scan/app", imageIds=[{"imageTag": "a"}])["imageDetails"][0]
        assert detail["imageScanStatus"]["status"] == "COMPLETE"
        assert detail["imageScanFindingsSummary"]["findingSeverityCounts"] == {"HIGH": 1, "MEDIUM": 5}

        # Scan on push (the repository's own setting under BASIC); the whiteout removed ms's finding.
        ecr.put_image_scanning_configuration(repositoryName="scan/app", imageScanningConfiguration={"scanOnPush": True})
        push(f"{source}:b", live, "scan/app:b")
        settled(ecr, "scan/app", image_b)  # queued from the outbox within a scheduler tick of the push
        ecr.get_waiter("image_scan_complete").wait(
            repositoryName="scan/app", imageId={"imageTag": "b"}, WaiterConfig={"Delay": 1, "MaxAttempts": 90}
        )
        found_b = ecr.describe_image_scan_findings(repositoryName="scan/app", imageId={"imageDigest": image_b})
        assert rows(found_b["imageScanFindings"]["findings"]) == [r for r in EXPECTED_A if r[1] != "ms"]

        # No OS and no language packages: UNSUPPORTED_IMAGE.
        push(f"{source}:static", live, "scan/app:static")
        unsupported = settled(ecr, "scan/app", static)
        assert unsupported["imageScanStatus"]["status"] == "UNSUPPORTED_IMAGE"

        # An index is not scanned itself (StartImageScan answers UnsupportedImageTypeException, as
        # for every manifest that is not an image); its platform images are.
        push(f"{source}:multi", live, "scan/app:multi", "--all")
        with pytest.raises(ClientError) as index_scan:
            ecr.start_image_scan(repositoryName="scan/app", imageId={"imageTag": "multi"})
        assert index_scan.value.response["Error"]["Code"] == "UnsupportedImageTypeException"

        # Every finished scan was reported as an `ECR Image Scan` event.
        scans = [line for line in moorage(live, "events", "list").splitlines() if "ECR Image Scan" in line]
        assert len(scans) >= 4

        # ENHANCED with a SCAN_ON_PUSH rule: the same CVEs as enhancedFindings.
        config = ecr.put_registry_scanning_configuration(
            scanType="ENHANCED",
            rules=[
                {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "enh*", "filterType": "WILDCARD"}]},
                {
                    "scanFrequency": "CONTINUOUS_SCAN",
                    "repositoryFilters": [{"filter": "cont*", "filterType": "WILDCARD"}],
                },
            ],
        )
        assert config["registryScanningConfiguration"]["scanType"] == "ENHANCED"
        ecr.create_repository(repositoryName="enhanced")
        got = ecr.batch_get_repository_scanning_configuration(repositoryNames=["enhanced", "scan/app", "nope"])
        by_name = {c["repositoryName"]: c for c in got["scanningConfigurations"]}
        assert by_name["enhanced"]["scanFrequency"] == "SCAN_ON_PUSH"
        assert by_name["enhanced"]["appliedScanFilters"] == [{"filter": "enh*", "filterType": "WILDCARD"}]
        assert by_name["scan/app"]["scanFrequency"] == "MANUAL"
        assert got["failures"][0]["failureCode"] == "REPOSITORY_NOT_FOUND"
        push(f"{source}:a", live, "enhanced:a")
        enhanced = settled(ecr, "enhanced", image_a)
        assert enhanced["imageScanStatus"]["status"] == "ACTIVE"
        items = enhanced["imageScanFindings"]["enhancedFindings"]
        assert sorted(f["packageVulnerabilityDetails"]["vulnerabilityId"] for f in items) == [
            "CVE-2015-8315",
            "CVE-2023-32681",
            "CVE-2025-15467",
            "CVE-2026-28387",
        ]
        ossl = next(f for f in items if f["packageVulnerabilityDetails"]["vulnerabilityId"] == "CVE-2025-15467")
        assert ossl["fixAvailable"] == "YES"
        assert {p["name"] for p in ossl["packageVulnerabilityDetails"]["vulnerablePackages"]} == {"libssl3", "openssl"}
        manifest = json.loads((layout.root / "blobs" / "sha256" / image_a.split(":")[1]).read_text())
        layer_digest = manifest["layers"][0]["digest"]
        assert {
            p["sourceLayerHash"] for f in items for p in f["packageVulnerabilityDetails"]["vulnerablePackages"]
        } == {layer_digest}

        # CONTINUOUS_SCAN: an import that changes an advisory re-matches the images holding its
        # package. Here GHSA-3fx5-fwvr-xrjg comes again, withdrawn (derived from the real record).
        ecr.create_repository(repositoryName="continuous")
        push(f"{source}:a", live, "continuous:a")
        assert vulnerability_ids(settled(ecr, "continuous", image_a)) == ENHANCED_IDS
        withdrawn = json.loads((DATA / "osv" / "GHSA-3fx5-fwvr-xrjg.json").read_text())
        withdrawn.update(modified="2026-06-01T00:00:00Z", withdrawn="2026-06-01T00:00:00Z")
        (tmp_path / "withdrawn.json").write_text(json.dumps(withdrawn))
        assert "1 updated" in moorage(live, "vulndb", "import", str(tmp_path / "withdrawn.json"))
        deadline = time.monotonic() + 60
        while "CVE-2015-8315" in vulnerability_ids(settled(ecr, "continuous", image_a)):
            assert time.monotonic() < deadline, "no re-match after the import"
            time.sleep(1)
        assert vulnerability_ids(settled(ecr, "continuous", image_a)) == ENHANCED_IDS - {"CVE-2015-8315"}
        # SCAN_ON_PUSH images are not re-matched.
        assert vulnerability_ids(settled(ecr, "enhanced", image_a)) == ENHANCED_IDS
    finally:
        live.stop()


def test_rocky_image_with_a_go_binary_in_a_zstd_layer(tmp_path: Path) -> None:
    """An rpm database made by the real rpm tool and the real shfmt binary, in one zstd layer pushed
    with skopeo: the scan lists the rpm advisory's CVE (by source package, in rpm order) and the Go
    module's advisory; deleting the image deletes its scan."""
    need("skopeo", "aws", "rpmbuild", "rpm")
    from tests.scanning.test_rpm_go_zstd import ROCKY_9, _rpmdb, _shfmt, _spec

    db = _rpmdb(tmp_path / "rpm", [_spec("openssl", 1, "3.0.7", "24.el9", subpackage="libs")])
    raw = tar_layer(
        [
            ("etc/os-release", ROCKY_9),
            ("var/lib/rpm/rpmdb.sqlite", db.read_bytes()),
            ("usr/local/bin/shfmt", _shfmt().read_bytes()),
        ],
        compress=False,
        executable=("usr/local/bin/shfmt",),
    )
    layer = zstandard.ZstdCompressor(level=3).compress(raw)
    layout = Layout(tmp_path / "layout")
    digest = layout.image("rocky", [layer])

    live = login(LiveServer(tmp_path / "data").start(60.0))
    try:
        ecr = live.ecr()
        ecr.create_repository(repositoryName="scan/rocky")
        push(f"oci:{layout.root}:rocky", live, "scan/rocky:1")
        detail = ecr.describe_images(repositoryName="scan/rocky")["imageDetails"][0]
        assert detail["imageManifestMediaType"] == OCI_MANIFEST
        assert "3 imported" in moorage(live, "vulndb", "import", str(DATA / "osv-rpm"), str(DATA / "osv-go"))
        ecr.start_image_scan(repositoryName="scan/rocky", imageId={"imageTag": "1"})
        ecr.get_waiter("image_scan_complete").wait(
            repositoryName="scan/rocky", imageId={"imageTag": "1"}, WaiterConfig={"Delay": 1, "MaxAttempts": 90}
        )
        found = ecr.describe_image_scan_findings(repositoryName="scan/rocky", imageId={"imageTag": "1"})
        assert found["imageScanStatus"]["status"] == "COMPLETE"
        rpm_row, go_row = rows(found["imageScanFindings"]["findings"])
        assert rpm_row == ("CVE-2024-0727", "openssl-libs", "1:3.0.7-24.el9", "MEDIUM")
        assert (go_row[0], go_row[1], go_row[3]) == ("TEST-GO-X-SYS", "golang.org/x/sys", "UNDEFINED")
        assert go_row[2].startswith("v0.")  # the version shfmt was built with, as `go version -m` shows it

        ecr.batch_delete_image(repositoryName="scan/rocky", imageIds=[{"imageDigest": digest}])
        push(f"oci:{layout.root}:rocky", live, "scan/rocky:1")
        with pytest.raises(ClientError) as gone:
            ecr.describe_image_scan_findings(repositoryName="scan/rocky", imageId={"imageTag": "1"})
        assert gone.value.response["Error"]["Code"] == "ScanNotFoundException"
    finally:
        live.stop()
