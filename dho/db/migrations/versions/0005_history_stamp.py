"""history and care stamps: tokens per patient, new whenever the patient's observations
(history_stamp) or plan versions and pauses (care_stamp) change

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patient") as batch:
        batch.add_column(sa.Column("history_stamp", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("care_stamp", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patient") as batch:
        batch.drop_column("care_stamp")
        batch.drop_column("history_stamp")
