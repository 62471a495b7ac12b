"""Unit tests for moorage.config: layering, conversion, validation, rendering and round trips."""

from __future__ import annotations

import dataclasses
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from moorage.config import (
    ConfigError,
    Settings,
    env_var_name,
    format_duration,
    load_settings,
    parse_bool,
    parse_duration,
    render_toml,
    settings_from_json,
    settings_to_dict,
    settings_to_json,
)

FULL_TOML = """
account_id = "210987654321"
region = "eu-west-2"
data_dir = "/srv/moorage"
registry_domain = "moorage.test"
public_host = "registry.moorage.test:8443"

[http]
host = "10.0.0.5"
port = 8443
workers = 4
tls_cert = "/etc/moorage/cert.pem"
tls_key = "/etc/moorage/key.pem"

[metadata]
url = "postgresql://moorage:s3cr3t@db.internal:5432/moorage"

[storage]
backend = "s3"

[storage.filesystem]
root = "/srv/blobs"

[storage.s3]
bucket = "images"
prefix = "moorage/"
endpoint_url = "http://127.0.0.1:8333"
region = "eu-west-2"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "s3-secret-key"
redirect = true

[auth]
mode = "sigv4"
token_ttl = "6h"
root_access_key_id = "AKIAROOT"
root_secret_access_key = "root-secret"

[limits]
max_manifest_bytes = 1048576
max_blob_bytes = 1073741824
max_json_body_bytes = 2097152

[uploads]
expiry = "2h"

[gc]
interval = "15m"
grace_period = "7d"

[jobs]
enabled = false
lifecycle_interval = "12h"

[testing]
allow_reset = true
allow_clock_control = true

[log]
level = "debug"
access = true
"""


def write(tmp_path: Path, text: str, name: str = "moorage.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(
    tmp_path: Path,
    toml: str | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> Settings:
    path = write(tmp_path, toml) if toml is not None else None
    settings, _ = load_settings(path, environ or {}, overrides)
    return settings


# ---------------------------------------------------------------------------- defaults and layers


def test_defaults() -> None:
    s, warnings = load_settings(None, {})
    assert warnings == []
    assert s == Settings()
    assert s.account_id == "123456789012"
    assert s.region == "us-east-1"
    assert s.data_dir == Path("moorage-data")
    assert s.registry_domain is None
    assert s.public_host is None
    assert (s.http.host, s.http.port, s.http.workers) == ("127.0.0.1", 5000, 1)
    assert s.http.tls_cert is None
    assert s.http.tls_key is None
    assert s.metadata.url is None
    assert s.storage.backend == "filesystem"
    assert s.storage.filesystem.root is None
    assert s.storage.s3.bucket is None
    assert s.storage.s3.prefix == ""
    assert s.storage.s3.redirect is False
    assert s.auth.mode == "sigv4"
    assert s.auth.token_ttl == timedelta(hours=12)
    assert s.limits.max_manifest_bytes == 4 * 1024 * 1024
    assert s.limits.max_blob_bytes == 64 * 1024**3
    assert s.limits.max_json_body_bytes == 32 * 1024 * 1024
    assert s.uploads.expiry == timedelta(hours=24)
    assert s.gc.interval == timedelta(hours=1)
    assert s.gc.grace_period == timedelta(hours=24)
    assert s.jobs.enabled is True
    assert s.jobs.lifecycle_interval == timedelta(hours=24)
    assert s.testing.allow_reset is False
    assert s.testing.allow_clock_control is False
    assert s.log.level == "info"
    assert s.log.access is False


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.region = "eu-west-1"  # type: ignore[misc]


def test_effective_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    s = Settings()
    assert s.metadata.effective_url(tmp_path) == f"sqlite:///{tmp_path}/metadata.db"
    relative = s.metadata.effective_url(Path("rel-data"))
    assert relative == f"sqlite:///{Path('rel-data').absolute()}/metadata.db"
    assert relative.startswith("sqlite:////")
    assert s.storage.filesystem.effective_root(tmp_path) == tmp_path / "blobs"
    custom = load(tmp_path, '[metadata]\nurl = "sqlite:///x.db"\n[storage.filesystem]\nroot = "/b"\n')
    assert custom.metadata.effective_url(tmp_path) == "sqlite:///x.db"
    assert custom.storage.filesystem.effective_root(tmp_path) == Path("/b")


def test_toml_file_values(tmp_path: Path) -> None:
    s = load(tmp_path, FULL_TOML)
    assert s.account_id == "210987654321"
    assert s.region == "eu-west-2"
    assert s.data_dir == Path("/srv/moorage")
    assert s.registry_domain == "moorage.test"
    assert s.public_host == "registry.moorage.test:8443"
    assert s.http.host == "10.0.0.5"
    assert s.http.port == 8443
    assert s.http.workers == 4
    assert s.http.tls_cert == Path("/etc/moorage/cert.pem")
    assert s.http.tls_key == Path("/etc/moorage/key.pem")
    assert s.metadata.url == "postgresql://moorage:s3cr3t@db.internal:5432/moorage"
    assert s.storage.backend == "s3"
    assert s.storage.filesystem.root == Path("/srv/blobs")
    assert s.storage.s3.bucket == "images"
    assert s.storage.s3.prefix == "moorage/"
    assert s.storage.s3.endpoint_url == "http://127.0.0.1:8333"
    assert s.storage.s3.region == "eu-west-2"
    assert s.storage.s3.access_key_id == "AKIAEXAMPLE"
    assert s.storage.s3.secret_access_key == "s3-secret-key"
    assert s.storage.s3.redirect is True
    assert s.auth.mode == "sigv4"
    assert s.auth.token_ttl == timedelta(hours=6)
    assert s.auth.root_access_key_id == "AKIAROOT"
    assert s.auth.root_secret_access_key == "root-secret"
    assert s.limits.max_manifest_bytes == 1048576
    assert s.limits.max_blob_bytes == 1073741824
    assert s.limits.max_json_body_bytes == 2097152
    assert s.uploads.expiry == timedelta(hours=2)
    assert s.gc.interval == timedelta(minutes=15)
    assert s.gc.grace_period == timedelta(days=7)
    assert s.jobs.enabled is False
    assert s.jobs.lifecycle_interval == timedelta(hours=12)
    assert s.testing.allow_reset is True
    assert s.testing.allow_clock_control is True
    assert s.log.level == "debug"
    assert s.log.access is True


def test_relative_data_dir_stays_as_given(tmp_path: Path) -> None:
    assert load(tmp_path, 'data_dir = "./data"\n').data_dir == Path("data")
    assert not load(tmp_path, 'data_dir = "./data"\n').data_dir.is_absolute()


def test_toml_duration_as_integer_seconds(tmp_path: Path) -> None:
    assert load(tmp_path, "[gc]\ninterval = 90\n").gc.interval == timedelta(seconds=90)


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    text = repr(load(tmp_path, FULL_TOML))
    assert "s3-secret-key" not in text
    assert "root-secret" not in text


def test_env_beats_file(tmp_path: Path) -> None:
    toml = '[http]\nport = 6000\nhost = "10.0.0.5"\n[auth]\nmode = "sigv4"\n'
    environ = {
        "MOORAGE_HTTP__PORT": "7000",
        "MOORAGE_ACCOUNT_ID": "000000000001",
        "MOORAGE_REGION": "ap-southeast-2",
        "MOORAGE_DATA_DIR": "/var/lib/moorage",
        "MOORAGE_METADATA__URL": "postgres://u@h/db",
        "MOORAGE_STORAGE__BACKEND": "s3",
        "MOORAGE_STORAGE__S3__BUCKET": "bkt",
        "MOORAGE_AUTH__MODE": "open",
        "MOORAGE_TESTING__ALLOW_RESET": "yes",
        "MOORAGE_REGISTRY_DOMAIN": "amazonaws.com",
        "MOORAGE_GC__GRACE_PERIOD": "1h30m",
        "MOORAGE_LOG__LEVEL": "WARNING",
        "MOORAGE_STORAGE__FILESYSTEM__ROOT": "/blobs",
        "PATH": "/usr/bin",
    }
    s, warnings = load_settings(write(tmp_path, toml), environ)
    assert warnings == []
    assert s.http.port == 7000
    assert s.http.host == "10.0.0.5"  # from the file, no env override
    assert s.account_id == "000000000001"
    assert s.region == "ap-southeast-2"
    assert s.data_dir == Path("/var/lib/moorage")
    assert s.metadata.url == "postgres://u@h/db"
    assert s.storage.backend == "s3"
    assert s.storage.s3.bucket == "bkt"
    assert s.storage.filesystem.root == Path("/blobs")
    assert s.auth.mode == "open"
    assert s.testing.allow_reset is True
    assert s.registry_domain == "amazonaws.com"
    assert s.gc.grace_period == timedelta(hours=1, minutes=30)
    assert s.log.level == "warning"


def test_empty_env_value_unsets_optional_field(tmp_path: Path) -> None:
    s = load(tmp_path, 'registry_domain = "moorage.test"\n', {"MOORAGE_REGISTRY_DOMAIN": ""})
    assert s.registry_domain is None


def test_overrides_beat_env(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        "[http]\nport = 6000\n",
        {"MOORAGE_HTTP__PORT": "7000", "MOORAGE_LOG__LEVEL": "error", "MOORAGE_UPLOADS__EXPIRY": "1h"},
        {
            "http.port": 8000,
            "log.level": "debug",
            "data_dir": Path("/override"),
            "uploads.expiry": timedelta(minutes=5),
            "gc.interval": "30m",
            "jobs.enabled": "false",
            "http.workers": "3",
            "testing.allow_clock_control": True,
        },
    )
    assert s.http.port == 8000
    assert s.log.level == "debug"
    assert s.data_dir == Path("/override")
    assert s.uploads.expiry == timedelta(minutes=5)
    assert s.gc.interval == timedelta(minutes=30)
    assert s.jobs.enabled is False
    assert s.http.workers == 3
    assert s.testing.allow_clock_control is True


def test_none_override_means_not_given(tmp_path: Path) -> None:
    s = load(tmp_path, None, {"MOORAGE_HTTP__PORT": "7000"}, {"http.port": None, "public_host": None})
    assert s.http.port == 7000


def test_unknown_override_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^http\.prot: unknown setting"):
        load(tmp_path, None, None, {"http.prot": 1})
    with pytest.raises(ConfigError, match=r"^http: unknown setting"):
        load(tmp_path, None, None, {"http": {"port": 1}})


def test_override_type_error_names_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^http\.port: expected an integer"):
        load(tmp_path, None, None, {"http.port": "eighty"})
    with pytest.raises(ConfigError, match=r"^jobs\.enabled: expected a boolean"):
        load(tmp_path, None, None, {"jobs.enabled": 1})


def test_env_var_names() -> None:
    assert env_var_name("account_id") == "MOORAGE_ACCOUNT_ID"
    assert env_var_name("http.port") == "MOORAGE_HTTP__PORT"
    assert env_var_name("storage.s3.bucket") == "MOORAGE_STORAGE__S3__BUCKET"
    assert env_var_name("testing.allow_reset") == "MOORAGE_TESTING__ALLOW_RESET"


# ---------------------------------------------------------------------------- files


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_settings(missing, {})
    assert str(missing) in str(info.value)


def test_moorage_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = 6001\n")
    s, warnings = load_settings(None, {"MOORAGE_CONFIG": str(path)})
    assert s.http.port == 6001
    assert warnings == []
    with pytest.raises(ConfigError, match="not found"):
        load_settings(None, {"MOORAGE_CONFIG": str(tmp_path / "missing.toml")})
    # An explicit path wins over MOORAGE_CONFIG.
    other = write(tmp_path, "[http]\nport = 6002\n", name="other.toml")
    assert load_settings(other, {"MOORAGE_CONFIG": str(path)})[0].http.port == 6002


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(tmp_path, "[http\nport = 1\n")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('colour = "blue"\n', "colour"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("[http]\nprot = 1\n", "http.prot"),
        ('[storage.s3]\nbucket_name = "b"\n', "storage.s3.bucket_name"),
        ("[storage.s3.extra]\nx = 1\n", "storage.s3.extra"),
    ],
)
def test_unknown_toml_key_is_an_error_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml)
    assert str(info.value).startswith(f"{key}: unknown setting")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[http]\nport = "abc"\n', "http.port: expected an integer"),
        ("[http]\nport = true\n", "http.port: expected an integer"),
        ('[jobs]\nenabled = "yes"\n', "jobs.enabled: expected a boolean"),
        ("account_id = 123456789012\n", "account_id: expected a string"),
        ("data_dir = 5\n", "data_dir: expected a path string"),
        ('data_dir = ""\n', "data_dir: expected a non-empty path"),
        ('[gc]\ninterval = "soon"\n', "gc.interval: expected a duration"),
        ("[gc]\ninterval = -5\n", "gc.interval: duration must not be negative"),
        ('[auth]\nmode = "password"\n', 'auth.mode: expected one of "open", "sigv4"'),
        ('[storage]\nbackend = "gcs"\n', 'storage.backend: expected one of "filesystem", "s3"'),
        ("http = 5\n", "http: expected a table"),
        ("[storage]\ns3 = 1\n", "storage.s3: expected a table"),
        ("[storage.s3]\nbucket = [1]\n", "storage.s3.bucket: expected a string"),
    ],
)
def test_toml_type_errors_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------------------------- environment warnings


def test_unknown_moorage_env_var_warns() -> None:
    s, warnings = load_settings(
        None, {"MOORAGE_FOO": "1", "MOORAGE_HTTP__PROT": "1", "MOORAGE_HTTP": "x", "OTHER": "1"}
    )
    assert s == Settings()
    assert warnings == [
        "unknown environment variable MOORAGE_FOO ignored",
        "unknown environment variable MOORAGE_HTTP ignored",
        "unknown environment variable MOORAGE_HTTP__PROT ignored",
    ]


def test_known_non_config_env_vars_do_not_warn() -> None:
    environ = {
        "MOORAGE_ROOT_ACCESS_KEY_ID": "AKIA",
        "MOORAGE_ROOT_SECRET_ACCESS_KEY": "secret",
        "MOORAGE_CONFIG": "",
        "MOORAGE_SETTINGS_JSON": "{}",
    }
    s, warnings = load_settings(None, environ)
    assert warnings == []
    assert s == Settings()


def test_env_type_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^http\.port: expected an integer, got 'abc'"):
        load_settings(None, {"MOORAGE_HTTP__PORT": "abc"})
    with pytest.raises(ConfigError, match=r"^testing\.allow_reset: expected a boolean"):
        load_settings(None, {"MOORAGE_TESTING__ALLOW_RESET": "maybe"})


# ---------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2h0m5s", timedelta(hours=2, seconds=5)),
        ("3600", timedelta(hours=1)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        (" 5M ", timedelta(minutes=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", " ", "-5s", "-5", "5x", "h", "1.5h", "30m1h", "1h 30m", "5ss", "forever", "1_0s", "١٢"]
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(seconds=86400), "24h"),
        (timedelta(seconds=90), "90s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=1), "1s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=12), "12h"),
        (timedelta(hours=36), "36h"),
        (timedelta(days=2), "2d"),
        (timedelta(days=7), "7d"),
        (timedelta(seconds=3661), "3661s"),
    ],
)
def test_format_duration(td: timedelta, text: str) -> None:
    assert format_duration(td) == text
    assert parse_duration(text) == td


@pytest.mark.parametrize("td", [timedelta(seconds=-1), timedelta(milliseconds=1500)])
def test_format_duration_rejects_unrepresentable(td: timedelta) -> None:
    with pytest.raises(ValueError, match=r"negative|whole number of seconds"):
        format_duration(td)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("YES", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("No", False),
    ],
)
def test_bool_parsing(text: str, expected: bool) -> None:
    assert parse_bool(text) is expected
    s, _ = load_settings(None, {"MOORAGE_LOG__ACCESS": text, "MOORAGE_STORAGE__S3__REDIRECT": text})
    assert s.log.access is expected
    assert s.storage.s3.redirect is expected


@pytest.mark.parametrize("text", ["", "on", "off", "2", "y", "truth"])
def test_bool_parsing_rejects_other_words(text: str) -> None:
    with pytest.raises(ValueError, match="invalid boolean"):
        parse_bool(text)
    if text:  # "" is not special for a non-optional bool either
        with pytest.raises(ConfigError, match=r"^log\.access: expected a boolean"):
            load_settings(None, {"MOORAGE_LOG__ACCESS": text})


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('account_id = "12345"\n', "account_id: must be exactly 12 digits"),
        ('account_id = "12345678901a"\n', "account_id: must be exactly 12 digits"),
        ('account_id = "1234567890123"\n', "account_id: must be exactly 12 digits"),
        ('region = "mars"\n', "region: expected an AWS-style region"),
        ('region = "US-EAST-1"\n', "region: expected an AWS-style region"),
        ('region = "us-east"\n', "region: expected an AWS-style region"),
        ("[http]\nport = 0\n", "http.port: must be between 1 and 65535"),
        ("[http]\nport = 65536\n", "http.port: must be between 1 and 65535"),
        ("[http]\nworkers = 0\n", "http.workers: must be at least 1"),
        ('[http]\nhost = ""\n', "http.host: must not be empty"),
        ('[http]\ntls_cert = "c.pem"\n', "http.tls_key: required when http.tls_cert is set"),
        ('[http]\ntls_key = "k.pem"\n', "http.tls_cert: required when http.tls_key is set"),
        ('[storage]\nbackend = "s3"\n', 'storage.s3.bucket: required when storage.backend is "s3"'),
        ('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = ""\n', "storage.s3.bucket: required"),
        ('[storage.s3]\nendpoint_url = "localhost:8333"\n', "storage.s3.endpoint_url: expected"),
        (
            '[storage.s3]\naccess_key_id = "AKIA"\n',
            "storage.s3.secret_access_key: required when storage.s3.access_key_id is set",
        ),
        (
            '[auth]\nroot_secret_access_key = "x"\n',
            "auth.root_access_key_id: required when auth.root_secret_access_key is set",
        ),
        ('[metadata]\nurl = "mysql://u:p@h/db"\n', "metadata.url: unsupported URL"),
        ('[metadata]\nurl = "metadata.db"\n', "metadata.url: unsupported URL"),
        ('[metadata]\nurl = "sqlite://relative.db"\n', "metadata.url: an SQLite URL"),
        ("[limits]\nmax_blob_bytes = 0\n", "limits.max_blob_bytes: must be positive"),
        ('[uploads]\nexpiry = "0s"\n', "uploads.expiry: must be longer than zero"),
        ('[auth]\ntoken_ttl = "0"\n', "auth.token_ttl: must be longer than zero"),
        ('public_host = "https://example.com"\n', "public_host: expected a host name"),
        ('registry_domain = ""\n', "registry_domain: must not be empty"),
    ],
)
def test_invalid_values(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml)
    assert str(info.value).startswith(message)


def test_bad_metadata_url_error_does_not_leak_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[metadata]\nurl = "mysql://u:hunter2@h/db"\n')
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///relative/metadata.db",
        "sqlite:////abs/metadata.db",
        "postgresql://u:p@h:5432/db",
        "postgres://h/db",
    ],
)
def test_valid_metadata_urls(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, f'[metadata]\nurl = "{url}"\n').metadata.url == url


def test_gc_grace_period_may_be_zero(tmp_path: Path) -> None:
    assert load(tmp_path, '[gc]\ngrace_period = "0s"\n').gc.grace_period == timedelta(0)


# ---------------------------------------------------------------------------- output


def test_settings_to_dict_redacts_secrets(tmp_path: Path) -> None:
    d = settings_to_dict(load(tmp_path, FULL_TOML))
    storage = d["storage"]
    auth = d["auth"]
    metadata = d["metadata"]
    assert isinstance(storage, dict)
    assert isinstance(auth, dict)
    assert isinstance(metadata, dict)
    assert storage["s3"]["secret_access_key"] == "******"
    assert storage["s3"]["access_key_id"] == "AKIAEXAMPLE"
    assert auth["root_secret_access_key"] == "******"
    assert auth["root_access_key_id"] == "AKIAROOT"
    assert metadata["url"] == "postgresql://moorage:******@db.internal:5432/moorage"
    rendered = render_toml(d)
    for secret in ("s3cr3t", "s3-secret-key", "root-secret"):
        assert secret not in rendered


def test_settings_to_dict_unredacted_and_value_forms(tmp_path: Path) -> None:
    d = settings_to_dict(load(tmp_path, FULL_TOML), redact=False)
    assert d["data_dir"] == "/srv/moorage"
    assert d["http"] == {
        "host": "10.0.0.5",
        "port": 8443,
        "workers": 4,
        "tls_cert": "/etc/moorage/cert.pem",
        "tls_key": "/etc/moorage/key.pem",
    }
    assert d["gc"] == {"interval": "15m", "grace_period": "7d"}
    assert d["metadata"] == {"url": "postgresql://moorage:s3cr3t@db.internal:5432/moorage"}
    auth = d["auth"]
    assert isinstance(auth, dict)
    assert auth["root_secret_access_key"] == "root-secret"


def test_settings_to_dict_omits_none() -> None:
    d = settings_to_dict(Settings())
    assert "registry_domain" not in d
    assert "public_host" not in d
    assert d["metadata"] == {}
    assert d["http"] == {"host": "127.0.0.1", "port": 5000, "workers": 1}
    assert d["uploads"] == {"expiry": "24h"}
    assert d["auth"] == {"mode": "sigv4", "token_ttl": "12h"}


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:******@host/db"),
        (
            "postgres://user:p%40ss@host:5432/db?sslmode=require",
            "postgres://user:******@host:5432/db?sslmode=require",
        ),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host/db", "postgresql://host/db"),
        ("sqlite:////data/metadata.db", "sqlite:////data/metadata.db"),
    ],
)
def test_metadata_url_password_redaction(tmp_path: Path, url: str, redacted: str) -> None:
    d = settings_to_dict(load(tmp_path, f'[metadata]\nurl = "{url}"\n'))
    assert d["metadata"] == {"url": redacted}


def test_render_toml_is_valid_toml() -> None:
    text = render_toml(
        {
            "name": 'a "quoted" \\ value\n\ttab\x01\x7f',
            "count": 3,
            "flag": True,
            "items": ["x", 'y"'],
            "weird key": "v",
            "outer": {"inner": {"deep": "d"}, "empty": {}},
        }
    )
    assert tomllib.loads(text) == {
        "name": 'a "quoted" \\ value\n\ttab\x01\x7f',
        "count": 3,
        "flag": True,
        "items": ["x", 'y"'],
        "weird key": "v",
        "outer": {"inner": {"deep": "d"}, "empty": {}},
    }


def test_render_toml_rejects_unsupported_values() -> None:
    with pytest.raises(TypeError, match=r"a\.b"):
        render_toml({"a": {"b": 1.5}})


@pytest.mark.parametrize("toml", ["", FULL_TOML, '[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\n'])
def test_render_toml_round_trips_through_load_settings(tmp_path: Path, toml: str) -> None:
    original = load(tmp_path, toml)
    rendered = render_toml(settings_to_dict(original, redact=False))
    reloaded, warnings = load_settings(write(tmp_path, rendered, name="rendered.toml"), {})
    assert warnings == []
    assert reloaded == original


def test_redacted_render_round_trips_when_there_are_no_secrets(tmp_path: Path) -> None:
    original = load(tmp_path, 'region = "eu-central-1"\n[gc]\ninterval = "1h30m"\n')
    rendered = render_toml(settings_to_dict(original))
    assert 'interval = "90m"' in rendered
    assert load(tmp_path, rendered) == original


@pytest.mark.parametrize("toml", ["", FULL_TOML])
def test_json_round_trip(tmp_path: Path, toml: str) -> None:
    original = load(tmp_path, toml)
    text = settings_to_json(original)
    assert settings_from_json(text) == original
    if toml:
        assert "root-secret" in text  # unredacted


def test_json_round_trip_is_lossless_for_values_the_loader_would_not_produce() -> None:
    original = dataclasses.replace(
        Settings(),
        http=dataclasses.replace(Settings().http, port=0),
        uploads=dataclasses.replace(Settings().uploads, expiry=timedelta(seconds=1, microseconds=5)),
    )
    assert settings_from_json(settings_to_json(original)) == original


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "settings JSON: invalid JSON"),
        ("[]", "settings JSON: expected an object"),
        ('{"bogus": 1}', "bogus: unknown setting"),
        ('{"http": {"port": "5000"}}', "http.port: expected an integer"),
        ('{"gc": {"interval": "1h"}}', "gc.interval: expected an integer number of microseconds"),
    ],
)
def test_settings_from_json_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_json(text)
    assert str(info.value).startswith(message)


REMOTE = '[[replication.remotes]]\nregistry_id = "555555555555"\nregion = "eu-west-1"\nurl = "https://r.test"\n'


def test_replication_remotes_from_toml_and_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, REMOTE + 'username = "u"\npassword = "p4ss"\n')
    (remote,) = settings.replication.remotes
    assert (remote.registry_id, remote.region, remote.url) == ("555555555555", "eu-west-1", "https://r.test")
    assert (remote.username, remote.password, remote.access_key_id) == ("u", "p4ss", None)
    assert "p4ss" not in str(settings_to_dict(settings))
    assert settings_from_json(settings_to_json(settings)) == settings
    env = {
        "MOORAGE_REPLICATION__REMOTES": '[{"registry_id": "555555555555", "region": "eu-west-1", '
        '"url": "http://127.0.0.1:5000", "access_key_id": "AKIA", "secret_access_key": "s"}]'
    }
    (remote,) = load(tmp_path, None, env).replication.remotes
    assert (remote.access_key_id, remote.secret_access_key) == ("AKIA", "s")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('credential_arn = "arn:aws:secretsmanager:eu-west-1:1:secret:x"\n', "credential_arn: expected a Secrets"),
        ('credential_arn = "arn:aws:s3:::bucket"\n', "credential_arn: expected a Secrets"),
        (
            'credential_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf"\nusername = "u"\n'
            'password = "p"\n',
            "credential_arn or inline credentials, not both",
        ),
        ('access_key_id = "AKIA"\n', "secret_access_key"),
        ('username = "u"\n', "password"),
        ('username = "u"\npassword = "p"\naccess_key_id = "A"\nsecret_access_key = "s"\n', "either"),
        ("timeout = 0\n", "timeout: must be longer than zero"),
    ],
)
def test_replication_remotes_are_validated(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(tmp_path, REMOTE + extra)
    assert str(info.value).startswith("replication.remotes[0]")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (REMOTE.replace("555555555555", "12"), "registry_id: must be exactly 12 digits"),
        (REMOTE.replace("https://r.test", "ftp://r"), "url: expected an http"),
        (REMOTE.replace("555555555555", "123456789012").replace("eu-west-1", "us-east-1"), "own registry"),
        (REMOTE + "\n" + REMOTE, r"replication.remotes\[1\]: 555555555555/eu-west-1 is named by another remote"),
    ],
)
def test_replication_remote_destinations_are_validated(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, toml)


def test_a_replication_remote_may_name_a_secret_instead(tmp_path: Path) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:replication/far-AbCdEf"
    (remote,) = load(tmp_path, REMOTE + f'credential_arn = "{arn}"\n').replication.remotes
    assert remote.credential_arn == arn
    assert (remote.access_key_id, remote.username) == (None, None)
