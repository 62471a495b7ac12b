"""Settings: one TOML file + ``MOORAGE_*`` environment + command-line overrides.

This is the only module that parses configuration. Precedence, highest first:

    overrides (command-line flags)  >  environment  >  TOML file  >  field defaults

The schema is a tree of frozen dataclasses. The loader is generic: it walks the dataclass fields
with `typing.get_type_hints` and converts each value according to its annotation (``str``, ``int``,
``bool``, ``Path``, ``timedelta``, ``Literal[...]``, ``X | None``, nested dataclass), so adding a
setting is one line in the schema (plus, if needed, a check in `_validate`).

Every setting has a dotted key (``storage.s3.bucket``) and an environment variable
``MOORAGE_`` + the key upper-cased with ``.`` replaced by ``__`` (``MOORAGE_STORAGE__S3__BUCKET``).
Every `ConfigError` message starts with the dotted key it concerns (or the file path for file-level
problems). This module never reads ``os.environ``: callers pass the mapping in.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = [
    "SETTINGS_ENV",
    "ArchiveSettings",
    "AuthMode",
    "AuthSettings",
    "ConfigError",
    "ConsoleSettings",
    "EventsSettings",
    "FilesystemStorageSettings",
    "GcSettings",
    "HttpSettings",
    "JobsSettings",
    "LimitsSettings",
    "LogLevel",
    "LogSettings",
    "MetadataSettings",
    "MetricsSettings",
    "ReplicationRemoteSettings",
    "ReplicationSettings",
    "S3StorageSettings",
    "Settings",
    "StorageBackend",
    "StorageSettings",
    "TestingSettings",
    "UploadsSettings",
    "WebhookSettings",
    "env_var_name",
    "format_duration",
    "load_settings",
    "parse_bool",
    "parse_duration",
    "render_toml",
    "settings_from_json",
    "settings_to_dict",
    "settings_to_json",
]

ENV_PREFIX = "MOORAGE_"

# `moorage serve` hands the effective settings to its worker processes in this variable.
SETTINGS_ENV = "MOORAGE_SETTINGS_JSON"

# MOORAGE_* variables that other parts of moorage read; they are not settings and never warned about.
NON_CONFIG_ENV_VARS: frozenset[str] = frozenset(
    {
        "MOORAGE_ROOT_ACCESS_KEY_ID",
        "MOORAGE_ROOT_SECRET_ACCESS_KEY",
        "MOORAGE_CONFIG",
        "MOORAGE_SETTINGS_JSON",
    }
)

REDACTED = "******"

StorageBackend = Literal["filesystem", "s3"]
AuthMode = Literal["open", "sigv4"]
LogLevel = Literal["debug", "info", "warning", "error"]


class ConfigError(Exception):
    """Invalid configuration. The message starts with the dotted key (or file) it concerns."""


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------

# Field metadata marking values that `settings_to_dict(redact=True)` must hide.
_SECRET: Mapping[str, str] = {"redact": "value"}
_URL_WITH_PASSWORD: Mapping[str, str] = {"redact": "url-password"}


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class MetadataSettings:
    url: str | None = field(default=None, metadata=_URL_WITH_PASSWORD)

    def effective_url(self, data_dir: Path) -> str:
        """The database URL to use: `url`, or an SQLite file (absolute path) inside `data_dir`."""
        if self.url is not None:
            return self.url
        return f"sqlite:///{(data_dir / 'metadata.db').absolute()}"


@dataclass(frozen=True)
class FilesystemStorageSettings:
    root: Path | None = None

    def effective_root(self, data_dir: Path) -> Path:
        """The blob directory: `root`, or ``<data_dir>/blobs``."""
        return self.root if self.root is not None else data_dir / "blobs"


@dataclass(frozen=True)
class S3StorageSettings:
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False, metadata=_SECRET)
    redirect: bool = False


@dataclass(frozen=True)
class StorageSettings:
    backend: StorageBackend = "filesystem"
    filesystem: FilesystemStorageSettings = field(default_factory=FilesystemStorageSettings)
    s3: S3StorageSettings = field(default_factory=S3StorageSettings)


@dataclass(frozen=True)
class AuthSettings:
    mode: AuthMode = "sigv4"
    token_ttl: timedelta = timedelta(hours=12)
    root_access_key_id: str | None = None
    root_secret_access_key: str | None = field(default=None, repr=False, metadata=_SECRET)
    # base64 of 32 bytes; encrypts stored secret access keys. Default: <data_dir>/master.key
    master_key: str | None = field(default=None, repr=False, metadata=_SECRET)


@dataclass(frozen=True)
class LimitsSettings:
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_blob_bytes: int = 64 * 1024**3
    max_json_body_bytes: int = 32 * 1024 * 1024


@dataclass(frozen=True)
class UploadsSettings:
    expiry: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class GcSettings:
    interval: timedelta = timedelta(hours=1)
    grace_period: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class JobsSettings:
    enabled: bool = True
    lifecycle_interval: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class ArchiveSettings:
    # How long a restored image (UpdateImageStorageClass to STANDARD) stays ACTIVATING before it
    # is ACTIVE and pullable again (ECR takes up to ~20 minutes). Measured on the injected clock.
    restore_delay: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class WebhookSettings:
    # `name` is the consumer's id in the delivery state, the metrics and `moorage events`.
    name: str = ""
    url: str = ""
    secret: str | None = field(default=None, metadata={"redact": "value"})
    detail_types: tuple[str, ...] | None = None  # default: every detail type
    repository_prefix: str | None = None


@dataclass(frozen=True)
class EventsSettings:
    webhooks: tuple[WebhookSettings, ...] = ()
    # MOORAGE_EVENTS__WEBHOOK_URL / _SECRET add one more webhook, named "env".
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, metadata={"redact": "value"})
    retry_max_interval: timedelta = timedelta(minutes=10)
    retry_for: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=7)
    audit_log: Path | None = None

    def all_webhooks(self) -> tuple[WebhookSettings, ...]:
        if self.webhook_url is None:
            return self.webhooks
        return (*self.webhooks, WebhookSettings(name="env", url=self.webhook_url, secret=self.webhook_secret))


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    # Required as `Authorization: Bearer <token>` when set; without it only loopback clients are answered.
    bearer_token: str | None = field(default=None, metadata={"redact": "value"})


@dataclass(frozen=True)
class PullThroughCacheSettings:
    # Accept `http://` upstream registry URLs (loopback test upstreams, internal mirrors).
    allow_http_upstreams: bool = False
    # A cached tag is checked upstream again when pulled this long after its last check (ECR: 24h).
    refresh_interval: timedelta = timedelta(hours=24)
    # How long a pull of a cached tag waits for the upstream before serving the cached image.
    upstream_timeout: timedelta = timedelta(seconds=5)
    # `[pull_through_cache.upstream_endpoints]`: a known upstream host -> the address Moorage
    # really contacts for it (`"registry-1.docker.io" = "https://mirror.corp:5000"`): chained
    # mirrors, air-gapped sites, tests. Rules keep the upstream URL users gave; only the
    # connection goes elsewhere. An `http://` address needs `allow_http_upstreams`.
    upstream_endpoints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicationRemoteSettings:
    """A replication destination `{region, registryId}` served by another deployment: another
    Moorage or ECR (`access_key_id`/`secret_access_key`: a token from GetAuthorizationToken, pushed
    over /v2/), or any OCI registry (`username`/`password`, or none: the distribution protocol)."""

    registry_id: str = ""
    region: str = ""
    # The registry's /v2/ endpoint (http:// or https://)
    url: str = ""
    # The ECR API endpoint for GetAuthorizationToken and CreateRepository (default: `url`, as on Moorage).
    api_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, metadata={"redact": "value"})
    username: str | None = None
    password: str | None = field(default=None, metadata={"redact": "value"})
    # A secret of this deployment's Secrets Manager store holding the credentials instead
    # ({"username", "accessToken"} or {"accessKeyId", "secretAccessKey"}), read at every copy.
    credential_arn: str | None = None
    # One request to the remote (a blob upload streams for as long as it takes between reads).
    timeout: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class ReplicationSettings:
    remotes: tuple[ReplicationRemoteSettings, ...] = ()


@dataclass(frozen=True)
class TestingSettings:
    __test__ = False  # not a pytest test class

    allow_reset: bool = False
    allow_clock_control: bool = False


@dataclass(frozen=True)
class LogSettings:
    level: LogLevel = "info"
    access: bool = False


@dataclass(frozen=True)
class ConsoleSettings:
    # The web console at /console/ (console/): sign-in with access keys or a registry password.
    enabled: bool = True
    # How long a console sign-in lasts (a registry password's own expiry ends it sooner).
    session_ttl: timedelta = timedelta(hours=8)


@dataclass(frozen=True)
class Settings:
    account_id: str = "123456789012"
    region: str = "us-east-1"
    data_dir: Path = Path("moorage-data")
    registry_domain: str | None = None
    public_host: str | None = None
    # Only with registry_domain: the port written into repositoryUri / proxyEndpoint (ECR's form has none).
    public_port: int | None = None
    # Create a repository on its first /v2/ push (ECR requires CreateRepository unless a
    # CREATE_ON_PUSH creation template applies; this switch is the blanket form of that).
    create_on_push: bool = False
    http: HttpSettings = field(default_factory=HttpSettings)
    metadata: MetadataSettings = field(default_factory=MetadataSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    uploads: UploadsSettings = field(default_factory=UploadsSettings)
    gc: GcSettings = field(default_factory=GcSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    testing: TestingSettings = field(default_factory=TestingSettings)
    log: LogSettings = field(default_factory=LogSettings)
    pull_through_cache: PullThroughCacheSettings = field(default_factory=PullThroughCacheSettings)
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)


# --------------------------------------------------------------------------------------------------
# Scalar parsing
# --------------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``24h``, ``7d``, combinations in that order (``1h30m``, ``1d12h``), or a
    plain non-negative integer meaning seconds. Raises ValueError for anything else."""
    s = text.strip().lower()
    if s.isascii() and s.isdigit():
        return timedelta(seconds=int(s))
    m = _DURATION_RE.fullmatch(s) if s.isascii() else None
    if not s or m is None:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 90s, 15m, 24h, 7d, 1h30m)")
    days, hours, minutes, seconds = (int(g) if g is not None else 0 for g in m.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(td: timedelta) -> str:
    """Inverse of `parse_duration`, using one unit: the largest that divides exactly, except that a
    single day is written ``24h`` (86400s -> "24h", 172800s -> "2d", 5400s -> "90m", 90s -> "90s")."""
    if td < timedelta(0):
        raise ValueError(f"negative duration {td!r}")
    if td.microseconds:
        raise ValueError(f"duration {td!r} is not a whole number of seconds")
    total = int(td.total_seconds())
    if total == 0:
        return "0s"
    for unit, size in _DURATION_UNITS:
        if total % size == 0 and not (unit == "d" and total == size):
            return f"{total // size}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover - "s" always divides


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no``, case-insensitive; ValueError otherwise."""
    s = text.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r} (expected true/false/1/0/yes/no)")


# --------------------------------------------------------------------------------------------------
# Generic schema walking
# --------------------------------------------------------------------------------------------------

_T = TypeVar("_T")

# Where a raw value came from; decides how leniently it is converted.
#   toml:     typed TOML values; durations may be strings or integer seconds
#   env:      always strings, parsed per field type; "" means None for optional fields
#   override: already-typed values or strings (parsed like env)
#   json:     the settings_to_json encoding (durations in integer microseconds, null for None)
_Source = Literal["toml", "env", "override", "json"]


@dataclass(frozen=True)
class _Raw:
    value: object
    source: _Source


def _is_dataclass_type(tp: object) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """All dotted keys of scalar settings under `cls`, in declaration order."""
    hints = _hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            out.extend(_leaf_paths(tp, f"{prefix}{f.name}."))
        else:
            out.append(prefix + f.name)
    return out


def env_var_name(key: str) -> str:
    """``http.port`` -> ``MOORAGE_HTTP__PORT``."""
    return ENV_PREFIX + key.upper().replace(".", "__")


_LEAF_KEYS: tuple[str, ...] = tuple(_leaf_paths(Settings))
_LEAF_KEY_SET: frozenset[str] = frozenset(_LEAF_KEYS)
_ENV_TO_KEY: dict[str, str] = {env_var_name(k): k for k in _LEAF_KEYS}


def _ingest_table(cls: type, table: Mapping[str, object], prefix: str, tree: dict[str, Any], source: _Source) -> None:
    """Copy a parsed TOML/JSON table into `tree`, rejecting keys the schema does not have."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for name, value in table.items():
        key = prefix + name
        if name not in names:
            raise ConfigError(f"{key}: unknown setting")
        tp = hints[name]
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a table")
            _ingest_table(tp, value, f"{key}.", tree.setdefault(name, {}), source)
        else:
            tree[name] = _Raw(value, source)


def _set_leaf(tree: dict[str, Any], key: str, raw: _Raw) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = raw


def _build(cls: type[_T], tree: Mapping[str, Any], prefix: str = "") -> _T:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            kwargs[f.name] = _build(tp, tree.get(f.name, {}), f"{prefix}{f.name}.")
        elif f.name in tree:
            raw: _Raw = tree[f.name]
            kwargs[f.name] = _convert(raw.value, tp, prefix + f.name, raw.source)
    return cls(**kwargs)


def _convert(value: object, tp: Any, key: str, source: _Source) -> object:
    """Convert one raw value to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) != 1:  # pragma: no cover - schema error
            raise TypeError(f"{key}: unsupported annotation {tp!r}")
        if value is None and source in ("override", "json"):
            return None
        if value == "" and source in ("env", "override"):
            return None
        return _convert(value, inner[0], key, source)

    textual = isinstance(value, str) and source in ("env", "override")

    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, str):
            if value in choices:
                return value
            if value.lower() in choices:
                return value.lower()
        raise ConfigError(f"{key}: expected one of {', '.join(json.dumps(c) for c in choices)}, got {value!r}")

    if origin is tuple:
        return _convert_tuple(value, tp, key, source)

    if origin is dict:
        return _convert_str_map(value, key, source)

    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string")

    if tp is bool:
        if isinstance(value, bool):
            return value
        if textual:
            try:
                return parse_bool(str(value))
            except ValueError:
                pass
            raise ConfigError(f"{key}: expected a boolean (true/false/1/0/yes/no), got {value!r}")
        raise ConfigError(f"{key}: expected a boolean")

    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if textual:
            try:
                return int(str(value).strip())
            except ValueError:
                pass
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        raise ConfigError(f"{key}: expected an integer")

    if tp is Path:
        if isinstance(value, Path) and source == "override":
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            raise ConfigError(f"{key}: expected a path string")
        if not text:
            raise ConfigError(f"{key}: expected a non-empty path")
        return Path(text)

    if tp is timedelta:
        if source == "json":
            if isinstance(value, int) and not isinstance(value, bool):
                return timedelta(microseconds=value)
            raise ConfigError(f"{key}: expected an integer number of microseconds")
        if isinstance(value, timedelta) and source == "override":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and source in ("toml", "override"):
            if value < 0:
                raise ConfigError(f"{key}: duration must not be negative")
            return timedelta(seconds=value)
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError:
                pass
            raise ConfigError(f"{key}: expected a duration like 90s, 15m, 24h, 7d, got {value!r}")
        raise ConfigError(f"{key}: expected a duration like 90s, 15m, 24h, 7d")

    raise TypeError(f"{key}: unsupported annotation {tp!r}")  # pragma: no cover - schema error


def _convert_str_map(value: object, key: str, source: _Source) -> dict[str, str]:
    """`dict[str, str]`: a TOML table of strings; from the environment, a JSON object."""
    if isinstance(value, str) and source in ("env", "override"):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a JSON object") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of strings")
    out: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise ConfigError(f"{key}.{name}: expected a string")
        out[name] = item
    return out


def _convert_tuple(value: object, tp: Any, key: str, source: _Source) -> object:
    """`tuple[X, ...]`: a TOML array (of tables, for a dataclass X); from the environment, JSON text."""
    (item_type, _ellipsis) = get_args(tp)
    if isinstance(value, str) and source in ("env", "override"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a JSON array") from None
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected an array")
    items: list[object] = []
    for i, item in enumerate(value):
        item_key = f"{key}[{i}]"
        if _is_dataclass_type(item_type):
            if not isinstance(item, dict):
                raise ConfigError(f"{item_key}: expected a table")
            subtree: dict[str, Any] = {}
            _ingest_table(item_type, item, f"{item_key}.", subtree, "json" if source == "json" else "toml")
            items.append(_build(item_type, subtree, f"{item_key}."))
        else:
            items.append(_convert(item, item_type, item_key, "json" if source == "json" else "toml"))
    return tuple(items)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

_ACCOUNT_ID_RE = re.compile(r"[0-9]{12}")
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
_METADATA_SCHEMES = ("sqlite", "postgresql", "postgres")


def _require_pair(first_key: str, first: object, second_key: str, second: object) -> None:
    if first is not None and second is None:
        raise ConfigError(f"{second_key}: required when {first_key} is set")
    if second is not None and first is None:
        raise ConfigError(f"{first_key}: required when {second_key} is set")


def _require_host(key: str, value: str | None) -> None:
    if value is None:
        return
    if not value.strip():
        raise ConfigError(f"{key}: must not be empty")
    if "/" in value or any(c.isspace() for c in value):
        raise ConfigError(f"{key}: expected a host name (host[:port]) without scheme or path, got {value!r}")


def _validate_metadata_url(url: str) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _METADATA_SCHEMES:
        raise ConfigError(
            f"metadata.url: unsupported URL {_redact_url(url)!r} "
            "(expected sqlite:///path, postgresql://... or postgres://...)"
        )
    if scheme.lower() == "sqlite" and (not rest.startswith("/") or rest == "/"):
        raise ConfigError("metadata.url: an SQLite URL must look like sqlite:///path/to/metadata.db")


_WEBHOOK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _validate_events(events: EventsSettings) -> None:
    seen: set[str] = set()
    for i, hook in enumerate(events.all_webhooks()):
        key = "events.webhook_url" if hook.name == "env" and i >= len(events.webhooks) else f"events.webhooks[{i}]"
        if not _WEBHOOK_NAME_RE.fullmatch(hook.name):
            raise ConfigError(f"{key}.name: required; letters, digits, '.', '_' and '-', got {hook.name!r}")
        if hook.name == "audit-log":
            raise ConfigError(f"{key}.name: 'audit-log' is the audit log's own name")
        if hook.name in seen:
            raise ConfigError(f"{key}.name: {hook.name!r} is used by another webhook")
        seen.add(hook.name)
        if not re.match(r"https?://[^/]", hook.url):
            raise ConfigError(f"{key}.url: expected an http(s):// URL, got {hook.url!r}")
    if events.webhook_secret is not None and events.webhook_url is None:
        raise ConfigError("events.webhook_url: required when events.webhook_secret is set")
    for key, td in (("events.retry_max_interval", events.retry_max_interval), ("events.retry_for", events.retry_for)):
        if td <= timedelta(0):
            raise ConfigError(f"{key}: must be longer than zero")
    if events.retention < timedelta(0):
        raise ConfigError("events.retention: must not be negative")


_SECRET_ARN_RE = re.compile(r"arn:aws:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+")


def _validate_remotes(s: Settings) -> None:
    seen: set[tuple[str, str]] = set()
    for i, remote in enumerate(s.replication.remotes):
        key = f"replication.remotes[{i}]"
        if not _ACCOUNT_ID_RE.fullmatch(remote.registry_id):
            raise ConfigError(f"{key}.registry_id: must be exactly 12 digits, got {remote.registry_id!r}")
        if not _REGION_RE.fullmatch(remote.region):
            raise ConfigError(f"{key}.region: expected an AWS-style region like us-east-1, got {remote.region!r}")
        where = (remote.registry_id, remote.region)
        if where == (s.account_id, s.region):
            raise ConfigError(f"{key}: {remote.registry_id}/{remote.region} is this deployment's own registry")
        if where in seen:
            raise ConfigError(f"{key}: {remote.registry_id}/{remote.region} is named by another remote")
        seen.add(where)
        for name, url in (("url", remote.url), ("api_url", remote.api_url)):
            if url is not None and not re.match(r"https?://[^/]", url):
                raise ConfigError(f"{key}.{name}: expected an http(s):// URL, got {url!r}")
        if remote.credential_arn is not None:
            if not _SECRET_ARN_RE.fullmatch(remote.credential_arn):
                raise ConfigError(
                    f"{key}.credential_arn: expected a Secrets Manager secret ARN "
                    f"(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME), got {remote.credential_arn!r}"
                )
            if remote.access_key_id is not None or remote.username is not None:
                raise ConfigError(f"{key}: give credential_arn or inline credentials, not both")
        _require_pair(
            f"{key}.access_key_id", remote.access_key_id, f"{key}.secret_access_key", remote.secret_access_key
        )
        _require_pair(f"{key}.username", remote.username, f"{key}.password", remote.password)
        if remote.access_key_id is not None and remote.username is not None:
            raise ConfigError(f"{key}: give either access_key_id/secret_access_key or username/password, not both")
        if remote.timeout <= timedelta(0):
            raise ConfigError(f"{key}.timeout: must be longer than zero")


def _validate_pull_through(p: PullThroughCacheSettings) -> None:
    for host, address in p.upstream_endpoints.items():
        key = f"pull_through_cache.upstream_endpoints.{_toml_key(host)}"
        if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", host):
            raise ConfigError(f"{key}: the key must be a host name (host[:port]), got {host!r}")
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^?#\s]*)?", address):
            raise ConfigError(f"{key}: expected an https://host[:port][/path] address, got {address!r}")
        if address.startswith("http://") and not p.allow_http_upstreams:
            raise ConfigError(f"{key}: an http:// address needs pull_through_cache.allow_http_upstreams = true")
    if p.upstream_timeout <= timedelta(0):
        raise ConfigError("pull_through_cache.upstream_timeout: must be longer than zero")


def _validate(s: Settings) -> None:
    if not _ACCOUNT_ID_RE.fullmatch(s.account_id):
        raise ConfigError(f"account_id: must be exactly 12 digits, got {s.account_id!r}")
    if not _REGION_RE.fullmatch(s.region):
        raise ConfigError(f"region: expected an AWS-style region like us-east-1, got {s.region!r}")
    _require_host("registry_domain", s.registry_domain)
    _require_host("public_host", s.public_host)
    if s.public_port is not None and not 1 <= s.public_port <= 65535:
        raise ConfigError(f"public_port: must be between 1 and 65535, got {s.public_port}")

    if not s.http.host.strip():
        raise ConfigError("http.host: must not be empty")
    if not 1 <= s.http.port <= 65535:
        raise ConfigError(f"http.port: must be between 1 and 65535, got {s.http.port}")
    if s.http.workers < 1:
        raise ConfigError(f"http.workers: must be at least 1, got {s.http.workers}")
    _require_pair("http.tls_cert", s.http.tls_cert, "http.tls_key", s.http.tls_key)

    if s.metadata.url is not None:
        _validate_metadata_url(s.metadata.url)

    s3 = s.storage.s3
    if s.storage.backend == "s3" and not s3.bucket:
        raise ConfigError('storage.s3.bucket: required when storage.backend is "s3"')
    if s3.bucket is not None and not s3.bucket.strip():
        raise ConfigError("storage.s3.bucket: must not be empty")
    if s3.endpoint_url is not None and not re.match(r"https?://[^/]", s3.endpoint_url):
        raise ConfigError(f"storage.s3.endpoint_url: expected an http(s):// URL, got {s3.endpoint_url!r}")
    _require_pair("storage.s3.access_key_id", s3.access_key_id, "storage.s3.secret_access_key", s3.secret_access_key)

    _require_pair(
        "auth.root_access_key_id",
        s.auth.root_access_key_id,
        "auth.root_secret_access_key",
        s.auth.root_secret_access_key,
    )

    for key, size in (
        ("limits.max_manifest_bytes", s.limits.max_manifest_bytes),
        ("limits.max_blob_bytes", s.limits.max_blob_bytes),
        ("limits.max_json_body_bytes", s.limits.max_json_body_bytes),
    ):
        if size < 1:
            raise ConfigError(f"{key}: must be positive, got {size}")

    zero = timedelta(0)
    for key, td in (
        ("auth.token_ttl", s.auth.token_ttl),
        ("uploads.expiry", s.uploads.expiry),
        ("gc.interval", s.gc.interval),
        ("jobs.lifecycle_interval", s.jobs.lifecycle_interval),
    ):
        if td <= zero:
            raise ConfigError(f"{key}: must be longer than zero")
    _validate_events(s.events)
    if s.gc.grace_period < zero:
        raise ConfigError("gc.grace_period: must not be negative")
    if s.archive.restore_delay < zero:
        raise ConfigError("archive.restore_delay: must not be negative")
    _validate_remotes(s)
    _validate_pull_through(s.pull_through_cache)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None


def load_settings(
    path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, object] | None = None,
) -> tuple[Settings, list[str]]:
    """Load and validate settings; return them with a list of human-readable warnings.

    `path` is the TOML file; when None, ``environ["MOORAGE_CONFIG"]`` is used if set and non-empty,
    otherwise no file is read. A file named either way must exist. `overrides` maps dotted keys to
    typed values or strings; a None value means "not given" and is skipped.
    """
    warnings: list[str] = []
    tree: dict[str, Any] = {}

    if path is None and environ.get("MOORAGE_CONFIG"):
        path = Path(environ["MOORAGE_CONFIG"])
    if path is not None:
        _ingest_table(Settings, _read_toml(path), "", tree, "toml")

    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NON_CONFIG_ENV_VARS:
            continue
        key = _ENV_TO_KEY.get(name)
        if key is None:
            warnings.append(f"unknown environment variable {name} ignored")
            continue
        _set_leaf(tree, key, _Raw(environ[name], "env"))

    for key, value in (overrides or {}).items():
        if key not in _LEAF_KEY_SET:
            raise ConfigError(f"{key}: unknown setting")
        if value is not None:
            _set_leaf(tree, key, _Raw(value, "override"))

    settings = _build(Settings, tree)
    _validate(settings)
    return settings, warnings


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def _redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:******@host/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:{REDACTED}@{hostport}{tail}"


def _to_plain(obj: object, *, redact: bool, for_json: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = _to_plain(value, redact=redact, for_json=for_json)
            continue
        if value is None:
            if for_json:
                out[f.name] = None
            continue
        if redact:
            how = f.metadata.get("redact")
            if how == "value":
                value = REDACTED
            elif how == "url-password" and isinstance(value, str):
                value = _redact_url(value)
        if isinstance(value, tuple):
            out[f.name] = [
                _to_plain(v, redact=redact, for_json=for_json) if dataclasses.is_dataclass(v) else v for v in value
            ]
        elif isinstance(value, timedelta):
            out[f.name] = value // timedelta(microseconds=1) if for_json else format_duration(value)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        else:
            out[f.name] = value
    return out


def settings_to_dict(settings: Settings, *, redact: bool = True) -> dict[str, object]:
    """The effective configuration as a nested dict of TOML-able values.

    Durations are formatted (``"24h"``), paths are strings, unset optional values are omitted, and
    with `redact` secrets become ``"******"`` (including the password in ``metadata.url``).
    """
    return _to_plain(settings, redact=redact, for_json=False)


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(_toml_string(v) for v in value) + "]"
    raise TypeError(f"{key}: cannot render {type(value).__name__} as TOML")


def render_toml(d: Mapping[str, object]) -> str:
    """Render a nested dict (tables, strings, ints, bools, lists of strings) as TOML text."""
    lines: list[str] = []

    def table(node: Mapping[str, object], path: list[str]) -> None:
        def is_array_of_tables(v: object) -> bool:
            return isinstance(v, list) and bool(v) and all(isinstance(i, Mapping) for i in v)

        scalars = [
            (k, v) for k, v in node.items() if not isinstance(v, Mapping) and not is_array_of_tables(v) and v != []
        ]
        subtables = [(k, v) for k, v in node.items() if isinstance(v, Mapping)]
        arrays = [(k, v) for k, v in node.items() if is_array_of_tables(v)]
        if path and (scalars or not subtables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{_toml_key(k)} = {_toml_value(v, '.'.join([*path, k]))}")
        for k, v in subtables:
            assert isinstance(v, Mapping)
            table(v, [*path, k])
        for k, v in arrays:
            assert isinstance(v, list)
            for item in v:
                lines.append("")
                lines.append("[[" + ".".join(_toml_key(p) for p in [*path, k]) + "]]")
                for ik, iv in item.items():
                    lines.append(f"{_toml_key(ik)} = {_toml_value(iv, '.'.join([*path, k, ik]))}")

    table(d, [])
    return "\n".join(lines) + "\n"


def settings_to_json(settings: Settings) -> str:
    """Lossless, unredacted JSON encoding for handing settings to worker processes."""
    return json.dumps(_to_plain(settings, redact=False, for_json=True), separators=(",", ":"))


def settings_from_json(text: str) -> Settings:
    """Inverse of `settings_to_json`. The settings are taken as they are (not re-validated)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"settings JSON: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("settings JSON: expected an object")
    tree: dict[str, Any] = {}
    _ingest_table(Settings, data, "", tree, "json")
    return _build(Settings, tree)
