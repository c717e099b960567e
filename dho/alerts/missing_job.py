"""The missing-measurement job: measuring windows that closed empty since the last run.

One "measurement not reported" alert per patient (an open one gathers the later empty
windows as evidence), one device-outage alert per silent gateway or device rather than
one per patient. Safe in every process: the checkpoint row is locked for the run, so each
window is judged once.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.alerts.episode_book import (
    DeliveryTarget,
    EpisodeBook,
    Report,
    load_open_episodes,
    open_key,
)
from dho.db.models import (
    DeviceAssignment,
    ObservationRow,
    QuestionnaireResponseRow,
    RawMessage,
    SchedulerCheckpoint,
)
from dho.questionnaires.catalogue import QuestionnaireCatalogue, QuestionnaireDef
from dho.rules.missing import (
    DeviceSeen,
    NotReported,
    Outage,
    PatientWindow,
    Window,
    judge_window,
    windows_closed,
)
from dho.rules.patient_context import PlanCatalogue, load_patient_context
from dho.rules.thresholds import Band

JOB = "missing-measurements"
NOT_REPORTED = "measurement-not-reported"
MISSING_QUESTIONNAIRE = "missing-questionnaire"
DEVICE_OUTAGE = "device-outage"
# Readings measured in a window may arrive a little after its deadline (a scale syncing).
GRACE = timedelta(minutes=30)
LONGEST_RUN = timedelta(days=7)  # after a long stop, look back this far and no further


@dataclass(frozen=True, slots=True)
class MissingRun:
    since: datetime
    until: datetime
    not_reported: int
    outages: int
    missing_questionnaires: int = 0


async def check_missing(
    sessions: async_sessionmaker[AsyncSession],
    catalogue: PlanCatalogue,
    targets: tuple[DeliveryTarget, ...],
    *,
    zone: ZoneInfo,
    silence: timedelta,
    now: datetime,
    questionnaires: QuestionnaireCatalogue | None = None,
) -> MissingRun | None:
    """Judge the windows whose deadline passed since the last run; None when another
    process holds the checkpoint or the first run only starts the clock."""
    until = now - GRACE
    async with sessions() as session, session.begin():
        checkpoint = await session.scalar(
            select(SchedulerCheckpoint)
            .where(SchedulerCheckpoint.job == JOB)
            .with_for_update(skip_locked=True)
        )
        if checkpoint is None:
            if await session.get(SchedulerCheckpoint, JOB) is None:
                session.add(SchedulerCheckpoint(job=JOB, until=until, updated_at=now))
            return None
        since = max(checkpoint.until, until - LONGEST_RUN)
        if until <= since:
            return None
        run = await _judge(session, catalogue, targets, zone, silence, since, until, now)
        if questionnaires is not None:
            run = await _unanswered(session, catalogue, questionnaires, targets, zone, run, now)
        checkpoint.until, checkpoint.updated_at = until, now
        return run


async def _judge(
    session: AsyncSession,
    catalogue: PlanCatalogue,
    targets: tuple[DeliveryTarget, ...],
    zone: ZoneInfo,
    silence: timedelta,
    since: datetime,
    until: datetime,
    now: datetime,
) -> MissingRun:
    assignments = await _assignments(session, since, until)
    patients = sorted({a.patient_id for a in assignments})
    context = await load_patient_context(session, catalogue, [(p, "", until) for p in patients])
    due: dict[tuple[str, Window], list[str]] = defaultdict(list)
    for patient in patients:
        plan = context.plan_for(patient, until).plan
        for type_key, measurement in plan.measurements.items():
            if measurement.schedule is None:
                continue
            for window in windows_closed(measurement.schedule, zone, since, until):
                if context.pause_at(patient, window.deadline) is None:
                    due[(type_key, window)].append(patient)
    if not due:
        return MissingRun(since, until, 0, 0)
    seen = await _devices_seen(session, assignments)
    starts = min(w.start for _, w in due)
    readings = await _readings(session, patients, {t for t, _ in due}, starts, until)
    book = EpisodeBook(targets)
    findings: list[tuple[NotReported | Outage, str]] = []
    for (type_key, window), who in sorted(due.items(), key=lambda kv: kv[0][1].deadline):
        judged = judge_window(
            window,
            [
                PatientWindow(
                    patient,
                    _delivering(
                        seen[(patient, d)] for d in _devices_of(assignments, patient, window)
                    ),
                    tuple(readings.get((patient, type_key), ())),
                )
                for patient in who
            ],
            silence,
        )
        found: list[NotReported | Outage] = [*judged.not_reported, *judged.outages]
        findings.extend((finding, type_key) for finding in found)
    await load_open_episodes(book, session, [open_key(*_episode(f)) for f, _ in findings])
    counted: dict[str, set[str]] = {NOT_REPORTED: set(), DEVICE_OUTAGE: set()}
    for finding, type_key in findings:
        book.report(_report(finding, type_key), now)
        counted[_episode(finding)[1]].add(_subject(finding))
    await book.flush(session, now)
    return MissingRun(since, until, len(counted[NOT_REPORTED]), len(counted[DEVICE_OUTAGE]))


async def _unanswered(
    session: AsyncSession,
    catalogue: PlanCatalogue,
    questionnaires: QuestionnaireCatalogue,
    targets: tuple[DeliveryTarget, ...],
    zone: ZoneInfo,
    run: MissingRun,
    now: datetime,
) -> MissingRun:
    """One missing-questionnaire alert per patient whose questionnaire window closed
    without a reply (later empty windows join the open alert)."""
    assignments = await _assignments(session, run.since, run.until)
    patients = sorted({a.patient_id for a in assignments})
    context = await load_patient_context(session, catalogue, [(p, "", run.until) for p in patients])
    due: list[tuple[str, QuestionnaireDef, Window]] = []
    for patient in patients:
        for name in context.plan_for(patient, run.until).plan.questionnaires:
            definition = questionnaires.get(name)
            if definition is None or definition.schedule is None:
                continue
            for window in windows_closed(definition.schedule, zone, run.since, run.until):
                if context.pause_at(patient, window.deadline) is None:
                    due.append((patient, definition, window))
    if not due:
        return run
    answered = await _replies(
        session, sorted({p for p, _, _ in due}), min(w.start for *_, w in due)
    )
    book = EpisodeBook(targets)
    keys = [open_key(f"patient:{p}", MISSING_QUESTIONNAIRE) for p, _, _ in due]
    await load_open_episodes(book, session, keys)
    missed = set()
    for patient, definition, window in due:
        times = answered.get((patient, definition.id), ())
        if any(window.start <= t < window.deadline for t in times):
            continue
        missed.add(patient)
        local = window.deadline.astimezone(zone)
        book.report(
            Report(
                subject=f"patient:{patient}",
                rule=MISSING_QUESTIONNAIRE,
                kind=MISSING_QUESTIONNAIRE,
                band=Band.YELLOW,
                summary=(
                    f"{definition.title} not answered {window.day.isoformat()} before {local:%H:%M}"
                ),
                details={"questionnaire": definition.id, "day": window.day.isoformat()},
                patient_id=patient,
            ),
            now,
        )
    await book.flush(session, now)
    return dataclasses.replace(run, missing_questionnaires=len(missed))


async def _replies(
    session: AsyncSession, patients: list[str], since: datetime
) -> dict[tuple[str, str], list[datetime]]:
    found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for start in range(0, len(patients), 500):
        rows = await session.execute(
            select(
                QuestionnaireResponseRow.patient_id,
                QuestionnaireResponseRow.questionnaire,
                QuestionnaireResponseRow.authored,
            ).where(
                QuestionnaireResponseRow.patient_id.in_(patients[start : start + 500]),
                QuestionnaireResponseRow.authored >= since,
            )
        )
        for patient, name, authored in rows:
            found[(patient, name)].append(authored)
    return found


def _subject(finding: NotReported | Outage) -> str:
    if isinstance(finding, NotReported):
        return f"patient:{finding.patient_id}"
    return f"{finding.kind}:{finding.subject_id}"


def _episode(finding: NotReported | Outage) -> tuple[str, str]:
    rule = NOT_REPORTED if isinstance(finding, NotReported) else DEVICE_OUTAGE
    return _subject(finding), rule


def _report(finding: NotReported | Outage, type_key: str) -> Report:
    window = finding.window
    local = window.deadline.astimezone(ZoneInfo("Europe/Oslo"))
    when = f"{window.day.isoformat()} before {local:%H:%M}"
    if isinstance(finding, NotReported):
        return Report(
            subject=_subject(finding),
            rule=NOT_REPORTED,
            kind=NOT_REPORTED,
            band=Band.YELLOW,
            summary=f"{type_key} not reported {when}",
            details={"type": type_key, "day": window.day.isoformat(), "cause": "skipped"},
            patient_id=finding.patient_id,
        )
    silent = finding.last_seen.isoformat() if finding.last_seen else "never"
    summary = (
        f"{finding.kind} {finding.subject_id} silent (last data {silent}): "
        f"{len(finding.patients)} patient(s) without {type_key} {when}"
    )
    return Report(
        subject=_subject(finding),
        rule=DEVICE_OUTAGE,
        kind=DEVICE_OUTAGE,
        band=Band.YELLOW,
        summary=summary,
        details={
            "cause": f"{finding.kind}-silent",
            "patients": ", ".join(finding.patients),
            "last_seen": silent,
        },
        patient_id=finding.patients[0] if len(finding.patients) == 1 else None,
        gateway_id=finding.gateway_id or None,
        device_id=finding.subject_id if finding.kind == "device" else None,
    )


async def _assignments(
    session: AsyncSession, since: datetime, until: datetime
) -> list[DeviceAssignment]:
    query = select(DeviceAssignment).where(
        DeviceAssignment.period_start < until,
        or_(DeviceAssignment.period_end.is_(None), DeviceAssignment.period_end > since),
    )
    return list(await session.scalars(query))


def _devices_of(assignments: Iterable[DeviceAssignment], patient: str, window: Window) -> list[str]:
    return sorted(
        {
            a.device_id
            for a in assignments
            if a.patient_id == patient
            and a.period_start < window.deadline
            and (a.period_end is None or a.period_end > window.start)
        }
    )


def _delivering(devices: Iterable[DeviceSeen]) -> tuple[DeviceSeen, ...]:
    """The devices that ever delivered (a spare one never used says nothing), or all of
    them when none has: then a device that never delivered is the outage."""
    every = tuple(devices)
    used = tuple(d for d in every if d.last_seen is not None)
    return used or every


async def _devices_seen(
    session: AsyncSession, assignments: list[DeviceAssignment]
) -> dict[tuple[str, str], DeviceSeen]:
    """Per (patient, device): when the device and its gateway last delivered anything."""
    devices = sorted({a.device_id for a in assignments})
    last: dict[str, tuple[str, datetime | None]] = {}
    for start in range(0, len(devices), 500):
        rows = await session.execute(
            select(
                ObservationRow.device_id,
                RawMessage.gateway_id,
                func.max(ObservationRow.received_at),
            )
            .join(RawMessage, RawMessage.id == ObservationRow.raw_message_id)
            .where(ObservationRow.device_id.in_(devices[start : start + 500]))
            .group_by(ObservationRow.device_id, RawMessage.gateway_id)
        )
        for device, gateway, at in rows:
            known = last.get(device, ("", None))[1]
            if at is not None and (known is None or at > known):
                last[device] = (gateway, at)
    gateways = sorted({gateway for gateway, _ in last.values()})
    gateway_seen: dict[str, datetime] = {}
    if gateways:
        latest = await session.execute(
            select(RawMessage.gateway_id, func.max(RawMessage.received_at))
            .where(RawMessage.gateway_id.in_(gateways))
            .group_by(RawMessage.gateway_id)
        )
        gateway_seen = {gateway: at for gateway, at in latest}
    seen = {}
    for a in assignments:
        gateway, at = last.get(a.device_id, ("", None))
        seen[(a.patient_id, a.device_id)] = DeviceSeen(
            a.device_id, gateway, at, gateway_seen.get(gateway)
        )
    return seen


async def _readings(
    session: AsyncSession, patients: list[str], types: set[str], since: datetime, until: datetime
) -> dict[tuple[str, str], list[datetime]]:
    found: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for start in range(0, len(patients), 500):
        rows = await session.execute(
            select(ObservationRow.patient_id, ObservationRow.type, ObservationRow.effective).where(
                ObservationRow.patient_id.in_(patients[start : start + 500]),
                ObservationRow.type.in_(sorted(types)),
                ObservationRow.effective >= since,
                ObservationRow.effective < until,
            )
        )
        for patient, type_key, effective in rows:
            found[(patient, type_key)].append(effective)
    return found
