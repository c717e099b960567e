"""Registry tables: organisations, patients, care teams, devices, assignments, gateways.

Each row keeps the FHIR resource JSON it was loaded from beside the columns searches need.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from dho.db.base import Base, UTCDateTime, utcnow

ID = String(64)


class Organization(Base):
    __tablename__ = "organization"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    org_number: Mapped[str | None] = mapped_column(String(20), unique=True)
    municipality_number: Mapped[str | None] = mapped_column(String(8))
    resource: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    national_id: Mapped[str] = mapped_column(String(11), unique=True)
    national_id_system: Mapped[str] = mapped_column(String(64))
    family_name: Mapped[str] = mapped_column(String(200))
    given_name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date)
    municipality_number: Mapped[str | None] = mapped_column(String(8))
    resource: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A new random token whenever a transaction writes the patient's observations: tells a
    # process whether the history it holds for the patient is still true.
    history_stamp: Mapped[int | None] = mapped_column(BigInteger)
    # The same for the patient's plan versions and pauses.
    care_stamp: Mapped[int | None] = mapped_column(BigInteger)


class CareTeam(Base):
    __tablename__ = "care_team"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    resource: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CareTeamMember(Base):
    """An organisation responsible for the care team's patient, with its role."""

    __tablename__ = "care_team_member"

    care_team_id: Mapped[str] = mapped_column(ForeignKey("care_team.id"), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organization.id"), primary_key=True, index=True
    )
    role: Mapped[str | None] = mapped_column(String(64))


class Device(Base):
    __tablename__ = "device"
    __table_args__ = (UniqueConstraint("identifier_system", "identifier_value"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    identifier_system: Mapped[str] = mapped_column(String(200))
    identifier_value: Mapped[str] = mapped_column(String(200))
    type_code: Mapped[str | None] = mapped_column(String(64))
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    # The organisation that owns the device (FHIR Device.owner): only its gateways may send.
    owner_organization_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id"))
    resource: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceAssignment(Base):
    """A device used by a patient from `period_start` until `period_end` (open when null)."""

    __tablename__ = "device_assignment"
    __table_args__ = (Index(None, "device_id", "period_start"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("device.id"))
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resource: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Gateway(Base):
    """A sender of measurements; only a hash of its API key is kept."""

    __tablename__ = "gateway"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_hint: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Publish a receipt for every MQTT message (for MQTT 3.1.1 gateways, which cannot ask).
    mqtt_receipts: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GatewayOrganization(Base):
    __tablename__ = "gateway_organization"

    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateway.id"), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), primary_key=True)
