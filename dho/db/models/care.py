"""Patients' self-management plans, pauses, and what the rules remember between readings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dho.db.base import Base, UTCDateTime, utcnow


class PatientPlan(Base):
    """One version of a patient's plan: a standard plan copied and adjusted, then approved.

    `content` is the whole plan as JSON, in the shape of `config/plans/*.yaml`.
    """

    __tablename__ = "patient_plan"
    __table_args__ = (
        UniqueConstraint("patient_id", "version"),
        Index(None, "patient_id", "valid_from"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    version: Mapped[int] = mapped_column(Integer)
    standard_plan: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    author_hpr: Mapped[str] = mapped_column(String(9))
    approver_hpr: Mapped[str] = mapped_column(String(9))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PatientPause(Base):
    """Follow-up paused (admitted, on holiday): data is stored, no alert is raised."""

    __tablename__ = "patient_pause"
    __table_args__ = (Index(None, "patient_id", "starts_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RuleState(Base):
    """A rule's settled colour for a patient (with hysteresis), and a pending repeat request."""

    __tablename__ = "rule_state"

    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(120), primary_key=True)
    band: Mapped[int] = mapped_column(Integer)
    repeat_until: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    repeat_observation_id: Mapped[str | None] = mapped_column(String(64))
    repeat_summary: Mapped[str | None] = mapped_column(Text)
    repeat_plan_id: Mapped[str | None] = mapped_column(String(64))
    repeat_plan_version: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SchedulerCheckpoint(Base):
    """How far a periodic job has looked (e.g. missing measurements up to `until`)."""

    __tablename__ = "scheduler_checkpoint"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuestionnaireResponseRow(Base):
    """A patient's answers to a symptom questionnaire, as sent (with this service's id)."""

    __tablename__ = "questionnaire_response"
    __table_args__ = (Index(None, "patient_id", "questionnaire", "authored"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity: Mapped[str] = mapped_column(String(200), unique=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    questionnaire: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(20))
    authored: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    colour: Mapped[str] = mapped_column(String(16))
    raw_message_id: Mapped[int] = mapped_column(ForeignKey("raw_message.id"))
    resource: Mapped[str] = mapped_column(Text)
