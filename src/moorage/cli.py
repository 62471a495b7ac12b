"""The `moorage` command: serve | migrate | verify-config.

Configuration is read here, once, and handed down: flags > MOORAGE_* environment > TOML > defaults.
Every subcommand that touches state takes the same `--data-dir` and `--config`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from moorage import __version__
from moorage.config import (
    SETTINGS_ENV,
    ConfigError,
    Settings,
    format_duration,
    load_settings,
    render_toml,
    settings_from_json,
    settings_to_dict,
    settings_to_json,
)
from moorage.errors import MoorageError

if TYPE_CHECKING:
    from moorage.identity import Identities

__all__ = ["SERVE_PID_ENV", "StartupError", "main"]


class StartupError(click.ClickException):
    """A start-up failure the user can fix: one line on stderr, exit code 2, no traceback."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"moorage: {self.message}", err=True)


SERVE_PID_ENV = "MOORAGE_SERVE_PID"
"""The serving parent's pid, for its workers (they die with it, see `app.server_app`)."""


def _load(config: Path | None, data_dir: Path | None, overrides: dict[str, Any]) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        settings, warnings = load_settings(config, os.environ, values)
    except ConfigError as exc:
        raise StartupError(f"configuration error: {exc}") from None
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    # Worker processes and later subcommands must agree on where the data lives.
    return dataclasses.replace(settings, data_dir=settings.data_dir.expanduser().resolve())


def _duration(td: timedelta) -> str:
    """A duration the way the configuration writes it (24h, 2d, 90s)."""
    try:
        return format_duration(td)
    except ValueError:  # sub-second or negative: no config unit fits
        return f"{td.total_seconds():g}s"


def _state_options(func: Any) -> Any:
    func = click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Where state lives [./moorage-data].",
    )(func)
    func = click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="TOML configuration file (also MOORAGE_CONFIG).",
    )(func)
    return func


@click.group()
@click.version_option(__version__, prog_name="moorage")
def main() -> None:
    """Moorage: a self-hosted Amazon ECR (ECR API + OCI registry API on one port)."""


@main.command()
@_state_options
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [5000].")
@click.option("--workers", type=int, default=None, help="Worker processes sharing the data dir [1].")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--log-level", default=None, help="debug | info | warning | error")
@click.option("--access-log/--no-access-log", default=None)
@click.option("--auth", "auth_mode", type=click.Choice(["sigv4", "open"]), default=None, help="Authentication mode.")
@click.option("--allow-reset", is_flag=True, default=None, help="Enable POST /_moorage/reset (test suites).")
@click.option(
    "--allow-clock-control",
    is_flag=True,
    default=None,
    help="Enable POST /_moorage/clock: move the clock images age by (test suites).",
)
@click.option("--create-on-push", is_flag=True, default=None, help="Create repositories on their first /v2/ push.")
@click.option("--no-jobs", is_flag=True, default=False, help="Run no background jobs here (see `moorage worker`).")
def serve(
    config: Path | None,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str | None,
    access_log: bool | None,
    auth_mode: str | None,
    allow_reset: bool | None,
    allow_clock_control: bool | None,
    create_on_push: bool | None,
    no_jobs: bool,
) -> None:
    """Start the registry."""
    settings = _load(
        config,
        data_dir,
        {
            "http.host": host,
            "http.port": port,
            "http.workers": workers,
            "http.tls_cert": tls_cert,
            "http.tls_key": tls_key,
            "log.level": log_level,
            "log.access": access_log,
            "auth.mode": auth_mode,
            "testing.allow_reset": allow_reset,
            "testing.allow_clock_control": allow_clock_control,
            "create_on_push": create_on_push,
            "jobs.enabled": False if no_jobs else None,
        },
    )
    _check_data_dir(settings.data_dir)
    http = settings.http
    if http.tls_cert is not None and http.tls_key is not None:
        _check_tls(http.tls_cert, http.tls_key)
    # Bound here, without SO_REUSEPORT, and held until we exit: the workers inherit this one
    # socket, and no other process can listen on the port meanwhile (nor beside orphaned workers).
    listener = _listen(http.host, http.port)
    os.environ[SETTINGS_ENV] = settings_to_json(settings)
    os.environ[SERVE_PID_ENV] = str(os.getpid())
    # Migrations and the root key run in a child process: the parent only supervises the
    # workers, and should not keep the database and crypto stacks in memory for that.
    prepared = subprocess.run(
        [sys.executable, "-m", "moorage", "prepare"], stdout=subprocess.PIPE, text=True, check=False
    )
    if prepared.returncode == StartupError.exit_code:
        sys.exit(prepared.returncode)  # the child printed the one line that says why
    if prepared.returncode != 0:
        raise click.ClickException("could not prepare the metadata store (see above)")
    revision = prepared.stdout.strip() or "none"
    if settings.auth.mode == "open":
        click.echo(
            "WARNING: auth mode is OPEN: no signature or password is checked. Use only as a local test double.",
            err=True,
        )
    scheme = "https" if http.tls_cert else "http"
    click.echo(
        f"moorage {__version__}: serving on {scheme}://{http.host}:{http.port} "
        f"(data {settings.data_dir}, schema {revision}, {http.workers} worker(s))",
        err=True,
    )
    # Every worker writes its metrics under one fresh directory; any of them answers /metrics for all.
    metrics_dir = tempfile.mkdtemp(prefix="moorage-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _granian(listener, settings).serve()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"data_dir {path} is not a writable directory: {exc.strerror}") from None


def _check_tls(cert: Path, key: Path) -> None:
    """The checks the server's TLS stack would fail on later, in its workers, with less to say."""
    import ssl

    for setting, path, marker in (("http.tls_cert", cert, "CERTIFICATE"), ("http.tls_key", key, "PRIVATE KEY")):
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise StartupError(f"{setting}: cannot read {path}: {exc.strerror}") from None
        if b"-----BEGIN " not in text or marker.encode() not in text:
            raise StartupError(f"{setting}: {path} is not a PEM file with a {marker.lower()}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise StartupError(f"http.tls_key: {key} is not the private key of the certificate {cert}") from None
        raise StartupError(f"http.tls_cert/http.tls_key: cannot load {cert} with {key}: {exc.reason}") from None


def _listen(host: str, port: int) -> Any:
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"http.host: cannot listen on {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR only lets us rebind past connections in TIME_WAIT; unlike SO_REUSEPORT it
        # never lets a second listener onto the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"http.port: {host}:{port} is in use by another process (another moorage?): "
                "stop it, or choose another --port"
            ) from None
        raise StartupError(f"http.host/http.port: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _granian(listener: Any, settings: Settings) -> Any:
    """A granian server whose workers serve on `listener` (granian would otherwise bind one
    SO_REUSEPORT socket per worker, which any other process of the same user could join)."""
    from granian import Granian
    from granian._granian import SocketHolder as _SocketHolder
    from granian.constants import Interfaces, Loops

    holder: Any = _SocketHolder  # its stub lists no arguments; it takes (fd, is_uds, backlog)

    class HeldSocketGranian(Granian):  # type: ignore[misc,valid-type]
        def _init_shared_socket(self) -> None:
            self._ssp = None
            self._sfd = listener.fileno()
            self._shd = holder(self._sfd, False, 1024)
            self._sso = listener

        def _drop_shared_socket(self) -> None:
            listener.close()

    http = settings.http
    return HeldSocketGranian(
        "moorage.app:server_app",
        factory=True,
        address=http.host,
        port=http.port,
        interface=Interfaces.ASGI,
        workers=http.workers,
        loop=Loops.uvloop if sys.platform != "win32" else Loops.asyncio,
        log_access=settings.log.access,
        log_level=settings.log.level,
        ssl_cert=http.tls_cert,
        ssl_key=http.tls_key,
        respawn_failed_workers=True,
    )


@main.command()
@_state_options
def migrate(config: Path | None, data_dir: Path | None) -> None:
    """Apply pending metadata schema migrations."""
    from moorage.bootstrap import migrate as apply_migrations

    settings = _load(config, data_dir, {})
    _check_data_dir(settings.data_dir)
    try:
        revision = asyncio.run(apply_migrations(settings))
    except MoorageError as exc:
        raise StartupError(exc.message) from None
    click.echo(f"metadata schema at revision {revision}")


@main.command("prepare", hidden=True)
def prepare() -> None:
    """Internal (run by `serve`): migrate and provision the root key for the settings in
    MOORAGE_SETTINGS_JSON; print the schema revision."""
    from moorage.bootstrap import StartupError as BootstrapStartupError
    from moorage.bootstrap import check_blob_store, root_key_message
    from moorage.bootstrap import migrate as apply_migrations

    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise click.ClickException(f"{SETTINGS_ENV} is not set")
    settings = settings_from_json(text)

    async def run() -> tuple[str, str | None]:
        revision = await apply_migrations(settings)
        await check_blob_store(settings)
        return revision, await root_key_message(settings)

    try:
        revision, shown = asyncio.run(run())
    except BootstrapStartupError as exc:
        _debug_traceback(settings)
        StartupError(exc.message).show()
        sys.stderr.flush()
        # Not sys.exit: a driver thread still waiting on an endpoint that never answers would hold it.
        os._exit(StartupError.exit_code)
    except MoorageError as exc:
        raise click.ClickException(exc.message) from None
    if shown:
        click.echo(shown, err=True)
    click.echo(revision)


def _debug_traceback(settings: Settings) -> None:
    if settings.log.level.lower() == "debug":
        import traceback

        traceback.print_exc()


@main.command("verify-config")
@_state_options
def verify_config(config: Path | None, data_dir: Path | None) -> None:
    """Print the effective configuration (secrets redacted) and exit non-zero if it is invalid."""
    settings = _load(config, data_dir, {})
    click.echo(render_toml(settings_to_dict(settings, redact=True)), nl=False)


@main.group()
def admin() -> None:
    """Manage accounts, users, access keys and policies."""


def _run_admin(config: Path | None, data_dir: Path | None, action: Any) -> Any:
    settings = _load(config, data_dir, {})

    async def go() -> Any:
        from moorage.bootstrap import migrate as apply_migrations
        from moorage.bootstrap import open_identities

        try:
            await apply_migrations(settings)
            identities, metadata = await open_identities(settings)
        except MoorageError as exc:
            raise StartupError(exc.message) from None
        try:
            return await action(identities, settings)
        except MoorageError as exc:
            raise click.ClickException(exc.message) from None
        finally:
            await metadata.close()

    return asyncio.run(go())


@admin.command("create-account")
@_state_options
@click.argument("account_id")
def create_account(config: Path | None, data_dir: Path | None, account_id: str) -> None:
    """Create an account (12 digits)."""

    async def action(identities: Identities, settings: Settings) -> None:
        created = await identities.ensure_account(account_id)
        click.echo(f"account {account_id} {'created' if created else 'exists already'}")

    _run_admin(config, data_dir, action)


@admin.command("list-accounts")
@_state_options
def list_accounts(config: Path | None, data_dir: Path | None) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        for account in await identities.accounts():
            click.echo(account)

    _run_admin(config, data_dir, action)


@admin.command("delete-account")
@_state_options
@click.argument("account_id")
def delete_account(config: Path | None, data_dir: Path | None, account_id: str) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        await identities.delete_account(account_id)
        click.echo(f"account {account_id} deleted")

    _run_admin(config, data_dir, action)


@admin.command("create-user")
@_state_options
@click.option("--account", "account_id", default=None, help="Account id [the default account].")
@click.argument("name")
def create_user(config: Path | None, data_dir: Path | None, account_id: str | None, name: str) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        account = account_id or settings.account_id
        if account == settings.account_id:
            await identities.ensure_account(account)
        await identities.create_user(account, name)
        click.echo(f"user arn:aws:iam::{account}:user/{name} created")

    _run_admin(config, data_dir, action)


@admin.command("list-users")
@_state_options
@click.option("--account", "account_id", default=None)
def list_users(config: Path | None, data_dir: Path | None, account_id: str | None) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        for name in await identities.users(account_id or settings.account_id):
            click.echo(name)

    _run_admin(config, data_dir, action)


@admin.command("delete-user")
@_state_options
@click.option("--account", "account_id", default=None)
@click.argument("name")
def delete_user(config: Path | None, data_dir: Path | None, account_id: str | None, name: str) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        await identities.delete_user(account_id or settings.account_id, name)
        click.echo(f"user {name} deleted")

    _run_admin(config, data_dir, action)


@admin.command("create-access-key")
@_state_options
@click.option("--account", "account_id", default=None)
@click.option("--user", "user_name", default=None, help="The user [the account's root].")
def create_access_key(
    config: Path | None, data_dir: Path | None, account_id: str | None, user_name: str | None
) -> None:
    """Create an access key and print it (the secret is shown only here)."""

    async def action(identities: Identities, settings: Settings) -> None:
        key = await identities.create_key(account_id or settings.account_id, user_name)
        click.echo(f"AWS_ACCESS_KEY_ID={key.access_key_id}\nAWS_SECRET_ACCESS_KEY={key.secret_access_key}")

    _run_admin(config, data_dir, action)


@admin.command("list-access-keys")
@_state_options
@click.option("--account", "account_id", default=None)
def list_access_keys(config: Path | None, data_dir: Path | None, account_id: str | None) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        for record in await identities.keys(account_id):
            who = f"user/{record.user_name}" if record.user_name else "root"
            click.echo(f"{record.access_key_id}\t{record.account_id}\t{who}\t{record.created_at.isoformat()}")

    _run_admin(config, data_dir, action)


@admin.command("delete-access-key")
@_state_options
@click.argument("access_key_id")
def delete_access_key(config: Path | None, data_dir: Path | None, access_key_id: str) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        await identities.delete_key(access_key_id)
        click.echo(f"access key {access_key_id} deleted")

    _run_admin(config, data_dir, action)


def _read_document(document: str) -> str:
    if document == "-":
        return sys.stdin.read()
    try:
        return Path(document).read_text()
    except OSError as exc:
        raise click.ClickException(f"cannot read {document}: {exc.strerror}") from None


@admin.command("attach-user-policy")
@_state_options
@click.option("--account", "account_id", default=None, help="Account id [the default account].")
@click.option("--name", "policy_name", required=True, help="The policy's name (replaces a policy of that name).")
@click.option("--document", required=True, help="File with the IAM policy JSON, or - for standard input.")
@click.argument("user")
def attach_user_policy(
    config: Path | None, data_dir: Path | None, account_id: str | None, policy_name: str, document: str, user: str
) -> None:
    """Attach an identity policy to a user (a new user has no permissions). A running server
    applies it within a second."""
    text = _read_document(document)

    async def action(identities: Identities, settings: Settings) -> None:
        account = account_id or settings.account_id
        created = await identities.attach_user_policy(account, user, policy_name, text)
        click.echo(f"policy {policy_name} {'attached to' if created else 'replaced for'} user {user} of {account}")

    _run_admin(config, data_dir, action)


@admin.command("list-user-policies")
@_state_options
@click.option("--account", "account_id", default=None)
@click.option("--documents", is_flag=True, help="Print each policy's document too.")
@click.argument("user")
def list_user_policies(
    config: Path | None, data_dir: Path | None, account_id: str | None, documents: bool, user: str
) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        for name, text in await identities.user_policies(account_id or settings.account_id, user):
            click.echo(f"{name}\t{text}" if documents else name)

    _run_admin(config, data_dir, action)


@admin.command("detach-user-policy")
@_state_options
@click.option("--account", "account_id", default=None)
@click.option("--name", "policy_name", required=True)
@click.argument("user")
def detach_user_policy(
    config: Path | None, data_dir: Path | None, account_id: str | None, policy_name: str, user: str
) -> None:
    async def action(identities: Identities, settings: Settings) -> None:
        await identities.detach_user_policy(account_id or settings.account_id, user, policy_name)
        click.echo(f"policy {policy_name} detached from user {user}")

    _run_admin(config, data_dir, action)


@admin.command("delete-resource-policy")
@_state_options
@click.option("--account", "account_id", default=None)
@click.option("--region", default=None, help="The registry's region [the default region].")
@click.option("--repository", default=None, help="The repository whose policy to delete [the registry policy].")
def delete_resource_policy(
    config: Path | None, data_dir: Path | None, account_id: str | None, region: str | None, repository: str | None
) -> None:
    """Delete a registry or repository policy without asking the policies themselves: the way
    back in when a policy locks even the account root out. A running server applies it within a second."""

    async def action(identities: Identities, settings: Settings) -> None:
        from moorage.model import RegistryRef, RepositoryName

        registry = RegistryRef(account_id or settings.account_id, region or settings.region)
        async with identities.metadata.transaction(write=True) as tx:
            if repository is None:
                found = await tx.policies.delete_registry_policy(registry)
            else:
                repo = await tx.repositories.get(registry, RepositoryName(repository), for_update=True)
                found = repo is not None and await tx.policies.delete_repository_policy(repo.id)
        what = f"repository {repository}" if repository else "the registry"
        if not found:
            raise click.ClickException(f"{what} of {registry.account_id} in {registry.region} has no policy")
        click.echo(f"policy of {what} of {registry.account_id} in {registry.region} deleted")

    _run_admin(config, data_dir, action)


async def _with_services(settings: Settings, action: Any) -> Any:
    from moorage.app import build
    from moorage.bootstrap import migrate as apply_migrations

    try:
        await apply_migrations(settings)
        moorage = await build(settings)
    except MoorageError as exc:  # a StartupError or the master key's mismatch: one line says why
        raise StartupError(exc.message) from None
    try:
        return await action(moorage)
    finally:
        await moorage.close()


@main.command()
@_state_options
@click.option("--dry-run", is_flag=True, help="Print what would be reclaimed and change nothing.")
@click.option("--grace-period", default=None, help="Override gc.grace_period (e.g. 1h, 0s).")
def gc(config: Path | None, data_dir: Path | None, dry_run: bool, grace_period: str | None) -> None:
    """Reclaim blobs no manifest references (after the grace period) and expired uploads."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    settings = _load(config, data_dir, {"gc.grace_period": grace_period})

    async def action(moorage: Any) -> None:
        now = moorage.clock.now()
        plan = await moorage.collector.plan(now)
        click.echo(
            f"plan: {len(plan.blobs)} blob(s), {plan.bytes} bytes unreferenced for over "
            f"{_duration(settings.gc.grace_period)}; {plan.uploads} expired upload(s)"
        )
        if dry_run:
            return
        with Progress(TextColumn("reclaiming"), BarColumn(), DownloadColumn(), transient=True) as bar:
            task = bar.add_task("gc", total=plan.bytes or None)
            report = await moorage.collector.collect(now, progress=lambda info: bar.advance(task, info.size))
        click.echo(f"reclaimed {len(report.blobs)} blob(s), {report.bytes} bytes; expired {report.uploads} upload(s)")

    asyncio.run(_with_services(settings, action))


@main.command()
@_state_options
@click.option("--metrics-port", type=int, default=None, help="Serve this process's /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
def worker(config: Path | None, data_dir: Path | None, metrics_port: int | None, metrics_host: str) -> None:
    """Run the background jobs (GC, upload expiry, lifecycle policies) and event delivery without serving HTTP."""
    settings = _load(config, data_dir, {})

    async def action(moorage: Any) -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        click.echo("moorage worker: running background jobs and event delivery", err=True)
        await moorage.dispatcher.register()
        if metrics_port is not None and settings.metrics.enabled:
            from moorage.metrics import serve_metrics

            token = settings.metrics.bearer_token
            await asyncio.gather(
                moorage.run_background(stop), serve_metrics(moorage.metrics, metrics_host, metrics_port, token, stop)
            )
        else:
            await moorage.run_background(stop)

    asyncio.run(_with_services(settings, action))


@main.group()
def events() -> None:
    """Show the event outbox and its delivery state; redeliver events."""


def _consumer_names(settings: Settings, webhook: str | None) -> list[str]:
    names = [h.name for h in settings.events.all_webhooks()]
    if settings.events.audit_log is not None:
        names.append("audit-log")
    if webhook is not None:
        if webhook not in names:
            raise click.ClickException(f"no webhook named {webhook!r} in the configuration")
        return [webhook]
    return names


@events.command("list")
@_state_options
@click.option("--since", default=None, help="Only events from this long ago (e.g. 1h, 7d).")
@click.option("--undelivered", is_flag=True, help="Only events some consumer has not delivered (pending or failed).")
@click.option("--webhook", default=None, help="Delivery state for this webhook only.")
@click.option("--limit", type=int, default=100, show_default=True)
def events_list(
    config: Path | None, data_dir: Path | None, since: str | None, undelivered: bool, webhook: str | None, limit: int
) -> None:
    """List events, oldest first, with each consumer's delivery state."""
    from datetime import UTC, datetime

    from moorage.config import parse_duration

    settings = _load(config, data_dir, {})
    names = _consumer_names(settings, webhook)
    try:
        cutoff = datetime.now(UTC) - parse_duration(since) if since else None
    except ValueError:
        raise click.BadParameter(
            f"expected a duration like 90s, 15m, 24h, 7d, got {since!r}", param_hint="--since"
        ) from None

    async def action(moorage: Any) -> None:
        async with moorage.metadata.transaction() as tx:
            found = await tx.events.listing(cutoff, 100_000 if undelivered else limit)
            states = {c.name: c for c in await tx.events.consumers()}
            failed: dict[str, set[str]] = {}
            for failure in await tx.events.failures(None, 100_000):
                failed.setdefault(failure.event.id, set()).add(failure.consumer)
        shown = 0
        for event in found:
            cells = []
            for name in names:
                state = states.get(name)
                if name in failed.get(event.id, ()):
                    cells.append(f"{name}=failed")
                elif state is None or event.position > state.position:
                    retry = state is not None and state.attempts and state.last_error
                    cells.append(f"{name}=retrying({state.last_error})" if retry and state else f"{name}=pending")
                else:
                    cells.append(f"{name}=delivered")
            if undelivered and all(c.endswith("=delivered") for c in cells):
                continue
            repo = event.repository or "-"
            when = event.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            click.echo(f"{event.id}  {when}  {event.detail_type:<26} {repo}  {' '.join(cells)}")
            shown += 1
            if shown >= limit:
                break

    asyncio.run(_with_services(settings, action))


@events.command("redeliver")
@_state_options
@click.argument("event_id")
@click.option("--webhook", default=None, help="Only to this webhook (default: every configured consumer).")
def events_redeliver(config: Path | None, data_dir: Path | None, event_id: str, webhook: str | None) -> None:
    """Send one event again now (to a webhook, or to every consumer); a failed one counts as delivered after."""
    from moorage.delivery import DeliveryError

    settings = _load(config, data_dir, {})
    names = set(_consumer_names(settings, webhook))

    async def action(moorage: Any) -> bool:
        async with moorage.metadata.transaction() as tx:
            event = await tx.events.get(event_id)
        if event is None:
            raise click.ClickException(f"no event {event_id} (events older than events.retention are deleted)")
        ok = True
        for sink in moorage.dispatcher.sinks:
            if sink.name not in names:
                continue
            try:
                await sink.deliver(event)
            except DeliveryError as exc:
                click.echo(f"{sink.name}: not delivered: {exc}", err=True)
                ok = False
                continue
            async with moorage.metadata.transaction(write=True) as tx:
                was_failed = await tx.events.resolve(sink.name, event.id)
            click.echo(f"{sink.name}: delivered{' (was failed)' if was_failed else ''}")
        return ok

    if not asyncio.run(_with_services(settings, action)):
        sys.exit(1)


@main.group()
def lifecycle() -> None:
    """Apply lifecycle policies now, and show what lifecycle runs did."""


def _registry_filter(settings: Settings, account_id: str | None, region: str | None) -> Any:
    from moorage.model import RegistryRef

    if account_id is None and region is None:
        return None
    return RegistryRef(account_id or settings.account_id, region or settings.region)


@lifecycle.command("run")
@_state_options
@click.option("--repository", default=None, help="Only this repository.")
@click.option("--account", "account_id", default=None, help="Only this account's repositories.")
@click.option("--region", default=None, help="Only this region's repositories.")
@click.option("--dry-run", is_flag=True, help="Print the decisions and change nothing.")
def lifecycle_run(
    config: Path | None,
    data_dir: Path | None,
    repository: str | None,
    account_id: str | None,
    region: str | None,
    dry_run: bool,
) -> None:
    """Evaluate and apply every repository's lifecycle policy now (what the lifecycle job does):
    expired images are deleted (GC reclaims their bytes later), transitioned ones archived."""
    from moorage.model import RepositoryName

    settings = _load(config, data_dir, {})
    registry = _registry_filter(settings, account_id, region)
    if repository is not None and registry is None:
        registry = _registry_filter(settings, settings.account_id, settings.region)

    async def action(moorage: Any) -> None:
        now = moorage.clock.now()
        name = RepositoryName(repository) if repository is not None else None
        report = await moorage.lifecycle.run(now, registry=registry, name=name, dry_run=dry_run)
        verb = {
            "EXPIRE": "would expire" if dry_run else "expired",
            "TRANSITION": "would archive" if dry_run else "archived",
        }
        for run in report.runs:
            where = f"{run.registry.account_id}/{run.registry.region}/{run.name}"
            if run.error is not None:
                click.echo(f"{where}: FAILED: {run.error}")
                continue
            done = run.decisions if dry_run else run.applied
            click.echo(
                f"{where}: {len(done)} of {len(run.decisions)} decision(s) {'planned' if dry_run else 'applied'}"
            )
            for d in done:
                tags = ",".join(d.tags) or "<untagged>"
                click.echo(f"  {verb[d.action]} {d.digest} {tags} (rule {d.rule_priority})")
        summary = report.summary()
        click.echo(
            f"{summary['repositories']} repositories at {now.isoformat()}: {summary['expired']} expired, "
            f"{summary['transitioned']} archived{' (dry run)' if dry_run else ''}"
        )
        if summary["failed"]:
            raise click.ClickException(f"{summary['failed']} repositories failed")

    asyncio.run(_with_services(settings, action))


@lifecycle.command("history")
@_state_options
@click.option("--repository", default=None, help="Only this repository.")
@click.option("--account", "account_id", default=None)
@click.option("--region", default=None)
@click.option("--limit", type=int, default=100, show_default=True)
def lifecycle_history(
    config: Path | None,
    data_dir: Path | None,
    repository: str | None,
    account_id: str | None,
    region: str | None,
    limit: int,
) -> None:
    """What lifecycle runs did (newest first): time, repository, action, rule, image."""
    from moorage.model import RepositoryName

    settings = _load(config, data_dir, {})
    registry = _registry_filter(settings, account_id, region)

    async def action(moorage: Any) -> None:
        name = RepositoryName(repository) if repository is not None else None
        for event in await moorage.lifecycle.history(registry, name, limit):
            tags = ",".join(event.tags) or "<untagged>"
            click.echo(
                f"{event.at.isoformat()}\t{event.registry.account_id}/{event.registry.region}/{event.repository}\t"
                f"{event.action}\trule {event.rule_priority}\t{event.digest}\t{tags}"
            )

    asyncio.run(_with_services(settings, action))


@main.group()
def replication() -> None:
    """Replication progress: pending and failed copies."""


@replication.command("status")
@_state_options
@click.option("--repository", default=None, help="Only images of this repository name.")
@click.option("--all", "show_all", is_flag=True, help="Completed copies too (default: pending and failed only).")
@click.option("--limit", type=int, default=1000, show_default=True)
def replication_status(
    config: Path | None, data_dir: Path | None, repository: str | None, show_all: bool, limit: int
) -> None:
    """One line per image and destination, newest first: time, source, destination, status, failure code."""
    settings = _load(config, data_dir, {})
    statuses = () if show_all else ("IN_PROGRESS", "FAILED")

    async def action(moorage: Any) -> None:
        async with moorage.metadata.transaction() as tx:
            rows = await tx.replication.list(repository=repository, statuses=statuses, limit=limit)
        if not rows:
            click.echo("no pending or failed replications" if not show_all else "no replications")
        for row in rows:
            status = row.status if row.failure_code is None else f"{row.status}({row.failure_code})"
            click.echo(
                f"{row.updated_at.strftime('%Y-%m-%dT%H:%M:%SZ')}  "
                f"{row.source.account_id}/{row.source.region}/{row.repository}@{row.digest}  "
                f"-> {row.destination.account_id}/{row.destination.region}  {status}"
            )

    asyncio.run(_with_services(settings, action))


@main.group()
def vulndb() -> None:
    """The offline OSV vulnerability database that image scans match against."""


@vulndb.command("import")
@_state_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--ecosystem", "ecosystems", multiple=True, help="Only records of this base ecosystem (repeatable).")
def vulndb_import(
    config: Path | None, data_dir: Path | None, paths: tuple[Path, ...], ecosystems: tuple[str, ...]
) -> None:
    """Import OSV records: JSON files, directories of them, or OSV's per-ecosystem all.zip archives."""
    from moorage.scanning.vulndb import VulnDbImportError, import_paths

    settings = _load(config, data_dir, {})

    async def action(moorage: Any) -> Any:
        return await import_paths(moorage.metadata, list(paths), ecosystems=ecosystems)

    try:
        report = asyncio.run(_with_services(settings, action))
    except VulnDbImportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"generation {report.generation}: {report.imported} imported, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.invalid} invalid, {report.withdrawn} withdrawn"
    )
    for eco, count in sorted(report.per_ecosystem.items()):
        click.echo(f"  {eco}\t{count} read")


@vulndb.command("status")
@_state_options
def vulndb_status(config: Path | None, data_dir: Path | None) -> None:
    """Print the database's sources, record counts per ecosystem and age."""
    from datetime import UTC, datetime

    from moorage.scanning.vulndb import status

    settings = _load(config, data_dir, {})
    found = asyncio.run(_with_services(settings, lambda moorage: status(moorage.metadata)))
    if found is None:
        click.echo("no vulnerability database: run 'moorage vulndb import PATH...'")
        sys.exit(1)
    age = datetime.now(UTC) - found.imported_at
    click.echo(
        f"generation {found.generation}, imported {found.imported_at:%Y-%m-%dT%H:%M:%SZ} "
        f"({int(age.total_seconds())}s ago)"
    )
    click.echo(f"records: {found.records}, newest modified: {found.max_modified or '-'}")
    for eco, count in sorted(found.ecosystems.items()):
        click.echo(f"  {eco}\t{count}")
    for source, when in sorted(found.sources.items()):
        click.echo(f"source {source} (imported {when})")


@admin.command("signing-root")
@_state_options
@click.option("--account", "account_id", default=None, help="The account (default: the configured account_id).")
def signing_root(config: Path | None, data_dir: Path | None, account_id: str | None) -> None:
    """Print the account's signing root CA certificate (PEM), created on first use: the trust
    store certificate that verifies the signatures Moorage makes on push (`notation` CA store)."""
    settings = _load(config, data_dir, {})

    async def action(moorage: Any) -> str:
        return str(await moorage.signing.root_pem(account_id or settings.account_id))

    click.echo(asyncio.run(_with_services(settings, action)), nl=False)


@main.group()
def signing() -> None:
    """Managed signing: verify the Notary Project signatures Moorage made on push."""


def _image_reference(text: str) -> tuple[str, str]:
    """REPO[:TAG|@DIGEST] -> (repository, reference); the tag `latest` when neither is given."""
    if "@" in text:
        name, _, ref = text.partition("@")
        return name, ref
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, ref = text.rpartition(":")
        return name, ref
    return text, "latest"


@signing.command("verify")
@_state_options
@click.argument("image")
@click.option("--account", "account_id", default=None, help="The registry's account (default: account_id).")
@click.option("--region", default=None, help="The registry's region (default: region).")
def signing_verify(
    config: Path | None, data_dir: Path | None, image: str, account_id: str | None, region: str | None
) -> None:
    """Verify every signature of IMAGE (REPO[:TAG|@DIGEST]) against the account's signing root:
    the certificate chain, the ES384 signature, and that the signed digest is the image's.
    Exits 1 when the image has no signature or any signature fails."""
    from moorage.model import RegistryRef, RepositoryName

    settings = _load(config, data_dir, {})
    registry = RegistryRef(account_id or settings.account_id, region or settings.region)
    name, reference = _image_reference(image)

    async def action(moorage: Any) -> Any:
        return await moorage.signing.verify_image(registry, RepositoryName(name), reference)

    try:
        found, checks = asyncio.run(_with_services(settings, action))
    except MoorageError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{name}@{found.digest}")
    for check in checks:
        click.echo(f"  {check.signature}  {'VERIFIED' if check.ok else 'FAILED'}  {check.detail}")
    if not checks:
        click.echo("  no signatures")
    if not checks or not all(c.ok for c in checks):
        sys.exit(1)


@admin.command("import-signing-key")
@_state_options
@click.option("--account", "account_id", default=None, help="The profile's account (default: account_id).")
@click.option("--region", default=None, help="The profile's region (default: region).")
@click.option("--profile", "profile_name", required=True, help="The signing profile's name (created or replaced).")
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--chain", "chain_file", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True))
def import_signing_key(
    config: Path | None,
    data_dir: Path | None,
    account_id: str | None,
    region: str | None,
    profile_name: str,
    key_file: Path,
    chain_file: Path,
) -> None:
    """Give a signing profile an existing ECDSA P-384 key (PEM, unencrypted) and its certificate
    chain (PEM, leaf first, root last): images are then signed with them, and `moorage signing
    verify` trusts that chain's root too."""
    from moorage.model import RegistryRef

    settings = _load(config, data_dir, {})
    registry = RegistryRef(account_id or settings.account_id, region or settings.region)

    key_pem, chain_pem = key_file.read_text(), chain_file.read_text()

    async def action(moorage: Any) -> Any:
        return await moorage.signing.import_profile(registry, profile_name, key_pem, chain_pem)

    try:
        record = asyncio.run(_with_services(settings, action))
    except MoorageError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{record.arn}\t{record.version}")


@main.group()
def cache() -> None:
    """The pull-through cache."""


@cache.command("warm")
@_state_options
@click.option("--account-id", default=None, help="Registry account [account_id].")
@click.option("--region", default=None, help="Registry region [region].")
@click.argument("rule_prefix")
@click.argument("images", nargs=-1, required=True)
def cache_warm(
    config: Path | None,
    data_dir: Path | None,
    account_id: str | None,
    region: str | None,
    rule_prefix: str,
    images: tuple[str, ...],
) -> None:
    """Pre-fetch IMAGES (upstream REPO:TAG or REPO@DIGEST) through the rule RULE_PREFIX (ROOT for
    the registry's root rule): manifests, an index's children and every blob, as pulls would.
    Exits 1 when an image could not be fetched."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from moorage.errors import MoorageError as Failure
    from moorage.model import RegistryRef, parse_repository_name

    settings = _load(config, data_dir, {})
    registry = RegistryRef(account_id or settings.account_id, region or settings.region)
    prefix = rule_prefix.rstrip("/")
    targets: list[tuple[str, str, str]] = []
    for image in images:
        if "@" in image:
            repo, _, reference = image.partition("@")
        else:
            repo, sep, reference = image.rpartition(":")
            if not sep or "/" in reference:
                repo, reference = image, "latest"
        name = repo if prefix == "ROOT" else f"{prefix}/{repo}"
        targets.append((image, name, reference))

    async def action(moorage: Any) -> int:
        cache_pulls = moorage.cache_pulls
        failed = 0
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()) as bar:
            for image, name, reference in targets:
                task = bar.add_task(image, total=None)
                try:
                    state = await cache_pulls.warm(
                        registry,
                        parse_repository_name(name),
                        reference,
                        on_total=lambda n, t=task: bar.update(t, total=n),
                        on_bytes=lambda n, t=task: bar.advance(t, n),
                    )
                except Failure as exc:
                    failed += 1
                    bar.update(task, description=f"{image}: failed")
                    bar.console.print(f"{image}: {exc.message}")
                    continue
                bar.update(task, description=f"{image}: {state}")
        return failed

    failures = asyncio.run(_with_services(settings, action))
    click.echo(f"warmed {len(targets) - failures} of {len(targets)} image(s)")
    if failures:
        sys.exit(1)
