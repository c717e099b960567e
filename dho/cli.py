"""The `dho` command: serve, demo, db, registry, gateways."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click
from dotenv import dotenv_values
from pydantic import ValidationError

from dho.settings import Settings, unknown_environment_names


def _settings(**overrides: object) -> Settings:
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


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "amqtt", "transitions", "aiosqlite", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group()
def main() -> None:
    """DHO integration service: home-monitoring measurements in, FHIR and alerts out."""


@main.command()
def serve() -> None:
    """Run the service (HTTP API, MQTT ingest, outbox) with settings from DHO_* variables."""
    settings = _settings()
    _logging(settings)
    from dho.server import run

    run(settings)


@main.command()
@click.option("--interval", default=5.0, show_default=True, help="Seconds between readings.")
def demo(interval: float) -> None:
    """Serve with a demo registry and simulated patients streaming over MQTT."""
    settings = _settings(allow_synthetic_ids=True)
    _logging(settings)
    from dho.demo import run_demo

    run_demo(settings, interval_s=interval)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this version's schema."""
    from dho.db import migrate

    settings = _settings()
    migrate.upgrade(settings)
    click.echo(f"database at {migrate.head_revision(settings)}")


@main.group()
def registry() -> None:
    """Organisations, patients, care teams, devices."""


@registry.command("import")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def registry_import(bundle: Path) -> None:
    """Load a FHIR R4 batch/transaction Bundle; re-importing the same file changes nothing."""
    from dho.commands import import_registry

    settings = _settings()
    try:
        report = asyncio.run(import_registry(settings, bundle))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report)


@registry.command("organizations")
def registry_organizations() -> None:
    """List organisations with the ids other commands take (e.g. gateways create)."""
    from dho.commands import list_organizations

    for line in asyncio.run(list_organizations(_settings())):
        click.echo(line)


@main.group()
def gateways() -> None:
    """Gateways that send measurements."""


@gateways.command("create")
@click.argument("name")
@click.option(
    "--organization",
    "organizations",
    multiple=True,
    required=True,
    help="Id of an organisation the gateway serves (repeat for several).",
)
@click.option("--display-name", default=None, help="Human-readable name (default: NAME).")
def gateways_create(name: str, organizations: tuple[str, ...], display_name: str | None) -> None:
    """Create gateway NAME (used in MQTT topics) and print its API key once."""
    from dho.commands import create_gateway

    settings = _settings()
    try:
        key = asyncio.run(create_gateway(settings, name, display_name or name, list(organizations)))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"gateway {name} created. API key (shown only now, store it safely):")
    click.echo(key)
