"""Typed settings: environment variables with the prefix DHO_, or a .env file; fail fast."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_PACKAGE_DATA = Path(__file__).resolve().parent / "_data"


def _data_dir(name: str) -> Path:
    """A data folder from the installed wheel (package data) or else the source tree."""
    packaged = _PACKAGE_DATA / name
    return packaged if packaged.is_dir() else _SOURCE_ROOT / name


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_client_id() -> str:
    return f"dho-{socket.gethostname()}"[:64]


class Settings(BaseSettings):
    """Every setting of the service. Each field is read from `DHO_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="DHO_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = "sqlite+aiosqlite:///./var/dho.sqlite3"
    database_auto_migrate: bool | None = Field(
        default=None,
        description="Migrate the schema on start; default: yes for SQLite, no for PostgreSQL.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_embedded: bool = Field(
        default=True,
        description="Start the in-process broker when nothing answers on the MQTT port.",
    )
    mqtt_enabled: bool = True
    mqtt_client_id: str = Field(default_factory=_default_client_id, min_length=1, max_length=64)
    mqtt_topic_prefix: str = "dho/v1"
    mqtt_shared_group: str = Field(
        default="",
        description="Subscribe as a member of $share/<group>/ so several replicas split the load.",
    )
    mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    mqtt_receive_maximum: int = Field(default=1000, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    read_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for the read APIs (FHIR, alerts); required off loopback.",
    )
    admin_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for operator actions (quarantine re-drive and discard); "
        "without it they need the read token.",
    )
    http_ingest_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="How long an ingest request waits for its commit."
    )
    max_message_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)

    max_measurements_per_message: int = Field(
        default=1000, ge=1, le=100_000, description="More in one message: 413 / `oversized`."
    )
    gateway_rate_per_s: float = Field(
        default=50.0,
        ge=0,
        le=100_000,
        description="HTTP messages per second each gateway may send (0: no limit); 429 beyond.",
    )
    gateway_rate_burst: int = Field(
        default=200, ge=1, le=1_000_000, description="Messages a gateway may send at once."
    )

    clock_skew_max_s: int = Field(
        default=300, ge=0, le=86_400, description="How far ahead of receipt a device clock may be."
    )
    late_after_s: int = Field(
        default=3600,
        ge=0,
        le=30 * 86_400,
        description="A reading received this long after it was measured is late: no acute alert.",
    )
    device_time_zone: str = Field(
        default="Europe/Oslo",
        description="The zone a device time without a UTC offset is read in (flagged).",
    )

    default_plan: str = Field(
        default="general",
        pattern=r"^[a-z][a-z0-9-]*$",
        description="The standard plan (config/plans) judging patients who have no plan yet.",
    )
    missing_check_interval_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="How often the scheduler looks for closed measuring windows left empty.",
    )
    history_cache_patients: int = Field(
        default=2000,
        ge=0,
        le=1_000_000,
        description=(
            "How many patients' recent readings, plan versions and pauses each process "
            "keeps for the rules between batches (0: read them for every batch)."
        ),
    )
    gc_threshold: int = Field(
        default=50_000,
        ge=100,
        le=10_000_000,
        description=(
            "The garbage collector's first threshold in a service process: container "
            "objects allocated between collections (CPython's default is 700)."
        ),
    )
    device_silent_after_s: int = Field(
        default=86_400,
        ge=60,
        le=30 * 86_400,
        description="A device (or gateway) this long without any data is silent: an outage.",
    )

    batch_max_size: int = Field(default=200, ge=1, le=10_000)
    batch_flush_ms: int = Field(default=20, ge=1, le=10_000)

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    outbox_poll_s: float = Field(default=1.0, gt=0, le=60)
    outbox_max_attempts: int = Field(default=12, ge=1, le=100)
    outbox_backoff_base_s: float = Field(default=5.0, gt=0, le=3600)
    outbox_backoff_max_s: float = Field(default=900.0, gt=0, le=86_400)
    outbox_lease_s: float = Field(default=60.0, gt=0, le=3600)

    allow_synthetic_ids: bool = Field(
        default=False, description="Accept synthetic (test) national identity numbers."
    )
    base_url: str = Field(
        default="http://127.0.0.1:8080", description="Public base URL used in FHIR links."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    adapters_dir: Path = Field(default_factory=lambda: _data_dir("adapters"))
    fhir_dir: Path = Field(default_factory=lambda: _data_dir("fhir"))
    config_dir: Path = Field(default_factory=lambda: _data_dir("config"))

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "database_url must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return url

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("mqtt_url must look like mqtt://host:port or mqtts://host:port")
        return url

    @field_validator("webhook_url", "base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/") if url else url

    @field_validator("device_time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ValueError, KeyError, OSError) as exc:
            raise ValueError(f"{name!r} is not an IANA time zone such as Europe/Oslo") from exc
        return name

    @field_validator("adapters_dir", "fhir_dir", "config_dir")
    @classmethod
    def _existing_dir(cls, path: Path) -> Path:
        if not path.is_dir():
            raise ValueError(f"{path} is not a directory")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.outbox_backoff_max_s < self.outbox_backoff_base_s:
            raise ValueError("outbox_backoff_max_s must not be below outbox_backoff_base_s")
        if self.read_api_token is None and not is_loopback(self.http_host):
            raise ValueError(
                "http_host is not a loopback address: set DHO_READ_API_TOKEN so patient data "
                "is not readable without a token"
            )
        if self.mqtt_shared_group and (
            "/" in self.mqtt_shared_group or "+" in self.mqtt_shared_group
        ):
            raise ValueError("mqtt_shared_group must not contain '/' or '+'")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def auto_migrate(self) -> bool:
        if self.database_auto_migrate is None:
            return self.is_sqlite
        return self.database_auto_migrate

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        parts = urlsplit(self.mqtt_url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)


def unknown_environment_names(environ: Iterable[str]) -> list[str]:
    """`DHO_*` variables that name no setting: almost always a typo worth failing on."""
    known = {f"DHO_{name.upper()}" for name in Settings.model_fields}
    return sorted(
        {
            name
            for name in environ
            if name.upper().startswith("DHO_")
            and not name.upper().startswith("DHO_TEST_")
            and name.upper() not in known
        }
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
