"""Shared fixtures: async backend, and the pytest options every tier uses.

Every process a test starts carries `PYTEST_MOORAGE_SESSION=<pytest's pid>` in its environment
(set here, inherited by all children). At the end of the session no `moorage` process carrying it
may be alive: any that is gets killed and the run fails, naming it, whatever the tests said.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.support.live import LiveServer

SESSION_ENV = "PYTEST_MOORAGE_SESSION"  # not MOORAGE_*: servers would warn about an unknown setting


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_ENV] = str(os.getpid())


def leftover_processes(marker: str, *, needle: bytes = b"moorage") -> list[tuple[int, str]]:
    """(pid, command line) of the live processes (zombies excluded) whose environment has
    `SESSION_ENV=marker` and whose command line mentions `needle`; never this process."""
    found = []
    wanted = f"{SESSION_ENV}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if needle not in cmdline or wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state not in ("Z", "X"):
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lines = [
        f"  LiveServer on {server.address} (data {server.data_dir}) was never stopped"
        for server in list(LiveServer.running)
    ]
    leftovers = leftover_processes(os.environ.get(SESSION_ENV, str(os.getpid()))) if Path("/proc").is_dir() else []
    lines += [f"  pid {pid}: {command}" for pid, command in leftovers]
    for server in list(LiveServer.running):
        server.kill()
    for pid, _ in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not lines:
        return
    message = "tests left moorage processes running (now killed):\n" + "\n".join(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.section("leftover processes", sep="!", red=True, bold=True)
        reporter.line(message, red=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
