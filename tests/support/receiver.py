"""A real HTTP webhook receiver on 127.0.0.1, for event delivery tests.

It records every POST (headers and exact body) and answers with the next status of a script
(default 200), so a test can make it fail a few times and then recover.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


class WebhookReceiver:
    def __init__(self, statuses: Iterable[int] = (), *, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._script: deque[int] = deque(statuses)
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    status = receiver._script.popleft() if receiver._script else 200
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def script(self, statuses: Iterable[int]) -> None:
        with self._lock:
            self._script.extend(statuses)

    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx, in order."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until `count` requests were answered 2xx; return them. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.delivered()
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise TimeoutError(f"{len(self.delivered())} of {count} events delivered within {timeout} s")

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
