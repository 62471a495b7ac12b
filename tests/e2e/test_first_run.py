"""The README's first run, done the way a new user does it on a fresh machine.

A brand-new virtual environment gets nothing but `pip install <checkout>` (no extras, not
editable); `moorage serve` starts from an empty working directory with no MOORAGE_* variable and
no PYTHONPATH (only the port is not the default); the root key is read from what it prints; then
the README's tour: `aws ecr get-login-password | skopeo login`, create a repository, push with
skopeo, pull with podman; finally SIGTERM, and the server exits 0 within seconds leaving no
process behind. A dependency missing from pyproject.toml, a file missing from the wheel or a
start-up that needs the test environment fails here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO_ROOT, CommandError, Engine, Layout, need
from tests.support.services import free_port

pytestmark = pytest.mark.e2e

# What a checkout holds that is not the project: never copied into the tree pip builds from.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "moorage-data"
)


def _user_env(venv: Path, home: Path) -> dict[str, str]:
    """The machine's environment as a new user's shell has it, with the venv activated: none of the
    test run's MOORAGE_*, PYTHON* or AWS_* variables, and a home of its own (no ~/.aws)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOORAGE_", "PYTHON", "AWS_", "VIRTUAL_ENV", "REGISTRY_AUTH_FILE"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
    env["VIRTUAL_ENV"] = str(venv)
    env["HOME"] = str(home)
    # pip keeps its wheel cache in the real home: a fresh venv installs from PyPI without
    # downloading every wheel again on each run.
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    return env


def _run(
    cmd: Sequence[str], env: Mapping[str, str], *, cwd: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"timed out after {timeout}s: {cmd}\n{exc.stdout!r}\n{exc.stderr!r}") from None
    if done.returncode != 0:
        raise CommandError(
            f"failed ({done.returncode}): {cmd}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        )
    return done


def _typed(line: str, env: Mapping[str, str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command line as a user types it from the README (pipes included), in bash with pipefail."""
    return _run(["bash", "-o", "pipefail", "-c", line], env, cwd=cwd)


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _group(pgid: int) -> set[int]:
    """Every live (not zombie) process of process group `pgid`."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.add(int(entry.name))
    return members


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def fresh_install(tmp_path: Path) -> dict[str, str]:
    """A new venv (no system site packages) with `pip install <checkout>` and nothing else."""
    venv = tmp_path / "venv"
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    env = _user_env(venv, home)
    # pip builds a local directory in place (build/, *.egg-info): build from a copy of the checkout
    # so the work tree stays as it is and two runs never share a build directory.
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT, checkout, ignore=_NOT_SOURCE, symlinks=True)
    _run([sys.executable, "-m", "venv", str(venv)], env, cwd=tmp_path, timeout=120)
    _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(checkout)],
        env,
        cwd=tmp_path,
        timeout=600,
    )
    where = _run([str(venv / "bin" / "python"), "-c", "import moorage; print(moorage.__file__)"], env, cwd=home)
    assert where.stdout.strip().startswith(str(venv)), f"moorage imported from {where.stdout.strip()}, not the venv"
    assert shutil.which("moorage", path=env["PATH"]) == str(venv / "bin" / "moorage")
    return env


def test_readme_first_run_in_a_fresh_venv(
    fresh_install: dict[str, str], podman: Engine, buildah: Engine, tmp_path: Path
) -> None:
    need("skopeo", "podman", "buildah", "aws")
    env = fresh_install
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    address = f"127.0.0.1:{port}"
    endpoint = f"http://{address}"
    log_path = tmp_path / "serve.log"
    workers: set[int] = set()

    # `moorage serve`, from the venv on PATH, in an empty directory; only the port is ours.
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            ["moorage", "serve", "--port", str(port)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"moorage serve exited with {server.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"moorage serve not healthy after 60s:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{endpoint}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

        # The root key, as the README says: printed on first start, and in ./moorage-data/credentials.
        output = log_path.read_text()
        printed = dict(re.findall(r"^\s*(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY)=(\S+)\s*$", output, re.M))
        assert set(printed) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, output
        assert "123456789012" in output, output
        credentials = work / "moorage-data" / "credentials"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert printed["AWS_ACCESS_KEY_ID"] in credentials.read_text()
        assert printed["AWS_SECRET_ACCESS_KEY"] in credentials.read_text()
        assert "Traceback" not in output, output

        tour = {
            **env,
            **printed,
            "AWS_DEFAULT_REGION": "us-east-1",
            "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
        }
        aws = f"aws --endpoint-url {endpoint} ecr"
        created = _typed(f"{aws} create-repository --repository-name team/app", tour, cwd=work)
        assert f"{address}/team/app" in created.stdout, created.stdout
        login = _typed(
            f"{aws} get-login-password | skopeo login --password-stdin -u AWS --tls-verify=false {address}",
            tour,
            cwd=work,
        )
        assert "Login Succeeded" in login.stdout + login.stderr, login
        # The README's image, built here by buildah (no internet), in a private store.
        store = ["--root", str(buildah.root), "--runroot", str(buildah.runroot), "--storage-driver", "vfs"]
        (work / "hello.txt").write_text("hello\n")
        container = _run(["buildah", *store, "from", "scratch"], tour, cwd=work).stdout.strip()
        _run(["buildah", *store, "copy", container, "hello.txt", "/hello.txt"], tour, cwd=work)
        _run(["buildah", *store, "commit", "--quiet", container, "oci:./app-image:1"], tour, cwd=work)
        _run(["buildah", *store, "rm", container], tour, cwd=work)
        layout = Layout(work / "app-image")
        config = layout.json_blob(layout.digest_of("1"))["config"]["digest"]
        _typed(f"skopeo copy --dest-tls-verify=false oci:./app-image:1 docker://{address}/team/app:1", tour, cwd=work)
        image = f"{address}/team/app:1"
        podman("pull", "--quiet", "--authfile", tour["REGISTRY_AUTH_FILE"], "--tls-verify=false", image)
        pulled_id, pulled_digest = podman("image", "inspect", "--format", "{{.Id}} {{.Digest}}", image).stdout.split()
        assert f"sha256:{pulled_id}" == config  # the image built here (skopeo may compress its layer)
        described = _typed(f"{aws} describe-images --repository-name team/app", tour, cwd=work)
        details = json.loads(described.stdout)["imageDetails"]
        assert [(d["imageDigest"], d["imageTags"]) for d in details] == [(pulled_digest, ["1"])], details

        # The web console ships in the package (templates and static files are package data).
        signin = httpx.get(f"{endpoint}/console/signin", timeout=10)
        assert signin.status_code == 200, signin.text
        assert "Sign in to Moorage" in signin.text
        assert httpx.get(f"{endpoint}/console/static/console.css", timeout=10).status_code == 200

        # SIGTERM: a clean exit, soon, and nothing left running.
        workers = _descendants(server.pid)
        assert workers, "moorage serve runs its workers as child processes"
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"moorage serve still running 10s after SIGTERM:\n{log_path.read_text()}")
        assert code == 0, log_path.read_text()
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "processes of moorage serve outlived it"
        assert not _group(server.pid), "processes started by moorage serve outlived it"
        assert "Traceback" not in log_path.read_text(), log_path.read_text()
    finally:
        # Whatever happened above, nothing this test started keeps running.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if server.poll() is None:
            server.wait(10)
