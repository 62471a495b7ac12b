"""A TLS client talking to the plain-HTTP port must not hurt the server.

skopeo with --tls-verify=false tries HTTPS first and falls back to HTTP, so every push and pull in
this tier already sends a ClientHello to the plain port; here that is done directly, repeatedly
and concurrently, and the server must keep answering.
"""

from __future__ import annotations

import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import Layout, inspect, push
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e


def _client_hello(server: LiveServer) -> str:
    """Attempt a TLS handshake against the plain-HTTP port; returns how it failed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            with context.wrap_socket(sock, server_hostname="127.0.0.1"):
                pass
        except TimeoutError as exc:
            raise AssertionError("the server held a TLS ClientHello open without answering") from exc
        except (ssl.SSLError, ConnectionError) as exc:
            return type(exc).__name__
    raise AssertionError("a TLS handshake succeeded against the plain-HTTP port")


def test_tls_client_hello_on_plain_port(registry: LiveServer, small_image: Layout) -> None:
    _client_hello(registry)
    assert httpx.get(f"{registry.url}/v2/", auth=registry.auth, timeout=10).status_code == 200

    with ThreadPoolExecutor(max_workers=8) as pool:
        failures = list(pool.map(lambda _: _client_hello(registry), range(32)))
    assert len(failures) == 32
    with httpx.Client(timeout=10, auth=registry.auth) as client:
        for _ in range(5):
            response = client.get(f"{registry.url}/v2/")
            assert response.status_code == 200, response.text
            assert response.headers["docker-distribution-api-version"] == "registry/2.0"

    # skopeo's HTTPS-then-HTTP fallback works against the same port.
    push(f"oci:{small_image.root}:v1", registry, "e2e/tls-fallback:v1")
    info = inspect(registry, "e2e/tls-fallback:v1")
    assert info["Digest"] == small_image.digest_of("v1")
    assert httpx.get(f"{registry.url}/v2/", auth=registry.auth, timeout=10).status_code == 200
