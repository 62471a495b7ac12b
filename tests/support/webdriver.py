"""Headless Chromium driven through chromedriver's W3C WebDriver protocol, over httpx.

Selenium 4.52 (the only version in the local PyPI mirror) requires a certifi newer than the mirror
has, so it cannot be installed here; the WebDriver protocol itself is small and plain HTTP, so this
speaks it directly to Debian's chromedriver (`/usr/bin/chromedriver`, which drives
`/usr/bin/chromium`). Nothing is downloaded; chromedriver listens on a loopback port.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.services import free_port

__all__ = ["Browser", "Element", "WebDriverError"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebDriverError(Exception):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error


class Element:
    def __init__(self, browser: Browser, element_id: str) -> None:
        self._browser = browser
        self.id = element_id

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._browser.call(method, f"/element/{self.id}{path}", body)

    def click(self) -> None:
        self._call("POST", "/click", {})

    def type(self, text: str) -> None:
        self._call("POST", "/value", {"text": text})

    def clear(self) -> None:
        self._call("POST", "/clear", {})

    @property
    def text(self) -> str:
        return str(self._call("GET", "/text"))

    def attribute(self, name: str) -> str | None:
        value = self._call("GET", f"/property/{name}")
        return None if value is None else str(value)

    def find(self, css: str) -> Element:
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        return Element(self._browser, found[_ELEMENT])

    def find_all(self, css: str) -> list[Element]:
        found = self._call("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self._browser, item[_ELEMENT]) for item in found]


class Browser:
    """One chromedriver process and one headless Chromium session."""

    def __init__(self, *, width: int = 1280, height: int = 900) -> None:
        self.port = free_port()
        env = {**os.environ, "SE_OFFLINE": "true"}
        self._driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60.0)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._http.get("/status").json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                self._driver.kill()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.05)
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-default-apps",
                    "--disable-sync",
                    "--metrics-recording-only",
                    f"--window-size={width},{height}",
                ],
            },
        }
        answer = self._http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
        value = answer.json()["value"]
        if "sessionId" not in value:
            self.close()
            raise WebDriverError(value.get("error", "?"), value.get("message", ""))
        self.session = value["sessionId"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, f"/session/{self.session}{path}", json=body)
        value = response.json()["value"]
        if response.status_code >= 400:
            raise WebDriverError(value.get("error", "?"), value.get("message", "")[:500])
        return value

    def get(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self.call("GET", "/url"))

    @property
    def title(self) -> str:
        return str(self.call("GET", "/title"))

    def find(self, css: str) -> Element:
        found = self.call("POST", "/element", {"using": "css selector", "value": css})
        return Element(self, found[_ELEMENT])

    def find_all(self, css: str) -> list[Element]:
        found = self.call("POST", "/elements", {"using": "css selector", "value": css})
        return [Element(self, item[_ELEMENT]) for item in found]

    def text(self, css: str = "body") -> str:
        return self.find(css).text

    def run(self, script: str, *args: Any) -> Any:
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def accept_alert(self) -> str:
        text = str(self.call("GET", "/alert/text"))
        self.call("POST", "/alert/accept", {})
        return text

    def window(self, width: int, height: int) -> None:
        self.call("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> Path:
        data = base64.b64decode(str(self.call("GET", "/screenshot")))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def cookies(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/cookie"))

    def delete_cookies(self) -> None:
        self.call("DELETE", "/cookie")

    def wait_for(self, css: str, timeout: float = 10.0) -> Element:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.find(css)
            except WebDriverError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def wait_for_page(self, in_url: str, timeout: float = 10.0) -> None:
        """Wait for the page a click navigates to (its URL holds `in_url`, its document is
        loaded): until then the old page's elements still match `find` and `wait_for`."""
        deadline = time.monotonic() + timeout
        while in_url not in self.url or self.run("return document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise AssertionError(f"no page with {in_url!r} in its URL after {timeout} s: {self.url}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._http.delete(f"/session/{self.session}")
        except httpx.HTTPError:
            pass
        finally:
            self._http.close()
            self._driver.terminate()
            try:
                self._driver.wait(10)
            except subprocess.TimeoutExpired:
                self._driver.kill()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
