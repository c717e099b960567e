"""Symptom questionnaires through the pipeline: a reply is stored once, judged by its
rules, alerts when yellow or red (one open episode), and the receipt says what to do."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhirclient.models.questionnaireresponse import (  # type: ignore[import-untyped]
    QuestionnaireResponse as R4QuestionnaireResponse,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.models import Alert, QuestionnaireResponseRow
from dho.ingest.measurement import RawMessage
from dho.ingest.pipeline import Pipeline
from dho.ingest.plan import ItemResult
from dho.ingest.receipts import item_receipt
from dho.rules import plan_store
from tests.support import PATIENT_A, ROOT

EXAMPLE = ROOT / "adapters" / "examples" / "questionnaire" / "copd-worse.json"
CODES = "https://dho.example.no/fhir/CodeSystem/symptom-answer"
NOW = datetime.now(UTC).replace(microsecond=0)


def reply(answers: dict[str, str], authored: datetime = NOW, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(json.loads(EXAMPLE.read_text(encoding="utf-8")))
    body.pop("identifier")
    body["authored"] = authored.isoformat()
    for item in body["item"]:
        if item["linkId"] in answers:
            item["answer"] = [{"valueCoding": {"system": CODES, "code": answers[item["linkId"]]}}]
    return body | changes


async def send(pipeline: Pipeline, body: Any, received: datetime | None = None) -> ItemResult:
    raw = RawMessage(
        payload=json.dumps(body).encode(),
        transport="http",
        topic="/ingest/questionnaire",
        gateway="test-hub",
        adapter="questionnaire",
        received_at=received or NOW + timedelta(seconds=5),
    )
    [result] = await pipeline.process([raw])
    if result.status == "rejected":
        return ItemResult(0, "quarantined", reason=result.reason, reason_code=result.reason_code)
    [item] = result.items
    return item


async def test_a_reply_is_stored_judged_and_alerted_once(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    fine = await send(pipeline, reply({"breathlessness": "usual", "cough": "no"}))
    assert fine.status == "accepted" and fine.colour == "green" and fine.alert_id is None
    assert (fine.reference or "").startswith("QuestionnaireResponse/")
    worse = await send(pipeline, reply({}, NOW + timedelta(minutes=1)))  # worse + cough
    assert worse.colour == "yellow" and worse.alert_severity == "yellow"
    receipt = item_receipt(worse)["judgement"]
    assert "Sykepleier ringer deg i dag" in receipt["patient_text"]
    red = await send(pipeline, reply({"breathlessness": "much-worse"}, NOW + timedelta(minutes=2)))
    assert red.alert_id == worse.alert_id and red.alert_severity == "red"
    three_yellow = reply({"fever": "yes", "sputum": "changed-colour"}, NOW + timedelta(minutes=3))
    assert (await send(pipeline, three_yellow)).colour == "red"  # four yellow answers
    again = await send(pipeline, reply({}, NOW + timedelta(minutes=1)))
    assert again.status == "duplicate" and again.reference == worse.reference
    async with sessions() as session:
        rows = list(await session.scalars(select(QuestionnaireResponseRow)))
        alerts = list(await session.scalars(select(Alert)))
    assert len(rows) == 4
    assert {r.patient_id for r in rows} == {patients[PATIENT_A]}
    for row in rows:
        R4QuestionnaireResponse(json.loads(row.resource), strict=True)
    [alert] = alerts
    assert (alert.kind, alert.rule, alert.severity) == (
        "questionnaire-answer",
        "questionnaire:copd-symptoms",
        "red",
    )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"questionnaire": "https://example.org/Questionnaire/other"}, "unknown-questionnaire"),
        (
            {"questionnaire": "https://dho.example.no/fhir/Questionnaire/copd-symptoms|9"},
            "questionnaire-version",
        ),
        ({"status": "in-progress"}, "status-not-accepted"),
        ({"authored": "2026-12-01T09:12:00"}, "invalid-fhir"),  # R4: a time needs a zone
        ({"authored": "2026-12-01"}, "no-authored"),
        ({"subject": {"display": "Ingrid"}}, "no-subject"),
        ({"item": [{"linkId": "mood", "answer": [{"valueString": "ok"}]}]}, "unknown-item"),
        (
            {"item": [{"linkId": "breathlessness", "answer": [{"valueString": "bad"}]}]},
            "wrong-answer-type",
        ),
        (
            {
                "item": [
                    {
                        "linkId": "breathlessness",
                        "answer": [{"valueCoding": {"system": CODES, "code": "terrible"}}],
                    }
                ]
            },
            "unknown-answer",
        ),
        (
            {
                "item": [
                    {
                        "linkId": "breathlessness",
                        "answer": [{"valueCoding": {"system": CODES, "code": "usual"}}],
                    }
                ]
            },
            "missing-answer",
        ),
        ({"resourceType": "Observation"}, "unsupported-resource"),
        ({"item": "garbage"}, "invalid-fhir"),
    ],
)
async def test_bad_replies_are_quarantined_with_a_reason(
    pipeline: Pipeline,
    sessions: async_sessionmaker[AsyncSession],
    patients: dict[str, str],
    change: dict[str, Any],
    code: str,
) -> None:
    result = await send(pipeline, reply({}) | change)
    assert (result.status, result.reason_code) == ("quarantined", code)
    async with sessions() as session:
        assert list(await session.scalars(select(QuestionnaireResponseRow))) == []


async def test_a_reply_for_a_patient_the_gateway_does_not_serve_is_refused(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    stranger = {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "01010112345"}}
    result = await send(pipeline, reply({}, subject=stranger))
    assert result.status == "quarantined" and result.reason_code == "unknown-patient"


async def test_late_and_paused_replies_are_stored_but_raise_nothing(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    late = await send(pipeline, reply({}, NOW - timedelta(days=2)), received=NOW)
    assert late.status == "accepted" and late.late and late.alert_id is None
    async with sessions() as session, session.begin():
        await plan_store.add_pause(
            session,
            patients[PATIENT_A],
            reason="holiday",
            starts_at=NOW - timedelta(hours=1),
            ends_at=NOW + timedelta(days=1),
            by="Kari",
        )
    paused = await send(pipeline, reply({"breathlessness": "much-worse"}))
    assert paused.status == "accepted" and paused.alert_id is None and paused.paused_until
    async with sessions() as session:
        assert list(await session.scalars(select(Alert))) == []
