"""The alert episodes of a batch's patients: loaded once, changed in memory, written once.

Used by the record stage inside the batch's transaction. The patients' rows were locked
when the batch's rule context was loaded (PostgreSQL), so the episodes and rule states
read here cannot change under it; the unique `open_key` catches anything else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CompoundSelect, literal_column, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.alerts.episode_writes import EpisodeRows, fold_updates, write_episode_rows
from dho.alerts.episodes import FRESH, Episode, RuleMemory, decide
from dho.db.base import one_of
from dho.db.models import Alert, RuleState
from dho.rules.judge import Finding, Judgement, PlanRef
from dho.rules.thresholds import Band
from dho.settings import Settings
from dho.values import value


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """A destination every new or worsened alert is delivered to."""

    channel: str
    target: str


@value
class Touched:
    """The alert a reading opened, raised or joined; or the repeat it asked for."""

    alert_id: str | None
    severity: Band
    action: str


@value
class Report:
    """Evidence for one rule's episode of one subject (`patient:<id>`, `gateway:<id>`,
    `device:<id>`); `band` the episode's colour, `evidence_band` this evidence's own."""

    subject: str
    rule: str
    kind: str
    band: Band
    summary: str
    details: dict[str, Any]
    evidence_band: Band | None = None
    patient_id: str | None = None
    gateway_id: str | None = None
    device_id: str | None = None
    observation_id: str | None = None
    plan: PlanRef | None = None


def memory_of(state: RuleState) -> RuleMemory:
    return _memory(
        state.band,
        state.repeat_until,
        state.repeat_observation_id,
        state.repeat_summary,
        state.repeat_plan_id,
        state.repeat_plan_version,
    )


# A rule state that is not FRESH; a fresh one (green, no repeat awaited) reads as absent.
_REMEMBERS_SOMETHING = or_(
    RuleState.band != int(Band.GREEN),
    RuleState.repeat_until.is_not(None),
    RuleState.repeat_observation_id.is_not(None),
    RuleState.repeat_summary.is_not(None),
    RuleState.repeat_plan_id.is_not(None),
)


def _memory(
    band: int,
    repeat_until: datetime | None,
    observation_id: str | None,
    summary: str | None,
    plan_id: str | None,
    plan_version: int | None,
) -> RuleMemory:
    plan = None
    if plan_id is not None and plan_version is not None:
        plan = PlanRef(plan_id, plan_version, plan_id.removeprefix("standard:"))
    return RuleMemory(Band(band), repeat_until, observation_id, summary, plan)


def _reference(resource_type: str, resource_id: str | None) -> str | None:
    return f"{resource_type}/{resource_id}" if resource_id else None


def delivery_targets(settings: Settings) -> tuple[DeliveryTarget, ...]:
    """Where every new or worsened alert goes (until routing decides per alert)."""
    return (DeliveryTarget("webhook", settings.webhook_url),) if settings.webhook_url else ()


def open_key(subject: str, rule: str) -> str:
    """The unique key of an open episode: `patient:<id>|<rule>` or `gateway:<id>|<rule>`."""
    return f"{subject}|{rule}"[:250]


class _OpenAlert:
    """An open episode; its details parsed from the stored JSON only when needed."""

    __slots__ = ("_details", "_stored", "episode", "summary")

    def __init__(
        self,
        episode: Episode,
        summary: str,
        details: dict[str, Any] | None = None,
        stored: str = "{}",
    ) -> None:
        self.episode, self.summary = episode, summary
        self._details, self._stored = details, stored

    @property
    def details(self) -> dict[str, Any]:
        if self._details is None:
            self._details = jsonutil.loads(self._stored)
        return self._details

    @details.setter
    def details(self, value: dict[str, Any]) -> None:
        self._details = value


@dataclass(slots=True)
class EpisodeBook:
    targets: tuple[DeliveryTarget, ...] = ()
    memories: dict[tuple[str, str], RuleMemory] = field(default_factory=dict)
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
            if self.memories.get(key, FRESH) != FRESH:
                self.memories[key] = FRESH
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
        memory = self.memories.get(key, FRESH)
        outcome = decide(
            finding,
            memory,
            known.episode if known else None,
            observation_id=observation_id,
            now=now,
            repeat_within=repeat_within,
        )
        if outcome.memory is not memory and outcome.memory != memory:
            self.memories[key] = outcome.memory
            self.changed_memories.add(key)
        if outcome.action == "ask-repeat":
            asked = replace(
                outcome.memory, repeat_summary=finding.summary, repeat_plan=judgement.plan
            )
            self.memories[key] = asked
            return Touched(None, finding.band, "ask-repeat")
        if outcome.action == "none" or (outcome.action != "open" and episode_key not in self.open):
            return None
        return self.report(
            Report(
                subject=f"patient:{patient_id}",
                rule=finding.rule,
                kind=finding.kind,
                band=outcome.memory.band,
                evidence_band=finding.band,
                summary=finding.summary,
                details=self._details(finding, judgement),
                patient_id=patient_id,
                observation_id=observation_id,
                plan=judgement.plan,
            ),
            now,
            resource,
        )

    def report(
        self, report: Report, now: datetime, resource: dict[str, Any] | None = None
    ) -> Touched:
        """Open the subject's episode of the rule, or add the evidence to the open one
        (raising its severity when worse); deliveries for a new or worsened alert."""
        key = open_key(report.subject, report.rule)
        known = self.open.get(key)
        evidence_band = report.evidence_band or report.band
        if known is None:
            alert = self._new_alert(key, report, now)
            self._evidence(alert["id"], report.observation_id, evidence_band, report.summary, now)
            self._deliver(alert | {"details": report.details}, "alert.created", resource, now)
            return Touched(alert["id"], report.band, "open")
        alert_id = known.episode.id
        raised = report.band > known.episode.severity
        if raised:
            known.episode = Episode(alert_id, report.band)
        if evidence_band >= known.episode.severity:  # the latest evidence at its colour
            known.summary, known.details = report.summary, report.details
        self.alert_updates.setdefault(alert_id, {}).update(
            severity=known.episode.severity.label,
            summary=known.summary,
            details=jsonutil.dumps(known.details),
            updated_at=now,
        )
        self._evidence(alert_id, report.observation_id, evidence_band, report.summary, now)
        if raised:
            current = self._row(alert_id, key, report, now) | {"details": known.details}
            self._deliver(current, "alert.updated", resource, now)
        return Touched(alert_id, known.episode.severity, "raise" if raised else "attach")

    def _new_alert(self, key: str, report: Report, now: datetime) -> dict[str, Any]:
        alert = self._row(str(uuid.uuid4()), key, report, now)
        self.new_alerts.append(alert)
        self.open[key] = _OpenAlert(
            Episode(alert["id"], report.band), report.summary, report.details
        )
        return alert

    @staticmethod
    def _row(alert_id: str, key: str, report: Report, now: datetime) -> dict[str, Any]:
        return {
            "id": alert_id,
            "kind": report.kind,
            "rule": report.rule,
            "open_key": key,
            "severity": report.band.label,
            "status": "reported",
            "patient_id": report.patient_id,
            "gateway_id": report.gateway_id,
            "device_id": report.device_id,
            "observation_id": report.observation_id,
            "plan_id": report.plan.id if report.plan else None,
            "plan_version": report.plan.version if report.plan else None,
            "summary": report.summary,
            "details": jsonutil.dumps(report.details),
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    def _details(finding: Finding, judgement: Judgement) -> dict[str, Any]:
        texts = judgement.plan_texts(finding.band)
        return dict(finding.details) | {
            "plan": judgement.plan.label,
            "staff_text": texts.staff,
            "patient_text": texts.patient,
        }

    def _evidence(
        self, alert_id: str, observation_id: str | None, band: Band, summary: str, now: datetime
    ) -> None:
        self.evidence.append(
            {
                "alert_id": alert_id,
                "observation_id": observation_id,
                "severity": band.label,
                "summary": summary,
                "added_at": now,
            }
        )

    def _deliver(
        self, alert: dict[str, Any], event: str, resource: dict[str, Any] | None, now: datetime
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
                    "patient": _reference("Patient", alert.get("patient_id")),
                    "gateway": alert.get("gateway_id"),
                    "device": _reference("Device", alert.get("device_id")),
                    "observation": _reference("Observation", alert.get("observation_id")),
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
        states: list[dict[str, Any]] = []
        for patient_id, rule in sorted(self.changed_memories):
            memory = self.memories[(patient_id, rule)]
            plan = memory.repeat_plan
            states.append(
                {
                    "patient_id": patient_id,
                    "rule": rule,
                    "band": int(memory.band),
                    "repeat_until": memory.repeat_until,
                    "repeat_observation_id": memory.repeat_observation_id,
                    "repeat_summary": memory.repeat_summary,
                    "repeat_plan_id": plan.id if plan else None,
                    "repeat_plan_version": plan.version if plan else None,
                    "updated_at": now,
                }
            )
        updates = fold_updates(self.new_alerts, self.alert_updates)
        rows = EpisodeRows(self.new_alerts, updates, self.evidence, self.deliveries, states)
        await write_episode_rows(session, rows)


async def load_open_episodes(book: EpisodeBook, session: AsyncSession, keys: Iterable[str]) -> None:
    """Add the open episodes with these keys (any subject) to the book."""
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), 500):
        query = select(Alert).where(one_of(Alert.open_key, wanted[start : start + 500]))
        for alert in await session.scalars(query):
            assert alert.open_key is not None
            _add_open(book, alert.open_key, alert.id, alert.severity, alert.summary, alert.details)


def _add_open(
    book: EpisodeBook, key: str, alert_id: str, severity: str, summary: str, details: str
) -> None:
    book.open[key] = _OpenAlert(Episode(alert_id, Band[severity.upper()]), summary, stored=details)


async def load_episode_book(
    session: AsyncSession, patient_ids: Iterable[str], targets: tuple[DeliveryTarget, ...]
) -> EpisodeBook:
    """The open episodes and rule states of these patients, in one query per 500 patients."""
    book = EpisodeBook(targets)
    ids = sorted(set(patient_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in await session.execute(_episodes_of(chunk)):
            if row.kind == "state":
                book.memories[(row.key, row.name)] = _memory(
                    row.band,
                    row.repeat_until,
                    row.observation_id,
                    row.summary,
                    row.plan_id,
                    row.plan_version,
                )
            else:
                _add_open(book, row.key, row.name, row.severity, row.summary, row.details)
    return book


def _episodes_of(patient_ids: list[str]) -> CompoundSelect[Any]:
    """The patients' rule states that remember something and open alerts, as one result:
    `kind` tells them apart; a column the other kind lacks is NULL."""
    states = select(
        literal_column("'state'").label("kind"),
        RuleState.patient_id.label("key"),
        RuleState.rule.label("name"),
        RuleState.band.label("band"),
        RuleState.repeat_until.label("repeat_until"),
        RuleState.repeat_observation_id.label("observation_id"),
        RuleState.repeat_summary.label("summary"),
        RuleState.repeat_plan_id.label("plan_id"),
        RuleState.repeat_plan_version.label("plan_version"),
        null().cast(Alert.severity.type).label("severity"),
        null().cast(Alert.details.type).label("details"),
    ).where(one_of(RuleState.patient_id, patient_ids), _REMEMBERS_SOMETHING)
    alerts = select(
        literal_column("'alert'"),
        Alert.open_key,
        Alert.id,
        null().cast(RuleState.band.type),
        null().cast(RuleState.repeat_until.type),
        null().cast(RuleState.repeat_observation_id.type),
        Alert.summary,
        null().cast(RuleState.repeat_plan_id.type),
        null().cast(RuleState.repeat_plan_version.type),
        Alert.severity,
        Alert.details,
    ).where(one_of(Alert.patient_id, patient_ids), Alert.open_key.is_not(None))
    return union_all(states, alerts)
