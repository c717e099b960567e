"""Start-up: schema checks, the embedded broker's port rules, settings that fail fast."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect

from dho import runtime
from dho.db import migrate
from dho.db.engine import create_engine
from dho.ingest.embedded_broker import BrokerPortTaken, ensure_broker, probe
from dho.settings import Settings, unknown_environment_names
from tests.conftest import base_settings, free_port, scratch_pg_database


def _run_dho(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DHO_")}
    return subprocess.run(
        [sys.executable, "-m", "dho", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A PostgreSQL database with no schema at all."""
    with scratch_pg_database("dho_empty") as url:
        yield url


def test_postgres_with_an_old_schema_refuses_to_start_and_names_the_command(
    empty_pg_database: str, tmp_path: Path
) -> None:
    result = _run_dho(
        ["serve"],
        {"DHO_DATABASE_URL": empty_pg_database, "DHO_MQTT_ENABLED": "false"},
        tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "run `dho db upgrade`" in lines[0]


def test_db_upgrade_then_the_schema_is_current(empty_pg_database: str, tmp_path: Path) -> None:
    result = _run_dho(["db", "upgrade"], {"DHO_DATABASE_URL": empty_pg_database}, tmp_path)
    assert result.returncode == 0, result.stderr
    settings = base_settings(tmp_path, database_url=empty_pg_database)

    async def check() -> None:
        engine = create_engine(settings)
        try:
            await migrate.check_current(engine, settings)
        finally:
            await engine.dispose()

    asyncio.run(check())


async def test_sqlite_default_migrates_itself_on_start(tmp_path: Path) -> None:
    path = tmp_path / "var" / "fresh.sqlite3"
    settings = base_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{path}")
    rt = await runtime.start(settings)
    try:
        async with rt.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert {"observation", "raw_message", "quarantine", "outbox_delivery"} <= set(tables)
        await migrate.check_current(rt.engine, settings)
    finally:
        await runtime.stop(rt)


@pytest.fixture
def http_squatter() -> Iterator[int]:
    """Something that is not an MQTT broker holding a port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_port_held_by_something_else_fails_with_one_line(
    http_squatter: int, tmp_path: Path
) -> None:
    result = _run_dho(
        ["serve"],
        {
            "DHO_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'd.sqlite3'}",
            "DHO_MQTT_URL": f"mqtt://127.0.0.1:{http_squatter}",
            "DHO_HTTP_PORT": str(free_port()),
        },
        tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not an MQTT broker" in lines[0] and "DHO_MQTT_URL" in lines[0]


async def test_an_answering_broker_is_used_and_said_so(
    mosquitto_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = base_settings(tmp_path, mqtt_enabled=True, mqtt_url=mosquitto_url)
    with caplog.at_level(logging.INFO, logger="dho.ingest.embedded_broker"):
        assert await ensure_broker(settings) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"using the MQTT broker already answering on {settings.mqtt_host}:{settings.mqtt_port}"
    ]


async def test_a_free_port_gets_the_embedded_broker(tmp_path: Path) -> None:
    port = free_port()
    settings = base_settings(tmp_path, mqtt_enabled=True, mqtt_url=f"mqtt://127.0.0.1:{port}")
    assert await probe("127.0.0.1", port) == "free"
    broker = await ensure_broker(settings)
    assert broker is not None
    try:
        assert await probe("127.0.0.1", port) == "mqtt"
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        await broker.stop()


async def test_probe_tells_other_services_apart(http_squatter: int, tmp_path: Path) -> None:
    assert await probe("127.0.0.1", http_squatter) == "other"
    settings = base_settings(
        tmp_path, mqtt_enabled=True, mqtt_url=f"mqtt://127.0.0.1:{http_squatter}"
    )
    with pytest.raises(BrokerPortTaken, match="DHO_MQTT_URL"):
        await ensure_broker(settings)


def test_settings_fail_fast_on_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="database_url"):
        base_settings(tmp_path, database_url="mysql://x")
    with pytest.raises(ValidationError, match="mqtt_url"):
        base_settings(tmp_path, mqtt_url="http://broker")
    with pytest.raises(ValidationError, match="DHO_READ_API_TOKEN"):
        base_settings(tmp_path, http_host="0.0.0.0")
    with pytest.raises(ValidationError):
        base_settings(tmp_path, batch_flush_ms=0)
    assert base_settings(tmp_path, http_host="0.0.0.0", read_api_token="t" * 32).http_host


def test_unknown_dho_variables_are_refused(tmp_path: Path) -> None:
    assert unknown_environment_names(
        {"DHO_DATABSE_URL": "x", "DHO_HTTP_PORT": "1", "PATH": "/"}
    ) == ["DHO_DATABSE_URL"]
    result = _run_dho(["db", "upgrade"], {"DHO_DATABSE_URL": "sqlite+aiosqlite:///x"}, tmp_path)
    assert result.returncode != 0
    assert "DHO_DATABSE_URL" in result.stderr


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DHO_BATCH_MAX_SIZE=77\nPOSTGRES_PASSWORD=not-ours\n", encoding="utf-8")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.batch_max_size == 77
