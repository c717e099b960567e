"""The history a pipeline keeps between batches stays true (SQLite and PostgreSQL): another
process's readings, a rolled-back batch and a correction all reach the trend rules; so do
new plan versions and pauses.

The weight rule of the heart-failure plan flags a rise of more than 2 kg over the lowest
reading of the 3 days before; each test hinges on one reading the cache could get wrong.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.engine import create_engine, session_factory
from dho.db.models import ObservationRow, Patient
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.rules import plan_store
from dho.settings import Settings
from tests.alerts.episode_support import DAY0, NOW, SCALE_A, give_plan, send
from tests.alerts.test_episodes import weight
from tests.support import PATIENT_A, raw_message


async def stamp(sessions: async_sessionmaker[AsyncSession], patient: str) -> int | None:
    async with sessions() as session:
        return await session.scalar(select(Patient.history_stamp).where(Patient.id == patient))


async def test_readings_stored_by_another_process_reach_the_cached_history(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    reference = ReferenceData.load(settings)
    await give_plan(sessions, reference, patients[PATIENT_A], "heart-failure")
    other_engine = create_engine(settings)
    first = Pipeline(settings, sessions, reference)
    second = Pipeline(settings, session_factory(other_engine), reference)
    try:
        await send(first, weight(SCALE_A, DAY0, "80.0"))
        before = await stamp(sessions, patients[PATIENT_A])
        assert len(first.history) == 1
        await send(second, weight(SCALE_A, DAY0 + timedelta(days=1), "78.0"))
        assert await stamp(sessions, patients[PATIENT_A]) not in (before, None)
        # 80.5 is 0.5 kg above what `first` has seen itself, 2.5 kg above the 78.0.
        third = await send(first, weight(SCALE_A, DAY0 + timedelta(days=2), "80.5"))
    finally:
        await other_engine.dispose()
    assert third.alert_id is not None and third.alert_severity == "yellow"
    assert first.history.misses >= 2  # the second process's stamp made `first` read again


async def test_a_rolled_back_batch_leaves_no_reading_behind_in_the_cache(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "heart-failure")
    await send(pipeline, weight(SCALE_A, DAY0, "80.0"))
    day1 = DAY0 + timedelta(days=1)
    low = dataclasses.replace(
        raw_message(weight(SCALE_A, day1, "78.0")), received_at=day1 + timedelta(seconds=5)
    )

    class Abandoned(Exception):
        pass

    try:
        async with sessions() as session, session.begin():
            plans = await pipeline.compute(session, [low])
            [result] = await pipeline.record_plans(session, plans)
            assert result.items[0].status == "accepted"
            raise Abandoned
    except Abandoned:
        pass
    async with sessions() as session:
        values = await session.scalars(
            select(ObservationRow.value).where(ObservationRow.patient_id == patients[PATIENT_A])
        )
        assert [float(v) for v in values] == [80.0]
    # Had the cache kept the rolled-back 78.0, this would be a 2.5 kg rise.
    third = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=2), "80.5"))
    assert third.alert_id is None and third.colour == "green"


async def test_a_corrected_reading_replaces_the_cached_value(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "heart-failure")
    day1 = DAY0 + timedelta(days=1)
    await send(pipeline, weight(SCALE_A, DAY0, "80.0"))
    await send(pipeline, weight(SCALE_A, day1, "78.0"))
    fixed = await send(pipeline, weight(SCALE_A, day1, "80.2"), NOW)
    assert fixed.amended
    third = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=2), "80.5"))
    assert third.alert_id is None and third.colour == "green"


async def test_without_a_cache_every_batch_reads_the_history(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    uncached = settings.model_copy(update={"history_cache_patients": 0})
    pipeline = Pipeline(uncached, sessions, ReferenceData.load(uncached))
    await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "heart-failure")
    await send(pipeline, weight(SCALE_A, DAY0, "80.0"))
    await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=1), "78.0"))
    third = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=2), "80.5"))
    assert len(pipeline.history) == 0 and pipeline.history.hits == 0
    assert third.alert_severity == "yellow"


async def test_pipelines_can_share_one_cache_even_while_it_is_empty(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    reference = ReferenceData.load(settings)
    first = Pipeline(settings, sessions, reference)
    second = Pipeline(settings, sessions, reference, first.history)
    assert second.history is first.history
    await give_plan(sessions, reference, patients[PATIENT_A], "heart-failure")
    await send(first, weight(SCALE_A, DAY0, "80.0"))
    await send(second, weight(SCALE_A, DAY0 + timedelta(days=1), "80.1"))
    assert first.history.hits == 1


async def test_a_new_plan_version_or_pause_reaches_a_pipeline_that_kept_the_old_ones(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    patient = patients[PATIENT_A]
    # Judged by the default (general) plan, which the pipeline now keeps for the patient.
    before = await send(pipeline, weight(SCALE_A, DAY0, "80.0"))
    assert before.plan == "general v0"
    await give_plan(sessions, pipeline.reference, patient, "heart-failure")
    second = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=1), "80.4"))
    assert second.plan == "heart-failure v1"
    async with sessions() as session, session.begin():
        await plan_store.add_pause(
            session,
            patient,
            reason="holiday",
            starts_at=DAY0 + timedelta(days=1, hours=1),
            ends_at=NOW + timedelta(days=3),
            by="sykepleier Kari",
        )
    during = await send(pipeline, weight(SCALE_A, DAY0 + timedelta(days=2), "83.0"))
    assert during.paused_until is not None and during.alert_id is None
