"""One Alembic history for SQLite and PostgreSQL that matches the models exactly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from dho.db import migrate
from dho.db.base import Base
from dho.settings import Settings


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrated_schema_is_exactly_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        differences = await conn.run_sync(_differences)
    assert differences == []


async def test_every_migration_downgrades_and_upgrades_again(
    settings: Settings, engine: AsyncEngine
) -> None:
    config = migrate.alembic_config(settings)
    await _run(command.downgrade, config, "base")
    async with engine.connect() as conn:
        assert (
            await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
            is None
        )
    await _run(command.upgrade, config, "head")
    await migrate.check_current(engine, settings)
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


async def _run(step: Any, config: Any, revision: str) -> None:
    await asyncio.to_thread(step, config, revision)


async def test_0003_spells_device_identifiers_as_the_decoders_do(
    settings: Settings, engine: AsyncEngine
) -> None:
    """A device stored as `001c05fffe0a0001` before 0003 still matches its readings after."""
    from sqlalchemy import text

    config = migrate.alembic_config(settings)
    await _run(command.downgrade, config, "0002")
    system = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO device (id, identifier_system, identifier_value, resource, updated_at) "
                "VALUES ('d-1', :s, '001c05fffe0a0001', '{}', CURRENT_TIMESTAMP), "
                "('d-2', :s, 'not-an-eui64', '{}', CURRENT_TIMESTAMP)"
            ),
            {"s": system},
        )
        await conn.execute(
            text(
                "INSERT INTO patient (id, national_id, national_id_system, family_name, "
                "given_name, resource, updated_at) VALUES ('p-1', '14834641411', 'x', 'H', 'I', "
                "'{}', CURRENT_TIMESTAMP)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO raw_message (id, transport, topic, gateway_id, adapter, received_at, "
                "payload) VALUES (1, 'http', 't', 'g', 'dho-json', CURRENT_TIMESTAMP, :p)"
            ),
            {"p": b"{}"},
        )
        await conn.execute(
            text(
                "INSERT INTO observation (id, identity, patient_id, device_id, type, code, "
                "effective, last_updated, version_id, value_digest, raw_message_id, resource) "
                "VALUES ('o-1', :identity, 'p-1', 'd-1', 'heart-rate', '8867-4', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, 'x', 1, '{}')"
            ),
            {"identity": f"{system}|001c05fffe0a0001|heart-rate|1795500000000"},
        )
    await _run(command.upgrade, config, "head")
    async with engine.connect() as conn:
        values = dict((await conn.execute(text("SELECT id, identifier_value FROM device"))).all())
        identity = await conn.scalar(text("SELECT identity FROM observation"))
    assert values == {"d-1": "00-1C-05-FF-FE-0A-00-01", "d-2": "not-an-eui64"}
    assert identity == f"{system}|00-1C-05-FF-FE-0A-00-01|heart-rate|1795500000000"
    # Imported again, in its old spelling: the same device, with its old id.
    from datetime import UTC, datetime

    from dho.db.engine import session_factory
    from tests.support import PATIENT_A, register_device

    when = datetime(2026, 1, 1, tzinfo=UTC)
    await register_device(session_factory(engine), "001c05fffe0a0001", [(PATIENT_A, when, None)])
    async with engine.connect() as conn:
        devices = (await conn.execute(text("SELECT id FROM device ORDER BY id"))).scalars().all()
        assigned = await conn.scalar(text("SELECT device_id FROM device_assignment"))
    assert devices == ["d-1", "d-2"] and assigned == "d-1"


@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgresql_compresses_resources_and_payloads_with_lz4(engine: AsyncEngine) -> None:
    from sqlalchemy import text

    large = {
        ("observation", "resource"),
        ("observation_version", "resource"),
        ("raw_message", "payload"),
        ("outbox_delivery", "payload"),
        ("questionnaire_response", "resource"),
    }
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname, a.attname, a.attcompression::text FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.relname = ANY(:tables) AND a.attnum > 0 AND NOT a.attisdropped"
            ),
            {"tables": sorted({table for table, _ in large})},
        )
        methods = {(table, column): method for table, column, method in rows}
    assert {key: methods[key] for key in large} == dict.fromkeys(large, "l")
    assert methods[("observation", "patient_id")] == ""  # only the large values
