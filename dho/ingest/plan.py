"""What the compute stages produce for a message, and what the caller is told afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dho.ingest.errors import DataError
from dho.ingest.measurement import RawMessage
from dho.ingest.resolve import Resolved
from dho.rules.evaluate import Decision

ItemStatus = Literal["created", "duplicate", "corrected", "quarantined"]
MessageStatus = Literal["accepted", "duplicate", "rejected"]


@dataclass(slots=True)
class ItemPlan:
    """One measurement of a message: an observation to store, or the reason it cannot be."""

    index: int
    resolved: Resolved | None = None
    observation: dict[str, Any] | None = None
    decisions: list[Decision] = field(default_factory=list)
    error: DataError | None = None


@dataclass(slots=True)
class MessagePlan:
    raw: RawMessage
    message_id: str | None = None
    items: list[ItemPlan] = field(default_factory=list)
    error: DataError | None = None


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    status: ItemStatus
    observation_id: str | None = None
    version_id: int | None = None
    alert_id: str | None = None
    alert_severity: str | None = None
    reason_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class MessageResult:
    """The answer for one message, known only after its transaction committed."""

    status: MessageStatus
    message_id: str | None
    raw_message_id: int | None
    items: tuple[ItemResult, ...] = ()
    reason_code: str | None = None
    reason: str | None = None
