"""The `moorage` command: serve | migrate | verify-config.

Configuration is read here, once, and handed down: flags > MOORAGE_* environment > TOML > defaults.
Every subcommand that touches state takes the same `--data-dir` and `--config`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click

from moorage import __version__
from moorage.config import (
    ConfigError,
    Settings,
    load_settings,
    render_toml,
    settings_to_dict,
    settings_to_json,
)

__all__ = ["main"]


def _load(config: Path | None, data_dir: Path | None, overrides: dict[str, Any]) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        settings, warnings = load_settings(config, os.environ, values)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    # Worker processes and later subcommands must agree on where the data lives.
    return dataclasses.replace(settings, data_dir=settings.data_dir.expanduser().resolve())


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


async def _migrate(settings: Settings) -> str:
    from moorage.metadata.migrate import current_revision, upgrade

    url = settings.metadata.effective_url(settings.data_dir)
    await upgrade(url)
    return await current_revision(url) or "none"


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
) -> None:
    """Start the registry."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    from moorage.app import SETTINGS_ENV

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
        },
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    revision = asyncio.run(_migrate(settings))
    http = settings.http
    scheme = "https" if http.tls_cert else "http"
    click.echo(
        f"moorage {__version__}: serving on {scheme}://{http.host}:{http.port} "
        f"(data {settings.data_dir}, schema {revision}, {http.workers} worker(s))",
        err=True,
    )
    os.environ[SETTINGS_ENV] = settings_to_json(settings)
    server = Granian(
        "moorage.app:server_app",
        factory=True,
        address=http.host,
        port=http.port,
        interface=Interfaces.ASGI,
        workers=http.workers,
        loop=Loops.uvloop if sys.platform != "win32" else Loops.asyncio,
        log_access=settings.log.access,
        log_level=settings.log.level,  # type: ignore[arg-type]
        ssl_cert=http.tls_cert,
        ssl_key=http.tls_key,
        respawn_failed_workers=True,
    )
    server.serve()


@main.command()
@_state_options
def migrate(config: Path | None, data_dir: Path | None) -> None:
    """Apply pending metadata schema migrations."""
    settings = _load(config, data_dir, {})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    click.echo(f"metadata schema at revision {asyncio.run(_migrate(settings))}")


@main.command("verify-config")
@_state_options
def verify_config(config: Path | None, data_dir: Path | None) -> None:
    """Print the effective configuration (secrets redacted) and exit non-zero if it is invalid."""
    settings = _load(config, data_dir, {})
    click.echo(render_toml(settings_to_dict(settings, redact=True)), nl=False)
