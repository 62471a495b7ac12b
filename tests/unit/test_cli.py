"""The `moorage` command line: verify-config, migrate and admin, in-process with click's runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from moorage.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_verify_config_prints_the_effective_config_with_secrets_redacted(tmp_path: Path) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text('region = "eu-west-1"\n[metadata]\nurl = "postgresql://moorage:hunter2@db:5432/moorage"\n')
    code, output = run(
        "verify-config", "--config", str(config), "--data-dir", str(tmp_path), env={"MOORAGE_HTTP__PORT": "6000"}
    )
    assert code == 0, output
    assert 'region = "eu-west-1"' in output
    assert "port = 6000" in output
    assert "hunter2" not in output
    assert "postgresql://moorage:******@db:5432/moorage" in output


def test_unknown_key_in_file_is_an_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "moorage.toml"
    config.write_text("[http]\nprot = 5000\n")
    code, output = run("verify-config", "--config", str(config))
    assert code != 0
    assert "http.prot" in output


def test_unknown_environment_variable_is_a_warning(tmp_path: Path) -> None:
    code, output = run("verify-config", "--data-dir", str(tmp_path), env={"MOORAGE_NOPE": "1"})
    assert code == 0
    assert "MOORAGE_NOPE" in output


def test_flags_beat_environment(tmp_path: Path) -> None:
    code, output = run("verify-config", "--data-dir", str(tmp_path / "flag"), env={"MOORAGE_DATA_DIR": "/elsewhere"})
    assert code == 0
    assert str(tmp_path / "flag") in output
    assert "/elsewhere" not in output


def test_migrate_then_admin_accounts_users_and_keys(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    code, output = run("migrate", "--data-dir", data)
    assert code == 0
    assert "revision" in output
    assert run("admin", "create-account", "210987654321", "--data-dir", data)[0] == 0
    code, output = run("admin", "list-accounts", "--data-dir", data)
    assert "210987654321" in output.split()
    assert run("admin", "create-user", "ci", "--account", "210987654321", "--data-dir", data)[0] == 0
    code, output = run("admin", "create-access-key", "--account", "210987654321", "--user", "ci", "--data-dir", data)
    assert code == 0
    key_id = output.split("AWS_ACCESS_KEY_ID=")[1].split()[0]
    assert "AWS_SECRET_ACCESS_KEY=" in output
    code, output = run("admin", "list-access-keys", "--data-dir", data)
    assert key_id in output
    assert "user/ci" in output
    assert "AWS_SECRET_ACCESS_KEY" not in output
    assert run("admin", "delete-access-key", key_id, "--data-dir", data)[0] == 0
    assert key_id not in run("admin", "list-access-keys", "--data-dir", data)[1]


@pytest.mark.parametrize("args", [["create-user", "x", "--account", "999999999999"], ["delete-access-key", "AKIANOPE"]])
def test_admin_errors_exit_non_zero(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, ["admin", *args, "--data-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "Error" in result.output


@pytest.mark.parametrize(("grace", "shown"), [(None, "24h"), ("2d", "2d"), ("90s", "90s"), ("1h30m", "90m")])
def test_gc_dry_run_writes_the_grace_period_as_the_config_does(tmp_path: Path, grace: str | None, shown: str) -> None:
    args = ["gc", "--dry-run", "--data-dir", str(tmp_path / "data")]
    if grace is not None:
        args += ["--grace-period", grace]
    code, output = run(*args)
    assert code == 0, output
    assert f"unreferenced for over {shown};" in output
    assert "day," not in output
    assert "0:" not in output
