"""Alerts and the transactional outbox that delivers them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dho.db.base import Base, UTCDateTime, utcnow
from dho.db.models.ingest import BigID


class Alert(Base):
    """One episode of one rule for one patient (or one gateway or device, for an outage).

    `open_key` is set while the episode is open and cleared when it closes; its unique
    index is what keeps two service processes from opening the same episode twice.
    """

    __tablename__ = "alert"
    __table_args__ = (Index(None, "status", "severity", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(120))
    open_key: Mapped[str | None] = mapped_column(String(250), unique=True)
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32), default="reported")
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patient.id"), index=True)
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(64))
    observation_id: Mapped[str | None] = mapped_column(ForeignKey("observation.id"), index=True)
    plan_id: Mapped[str | None] = mapped_column(String(64))
    plan_version: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertEvidence(Base):
    """A reading (or an empty window) attached to an alert episode, in order."""

    __tablename__ = "alert_evidence"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alert.id"), index=True)
    observation_id: Mapped[str | None] = mapped_column(ForeignKey("observation.id"))
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxDelivery(Base):
    """One message to one destination; its id is the receiver's idempotency key."""

    __tablename__ = "outbox_delivery"
    __table_args__ = (Index(None, "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    alert_id: Mapped[str | None] = mapped_column(ForeignKey("alert.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempt"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("outbox_delivery.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
