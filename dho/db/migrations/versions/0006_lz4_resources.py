"""lz4 for the stored resources and payloads (PostgreSQL 14 and newer, built with lz4)

A judged Observation carries its interpretation and reference range and passes the 2 kB
at which PostgreSQL compresses a row's large values. pglz, the default, costs about 12 µs
a row more than lz4, and every Observation is written twice (observation and its version).
Rows written before keep their compression. SQLite, and a server without lz4: no change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 20:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): the large values of the ingest path
COLUMNS = (
    ("observation", "resource"),
    ("observation_version", "resource"),
    ("raw_message", "payload"),
    ("outbox_delivery", "payload"),
    ("questionnaire_response", "resource"),
)


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    if int(bind.execute(text("SHOW server_version_num")).scalar_one()) < 140000:
        return False
    try:
        with bind.begin_nested():  # a server built without lz4 refuses the setting
            bind.execute(text("SET LOCAL default_toast_compression = 'lz4'"))
    except Exception:
        return False
    return True


def _set(method: str) -> None:
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    if _lz4_available():
        _set("lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql" and _lz4_available():
        _set("default")
