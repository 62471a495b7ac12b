"""`moorage events list` and `moorage events redeliver` against a running server's data: an event a
webhook gave up on is listed as failed, resent on demand, and then counts as delivered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.live import LiveServer
from tests.support.receiver import WebhookReceiver
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


def _cli(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")} | env
    return subprocess.run(
        [sys.executable, "-m", "moorage", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
        check=False,
    )


def test_a_failed_event_is_listed_and_redelivered(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "MOORAGE_EVENTS__WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
        "MOORAGE_EVENTS__RETRY_FOR": "1s",
        "MOORAGE_EVENTS__RETRY_MAX_INTERVAL": "1s",
    }
    with LiveServer(tmp_path / "data", env=env) as server:
        server.ecr().create_repository(repositoryName="team/cli")
        deadline = time.monotonic() + 30
        while True:
            listed = _cli(server.data_dir, env, "events", "list", "--undelivered")
            assert listed.returncode == 0, listed.stderr
            if "env=failed" in listed.stdout:
                break
            assert time.monotonic() < deadline, listed.stdout
            time.sleep(0.5)
        line = next(line for line in listed.stdout.splitlines() if "env=failed" in line)
        event_id = line.split()[0]
        assert "Moorage Repository Action" in line
        assert "team/cli" in line

        with WebhookReceiver(port=port) as receiver:
            again = _cli(server.data_dir, env, "events", "redeliver", event_id, "--webhook", "env")
            assert again.returncode == 0, again.stderr
            assert "env: delivered (was failed)" in again.stdout
            assert [r.headers["x-moorage-event-id"] for r in receiver.delivered()] == [event_id]
        after = _cli(server.data_dir, env, "events", "list", "--undelivered")
        assert event_id not in after.stdout
        everything = _cli(server.data_dir, env, "events", "list")
        assert f"{event_id}" in everything.stdout
        assert "env=delivered" in everything.stdout

        missing = _cli(server.data_dir, env, "events", "redeliver", "no-such-event")
        assert missing.returncode != 0
        assert "no event no-such-event" in missing.stderr
        unknown = _cli(server.data_dir, env, "events", "list", "--webhook", "nope")
        assert unknown.returncode != 0
        assert "no webhook named 'nope'" in unknown.stderr
