"""The `dho` command: serve, demo, db, registry, gateways, adapters, quarantine, replay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from dho.cli_common import load_settings, setup_logging


@click.group()
def main() -> None:
    """DHO integration service: home-monitoring measurements in, FHIR and alerts out."""


@main.command()
def serve() -> None:
    """Run the service (HTTP API, MQTT ingest, outbox) with settings from DHO_* variables."""
    settings = load_settings()
    setup_logging(settings)
    from dho.server import run

    run(settings)


@main.command()
@click.option("--interval", default=5.0, show_default=True, help="Seconds between readings.")
def demo(interval: float) -> None:
    """Serve with a demo registry and simulated patients streaming over MQTT."""
    settings = load_settings(allow_synthetic_ids=True)
    setup_logging(settings)
    from dho.demo import run_demo

    run_demo(settings, interval_s=interval)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this version's schema."""
    from dho.db import migrate

    settings = load_settings()
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

    settings = load_settings()
    try:
        report = asyncio.run(import_registry(settings, bundle))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report)


@registry.command("organizations")
def registry_organizations() -> None:
    """List organisations with the ids other commands take (e.g. gateways create)."""
    from dho.commands import list_organizations

    for line in asyncio.run(list_organizations(load_settings())):
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
@click.option(
    "--mqtt-receipts", is_flag=True, help="Publish a receipt for every MQTT message it sends."
)
def gateways_create(
    name: str, organizations: tuple[str, ...], display_name: str | None, mqtt_receipts: bool
) -> None:
    """Create gateway NAME (used in MQTT topics) and print its API key once."""
    from dho.commands import create_gateway

    settings = load_settings()
    try:
        key = asyncio.run(
            create_gateway(
                settings,
                name,
                display_name or name,
                list(organizations),
                mqtt_receipts=mqtt_receipts,
            )
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"gateway {name} created. API key (shown only now, store it safely):")
    click.echo(key)


@gateways.command("receipts")
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
def gateways_receipts(name: str, state: str) -> None:
    """Publish receipts for every MQTT message of gateway NAME (for MQTT 3.1.1 clients)."""
    from dho.commands import set_gateway_receipts

    try:
        asyncio.run(set_gateway_receipts(load_settings(), name, state == "on"))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"gateway {name}: MQTT receipts {state}")


def _add_subcommands() -> None:
    from dho.cli_adapters import adapters
    from dho.cli_plans import patients, plans
    from dho.cli_quarantine import quarantine, replay_command

    main.add_command(adapters)
    main.add_command(plans)
    main.add_command(patients)
    main.add_command(quarantine)
    main.add_command(replay_command)


_add_subcommands()
