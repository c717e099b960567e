"""Plans and pauses over HTTP, and the receipt a patient app reads after a measurement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.engine import create_engine, session_factory
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.support import (
    PATIENT_A,
    Seeded,
    blood_pressure,
    patient_id,
    running_service,
    seed,
)

ADMIN = "admin-token-for-tests"


@pytest.fixture
def service_settings(database_url: str, tmp_path: Path) -> Settings:
    return base_settings(
        tmp_path, database_url=database_url, http_port=free_port(), admin_api_token=ADMIN
    )


@pytest.fixture
async def sessions(service_settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(service_settings)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def client(service_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(service_settings) as base, httpx.AsyncClient(base_url=base) as c:
        yield c


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


async def test_a_plan_version_judges_the_next_reading_and_the_receipt_says_what_to_do(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    seeded: Seeded = await seed(sessions)
    patient = await patient_id(sessions, PATIENT_A)
    new_plan = {
        "standard": "hypertension",
        "author_hpr": "1234567",
        "approver_hpr": "7654321",
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "adjust": {"measurements.blood-pressure.components.systolic.yellow_high": 150},
        "note": "lavere mål etter legetime",
    }
    made = await client.post(f"/api/patients/{patient}/plans", json=new_plan, headers=admin())
    assert made.status_code == 201, made.text
    assert made.json()["version"] == 1
    assert (
        made.json()["plan"]["measurements"]["blood-pressure"]["components"]["systolic"][
            "yellow_high"
        ]
        == 150
    )
    second = await client.post(f"/api/patients/{patient}/plans", json=new_plan, headers=admin())
    assert second.json()["version"] == 2
    listed = await client.get(f"/api/patients/{patient}/plans", headers=admin())
    assert [p["version"] for p in listed.json()["plans"]] == [1, 2]

    # 152/85 is green by the standard plan (160) but yellow by this patient's (150)
    reading = blood_pressure(152, 85, datetime.now(UTC) - timedelta(minutes=1))
    answer = await client.post(
        "/ingest/dho-json", json=reading, headers={"Authorization": f"Bearer {seeded.key}"}
    )
    assert answer.status_code == 202, answer.text
    [item] = answer.json()["measurements"]
    assert item["judgement"]["colour"] == "yellow"
    assert item["judgement"]["plan"] == "hypertension v2"
    assert "Sykepleier tar kontakt i dag" in item["judgement"]["patient_text"]
    assert item["alert"]["severity"] == "yellow"
    alerts = (await client.get("/api/alerts", headers=admin())).json()["alerts"]
    assert alerts[0]["plan"] == {"id": second.json()["id"], "version": 2}


async def test_bad_plans_and_pauses_get_a_clear_4xx(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    patient = await patient_id(sessions, PATIENT_A)
    base = {"standard": "copd", "author_hpr": "1234567", "approver_hpr": "7654321"}
    url = f"/api/patients/{patient}/plans"
    cases = [
        (base | {"adjust": {"measurements.heart-rate.cut_points.red_low": 70}}, 422, "increase"),
        (base | {"standard": "nope"}, 422, "unknown standard plan"),
        (base | {"adjust": {"measurements.no-such-type.cut_points.red_low": 1}}, 422, "no-such"),
        (base | {"approver_hpr": "12"}, 400, "approver_hpr"),
        (base | {"valid_from": "2026-12-01T10:00:00"}, 400, "valid_from"),
    ]
    for body, status, text in cases:
        answer = await client.post(url, json=body, headers=admin())
        assert answer.status_code == status, (body, answer.text)
        assert text in answer.text
    assert (await client.post(url, json=base)).status_code == 401
    missing = await client.post("/api/patients/no-such-patient/plans", json=base, headers=admin())
    assert missing.status_code == 404
    pause = {"reason": "holiday", "ends_at": "2026-01-01T00:00:00+01:00", "by": "Kari"}
    refused = await client.post(f"/api/patients/{patient}/pauses", json=pause, headers=admin())
    assert refused.status_code == 422 and "end after it starts" in refused.text
    later = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    made = await client.post(
        f"/api/patients/{patient}/pauses", json=pause | {"ends_at": later}, headers=admin()
    )
    assert made.status_code == 201, made.text
    resumed = await client.post(f"/api/patients/{patient}/resume", headers=admin())
    assert resumed.json() == {"ended": 1}
    pauses = (await client.get(f"/api/patients/{patient}/pauses", headers=admin())).json()
    assert datetime.fromisoformat(pauses["pauses"][0]["ends_at"]) <= datetime.now(UTC)
