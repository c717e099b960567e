"""What every `dho` command shares: settings read and checked, logging set up."""

from __future__ import annotations

import logging
import os
import sys

import click
from dotenv import dotenv_values
from pydantic import ValidationError

from dho.settings import Settings, unknown_environment_names


def load_settings(**overrides: object) -> Settings:
    unknown = unknown_environment_names([*dotenv_values(".env"), *os.environ])
    if unknown:
        raise click.ClickException(
            f"unknown setting(s) {', '.join(unknown)}: see docs/operators.md for the names"
        )
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'DHO_' + '_'.join(str(p) for p in err['loc']).upper() if err['loc'] else 'settings'}"
            f": {err['msg']}"
            for err in exc.errors()
        )
        raise click.ClickException(f"invalid settings: {problems}") from exc


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "amqtt", "transitions", "aiosqlite", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
