"""Authorization tests against real `moorage serve` processes: two accounts, users made with the
real `moorage admin` CLI (a subprocess on the running server's data dir), boto3, httpx and skopeo.

    account A = 123456789012 (the default account)   root (the server's root key), alice, bob, nobody
    account B = 210987654321                         root, carol

The session's users and keys are made by one batch of `moorage admin` commands (one subprocess);
tests that change identity policies run `moorage admin` as a process of its own each time.

alice and nobody may only call GetAuthorizationToken (policy "token"); bob and carol start with
no policy at all.
Identity policies attached by the CLI reach the server within its policy cache TTL (1 s):
`eventually` retries until then. Tests that put a registry policy or change account settings use a
region of their own, so they never affect each other (a registry is an account in a region).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from botocore.exceptions import ClientError

from tests.support.ecr import ecr_client, registry_password
from tests.support.live import ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY, LiveServer

ACCOUNT_A = "123456789012"
ACCOUNT_B = "210987654321"
REGION = "us-east-1"
DOMAIN = "moorage.test"

T = TypeVar("T")


def admin(server: LiveServer, *args: str, stdin: str | None = None, check: bool = True) -> str:
    """`moorage admin ARGS --data-dir <the server's>` in a subprocess; its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    command = [sys.executable, "-m", "moorage", "admin", *args, "--data-dir", str(server.data_dir)]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


_BATCH = """
import json, sys
from click.testing import CliRunner
from moorage.cli import main
outputs = []
for args, stdin in json.load(sys.stdin):
    result = CliRunner().invoke(main, ["admin", *args], input=stdin)
    if result.exit_code != 0:
        sys.exit(f"moorage admin {' '.join(args)} -> {result.exit_code}: {result.output}")
    outputs.append(result.output)
json.dump(outputs, sys.stdout)
"""


def admin_batch(server: LiveServer, commands: list[tuple[list[str], str | None]]) -> list[str]:
    """Several `moorage admin` commands, in order, in ONE subprocess on the server's data dir (one
    interpreter start instead of one per command); their outputs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOORAGE_")}
    batch = [([*args, "--data-dir", str(server.data_dir)], stdin) for args, stdin in commands]
    done = subprocess.run(
        [sys.executable, "-c", _BATCH], input=json.dumps(batch), capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    outputs: list[str] = json.loads(done.stdout)
    return outputs


def policy(*statements: Mapping[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions: str | list[str], resource: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    """An identity-policy statement."""
    return {"Effect": "Allow", "Action": actions, "Resource": resource, **extra}


def grant(principal: Any, actions: str | list[str], effect: str = "Allow", **extra: Any) -> dict[str, Any]:
    """A resource-policy statement."""
    return {"Effect": effect, "Principal": principal, "Action": actions, **extra}


def user_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:user/{name}"


def repo_arn(name: str, account: str = ACCOUNT_A, region: str = REGION) -> str:
    return f"arn:aws:ecr:{region}:{account}:repository/{name}"


def eventually(check: Callable[[], T], timeout: float = 6.0) -> T:
    """Retry `check` (an assertion or call that raises) until it passes: changes made by another
    process (`moorage admin`) reach the server within its policy cache TTL."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def denied(call: Callable[..., Any], **params: Any) -> str:
    """The AccessDeniedException message a boto3 call must fail with."""
    with pytest.raises(ClientError) as info:
        call(**params)
    error = info.value.response["Error"]
    assert error["Code"] == "AccessDeniedException", info.value.response
    return str(error["Message"])


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: str


def _parse_key(output: str) -> Key:
    values = dict(line.split("=", 1) for line in output.strip().splitlines() if "=" in line)
    return Key(values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])


@dataclass
class World:
    """Both servers and every identity's key."""

    server: LiveServer
    open_server: LiveServer
    keys: dict[str, Key] = field(default_factory=dict)

    def ecr(self, who: str, region: str = REGION) -> Any:
        key = self.keys[who]
        return ecr_client(self.server.url, region=region, key_id=key.key_id, secret=key.secret, validate=False)

    def password(self, who: str, region: str = REGION) -> str:
        return registry_password(self.ecr(who, region))

    def admin(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return admin(self.server, *args, stdin=stdin, check=check)

    def host(self, account: str, region: str = REGION) -> str:
        """The registry host name of a registry (resolve it to 127.0.0.1 to use it)."""
        return f"{account}.dkr.ecr.{region}.{DOMAIN}:{self.server.port}"


TOKEN_POLICY = policy(allow("ecr:GetAuthorizationToken"))


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("authz")
    server = LiveServer(root / "sigv4", args=["--auth", "sigv4"], env={"MOORAGE_REGISTRY_DOMAIN": DOMAIN})
    open_server = LiveServer(root / "open", args=["--auth", "open"], env={"MOORAGE_REGISTRY_DOMAIN": DOMAIN})
    world = World(server, open_server, {"root": Key(ROOT_ACCESS_KEY_ID, ROOT_SECRET_ACCESS_KEY)})
    with ThreadPoolExecutor(max_workers=1) as pool:
        open_started = pool.submit(open_server.start, 60.0)
        try:
            server.start(60.0)
            users = [(ACCOUNT_A, "alice"), (ACCOUNT_A, "bob"), (ACCOUNT_A, "nobody"), (ACCOUNT_B, "carol")]
            commands: list[tuple[list[str], str | None]] = [
                (["create-account", ACCOUNT_B], None),
                *((["create-user", "--account", account, name], None) for account, name in users),
                *((["create-access-key", "--account", account, "--user", name], None) for account, name in users),
                (["create-access-key", "--account", ACCOUNT_B], None),
                *(
                    (["attach-user-policy", who, "--name", "token", "--document", "-"], TOKEN_POLICY)
                    for who in ("alice", "nobody")
                ),
            ]
            outputs = admin_batch(server, commands)
            keys = outputs[1 + len(users) : 1 + 2 * len(users) + 1]
            for (_, name), output in zip([*users, (ACCOUNT_B, "broot")], keys, strict=True):
                world.keys[name] = _parse_key(output)
            open_started.result()
            yield world
        finally:
            server.stop()
            open_server.stop()


@pytest.fixture(scope="session")
def root(world: World) -> Any:
    return world.ecr("root")


_counter = iter(range(1_000_000))


@pytest.fixture
def new_name(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Repository names unique to this test and call."""
    stem = request.node.name.removeprefix("test_").replace("_", "-").lower()[:40].strip("-")

    def make() -> str:
        return f"authz/{stem}-{next(_counter)}-{os.getpid() % 1000}"

    return make


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[[str], str]:
    """Writes a policy document to a file and returns its path (for --document FILE)."""

    def write(text: str) -> str:
        path = tmp_path / f"policy-{next(_counter)}.json"
        path.write_text(text)
        return str(path)

    return write
