"""Run the app under uvicorn."""

from __future__ import annotations

import uvicorn

from dho.app import create_app
from dho.settings import Settings


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


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; exit non-zero when start-up fails."""
    server = build_server(settings)
    server.run()
    if not server.started:
        raise SystemExit(1)
