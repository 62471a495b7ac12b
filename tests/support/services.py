"""Real services on loopback for tests: no mocks, no fakes.

`PostgresServer` runs a throwaway PostgreSQL cluster (Debian's packaged server binaries) in a fresh
directory under /tmp, listening only on 127.0.0.1 on a free port, with trust authentication:

    with PostgresServer() as server:
        url = server.create_database("moorage_1")   # postgresql://postgres@127.0.0.1:PORT/moorage_1

When the tests run as root, `initdb` and `pg_ctl` run as the `postgres` user (the server refuses to
run as root), so the cluster directory is made under /tmp (not pytest's 0700 tmp dirs) and handed
to that user.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["PostgresServer", "free_port", "postgres_available", "postgres_bin_dir"]

_PG_USER = "postgres"
_SUPERUSER = "postgres"
_DB_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def postgres_bin_dir() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`: $MOORAGE_PG_BIN, else the newest Debian
    /usr/lib/postgresql/<version>/bin, else wherever `initdb` is on PATH; None when not installed."""
    configured = os.environ.get("MOORAGE_PG_BIN")
    if configured:
        return Path(configured) if (Path(configured) / "initdb").is_file() else None
    versions = sorted(
        (d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").is_file()),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def postgres_available() -> bool:
    """True when the PostgreSQL server binaries (`initdb`, `pg_ctl`) are installed."""
    bin_dir = postgres_bin_dir()
    return bin_dir is not None and (bin_dir / "pg_ctl").is_file()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A private PostgreSQL cluster for the lifetime of a `with` block (or start()/stop())."""

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self._bin = bin_dir
        self._startup_timeout = startup_timeout
        self._as_postgres = os.geteuid() == 0
        self._root: Path | None = None
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the cluster, start the server and wait until it accepts connections."""
        if self._root is not None:
            raise RuntimeError("the server is already running")
        self._root = Path(tempfile.mkdtemp(prefix="moorage-pg-", dir="/tmp"))
        try:
            if self._as_postgres:
                shutil.chown(self._root, user=_PG_USER, group=_PG_USER)
            self._run(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                _SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
            last_error: RuntimeError | None = None
            for _attempt in range(3):  # another process may grab the free port before we bind it
                self._port = free_port()
                self._configure(self._port)
                try:
                    self._start_server()
                    return
                except RuntimeError as error:
                    last_error = error
            assert last_error is not None
            raise last_error
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server immediately and remove its directory. Safe to call more than once."""
        root, self._root, self._port = self._root, None, None
        if root is None:
            return
        try:
            if (root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "--pgdata", str(root / "data"), "--mode", "immediate", "--wait")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    # --- connection details ----------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self._root is None:
            raise RuntimeError("the server is not running")
        return self._root / "data"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not running")
        return self._port

    @property
    def url(self) -> str:
        """The URL of the default `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # --- databases -------------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; return its URL."""
        self._psql(f"CREATE DATABASE {_identifier(name)}")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name`, disconnecting whoever is still connected to it."""
        self._psql(f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)")

    # --- internals -------------------------------------------------------------------------------

    def _configure(self, port: int) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{self.data_dir}'",
            "max_connections": "200",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        # postgresql.auto.conf is read after postgresql.conf, and later settings win.
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        auto_conf = self.data_dir / "postgresql.auto.conf"
        auto_conf.write_text(lines)
        if self._as_postgres:
            shutil.chown(auto_conf, user=_PG_USER, group=_PG_USER)

    def _start_server(self) -> None:
        log = self.data_dir.parent / "server.log"
        timeout = str(round(self._startup_timeout))
        try:
            self._run("pg_ctl", "start", "--pgdata", str(self.data_dir), "--log", str(log), "--wait", "-t", timeout)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\nserver log:\n{_tail(log)}") from None
        self._wait_ready(log)

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + self._startup_timeout
        command = [str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _SUPERUSER]
        while True:
            if subprocess.run(command, capture_output=True, check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on 127.0.0.1:{self.port} not ready after {self._startup_timeout}s\n"
                    f"server log:\n{_tail(log)}"
                )
            time.sleep(0.05)

    def _psql(self, sql: str) -> None:
        command = [
            str(self._bin / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--set",
            "ON_ERROR_STOP=1",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--username",
            _SUPERUSER,
            "--dbname",
            "postgres",
            "--command",
            sql,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed ({done.returncode}): {done.stderr.strip()}")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", _PG_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/tmp")
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout.strip()}\n{done.stderr.strip()}")


def _identifier(name: str) -> str:
    if not _DB_NAME_RE.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return f'"{name}"'


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
