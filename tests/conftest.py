"""Shared fixtures: real databases (SQLite, PostgreSQL) and real MQTT brokers.

PostgreSQL and Mosquitto are required when CI=true: a missing service fails the run.
Each test session gets its own PostgreSQL database, so parallel runs never collide.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dho.db import migrate
from dho.db.base import Base
from dho.db.engine import create_engine, session_factory
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.settings import Settings

IN_CI = os.environ.get("CI", "").lower() == "true"

# Fuzzing: a bounded, repeatable profile in CI; more examples on demand (HYPOTHESIS_PROFILE=deep).
hypothesis_settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
hypothesis_settings.register_profile(
    "deep", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck)
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
PG_ADMIN_URL = os.environ.get("DHO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MOSQUITTO_URL = os.environ.get("DHO_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def require(condition: bool, what: str) -> None:
    """Fail under CI, skip elsewhere, when a real service the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true")
    pytest.skip(f"{what} is not available here")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for tests: nothing read from the environment or a .env file."""
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dho.sqlite3'}",
        "mqtt_enabled": False,
        "allow_synthetic_ids": True,
        "batch_flush_ms": 5,
        "outbox_poll_s": 0.05,
        "outbox_backoff_base_s": 0.05,
        "outbox_backoff_max_s": 0.2,
        "mqtt_client_id": f"dho-test-{uuid.uuid4().hex[:8]}",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# ---------------------------------------------------------------- PostgreSQL


@contextmanager
def scratch_pg_database(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own (SQLAlchemy URL), dropped afterwards."""
    require(port_open("127.0.0.1", 5432), "PostgreSQL on 127.0.0.1:5432")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session; dropped afterwards."""
    with scratch_pg_database("dho_test") as url:
        migrate.upgrade(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once is enough)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    migrate.upgrade(Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{path}"))  # type: ignore[call-arg]
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of the parametrised backend."""
    if backend == "postgres":
        url: str = request.getfixturevalue("pg_database")
        asyncio.run(_truncate_all(url))
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "dho.sqlite3"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


async def _truncate_all(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return base_settings(tmp_path, database_url=database_url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(settings)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def pipeline(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Pipeline:
    """The ingest pipeline on the test database, without a transport."""
    return Pipeline(settings, sessions, ReferenceData.load(settings))


# ---------------------------------------------------------------- MQTT


@pytest.fixture(scope="session")
def mosquitto_url() -> str:
    """The machine's Mosquitto (127.0.0.1:1883 unless DHO_TEST_MQTT_URL says otherwise)."""
    from urllib.parse import urlsplit

    parts = urlsplit(MOSQUITTO_URL)
    require(
        port_open(parts.hostname or "127.0.0.1", parts.port or 1883),
        f"Mosquitto at {MOSQUITTO_URL}",
    )
    return MOSQUITTO_URL


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    require(path is not None, "the mosquitto binary")
    assert path is not None
    return path
