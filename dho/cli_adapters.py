"""`dho adapters`: list the catalogue, check it with its examples, try a payload."""

from __future__ import annotations

from pathlib import Path

import click

from dho import jsonutil
from dho.cli_common import load_settings
from dho.ingest.pipeline import ReferenceData


@click.group()
def adapters() -> None:
    """Device formats: one adapter file each under adapters/."""


@adapters.command("list")
def adapters_list() -> None:
    """Every adapter with its format; broken ones with the reason they are disabled."""
    reference = _reference()
    for name, adapter in sorted(reference.adapters.adapters.items()):
        click.echo(f"{name:<20} {adapter.format:<6} {adapter.description}")
    for name, error in sorted(reference.adapters.broken.items()):
        click.echo(f"{name:<20} BROKEN {error}")


@adapters.command("check")
def adapters_check() -> None:
    """Validate every adapter and run every example against its expectation."""
    from dho.ingest.adapter_check import check_catalogue

    settings = load_settings()
    reference = _reference()
    report = check_catalogue(Path(settings.adapters_dir), reference)
    for problem in report.problems:
        click.echo(f"FAIL {problem}", err=True)
    click.echo(
        f"{report.adapters} adapters, {report.examples} examples: "
        + ("all as expected" if report.ok else f"{len(report.problems)} problem(s)")
    )
    if not report.ok:
        raise SystemExit(1)


@adapters.command("try")
@click.argument("adapter")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def adapters_try(adapter: str, payload: Path) -> None:
    """Show what PAYLOAD would become through ADAPTER; nothing is stored."""
    from dho.ingest.adapter_check import try_payload

    reference = _reference()
    if adapter not in reference.adapters.names():
        raise click.ClickException(
            f"no adapter named {adapter!r} (known: {', '.join(reference.adapters.names())})"
        )
    shown = try_payload(adapter, payload.read_bytes(), reference)
    click.echo(jsonutil.dumps_pretty(shown))
    click.echo(
        "Patient and device are found in the registry at ingest; here they are placeholders.",
        err=True,
    )


def _reference() -> ReferenceData:
    return ReferenceData.load(load_settings())
