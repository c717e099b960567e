"""What the compute stages produce for a message, and what the caller is told afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dho.ingest.decoded import QuestionnaireReply
from dho.ingest.errors import DataError
from dho.ingest.measurement import RawMessage, TimeFlag
from dho.ingest.resolve import Resolved
from dho.questionnaires.responses import QuestionnaireJudgement
from dho.rules.judge import Judgement, PlanRef
from dho.rules.news2_rule import News2Result
from dho.rules.patient_context import Pause

ItemStatus = Literal["accepted", "duplicate", "quarantined", "matched", "ignored", "not-stored"]
MessageStatus = Literal["accepted", "duplicate", "rejected"]


@dataclass(slots=True)
class QuestionnaireItem:
    """A questionnaire reply to store, its patient, and how its rules judge it."""

    patient_id: str
    reply: QuestionnaireReply
    judgement: QuestionnaireJudgement
    plan: PlanRef | None = None


@dataclass(slots=True)
class ItemPlan:
    """One item of a message: an observation to store, a registry match, or why neither."""

    index: int
    label: str
    resolved: Resolved | None = None
    observation: dict[str, Any] | None = None
    judgement: Judgement | None = None
    quiet: bool = False  # late or stale: judged, but raises no acute alert
    paused: Pause | None = None
    news2: News2Result | None = None  # the NEWS2 this reading completes, to store beside it
    questionnaire: QuestionnaireItem | None = None
    reference: str | None = None
    late: bool = False
    error: DataError | None = None
    note: str | None = None


@dataclass(slots=True)
class MessagePlan:
    raw: RawMessage
    message_id: str | None = None
    items: list[ItemPlan] = field(default_factory=list)
    error: DataError | None = None
    atomic: bool = False
    kind: str | None = None
    wants_receipt: bool = False
    # When re-driving or replaying: the stored raw message, which is not stored again, and
    # whether only some of its items are processed again.
    raw_id: int | None = None
    partial: bool = False


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    status: ItemStatus
    label: str = ""
    observation_id: str | None = None
    version_id: int | None = None
    amended: bool = False
    late: bool = False
    time_flag: TimeFlag | None = None
    alert_id: str | None = None
    alert_severity: str | None = None
    colour: str | None = None
    plan: str | None = None
    patient_text: str | None = None
    repeat_within_minutes: int | None = None
    paused_until: str | None = None
    reference: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    detail: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class MessageResult:
    """The answer for one message, known only after its transaction committed."""

    status: MessageStatus
    message_id: str | None
    raw_message_id: int | None
    items: tuple[ItemResult, ...] = ()
    reason: str | None = None
    reason_code: str | None = None
    detail: str | None = None
    kind: str | None = None
    wants_receipt: bool = False

    @property
    def not_authorised(self) -> bool:
        """True when nothing was stored because the sender may not send any of it."""
        if self.status == "rejected":
            return self.reason == "not-authorised"
        quarantined = [i for i in self.items if i.status == "quarantined"]
        return (
            bool(self.items)
            and len(quarantined) == len(self.items)
            and all(i.reason == "not-authorised" for i in quarantined)
        )
