"""The alert episodes of a batch's patients: loaded once, changed in memory, written once.

Used by the record stage inside the batch's transaction. The patients' rows were locked
when the batch's rule context was loaded (PostgreSQL), so the episodes and rule states
read here cannot change under it; the unique `open_key` catches anything else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.alerts.episodes import Episode, RuleMemory, decide
from dho.db.models import Alert, AlertEvidence, OutboxDelivery, RuleState
from dho.rules.judge import Finding, Judgement
from dho.rules.thresholds import Band


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """A destination every new or worsened alert is delivered to."""

    channel: str
    target: str


@dataclass(frozen=True, slots=True)
class Touched:
    """The alert a reading opened, raised or joined; or the repeat it asked for."""

    alert_id: str | None
    severity: Band
    action: str


def open_key(subject: str, rule: str) -> str:
    """The unique key of an open episode: `patient:<id>|<rule>` or `gateway:<id>|<rule>`."""
    return f"{subject}|{rule}"[:250]


@dataclass(slots=True)
class _OpenAlert:
    episode: Episode
    summary: str
    details: dict[str, Any]


@dataclass(slots=True)
class EpisodeBook:
    targets: tuple[DeliveryTarget, ...] = ()
    memories: dict[tuple[str, str], RuleMemory] = field(default_factory=dict)
    stored_memories: set[tuple[str, str]] = field(default_factory=set)
    changed_memories: set[tuple[str, str]] = field(default_factory=set)
    open: dict[str, _OpenAlert] = field(default_factory=dict)
    new_alerts: list[dict[str, Any]] = field(default_factory=list)
    alert_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def forget(self, patient_id: str, findings: Iterable[Finding]) -> None:
        """A paused patient: the rules start afresh when the pause ends."""
        for finding in findings:
            key = (patient_id, finding.rule)
            if self.memories.get(key, RuleMemory()) != RuleMemory():
                self.memories[key] = RuleMemory()
                self.changed_memories.add(key)

    def apply(
        self,
        judgement: Judgement,
        *,
        patient_id: str,
        observation_id: str,
        resource: dict[str, Any],
        now: datetime,
        repeat_within: timedelta | None,
    ) -> Touched | None:
        """Every finding of a judged reading against the patient's episodes; the most
        severe alert touched (or the repeat asked for) comes back for the receipt."""
        touched: Touched | None = None
        for finding in judgement.findings:
            one = self._apply_one(
                finding, judgement, patient_id, observation_id, resource, now, repeat_within
            )
            if one is not None and (touched is None or one.severity > touched.severity):
                touched = one
        return touched

    def _apply_one(
        self,
        finding: Finding,
        judgement: Judgement,
        patient_id: str,
        observation_id: str,
        resource: dict[str, Any],
        now: datetime,
        repeat_within: timedelta | None,
    ) -> Touched | None:
        key = (patient_id, finding.rule)
        episode_key = open_key(f"patient:{patient_id}", finding.rule)
        known = self.open.get(episode_key)
        memory = self.memories.get(key, RuleMemory())
        outcome = decide(
            finding,
            memory,
            known.episode if known else None,
            observation_id=observation_id,
            now=now,
            repeat_within=repeat_within,
        )
        if outcome.memory != memory:
            self.memories[key] = outcome.memory
            self.changed_memories.add(key)
        band = outcome.memory.band
        if outcome.action == "ask-repeat":
            return Touched(None, finding.band, "ask-repeat")
        if outcome.action == "open":
            alert = self._open(finding, judgement, patient_id, observation_id, band, now)
            self._deliver(alert, "alert.created", resource, now)
            return Touched(alert["id"], band, "open")
        if known is None or outcome.action == "none":
            return None
        alert_id = known.episode.id
        if outcome.action == "raise":
            known.episode = Episode(alert_id, band)
        if finding.band >= known.episode.severity:  # the latest evidence at its colour
            known.summary = finding.summary
            known.details = self._details(finding, judgement)
        values = self.alert_updates.setdefault(alert_id, {})
        values.update(
            severity=known.episode.severity.label,
            summary=known.summary,
            details=jsonutil.dumps(known.details),
            updated_at=now,
        )
        self._evidence(alert_id, observation_id, finding, now)
        if outcome.action == "raise":
            raised: dict[str, Any] = {
                "id": alert_id,
                "kind": finding.kind,
                "rule": finding.rule,
                "severity": band.label,
                "status": "reported",
                "summary": finding.summary,
                "details": known.details,
                "patient_id": patient_id,
                "observation_id": observation_id,
            }
            self._deliver(raised, "alert.updated", resource, now)
        return Touched(alert_id, known.episode.severity, outcome.action)

    def _open(
        self,
        finding: Finding,
        judgement: Judgement,
        patient_id: str,
        observation_id: str,
        band: Band,
        now: datetime,
    ) -> dict[str, Any]:
        details = self._details(finding, judgement)
        alert: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "kind": finding.kind,
            "rule": finding.rule,
            "open_key": open_key(f"patient:{patient_id}", finding.rule),
            "severity": band.label,
            "status": "reported",
            "patient_id": patient_id,
            "observation_id": observation_id,
            "plan_id": judgement.plan.id,
            "plan_version": judgement.plan.version,
            "summary": finding.summary,
            "details": jsonutil.dumps(details),
            "created_at": now,
            "updated_at": now,
        }
        self.new_alerts.append(alert)
        self.open[alert["open_key"]] = _OpenAlert(
            Episode(alert["id"], band), finding.summary, details
        )
        self._evidence(alert["id"], observation_id, finding, now)
        return alert | {"details": details}

    @staticmethod
    def _details(finding: Finding, judgement: Judgement) -> dict[str, Any]:
        texts = judgement.plan_texts(finding.band)
        return dict(finding.details) | {
            "plan": judgement.plan.label,
            "staff_text": texts.staff,
            "patient_text": texts.patient,
        }

    def _evidence(
        self, alert_id: str, observation_id: str, finding: Finding, now: datetime
    ) -> None:
        self.evidence.append(
            {
                "alert_id": alert_id,
                "observation_id": observation_id,
                "severity": finding.band.label,
                "summary": finding.summary,
                "added_at": now,
            }
        )

    def _deliver(
        self, alert: dict[str, Any], event: str, resource: dict[str, Any], now: datetime
    ) -> None:
        for target in self.targets:
            delivery_id = str(uuid.uuid4())
            payload = {
                "event": event,
                "delivery_id": delivery_id,
                "alert": {
                    "id": alert["id"],
                    "kind": alert["kind"],
                    "rule": alert["rule"],
                    "severity": alert["severity"],
                    "status": alert["status"],
                    "summary": alert["summary"],
                    "details": alert["details"],
                    "patient": f"Patient/{alert['patient_id']}",
                    "observation": f"Observation/{alert['observation_id']}",
                    "created": now.isoformat(timespec="milliseconds"),
                },
                "observation": resource,
            }
            self.deliveries.append(
                {
                    "id": delivery_id,
                    "alert_id": alert["id"],
                    "channel": target.channel,
                    "target": target.target,
                    "payload": jsonutil.dumps(payload),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )

    async def flush(self, session: AsyncSession, now: datetime) -> None:
        """Write the batch's alerts, evidence, deliveries and rule states (no commit)."""
        if self.new_alerts:
            await session.execute(insert(Alert), self.new_alerts)
        for alert_id, values in self.alert_updates.items():
            await session.execute(update(Alert).where(Alert.id == alert_id).values(**values))
        if self.evidence:
            await session.execute(insert(AlertEvidence), self.evidence)
        if self.deliveries:
            await session.execute(insert(OutboxDelivery), self.deliveries)
        inserts = []
        for key in sorted(self.changed_memories):
            memory = self.memories[key]
            values = {
                "band": int(memory.band),
                "repeat_until": memory.repeat_until,
                "repeat_observation_id": memory.repeat_observation_id,
                "updated_at": now,
            }
            if key in self.stored_memories:
                patient_id, rule = key
                await session.execute(
                    update(RuleState)
                    .where(RuleState.patient_id == patient_id, RuleState.rule == rule)
                    .values(**values)
                )
            else:
                inserts.append({"patient_id": key[0], "rule": key[1]} | values)
        if inserts:
            await session.execute(insert(RuleState), inserts)


async def load_episode_book(
    session: AsyncSession, patient_ids: Iterable[str], targets: tuple[DeliveryTarget, ...]
) -> EpisodeBook:
    """The open episodes and rule states of these patients."""
    book = EpisodeBook(targets)
    ids = sorted(set(patient_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for state in await session.scalars(
            select(RuleState).where(RuleState.patient_id.in_(chunk))
        ):
            key = (state.patient_id, state.rule)
            book.memories[key] = RuleMemory(
                Band(state.band), state.repeat_until, state.repeat_observation_id
            )
            book.stored_memories.add(key)
        open_alerts = select(Alert).where(Alert.patient_id.in_(chunk), Alert.open_key.is_not(None))
        for alert in await session.scalars(open_alerts):
            assert alert.open_key is not None
            book.open[alert.open_key] = _OpenAlert(
                Episode(alert.id, Band[alert.severity.upper()]),
                alert.summary,
                jsonutil.loads(alert.details),
            )
    return book
