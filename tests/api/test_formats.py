"""Each JSON format's realistic example becomes the right Observations, over HTTP.

Codes, canonical units and values, the device's own offset, and the patient the device
belongs to; every stored Observation is valid R4. (HL7 v2 and FHIR have tests of their own.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho import jsonutil
from dho.db.engine import create_engine, session_factory
from dho.db.models import ObservationRow
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.fhir_checks import assert_valid_fhir_json
from tests.support import PATIENT_A, PATIENT_B, ROOT, patient_id, running_service, seed

EXAMPLES = ROOT / "adapters" / "examples"


@pytest.fixture
def http_settings(database_url: str, tmp_path: Path) -> Settings:
    return base_settings(tmp_path, database_url=database_url, http_port=free_port())


@pytest.fixture
async def db(http_settings: Settings) -> Any:
    engine = create_engine(http_settings)
    yield session_factory(engine)
    await engine.dispose()


async def _post_examples(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], adapter: str
) -> dict[str, dict[str, Any]]:
    seeded = await seed(sessions)
    auth = {"Authorization": f"Bearer {seeded.key}"}
    async with running_service(settings) as base, httpx.AsyncClient(base_url=base) as client:
        for example in sorted((EXAMPLES / adapter).glob("*.json")):
            answer = await client.post(
                f"/ingest/{adapter}", content=example.read_bytes(), headers=auth
            )
            assert answer.status_code == 202, answer.text
    async with sessions() as session:
        rows = (await session.scalars(select(ObservationRow))).all()
    stored: dict[str, dict[str, Any]] = {}
    for row in rows:
        resource = assert_valid_fhir_json(row.resource)
        stored[f"{row.type}@{resource['effectiveDateTime']}"] = resource
    return stored


def _loinc(resource: dict[str, Any]) -> list[str]:
    return [c["code"] for c in resource["code"]["coding"] if c["system"] == "http://loinc.org"]


def _component(resource: dict[str, Any], loinc: str) -> dict[str, Any]:
    [found] = [c for c in resource["component"] if c["code"]["coding"][0]["code"] == loinc]
    return dict(found["valueQuantity"])


async def test_open_mhealth_data_points(
    http_settings: Settings, db: async_sessionmaker[AsyncSession]
) -> None:
    stored = await _post_examples(http_settings, db, "open-mhealth")
    a = f"Patient/{await patient_id(db, PATIENT_A)}"
    bp = stored["blood-pressure@2026-11-24T08:15:00+01:00"]
    assert _loinc(bp) == ["85354-9"] and bp["subject"]["reference"] == a
    assert _component(bp, "8480-6") == {
        "value": 142,
        "unit": "mmHg",
        "system": "http://unitsofmeasure.org",
        "code": "mm[Hg]",
    }
    weight = stored["body-weight@2026-11-24T07:02:00+01:00"]
    assert _loinc(weight) == ["29463-7"]
    assert (
        weight["valueQuantity"]["code"] == "kg" and str(weight["valueQuantity"]["value"]) == "81.6"
    )
    glucose = stored["blood-glucose@2026-11-24T07:45:00+01:00"]
    assert _loinc(glucose) == ["14743-9"] and glucose["valueQuantity"]["code"] == "mmol/L"
    assert glucose["category"][0]["coding"][0]["code"] == "laboratory"
    temperature = stored["body-temperature@2026-11-24T08:30:00+01:00"]
    assert (
        temperature["valueQuantity"]["code"] == "Cel"
        and str(temperature["valueQuantity"]["value"]) == "37.3"
    )
    assert stored["heart-rate@2026-11-24T08:20:00+01:00"]["valueQuantity"]["value"] == 78
    assert len(stored) == 6  # the respiratory rate without a device is quarantined
    assert all(r["subject"]["reference"] == a for r in stored.values())


async def test_withings_getmeas(
    http_settings: Settings, db: async_sessionmaker[AsyncSession]
) -> None:
    stored = await _post_examples(http_settings, db, "withings")
    b = f"Patient/{await patient_id(db, PATIENT_B)}"
    bp = stored["blood-pressure@2026-11-24T08:15:00+01:00"]
    assert bp["subject"]["reference"] == b
    assert _component(bp, "8480-6")["value"] == 142 and _component(bp, "8462-4")["value"] == 88
    pulse = stored["heart-rate@2026-11-24T08:15:00+01:00"]
    assert _loinc(pulse) == ["8867-4"] and pulse["valueQuantity"] == {
        "value": 72,
        "unit": "beats/minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    weight = stored["body-weight@2026-11-24T07:02:00+01:00"]
    assert str(weight["valueQuantity"]["value"]) == "81.400"  # 81400 x 10^-3, as the scale sent it
    assert (
        "body-weight@2026-11-25T07:05:00+01:00" in stored
    )  # the confirmed group of the shared scale
    assert len(stored) == 4  # goals (category 2) and the ambiguous-user group are not stored


async def test_dho_json_with_units_converted(
    http_settings: Settings, db: async_sessionmaker[AsyncSession]
) -> None:
    stored = await _post_examples(http_settings, db, "dho-json")
    bp = stored["blood-pressure@2026-11-24T08:15:30+01:00"]  # sent in kPa
    assert _component(bp, "8480-6")["value"] == 142 and _component(bp, "8462-4")["code"] == "mm[Hg]"
    fever = stored["body-temperature@2026-11-24T08:20:00+01:00"]  # sent in °F, local time
    assert str(fever["valueQuantity"]["value"]) == "38.0"
    assert [t["code"] for t in fever["meta"]["tag"]] == ["late", "local-time-assumed"]
    weight = stored["body-weight@2026-11-24T07:02:11+01:00"]
    assert str(weight["valueQuantity"]["value"]) == "81.4"
    assert jsonutil.dumps(weight["valueQuantity"]["value"]) == "81.4"
