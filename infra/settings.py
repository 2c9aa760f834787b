"""One typed settings object, read from the environment (and a ``.env`` file).

``Settings`` is a ``pydantic-settings`` model: typed fields, validated and frozen. Rules
decided where the design is silent:

- ``Settings(...)`` holds exactly what it is given (and the defaults); it never reads the
  environment by itself, so a test or a benchmark that builds one is not changed by the
  ``GARDA_*`` variables of the shell that runs it. ``load_settings`` is the one place that
  reads them (``os.environ``, or a given mapping, as for a worker child), with ``.env``
  (parsed by ``python-dotenv``, without ``${VAR}`` expansion) filling what the environment
  lacks.
- An unknown ``GARDA_*`` variable fails at start, naming it and the known ones (a typo must
  not silently leave a default in force); ``GARDA_TEST_*`` variables belong to the test
  suite and are ignored. An invalid value fails naming the variable. An empty value of an
  optional setting means "not set".
- Files named by settings (``GARDA_POLICY``, ``GARDA_RECEIVERS``) are checked to exist by
  ``load_settings`` only: code may build Settings for a file it writes afterwards.
- ``repr`` masks the database password. ``settings.replace(name=value, ...)`` is the
  validated copy with changes (``dataclasses.replace`` of the dataclass this was).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from errors import ConfigError

PREFIX = "GARDA_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid")

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str | None = Field(default=None, repr=False)
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
    # While urgent work is about, a bulk transaction takes as many records as recent ones
    # handled in this time (``streams.lanes``); 0: fixed steps of 50 records.
    bulk_step_seconds: float = Field(default=0.05, ge=0)
    # Tansu holds an empty fetch for its whole wait even when data arrives: the wait is a
    # hop's worst added delay (100 ms: incident -> case p50 157, p99 534 ms; 25 ms: 105 and
    # 228 ms, quick latency run at load 7.6).
    fetch_max_wait_ms: int = 25
    session_timeout: float = 10.0
    timer_interval: float = 1.0
    failed_requests_per_minute: int = 60  # per client; 0 turns the limit off
    data_dir: Path = Path(".garda")
    receivers: Path | None = None  # the alerting hooks' receivers file (TOML)
    public_url: str | None = None  # base of links in notifications (ack_url); default: web address

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: the environment is read by load_settings (see above).
        return (init_settings,)

    def __repr_args__(self) -> Any:  # secrets hidden
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url" and value:
                value = mask_url(value)
            yield name, value

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` applied."""
        return type(self)(**{**self.model_dump(), **changes})

    def topic(self, name: str) -> str:
        """Full topic name for a logical one, e.g. ``pmi.cases.v1``."""
        return f"{self.topic_prefix}{name}"

    @property
    def public_base_url(self) -> str:
        """Where people reach this API from a notification (``GARDA_PUBLIC_URL``)."""
        return (self.public_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        if v not in ("json", "console"):
            raise ValueError(f"GARDA_LOG_FORMAT must be json or console, not {v!r}")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"GARDA_LOG_LEVEL must be debug|info|warning|error, not {v!r}")
        return v

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, v: int) -> int:
        if not 1 <= v <= 1024:
            raise ValueError(f"GARDA_PARTITIONS must be between 1 and 1024, not {v}")
        return v

    @field_validator("web_port")
    @classmethod
    def _web_port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError(f"GARDA_WEB_PORT must be a TCP port, not {v}")
        return v

    @field_validator("failed_requests_per_minute")
    @classmethod
    def _failed_requests(cls, v: int) -> int:
        if v < 0:
            raise ValueError("GARDA_FAILED_REQUESTS_PER_MINUTE must be 0 (no limit) or more")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int) -> int:
        if v < 1:
            raise ValueError("GARDA_BATCH_SIZE must be at least 1")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("GARDA_PUBLIC_URL must start with http:// or https://")
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgres://", "postgresql://")):
            raise ValueError("GARDA_DATABASE_URL must start with postgresql:// or postgres://")
        return v


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


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables of a ``.env`` file (none when it does not exist)."""
    if not path.is_file():
        return {}
    values: dict[str, Any] = {}
    for key, value in dotenv_values(path, interpolate=False).items():
        if value is None:
            raise ConfigError(f"{path}: expected NAME=value, got {key!r}")
        values[key] = value
    return values


# pydantic's error types for a value that is not of the field's type -> the type's name
_TYPE_ERRORS = {"int_parsing": "int", "float_parsing": "float", "path_type": "Path"}


def _config_error(e: ValidationError) -> ConfigError:
    """The first validation error, as one sentence naming the variable."""
    err = e.errors()[0]
    name = PREFIX + str(err["loc"][0]).upper() if err["loc"] else "settings"
    if err["type"] == "value_error":
        return ConfigError(str(err["ctx"]["error"]))
    if err["type"] == "extra_forbidden":
        known = ", ".join(PREFIX + n.upper() for n in Settings.model_fields)
        return ConfigError(f"unknown setting {name}; known settings: {known}")
    kind = _TYPE_ERRORS.get(err["type"])
    if kind is not None:
        return ConfigError(f"{name}={err['input']!r} is not a valid {kind}")
    return ConfigError(f"{name}={err['input']!r}: {err['msg']}")


def load_settings(
    env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Build Settings from ``GARDA_*`` variables; ``.env`` values fill what the environment lacks."""
    merged: dict[str, str] = {}
    if dotenv is not None:
        merged.update({k: v for k, v in read_dotenv(dotenv).items() if k.startswith(PREFIX)})
    source = os.environ if env is None else env
    merged.update({k: v for k, v in source.items() if k.startswith(PREFIX)})
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    for key, raw in merged.items():
        if key.startswith(PREFIX + "TEST_"):
            continue  # the test suite's, not Garda's
        name = key[len(PREFIX) :].lower()
        if name in fields and raw == "" and fields[name].default is None:
            continue  # an optional setting left empty: not set
        values[name] = raw
    try:
        settings = Settings(**values)
    except ValidationError as e:
        raise _config_error(e) from None
    _check_files(settings)
    return settings


def _check_files(s: Settings) -> None:
    if s.policy is not None and not s.policy.is_file():
        raise ConfigError(f"GARDA_POLICY={s.policy}: no such file")
    if s.receivers is not None and not s.receivers.is_file():
        raise ConfigError(f"GARDA_RECEIVERS={s.receivers}: no such file")
