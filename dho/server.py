"""Run the app under uvicorn, after checks that turn the usual start-up failures into one line."""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from sqlalchemy.exc import DBAPIError

from dho.app import create_app
from dho.db import migrate
from dho.db.engine import create_engine
from dho.ingest.embedded_broker import BrokerPortTaken, broker_port_state
from dho.settings import Settings, is_loopback


class StartupError(RuntimeError):
    """The service cannot start; the message says what to do."""


def build_server(settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        lifespan="on",
    )
    return uvicorn.Server(config)


async def preflight(settings: Settings) -> None:
    """Database reachable and at the current schema (unless it migrates itself); MQTT port sane."""
    engine = create_engine(settings)
    try:
        if not settings.auto_migrate:
            await migrate.check_current(engine, settings)
    except migrate.SchemaOutOfDate as exc:
        raise StartupError(str(exc)) from exc
    except (DBAPIError, OSError) as exc:
        raise StartupError(f"cannot reach the database: {exc}") from exc
    finally:
        await engine.dispose()
    if settings.mqtt_enabled and settings.mqtt_embedded and is_loopback(settings.mqtt_host):
        try:
            await broker_port_state(settings)
        except BrokerPortTaken as exc:
            raise StartupError(str(exc)) from exc


def preflight_or_exit(settings: Settings) -> None:
    """Run the pre-flight checks; on failure print one line and exit with status 2."""
    try:
        asyncio.run(preflight(settings))
    except StartupError as exc:
        print(f"dho: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; exit non-zero, with one line, when start-up fails."""
    preflight_or_exit(settings)
    server = build_server(settings)
    server.run()
    if not server.started:
        raise SystemExit(1)
