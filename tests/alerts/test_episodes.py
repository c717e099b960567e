"""Calm alerting through the real pipeline (SQLite and PostgreSQL): one open episode per
patient and rule, severity rising only, hysteresis, pauses, repeat measurements, late data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho import jsonutil
from dho.alerts.jobs import alert_unrepeated
from dho.db.engine import create_engine, session_factory
from dho.db.models import Alert, AlertEvidence, ObservationRow, RuleState
from dho.ingest import pipeline as pipeline_module
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.ingest.plan import ItemResult
from dho.ingest.receipts import item_receipt
from dho.rules import plan_store
from dho.settings import Settings
from tests.alerts.episode_support import (
    DAY0,
    NOW,
    OXIMETER_A,
    SCALE_A,
    SCALE_B,
    give_plan,
    send,
)
from tests.fhir_checks import assert_valid_fhir_json
from tests.support import (
    PATIENT_A,
    PATIENT_B,
    blood_pressure,
    raw_message,
    reading,
)

REPEAT_15 = {"repeat_before_yellow": {"within_minutes": 15}}


def weight(device: str, when: datetime, kg: str) -> dict[str, Any]:
    return reading(device, "body-weight", when, float(kg), "kg")


def spo2(when: datetime, value: int) -> dict[str, Any]:
    return reading(OXIMETER_A, "oxygen-saturation", when, value, "%")


async def alerts(sessions: async_sessionmaker[AsyncSession]) -> list[Alert]:
    async with sessions() as session:
        return list(await session.scalars(select(Alert).order_by(Alert.created_at)))


async def evidence(sessions: async_sessionmaker[AsyncSession], alert_id: str) -> list[str]:
    async with sessions() as session:
        query = select(AlertEvidence.summary).where(AlertEvidence.alert_id == alert_id)
        return list(await session.scalars(query.order_by(AlertEvidence.id)))


async def close(sessions: async_sessionmaker[AsyncSession], alert_id: str) -> None:
    """What closing an alert (the workflow of a later issue) does to its episode."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(Alert)
            .where(Alert.id == alert_id)
            .values(open_key=None, status="closed", closed_at=datetime.now(UTC))
        )


async def test_weight_gain_over_three_days_raises_one_alert_and_a_fourth_rise_updates_it(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    plan_id = await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "heart-failure")
    first = await send(pipeline, weight(SCALE_A, DAY0, "80.0"))
    second = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=1), "81.2"))
    assert (first.alert_id, second.alert_id) == (None, None)
    assert (first.colour, second.colour) == ("green", "green")
    third = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=2), "82.1"))
    assert third.alert_id is not None and third.alert_severity == "yellow"
    [alert] = await alerts(sessions)
    assert (alert.rule, alert.severity, alert.status) == (
        "change:body-weight:rise:3d",
        "yellow",
        "reported",
    )
    assert (alert.plan_id, alert.plan_version) == (plan_id, 1)
    assert "+2.1 kg" in alert.summary
    plan = pipeline.reference.plans.standard["heart-failure"]
    assert jsonutil.loads(alert.details)["patient_text"] == plan.texts_for("body-weight", 2).patient

    fourth = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=2, hours=12), "82.6"))
    assert fourth.alert_id == alert.id
    [updated] = await alerts(sessions)
    assert updated.id == alert.id and "+2.6 kg" in updated.summary
    assert updated.updated_at > alert.updated_at
    assert len(await evidence(sessions, alert.id)) == 2


async def test_two_processes_evaluating_at_once_leave_one_open_alert(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    reference = ReferenceData.load(settings)
    other_engine = create_engine(settings)
    first = Pipeline(settings, sessions, reference)
    second = Pipeline(settings, session_factory(other_engine), reference)
    try:
        for national_id, scale in ((PATIENT_A, SCALE_A), (PATIENT_B, SCALE_B)):
            await give_plan(sessions, reference, patients[national_id], "heart-failure")
            await send(first, weight(scale, DAY0, "80.0"))
            day2 = DAY0 + timedelta(days=2)
            a, b = await asyncio.gather(
                send(first, weight(scale, day2, "82.3")),
                send(second, weight(scale, day2 + timedelta(minutes=1), "82.4")),
            )
            assert a.alert_id is not None and a.alert_id == b.alert_id
    finally:
        await other_engine.dispose()
    found = await alerts(sessions)
    assert sorted(a.patient_id or "" for a in found) == sorted(patients.values())
    for alert in found:
        assert len(await evidence(sessions, alert.id)) == 2


async def test_the_database_refuses_a_second_open_episode(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    item = await send(pipeline, blood_pressure(190, 110, NOW - timedelta(minutes=5)))
    [alert] = await alerts(sessions)
    assert item.alert_id == alert.id and alert.open_key is not None
    twin = {c.name: getattr(alert, c.name) for c in Alert.__table__.columns if c.name != "id"} | {
        "id": "twin"
    }
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(Alert(**twin))


async def test_severity_rises_but_never_falls_within_an_episode(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    start = NOW - timedelta(minutes=30)
    yellow = await send(pipeline, spo2(start, 91))
    red = await send(pipeline, spo2(start + timedelta(minutes=1), 87))
    better = await send(pipeline, spo2(start + timedelta(minutes=2), 90))
    assert yellow.alert_id == red.alert_id == better.alert_id
    assert (yellow.alert_severity, red.alert_severity, better.alert_severity) == (
        "yellow",
        "red",
        "red",
    )
    [alert] = await alerts(sessions)
    assert alert.severity == "red" and "87" in alert.summary  # a better reading: not its summary
    assert len(await evidence(sessions, alert.id)) == 3


async def test_a_value_hovering_at_a_cut_point_does_not_flap(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    """General plan: SpO2 92 is yellow (on the cut-point), 93 green, margin 1 point."""
    start = NOW - timedelta(minutes=50)
    values = iter(range(50))

    async def at(value: int) -> ItemResult:
        return await send(pipeline, spo2(start + timedelta(minutes=next(values)), value))

    opened = await at(92)
    assert opened.alert_id is not None
    for value in (93, 92, 93, 92):
        assert (await at(value)).alert_id in (None, opened.alert_id)
    assert len(await alerts(sessions)) == 1
    await close(sessions, opened.alert_id)
    for value in (93, 92, 93, 92):  # still hovering after the nurse closed it: no new alert
        assert (await at(value)).alert_id is None
    assert len(await alerts(sessions)) == 1
    assert (await at(95)).alert_id is None  # back past the cut-point by the margin: green
    again = await at(92)
    assert again.alert_id is not None and again.alert_id != opened.alert_id
    assert len(await alerts(sessions)) == 2


async def test_paused_patients_raise_nothing_and_rules_apply_after_the_pause(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    patient = patients[PATIENT_A]
    async with sessions() as session, session.begin():
        await plan_store.add_pause(
            session,
            patient,
            reason="admitted",
            starts_at=NOW - timedelta(hours=2),
            ends_at=NOW + timedelta(days=3),
            by="sykepleier Kari",
        )
    during = await send(pipeline, blood_pressure(190, 110, NOW - timedelta(minutes=20)))
    assert during.alert_id is None and during.colour == "red" and during.paused_until
    receipt = item_receipt(during)["judgement"]
    assert "pause" in receipt["patient_text"] and receipt["colour"] == "red"
    weight_during = await send(pipeline, weight(SCALE_A, NOW - timedelta(minutes=19), "95.0"))
    assert weight_during.alert_id is None
    assert await alerts(sessions) == []
    async with sessions() as session:
        stored = await session.scalar(
            select(ObservationRow.id).where(ObservationRow.patient_id == patient).limit(1)
        )
    assert stored is not None  # the data is still stored
    async with sessions() as session, session.begin():
        assert await plan_store.end_pauses(session, patient, NOW - timedelta(minutes=10)) == 1
    after = await send(pipeline, blood_pressure(190, 110, NOW - timedelta(minutes=5)))
    assert after.alert_id is not None and after.alert_severity == "red"
    assert after.paused_until is None


async def test_a_repeat_measurement_confirms_a_single_yellow_outlier(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "general", REPEAT_15)
    start = NOW - timedelta(minutes=40)
    asked = await send(pipeline, spo2(start, 91))
    assert asked.alert_id is None and asked.repeat_within_minutes == 15
    assert "mål på nytt" in item_receipt(asked)["judgement"]["patient_text"]
    fine = await send(pipeline, spo2(start + timedelta(minutes=5), 96))
    assert fine.alert_id is None and fine.repeat_within_minutes is None
    assert await alerts(sessions) == []
    await send(pipeline, spo2(start + timedelta(minutes=10), 91))
    confirmed = await send(pipeline, spo2(start + timedelta(minutes=15), 92))
    assert confirmed.alert_id is not None and confirmed.alert_severity == "yellow"
    red = await send(pipeline, spo2(start + timedelta(minutes=20), 80))
    assert red.alert_severity == "red"  # red is never held back for a repeat


async def test_late_readings_feed_trends_but_raise_no_acute_alert(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "heart-failure")
    late = await send(pipeline, weight(SCALE_A, DAY0, "80.0"), received=NOW)
    assert late.late and late.alert_id is None
    late_high = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=1), "83.0"), NOW)
    assert late_high.late and late_high.alert_id is None
    assert await alerts(sessions) == []
    async with sessions() as session:
        assert await session.scalar(select(RuleState.band)) is None  # nothing settled
    live = await send(pipeline, weight(SCALE_A, NOW - timedelta(minutes=1), "82.5"))
    assert live.alert_id is not None  # +2.5 kg from the late 80.0 within 3 days


async def test_the_stored_observation_carries_interpretation_and_reference_range(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    item = await send(pipeline, blood_pressure(165, 85, NOW - timedelta(minutes=3)))
    assert item.colour == "yellow" and item.plan == "general v0"
    async with sessions() as session:
        text = await session.scalar(
            select(ObservationRow.resource).where(ObservationRow.id == item.observation_id)
        )
    assert text is not None
    resource = assert_valid_fhir_json(text, pipeline.reference.types)
    systolic, diastolic = resource["component"]
    assert systolic["interpretation"][0]["coding"][0]["code"] == "H"
    assert diastolic["interpretation"][0]["coding"][0]["code"] == "N"
    assert systolic["referenceRange"][0]["high"]["value"] == 160
    assert "general v0" in systolic["referenceRange"][0]["text"]
    assert "interpretation" not in resource  # a panel is judged per component
    # the plan's notes are not part of the reading: sent again, it is a duplicate
    await send(pipeline, blood_pressure(165, 85, NOW - timedelta(minutes=3)), NOW, "duplicate")


async def test_a_correction_is_judged_again(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    when = NOW - timedelta(minutes=3)
    first = await send(pipeline, blood_pressure(128, 80, when))
    corrected = await send(pipeline, blood_pressure(185, 80, when), NOW)
    assert first.alert_id is None and corrected.amended and corrected.alert_severity == "red"


async def test_a_repeat_that_never_comes_still_raises_the_yellow_alert(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "general", REPEAT_15)
    asked = await send(pipeline, spo2(NOW - timedelta(minutes=2), 91))
    assert asked.repeat_within_minutes == 15
    assert await alert_unrepeated(sessions, (), datetime.now(UTC)) == 0  # not due yet
    later = datetime.now(UTC) + timedelta(minutes=16)
    assert await alert_unrepeated(sessions, (), later) == 1
    assert await alert_unrepeated(sessions, (), later) == 0  # raised once
    [alert] = await alerts(sessions)
    assert (alert.severity, alert.observation_id) == ("yellow", asked.observation_id)
    assert "not measured again in time" in alert.summary
    # the patient measures yellow again: the same episode, no second alert
    again = await send(pipeline, spo2(NOW - timedelta(minutes=1), 91))
    assert again.alert_id == alert.id


async def test_a_rule_that_fails_quarantines_the_reading_instead_of_storing_it_unjudged(
    pipeline: Pipeline,
    sessions: async_sessionmaker[AsyncSession],
    patients: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = pipeline_module.judge

    def judge_failing_on_weight(m: Any, *args: Any) -> Any:
        if m.type == "body-weight":
            raise RuntimeError("bug in a rule")
        return real(m, *args)

    monkeypatch.setattr(pipeline_module, "judge", judge_failing_on_weight)
    raw = raw_message([weight(SCALE_A, NOW, "80.0"), spo2(NOW, 97)])
    [result] = await pipeline.process([raw])
    assert [i.status for i in result.items] == ["quarantined", "accepted"]
    assert result.items[0].reason == "processing-error"
    async with sessions() as session:
        types = list(await session.scalars(select(ObservationRow.type)))
    assert types == ["oxygen-saturation"]


async def test_the_episode_book_reads_a_fresh_rule_state_as_absent(
    sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    """Rule states that went back to green are not read (most of them, in service); the
    book treats an absent state as fresh, so the outcome is the same."""
    from dho.alerts.episode_book import load_episode_book
    from dho.alerts.episodes import FRESH
    from dho.rules.thresholds import Band

    patient = patients[PATIENT_A]
    rows = [
        {"rule": "range:heart-rate", "band": int(Band.GREEN)},  # fresh
        {"rule": "range:oxygen-saturation", "band": int(Band.YELLOW)},
        {"rule": "range:blood-pressure", "band": int(Band.GREEN), "repeat_until": NOW},
    ]
    async with sessions() as session, session.begin():
        for row in rows:
            session.add(RuleState(patient_id=patient, updated_at=NOW, **row))
    async with sessions() as session:
        book = await load_episode_book(session, [patient], ())
    assert set(book.memories) == {
        (patient, "range:oxygen-saturation"),
        (patient, "range:blood-pressure"),
    }
    assert book.memories[(patient, "range:oxygen-saturation")].band == Band.YELLOW
    assert book.memories[(patient, "range:blood-pressure")].repeat_until is not None
    assert book.memories.get((patient, "range:heart-rate"), FRESH) == FRESH
