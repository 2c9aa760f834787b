"""One typed settings object, read from the environment (and a ``.env`` file).

Unknown ``GARDA_*`` variables and invalid values fail at start with a clear message.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from errors import ConfigError

PREFIX = "GARDA_"


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str | None = field(default=None, repr=False)
    policy: Path | None = None
    topic_prefix: str = ""
    partitions: int = 6
    web_port: int = 8080
    web_host: str = "127.0.0.1"
    log_format: str = "json"
    log_level: str = "info"
    group_id: str = "garda"
    batch_size: int = 1000
    batch_within: float = 0.01
    fetch_max_wait_ms: int = 100
    session_timeout: float = 10.0
    timer_interval: float = 1.0
    failed_requests_per_minute: int = 60  # per client; 0 turns the limit off
    data_dir: Path = Path(".garda")
    receivers: Path | None = None  # the alerting hooks' receivers file (TOML)
    public_url: str | None = None  # base of links in notifications (ack_url); default: web address

    def __repr__(self) -> str:  # secrets hidden
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "database_url" and value:
                value = mask_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def topic(self, name: str) -> str:
        """Full topic name for a logical one, e.g. ``pmi.cases.v1``."""
        return f"{self.topic_prefix}{name}"

    @property
    def public_base_url(self) -> str:
        """Where people reach this API from a notification (``GARDA_PUBLIC_URL``)."""
        return (self.public_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" not in creds:
        return url  # no password to hide
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _field_type(f: dataclasses.Field) -> type:
    t = f.type if not isinstance(f.type, str) else f.type
    text = str(t)
    for name, cls in (("int", int), ("float", float), ("Path", Path), ("str", str)):
        if text.startswith(name):
            return cls
    return str


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError(f"{path}:{n}: expected NAME=value, got {line!r}")
        key, value = line.split("=", 1)
        values[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def load_settings(
    env: dict[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Build Settings from ``GARDA_*`` variables; ``.env`` values fill what the environment lacks."""
    merged: dict[str, str] = {}
    if dotenv is not None:
        merged.update({k: v for k, v in read_dotenv(dotenv).items() if k.startswith(PREFIX)})
    source = os.environ if env is None else env
    merged.update({k: v for k, v in source.items() if k.startswith(PREFIX)})
    # GARDA_TEST_* variables belong to the test suite, not to Garda.
    merged = {k: v for k, v in merged.items() if not k.startswith(PREFIX + "TEST_")}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    kwargs: dict[str, object] = {}
    for key, raw in merged.items():
        name = key[len(PREFIX) :].lower()
        if name not in fields:
            known = ", ".join(PREFIX + n.upper() for n in fields)
            raise ConfigError(f"unknown setting {key}; known settings: {known}")
        cast = _field_type(fields[name])
        if raw == "" and fields[name].default is None:
            continue
        try:
            kwargs[name] = cast(raw)
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a valid {cast.__name__}") from None
    settings = Settings(**kwargs)  # type: ignore[arg-type]
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if s.log_format not in ("json", "console"):
        raise ConfigError(f"GARDA_LOG_FORMAT must be json or console, not {s.log_format!r}")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"GARDA_LOG_LEVEL must be debug|info|warning|error, not {s.log_level!r}")
    if not 1 <= s.partitions <= 1024:
        raise ConfigError(f"GARDA_PARTITIONS must be between 1 and 1024, not {s.partitions}")
    if not 0 <= s.web_port <= 65535:
        raise ConfigError(f"GARDA_WEB_PORT must be a TCP port, not {s.web_port}")
    if s.failed_requests_per_minute < 0:
        raise ConfigError("GARDA_FAILED_REQUESTS_PER_MINUTE must be 0 (no limit) or more")
    if s.batch_size < 1:
        raise ConfigError("GARDA_BATCH_SIZE must be at least 1")
    if s.policy is not None and not s.policy.is_file():
        raise ConfigError(f"GARDA_POLICY={s.policy}: no such file")
    if s.receivers is not None and not s.receivers.is_file():
        raise ConfigError(f"GARDA_RECEIVERS={s.receivers}: no such file")
    if s.public_url is not None and not s.public_url.startswith(("http://", "https://")):
        raise ConfigError("GARDA_PUBLIC_URL must start with http:// or https://")
    if s.database_url is not None and not s.database_url.startswith(
        ("postgres://", "postgresql://")
    ):
        raise ConfigError("GARDA_DATABASE_URL must start with postgresql:// or postgres://")
