"""ingest robustness: quarantine workflow, late and source-identified observations, owners

- quarantine: reason class, item label, re-drive attempts and resolution (who, when, why)
- observation: received time, late flag, the sender's identifier (unique, for PHD re-sends)
- device: owning organisation; gateway: receipts over MQTT

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EUI_DIGITS = {
    "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680": 16,
    "http://hl7.org/fhir/sid/eui-48/bluetooth": 12,
}

# reason_code → reason class, for rows written before classes existed.
_CLASSES = {
    "decode": "unparseable",
    "empty": "unparseable",
    "time-zone": "unparseable",
    "adapter": "unknown-adapter",
    "unknown-device": "unknown-device",
    "unassigned-device": "unknown-device",
    "unknown-gateway": "not-authorised",
    "gateway-not-permitted": "not-authorised",
    "implausible": "implausible",
    "clock-skew": "future",
    "too-large": "oversized",
    "processing-error": "processing-error",
}


def upgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("item_label", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("reason_class", sa.String(length=32), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=True))
    quarantine = sa.table("quarantine", sa.column("reason_code"), sa.column("reason_class"))
    for code, reason_class in _CLASSES.items():
        op.execute(
            quarantine.update()
            .where(quarantine.c.reason_code == code)
            .values(reason_class=reason_class)
        )
    op.execute(
        quarantine.update()
        .where(quarantine.c.reason_class == "")
        .values(reason_class="mapping-error")
    )
    with op.batch_alter_table("quarantine") as batch:
        batch.alter_column("reason_class", server_default=None)
        batch.create_index(
            batch.f("ix_quarantine_reason_class"), ["reason_class", "status"], unique=False
        )

    with op.batch_alter_table("observation") as batch:
        batch.add_column(sa.Column("source_identifier", sa.String(length=400), nullable=True))
        batch.add_column(sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("late", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index(
            batch.f("ix_observation_source_identifier"), ["source_identifier"], unique=False
        )

    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("owner_organization_id", sa.String(length=64), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_device_owner_organization_id_organization"),
            "organization",
            ["owner_organization_id"],
            ["id"],
        )

    with op.batch_alter_table("gateway") as batch:
        batch.add_column(
            sa.Column("mqtt_receipts", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    _canonical_device_identifiers()


def _canonical_device_identifiers() -> None:
    """EUI-64 and EUI-48 values in the dashed upper-case spelling the decoders now use.

    Device ids stay as they are; observation identities, which begin with the device's
    identifier, follow. A value whose canonical spelling is already taken is left alone.
    """
    conn = op.get_bind()
    devices = conn.execute(
        sa.text("SELECT id, identifier_system, identifier_value FROM device")
    ).all()
    taken = {(system, value) for _, system, value in devices}
    for device_id, system, value in devices:
        canonical = _canonical(system, value)
        if canonical == value or (system, canonical) in taken:
            continue
        conn.execute(
            sa.text("UPDATE device SET identifier_value = :new WHERE id = :id"),
            {"new": canonical, "id": device_id},
        )
        old_prefix, new_prefix = f"{system}|{value}|", f"{system}|{canonical}|"
        conn.execute(
            sa.text(
                "UPDATE observation SET identity = :new || substr(identity, :cut) "
                "WHERE device_id = :id AND substr(identity, 1, :length) = :old"
            ),
            {
                "new": new_prefix,
                "cut": len(old_prefix) + 1,
                "id": device_id,
                "length": len(old_prefix),
                "old": old_prefix,
            },
        )
        taken.add((system, canonical))


def _canonical(system: str, value: str) -> str:
    digits = "".join(ch for ch in value if ch not in "-:. ")
    wanted = _EUI_DIGITS.get(system)
    if wanted is None or len(digits) != wanted:
        return value
    try:
        int(digits, 16)
    except ValueError:
        return value
    upper = digits.upper()
    return "-".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def downgrade() -> None:
    with op.batch_alter_table("gateway") as batch:
        batch.drop_column("mqtt_receipts")
    with op.batch_alter_table("device") as batch:
        batch.drop_constraint(
            batch.f("fk_device_owner_organization_id_organization"), type_="foreignkey"
        )
        batch.drop_column("owner_organization_id")
    with op.batch_alter_table("observation") as batch:
        batch.drop_index(batch.f("ix_observation_source_identifier"))
        batch.drop_column("late")
        batch.drop_column("received_at")
        batch.drop_column("source_identifier")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_index(batch.f("ix_quarantine_reason_class"))
        batch.drop_column("resolution")
        batch.drop_column("resolved_by")
        batch.drop_column("resolved_at")
        batch.drop_column("attempts")
        batch.drop_column("reason_class")
        batch.drop_column("item_label")
