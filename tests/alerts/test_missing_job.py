"""The missing-measurement job against a real database: one alert per patient for an empty
daily window, one outage alert for a silent gateway, nothing for a paused patient."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.alerts.missing_job import (
    DEVICE_OUTAGE,
    MISSING_QUESTIONNAIRE,
    NOT_REPORTED,
    check_missing,
)
from dho.db.models import Alert, AlertEvidence, SchedulerCheckpoint
from dho.ingest.pipeline import Pipeline
from dho.rules import plan_store
from tests.alerts.episode_support import give_plan
from tests.support import (
    PATIENT_A,
    PATIENT_B,
    ROOT,
    patient_id,
    raw_message,
    reading,
    register_device,
    seed,
)

OSLO = ZoneInfo("Europe/Oslo")
PATIENT_C, PATIENT_D = "23865827067", "08894330113"
CUFFS = {
    PATIENT_A: "00-1C-05-FF-FE-0B-00-01",
    PATIENT_B: "00-1C-05-FF-FE-0B-00-02",
    PATIENT_C: "00-1C-05-FF-FE-0B-00-03",
    PATIENT_D: "00-1C-05-FF-FE-0B-00-04",
}
# Yesterday's 10:00 Oslo deadline: the window [00:00, 10:00) closed.
YESTERDAY = (datetime.now(OSLO) - timedelta(days=1)).date()
DEADLINE = datetime.combine(YESTERDAY, time(10, 0), OSLO).astimezone(UTC)
SILENCE = timedelta(hours=24)


async def pulse(pipeline: Pipeline, national_id: str, when: datetime, gateway: str) -> None:
    """A pulse reading from the patient's cuff through `gateway` (the cuff is alive then)."""
    body = reading(CUFFS[national_id], "heart-rate", when, 70, "/min")
    raw = dataclasses.replace(
        raw_message(body, gateway=gateway), received_at=when + timedelta(seconds=5)
    )
    [result] = await pipeline.process([raw])
    assert result.items[0].status == "accepted", result


async def run(pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], now: datetime):  # type: ignore[no-untyped-def]
    return await check_missing(
        sessions, pipeline.reference.plans, (), zone=OSLO, silence=SILENCE, now=now
    )


async def open_alerts(sessions: async_sessionmaker[AsyncSession]) -> list[Alert]:
    async with sessions() as session:
        return list(await session.scalars(select(Alert).order_by(Alert.rule, Alert.patient_id)))


async def test_empty_windows_raise_one_alert_per_patient_and_one_per_silent_gateway(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    await seed(sessions, gateway="hub-2")
    ids = {n: await patient_id(sessions, n) for n in CUFFS}
    start = DEADLINE - timedelta(days=30)
    for national_id, cuff in CUFFS.items():
        await register_device(sessions, cuff, [(national_id, start, None)])
        # blood pressure and pulse every morning before 10:00
        await give_plan(
            sessions,
            pipeline.reference,
            ids[national_id],
            "hypertension",
            {"measurements.heart-rate.schedule": {"before": "10:00"}},
        )
    # A and B: their cuffs delivered yesterday evening... the day before (alive), but not
    # in the window. C and D: their gateway hub-2 has been silent for three days.
    for national_id in (PATIENT_A, PATIENT_B):
        await pulse(pipeline, national_id, DEADLINE - timedelta(hours=20), "test-hub")
    for national_id in (PATIENT_C, PATIENT_D):
        await pulse(pipeline, national_id, DEADLINE - timedelta(days=3), "hub-2")
    # the first run only starts the clock; the checkpoint is put before the window for the test
    assert await run(pipeline, sessions, DEADLINE - timedelta(hours=1)) is None
    async with sessions() as session, session.begin():
        checkpoint = await session.get(SchedulerCheckpoint, "missing-measurements")
        assert checkpoint is not None
        checkpoint.until = DEADLINE - timedelta(hours=2)

    outcome = await run(pipeline, sessions, DEADLINE + timedelta(hours=1))
    assert outcome is not None and (outcome.not_reported, outcome.outages) == (2, 1)
    found = await open_alerts(sessions)
    missing = [a for a in found if a.rule == NOT_REPORTED]
    outages = [a for a in found if a.rule == DEVICE_OUTAGE]
    assert sorted(a.patient_id or "" for a in missing) == sorted([ids[PATIENT_A], ids[PATIENT_B]])
    [outage] = outages
    assert outage.gateway_id == "hub-2" and outage.patient_id is None
    assert ids[PATIENT_C] in outage.details and ids[PATIENT_D] in outage.details
    async with sessions() as session:
        evidence = list(
            await session.scalars(
                select(AlertEvidence.summary).where(AlertEvidence.alert_id == missing[0].id)
            )
        )
    assert sorted(e.split(" ")[0] for e in evidence) == ["blood-pressure", "heart-rate"]

    # running again judges nothing twice
    again = await run(pipeline, sessions, DEADLINE + timedelta(hours=1, minutes=5))
    assert again is None or (again.not_reported, again.outages) == (0, 0)
    assert len(await open_alerts(sessions)) == 3


async def test_a_measured_window_and_a_paused_patient_raise_nothing(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    ids = {n: await patient_id(sessions, n) for n in (PATIENT_A, PATIENT_B)}
    for national_id in (PATIENT_A, PATIENT_B):
        await register_device(
            sessions, CUFFS[national_id], [(national_id, DEADLINE - timedelta(days=30), None)]
        )
        await give_plan(
            sessions,
            pipeline.reference,
            ids[national_id],
            "hypertension",
            {
                "measurements.blood-pressure": None,
                "measurements.heart-rate.schedule": {"before": "10:00"},
            },
        )
    # A measured a minute before the deadline; B is on holiday over the deadline
    await pulse(pipeline, PATIENT_A, DEADLINE - timedelta(minutes=1), "test-hub")
    await pulse(pipeline, PATIENT_B, DEADLINE - timedelta(hours=20), "test-hub")
    async with sessions() as session, session.begin():
        await plan_store.add_pause(
            session,
            ids[PATIENT_B],
            reason="holiday",
            starts_at=DEADLINE - timedelta(hours=12),
            ends_at=DEADLINE + timedelta(days=7),
            by="sykepleier Kari",
        )
        session.add(
            SchedulerCheckpoint(
                job="missing-measurements",
                until=DEADLINE - timedelta(hours=2),
                updated_at=DEADLINE,
            )
        )
    outcome = await run(pipeline, sessions, DEADLINE + timedelta(hours=1))
    assert outcome is not None and (outcome.not_reported, outcome.outages) == (0, 0)
    assert await open_alerts(sessions) == []


def _last_questionnaire_deadline() -> datetime:
    """The latest Monday or Thursday 12:00 Oslo (the COPD questionnaire's days) in the past."""
    day = YESTERDAY
    while day.weekday() not in (0, 3):
        day -= timedelta(days=1)
    return datetime.combine(day, time(12, 0), OSLO).astimezone(UTC)


async def test_an_unanswered_questionnaire_raises_one_alert_per_patient(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    deadline = _last_questionnaire_deadline()
    ids = {n: await patient_id(sessions, n) for n in (PATIENT_A, PATIENT_B)}
    for national_id in ids:
        await register_device(
            sessions, CUFFS[national_id], [(national_id, deadline - timedelta(days=30), None)]
        )
        await give_plan(sessions, pipeline.reference, ids[national_id], "copd")
    answered = json.loads((ROOT / "adapters/examples/questionnaire/copd-worse.json").read_text())
    answered["authored"] = (deadline - timedelta(hours=1)).isoformat()
    raw = dataclasses.replace(
        raw_message(answered), adapter="questionnaire", received_at=deadline - timedelta(hours=1)
    )
    [result] = await pipeline.process([raw])
    assert result.items[0].status == "accepted", result  # patient A answered in time
    async with sessions() as session, session.begin():
        session.add(
            SchedulerCheckpoint(
                job="missing-measurements", until=deadline - timedelta(hours=2), updated_at=deadline
            )
        )
    questionnaires = pipeline.reference.context.questionnaires
    outcome = await check_missing(
        sessions,
        pipeline.reference.plans,
        (),
        zone=OSLO,
        silence=SILENCE,
        now=deadline + timedelta(hours=1),
        questionnaires=questionnaires,
    )
    assert outcome is not None and outcome.missing_questionnaires == 1
    missing = [a for a in await open_alerts(sessions) if a.rule == MISSING_QUESTIONNAIRE]
    assert [(a.patient_id, a.kind) for a in missing] == [(ids[PATIENT_B], MISSING_QUESTIONNAIRE)]
    assert "Symptomskjema KOLS not answered" in missing[0].summary
