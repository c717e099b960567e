"""One Alembic history for SQLite and PostgreSQL that matches the models exactly."""

from __future__ import annotations

import asyncio
from typing import Any

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
