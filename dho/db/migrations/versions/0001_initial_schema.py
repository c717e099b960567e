"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 13:29:42.364517
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "device",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("identifier_system", sa.String(length=200), nullable=False),
        sa.Column("identifier_value", sa.String(length=200), nullable=False),
        sa.Column("type_code", sa.String(length=64), nullable=True),
        sa.Column("manufacturer", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device")),
        sa.UniqueConstraint(
            "identifier_system",
            "identifier_value",
            name=op.f("uq_device_identifier_system_identifier_value"),
        ),
    )
    op.create_table(
        "gateway",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_hint", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_gateway_key_hash")),
    )
    op.create_table(
        "organization",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("org_number", sa.String(length=20), nullable=True),
        sa.Column("municipality_number", sa.String(length=8), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
        sa.UniqueConstraint("org_number", name=op.f("uq_organization_org_number")),
    )
    op.create_table(
        "patient",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("national_id", sa.String(length=11), nullable=False),
        sa.Column("national_id_system", sa.String(length=64), nullable=False),
        sa.Column("family_name", sa.String(length=200), nullable=False),
        sa.Column("given_name", sa.String(length=200), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("municipality_number", sa.String(length=8), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        sa.UniqueConstraint("national_id", name=op.f("uq_patient_national_id")),
    )
    op.create_table(
        "raw_message",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("topic", sa.String(length=300), nullable=False),
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("adapter", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_message")),
        sa.UniqueConstraint(
            "gateway_id", "message_id", name=op.f("uq_raw_message_gateway_id_message_id")
        ),
    )
    op.create_table(
        "care_team",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_care_team_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_team")),
    )
    with op.batch_alter_table("care_team", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_care_team_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "device_assignment",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_device_assignment_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_device_assignment_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_assignment")),
    )
    with op.batch_alter_table("device_assignment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_assignment_device_id"),
            ["device_id", "period_start"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_device_assignment_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "gateway_organization",
        sa.Column("gateway_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["gateway_id"], ["gateway.id"], name=op.f("fk_gateway_organization_gateway_id_gateway")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_gateway_organization_organization_id_organization"),
        ),
        sa.PrimaryKeyConstraint(
            "gateway_id", "organization_id", name=op.f("pk_gateway_organization")
        ),
    )
    op.create_table(
        "observation",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("identity", sa.String(length=400), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("effective", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("value_digest", sa.String(length=64), nullable=False),
        sa.Column(
            "raw_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_observation_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_observation_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["raw_message_id"],
            ["raw_message.id"],
            name=op.f("fk_observation_raw_message_id_raw_message"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observation")),
        sa.UniqueConstraint("identity", name=op.f("uq_observation_identity")),
    )
    with op.batch_alter_table("observation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_observation_device_id"), ["device_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_observation_last_updated"), ["last_updated"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_observation_patient_id"),
            ["patient_id", "code", "effective"],
            unique=False,
        )

    op.create_table(
        "quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "raw_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("item_index", sa.Integer(), nullable=True),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["raw_message_id"],
            ["raw_message.id"],
            name=op.f("fk_quarantine_raw_message_id_raw_message"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantine_raw_message_id"), ["raw_message_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_quarantine_status"), ["status", "created_at"], unique=False
        )

    op.create_table(
        "alert",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("observation_id", sa.String(length=64), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["observation_id"], ["observation.id"], name=op.f("fk_alert_observation_id_observation")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_alert_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
        sa.UniqueConstraint("observation_id", "kind", name=op.f("uq_alert_observation_id_kind")),
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alert_status"), ["status", "severity", "created_at"], unique=False
        )

    op.create_table(
        "care_team_member",
        sa.Column("care_team_id", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["care_team_id"],
            ["care_team.id"],
            name=op.f("fk_care_team_member_care_team_id_care_team"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_care_team_member_organization_id_organization"),
        ),
        sa.PrimaryKeyConstraint(
            "care_team_id", "organization_id", name=op.f("pk_care_team_member")
        ),
    )
    with op.batch_alter_table("care_team_member", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_care_team_member_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "observation_version",
        sa.Column("observation_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "raw_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observation.id"],
            name=op.f("fk_observation_version_observation_id_observation"),
        ),
        sa.ForeignKeyConstraint(
            ["raw_message_id"],
            ["raw_message.id"],
            name=op.f("fk_observation_version_raw_message_id_raw_message"),
        ),
        sa.PrimaryKeyConstraint(
            "observation_id", "version_id", name=op.f("pk_observation_version")
        ),
    )
    op.create_table(
        "outbox_delivery",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("alert_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alert.id"], name=op.f("fk_outbox_delivery_alert_id_alert")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_delivery")),
    )
    with op.batch_alter_table("outbox_delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_delivery_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_outbox_delivery_status"), ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "delivery_attempt",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["outbox_delivery.id"],
            name=op.f("fk_delivery_attempt_delivery_id_outbox_delivery"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempt")),
    )
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_delivery_attempt_delivery_id"), ["delivery_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempt_delivery_id"))

    op.drop_table("delivery_attempt")
    with op.batch_alter_table("outbox_delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_delivery_status"))
        batch_op.drop_index(batch_op.f("ix_outbox_delivery_alert_id"))

    op.drop_table("outbox_delivery")
    op.drop_table("observation_version")
    with op.batch_alter_table("care_team_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_care_team_member_organization_id"))

    op.drop_table("care_team_member")
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_status"))
        batch_op.drop_index(batch_op.f("ix_alert_patient_id"))

    op.drop_table("alert")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_status"))
        batch_op.drop_index(batch_op.f("ix_quarantine_raw_message_id"))

    op.drop_table("quarantine")
    with op.batch_alter_table("observation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_observation_patient_id"))
        batch_op.drop_index(batch_op.f("ix_observation_last_updated"))
        batch_op.drop_index(batch_op.f("ix_observation_device_id"))

    op.drop_table("observation")
    op.drop_table("gateway_organization")
    with op.batch_alter_table("device_assignment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_assignment_patient_id"))
        batch_op.drop_index(batch_op.f("ix_device_assignment_device_id"))

    op.drop_table("device_assignment")
    with op.batch_alter_table("care_team", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_care_team_patient_id"))

    op.drop_table("care_team")
    op.drop_table("raw_message")
    op.drop_table("patient")
    op.drop_table("organization")
    op.drop_table("gateway")
    op.drop_table("device")
