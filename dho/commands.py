"""What the CLI's database commands do, each in one transaction."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from dho.db.engine import create_engine, session_factory
from dho.db.models import Organization
from dho.registry.gateways import create_gateway as create_gateway_row
from dho.registry.gateways import set_mqtt_receipts
from dho.registry.importer import load_bundle_file
from dho.settings import Settings


async def import_registry(settings: Settings, bundle: Path) -> str:
    """Import a registry Bundle file; returns the report's summary."""
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session, session.begin():
            report = await load_bundle_file(
                session, bundle, allow_synthetic=settings.allow_synthetic_ids
            )
        return report.summary()
    finally:
        await engine.dispose()


async def create_gateway(
    settings: Settings,
    gateway_id: str,
    name: str,
    organizations: list[str],
    *,
    mqtt_receipts: bool = False,
) -> str:
    """Create a gateway; returns its API key."""
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await create_gateway_row(
                session, gateway_id, name, organizations, mqtt_receipts=mqtt_receipts
            )
    finally:
        await engine.dispose()


async def set_gateway_receipts(settings: Settings, gateway_id: str, on: bool) -> None:
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session, session.begin():
            await set_mqtt_receipts(session, gateway_id, on)
    finally:
        await engine.dispose()


async def list_organizations(settings: Settings) -> list[str]:
    """One line per organisation: id, kind, numbers, name."""
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.scalars(select(Organization).order_by(Organization.name))).all()
    finally:
        await engine.dispose()
    return [
        f"{o.id}  {o.kind:<16} org {o.org_number or '-':<9}  "
        f"municipality {o.municipality_number or '-':<4}  {o.name}"
        for o in rows
    ]
