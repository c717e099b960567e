"""NEWS2 through the pipeline: stored as its own R4 Observation beside the vitals it read,
re-scored as vitals arrive, alerting at the plan's colour for its response band."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fhirclient.models.observation import Observation as R4Observation  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho import jsonutil
from dho.db.models import Alert, AlertEvidence, ObservationRow, ObservationVersion
from dho.ingest.pipeline import Pipeline
from dho.rules.news2_fhir import NEWS2_CODE
from tests.alerts.episode_support import OXIMETER_A, give_plan, send
from tests.support import PATIENT_A, reading

NOW = datetime.now(UTC).replace(microsecond=0)


async def scores(sessions: async_sessionmaker[AsyncSession]) -> list[ObservationRow]:
    async with sessions() as session:
        query = select(ObservationRow).where(ObservationRow.type == "news2")
        return list(await session.scalars(query))


async def test_news2_is_stored_rescored_and_alerts_at_the_plans_colour(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    await give_plan(sessions, pipeline.reference, patients[PATIENT_A], "copd")
    start = NOW - timedelta(minutes=30)
    pulse = await send(pipeline, reading(OXIMETER_A, "heart-rate", start, 95, "/min"))
    [score] = await scores(sessions)
    resource = jsonutil.loads(score.resource)
    R4Observation(json.loads(score.resource), strict=True)
    assert resource["code"]["coding"][0]["code"] == NEWS2_CODE
    assert (
        resource["valueQuantity"]["value"] == 1 and resource["valueQuantity"]["code"] == "{score}"
    )
    assert resource["derivedFrom"] == [{"reference": f"Observation/{pulse.observation_id}"}]
    assert any(t["code"] == "partial" for t in resource["meta"]["tag"])
    assert resource["subject"]["reference"] == f"Patient/{patients[PATIENT_A]}"
    assert pulse.alert_id is None  # NEWS2 1: low, green in the COPD plan

    # SpO2 84 % on scale 2 (the COPD target 88-92 %) scores 2; with the pulse: 3 (low)
    spo2 = await send(pipeline, reading(OXIMETER_A, "oxygen-saturation", start, 84, "%"))
    [rescored] = await scores(sessions)
    assert rescored.id == score.id and rescored.version_id == 2  # same newest time: re-scored
    assert jsonutil.loads(rescored.resource)["valueQuantity"]["value"] == 3
    assert spo2.alert_severity == "red"  # the SpO2 range rule (red below 85), not NEWS2

    # respiratory rate 26 scores 3: total 6, medium -> red NEWS2 episode of its own
    later = start + timedelta(minutes=5)
    breath = await send(pipeline, reading(OXIMETER_A, "respiratory-rate", later, 26, "/min"))
    assert breath.alert_id is not None
    async with sessions() as session:
        found = list(await session.scalars(select(Alert).order_by(Alert.created_at)))
        versions = await session.scalar(
            select(ObservationVersion.version_id).where(
                ObservationVersion.observation_id == score.id, ObservationVersion.version_id == 2
            )
        )
    assert versions == 2
    rules = {a.rule: a for a in found}
    assert (
        rules["news2"].severity == "red" and "NEWS2 6 (partial), medium" in rules["news2"].summary
    )
    newest = [s for s in await scores(sessions) if s.id != score.id]
    assert len(newest) == 1 and rules["news2"].observation_id == newest[0].id

    # a later score still in the medium band joins the open NEWS2 episode (a later batch)
    again = start + timedelta(minutes=10)
    await send(pipeline, reading(OXIMETER_A, "respiratory-rate", again, 27, "/min"))
    async with sessions() as session:
        episodes = list(await session.scalars(select(Alert).where(Alert.rule == "news2")))
        evidence = list(
            await session.scalars(
                select(AlertEvidence).where(AlertEvidence.alert_id == rules["news2"].id)
            )
        )
    assert [a.id for a in episodes] == [rules["news2"].id]
    assert len(evidence) == 2


async def test_no_news2_without_a_plan_that_scores_it(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    await send(pipeline, reading(OXIMETER_A, "heart-rate", NOW - timedelta(minutes=3), 95, "/min"))
    assert await scores(sessions) == []  # the general plan does not score NEWS2
