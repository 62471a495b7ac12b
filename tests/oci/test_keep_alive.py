"""A request answered before its body was read must leave the client knowing where the connection
stands: the body is read to its end first (the connection stays usable), or, for a large body, the
answer says `Connection: close`. Before this, the server closed such connections silently after
the answer, and a client that sent its next request on the pooled connection saw
"Server disconnected without sending a response" (the fuzz test hit it on a GET of `_catalog`)."""

from __future__ import annotations

import contextlib
import socket

import httpx
import pytest

from tests.support.live import LiveServer

MIB = 1024 * 1024

# Each of these is answered without its body being needed.
UNREAD = [
    ("POST", "/v2/_catalog"),  # 405
    ("PUT", "/v2/"),  # 405
    ("DELETE", "/v2/keep-alive/tags/list"),  # refused
    ("PUT", "/v2/keep-alive/manifests/nope%ff"),  # invalid reference
]


@pytest.mark.parametrize(("method", "path"), UNREAD)
@pytest.mark.parametrize("size", [100, 100_000, 2 * MIB])
def test_the_next_request_on_the_same_connection_is_answered(
    server: LiveServer, method: str, path: str, size: int
) -> None:
    with httpx.Client(base_url=server.url, auth=server.auth, timeout=30.0) as client:
        for _ in range(10):
            refused = client.request(method, path, content=b"[" * size)
            assert 400 <= refused.status_code < 500, refused.text
            assert refused.headers.get("connection") != "close"
            assert client.get("/v2/_catalog").status_code == 200


def test_a_large_unread_body_is_answered_with_connection_close(server: LiveServer) -> None:
    size = 64 * MIB
    host, port = server.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v2/_catalog HTTP/1.1\r\nHost: {server.address}\r\nContent-Length: {size}\r\n\r\n".encode())
        # The rest never comes: the answer must not wait for it. The server may answer and close
        # before even this much is taken; then the send fails (EPIPE after its RST), and the
        # answer, sent before that RST, is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"x" * MIB)
        answer = b""
        while b"\r\n\r\n" not in answer:
            received = sock.recv(65536)
            assert received, "connection closed before the answer"
            answer += received
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 405") or head.startswith(b"http/1.1 401"), head
    assert b"\r\nconnection: close" in head, head
