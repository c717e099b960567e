"""Alembic, driven from code: upgrade to head, and check that the schema is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from dho.db.engine import ensure_sqlite_folder
from dho.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaOutOfDate(RuntimeError):
    """The database is not at the schema this code needs."""


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the database to `revision` (blocking; call from a thread or the CLI)."""
    ensure_sqlite_folder(settings.database_url)
    command.upgrade(alembic_config(settings), revision)


def head_revision(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


async def check_current(engine: AsyncEngine, settings: Settings) -> None:
    """Raise SchemaOutOfDate, naming the command to run, unless the schema is at head."""
    head = head_revision(settings)
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_revision)
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, this version needs {head}: "
            "run `dho db upgrade` (with the same DHO_DATABASE_URL) and start again"
        )


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()
