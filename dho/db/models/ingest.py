"""What came in and what it became: raw messages, observations, quarantine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from dho.db.base import Base, UTCDateTime, utcnow

BigID = BigInteger().with_variant(Integer, "sqlite")


class RawMessage(Base):
    """Every message as received, kept whatever became of it."""

    __tablename__ = "raw_message"
    # message_id first: it is the selective column that the duplicate check looks up.
    __table_args__ = (
        UniqueConstraint("message_id", "gateway_id"),
        Index(None, "gateway_id", "received_at"),  # when a gateway last delivered
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    transport: Mapped[str] = mapped_column(String(8))
    topic: Mapped[str] = mapped_column(String(300))
    gateway_id: Mapped[str] = mapped_column(String(64))
    adapter: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class ObservationRow(Base):
    """The current version of an Observation; `identity` is the measurement's unique key."""

    __tablename__ = "observation"
    __table_args__ = (
        Index(None, "patient_id", "code", "effective"),
        Index("ix_observation_patient_type_effective", "patient_id", "type", "effective"),
        Index(None, "source_identifier"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity: Mapped[str] = mapped_column(String(400), unique=True)
    # The identifier the sender gave the reading (the PHD Observation identifier): it marks
    # a re-send of the same device's reading as a duplicate; senders' identifiers are not
    # unique across devices, so it is not a key.
    source_identifier: Mapped[str | None] = mapped_column(String(400))
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    device_id: Mapped[str] = mapped_column(ForeignKey("device.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    effective: Mapped[datetime] = mapped_column(UTCDateTime)
    # The reading's numbers as decimal text, for the rules' history: `value` for a single
    # value, `components` as JSON for a panel.
    value: Mapped[str | None] = mapped_column(String(40))
    components: Mapped[str | None] = mapped_column(String(400))
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Synced long after it was measured: feeds trends, raises no acute alert.
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    version_id: Mapped[int] = mapped_column(Integer, default=1)
    value_digest: Mapped[str] = mapped_column(String(64))
    raw_message_id: Mapped[int] = mapped_column(ForeignKey("raw_message.id"))
    resource: Mapped[str] = mapped_column(Text)


class ObservationVersion(Base):
    """Every version an Observation has had, for history and vread."""

    __tablename__ = "observation_version"

    observation_id: Mapped[str] = mapped_column(ForeignKey("observation.id"), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime)
    raw_message_id: Mapped[int] = mapped_column(ForeignKey("raw_message.id"))
    resource: Mapped[str] = mapped_column(Text)


class Quarantine(Base):
    """A message (or one item of it) set aside with the reason; re-driven or discarded later.

    `reason_class` is one of `dho.ingest.errors.REASONS`; `reason_code` is the finer cause
    and `reason` the text. Status: `open`, `redriven` (it became data) or `discarded`.
    """

    __tablename__ = "quarantine"
    __table_args__ = (
        Index(None, "status", "created_at"),
        Index(None, "reason_class", "status"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    raw_message_id: Mapped[int] = mapped_column(ForeignKey("raw_message.id"), index=True)
    item_index: Mapped[int | None] = mapped_column(Integer)
    item_label: Mapped[str | None] = mapped_column(String(64))
    reason_class: Mapped[str] = mapped_column(String(32))
    reason_code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolution: Mapped[str | None] = mapped_column(Text)
