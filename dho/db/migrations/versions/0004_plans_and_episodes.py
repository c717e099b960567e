"""plans and alert episodes: patient plans, pauses, rule state, evidence, reading values

- patient_plan, patient_pause, rule_state, scheduler_checkpoint: new tables
- alert: an episode of a rule (rule, open_key unique while open, plan version, subject
  gateway/device for outages, closed_at); evidence in alert_evidence; the old
  one-alert-per-observation-and-kind constraint goes
- observation: the reading's numbers (value, components) for the rules' history

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "patient_plan",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("standard_plan", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("author_hpr", sa.String(length=9), nullable=False),
        sa.Column("approver_hpr", sa.String(length=9), nullable=False),
        sa.Column("valid_from", _TIME, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_plan_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_plan")),
        sa.UniqueConstraint(
            "patient_id", "version", name=op.f("uq_patient_plan_patient_id_version")
        ),
    )
    op.create_index(
        op.f("ix_patient_plan_patient_id"), "patient_plan", ["patient_id", "valid_from"]
    )
    op.create_table(
        "patient_pause",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("starts_at", _TIME, nullable=False),
        sa.Column("ends_at", _TIME, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_pause_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_pause")),
    )
    op.create_index(
        op.f("ix_patient_pause_patient_id"), "patient_pause", ["patient_id", "starts_at"]
    )
    op.create_table(
        "rule_state",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=120), nullable=False),
        sa.Column("band", sa.Integer(), nullable=False),
        sa.Column("repeat_until", _TIME, nullable=True),
        sa.Column("repeat_observation_id", sa.String(length=64), nullable=True),
        sa.Column("repeat_summary", sa.Text(), nullable=True),
        sa.Column("repeat_plan_id", sa.String(length=64), nullable=True),
        sa.Column("repeat_plan_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_rule_state_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("patient_id", "rule", name=op.f("pk_rule_state")),
    )
    op.create_index(op.f("ix_rule_state_repeat_until"), "rule_state", ["repeat_until"])
    op.create_table(
        "scheduler_checkpoint",
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("until", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_scheduler_checkpoint")),
    )

    with op.batch_alter_table("alert") as batch:
        batch.drop_constraint("uq_alert_observation_id_kind", type_="unique")
        batch.add_column(
            sa.Column("rule", sa.String(length=120), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("open_key", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("gateway_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("device_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("plan_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("plan_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("closed_at", _TIME, nullable=True))
        batch.alter_column("patient_id", existing_type=sa.String(length=64), nullable=True)
        batch.create_unique_constraint(batch.f("uq_alert_open_key"), ["open_key"])
        batch.create_index(batch.f("ix_alert_observation_id"), ["observation_id"])
    # Alerts from before episodes judged one reading each: name their rule after it.
    op.execute(
        "UPDATE alert SET rule = 'range:' || "
        "(SELECT observation.type FROM observation WHERE observation.id = alert.observation_id) "
        "WHERE observation_id IS NOT NULL"
    )
    op.execute("UPDATE alert SET rule = kind WHERE rule = '' OR rule IS NULL")
    with op.batch_alter_table("alert") as batch:
        batch.alter_column("rule", existing_type=sa.String(length=120), server_default=None)
    op.create_table(
        "alert_evidence",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("alert_id", sa.String(length=64), nullable=False),
        sa.Column("observation_id", sa.String(length=64), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("added_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alert.id"], name=op.f("fk_alert_evidence_alert_id_alert")
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observation.id"],
            name=op.f("fk_alert_evidence_observation_id_observation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_evidence")),
    )
    op.create_index(op.f("ix_alert_evidence_alert_id"), "alert_evidence", ["alert_id"])

    with op.batch_alter_table("observation") as batch:
        batch.add_column(sa.Column("value", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("components", sa.String(length=400), nullable=True))
        batch.create_index(
            batch.f("ix_observation_patient_type_effective"), ["patient_id", "type", "effective"]
        )
    op.create_index(op.f("ix_raw_message_gateway_id"), "raw_message", ["gateway_id", "received_at"])
    op.create_table(
        "questionnaire_response",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("identity", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("questionnaire", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("authored", _TIME, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("colour", sa.String(length=16), nullable=False),
        sa.Column(
            "raw_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
            name=op.f("fk_questionnaire_response_patient_id_patient"),
        ),
        sa.ForeignKeyConstraint(
            ["raw_message_id"],
            ["raw_message.id"],
            name=op.f("fk_questionnaire_response_raw_message_id_raw_message"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questionnaire_response")),
        sa.UniqueConstraint("identity", name=op.f("uq_questionnaire_response_identity")),
    )
    op.create_index(
        op.f("ix_questionnaire_response_patient_id"),
        "questionnaire_response",
        ["patient_id", "questionnaire", "authored"],
    )
    _reading_values()


def _reading_values() -> None:
    """Copy each stored reading's numbers out of its resource, exactly as written."""
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, resource FROM observation")).all()
    for observation_id, resource in rows:
        data = json.loads(resource, parse_float=str, parse_int=str)
        value = (data.get("valueQuantity") or {}).get("value")
        parts = {
            part["code"]["coding"][0]["code"]: part["valueQuantity"]["value"]
            for part in data.get("component", ())
            if "valueQuantity" in part
        }
        conn.execute(
            sa.text("UPDATE observation SET value = :value, components = :parts WHERE id = :id"),
            {
                "value": None if value is None else str(value),
                "parts": json.dumps(parts) if parts else None,
                "id": observation_id,
            },
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_questionnaire_response_patient_id"), table_name="questionnaire_response")
    op.drop_table("questionnaire_response")
    op.drop_index(op.f("ix_raw_message_gateway_id"), table_name="raw_message")
    with op.batch_alter_table("observation") as batch:
        batch.drop_index(batch.f("ix_observation_patient_type_effective"))
        batch.drop_column("components")
        batch.drop_column("value")
    op.drop_index(op.f("ix_alert_evidence_alert_id"), table_name="alert_evidence")
    op.drop_table("alert_evidence")
    op.execute(
        "DELETE FROM outbox_delivery "
        "WHERE alert_id IN (SELECT id FROM alert WHERE patient_id IS NULL)"
    )
    op.execute("DELETE FROM alert WHERE patient_id IS NULL")
    with op.batch_alter_table("alert") as batch:
        batch.drop_index(batch.f("ix_alert_observation_id"))
        batch.drop_constraint(batch.f("uq_alert_open_key"), type_="unique")
        batch.alter_column("patient_id", existing_type=sa.String(length=64), nullable=False)
        for column in ("closed_at", "plan_version", "plan_id", "device_id", "gateway_id"):
            batch.drop_column(column)
        batch.drop_column("open_key")
        batch.drop_column("rule")
        batch.create_unique_constraint(
            batch.f("uq_alert_observation_id_kind"), ["observation_id", "kind"]
        )
    op.drop_table("scheduler_checkpoint")
    op.drop_index(op.f("ix_rule_state_repeat_until"), table_name="rule_state")
    op.drop_table("rule_state")
    op.drop_index(op.f("ix_patient_pause_patient_id"), table_name="patient_pause")
    op.drop_table("patient_pause")
    op.drop_index(op.f("ix_patient_plan_patient_id"), table_name="patient_plan")
    op.drop_table("patient_plan")
