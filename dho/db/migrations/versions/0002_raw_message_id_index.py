"""raw_message: unique key on (message_id, gateway_id), message id first

The duplicate-message check looks messages up by id; with the gateway first, PostgreSQL
scanned every message of the gateway, so ingest slowed down as the table grew.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 15:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("raw_message") as batch:
        batch.drop_constraint("uq_raw_message_gateway_id_message_id", type_="unique")
        batch.create_unique_constraint(
            "uq_raw_message_message_id_gateway_id", ["message_id", "gateway_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("raw_message") as batch:
        batch.drop_constraint("uq_raw_message_message_id_gateway_id", type_="unique")
        batch.create_unique_constraint(
            "uq_raw_message_gateway_id_message_id", ["gateway_id", "message_id"]
        )
