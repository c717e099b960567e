"""HTTP ingest limits and refusals, and the quarantine API, through the real service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.engine import create_engine, session_factory
from dho.db.models import ObservationRow, Organization, Quarantine, RawMessage
from dho.registry.gateways import create_gateway
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.support import PATIENT_A, count_rows, reading, register_device, running_service, seed

ADMIN = "admin-token-for-tests-0123456789"
NEW_DEVICE = "00-1C-05-FF-FE-0B-00-01"


@pytest.fixture
def limited(database_url: str, tmp_path: Path) -> Settings:
    return base_settings(
        tmp_path,
        database_url=database_url,
        http_port=free_port(),
        max_measurements_per_message=5,
        gateway_rate_per_s=0.5,
        gateway_rate_burst=8,
        admin_api_token=ADMIN,
    )


@pytest.fixture
async def db(limited: Settings) -> Any:
    engine = create_engine(limited)
    yield session_factory(engine)
    await engine.dispose()


def _readings(n: int, device: str = "00-1C-05-FF-FE-01-00-02") -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(minutes=30)
    return [
        reading(device, "heart-rate", start + timedelta(seconds=i), 70, "/min") for i in range(n)
    ]


async def test_too_many_measurements_too_fast_and_not_authorised(
    limited: Settings, db: async_sessionmaker[AsyncSession]
) -> None:
    seeded = await seed(db)
    async with db() as session, session.begin():
        owner, other = sorted(await session.scalars(select(Organization.id)))[:2]
        other_key = await create_gateway(session, "other-hub", "Other", [other])
    await register_device(
        db, NEW_DEVICE, [(PATIENT_A, datetime.now(UTC) - timedelta(days=2), None)], owner=owner
    )
    auth = {"Authorization": f"Bearer {seeded.key}"}
    async with running_service(limited) as base, httpx.AsyncClient(base_url=base) as client:
        many = await client.post("/ingest/dho-json", json=_readings(6), headers=auth)
        assert many.status_code == 413
        problem = many.json()
        assert problem["reason"] == "oversized" and problem["quarantined"] is True
        assert problem["reason_code"] == "too-many-measurements"
        assert "limit is 5" in problem["detail"]

        forbidden = await client.post(
            "/ingest/dho-json",
            json=_readings(2, NEW_DEVICE),
            headers={"Authorization": f"Bearer {other_key}"},
        )
        assert forbidden.status_code == 403, forbidden.text
        body = forbidden.json()
        assert body["reason"] == "not-authorised"
        assert body["reason_code"] == "device-not-registered-to-gateway"
        assert body["type"].endswith("/not-authorised")
        assert [m["reason"] for m in body["measurements"]] == ["not-authorised"] * 2

        answers = [
            await client.post("/ingest/dho-json", json=_readings(1), headers=auth) for _ in range(8)
        ]
        limited_answers = [a for a in answers if a.status_code == 429]
        assert limited_answers, [a.status_code for a in answers]
        refused = limited_answers[0]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
    async with db() as session:
        reasons = sorted((await session.scalars(select(Quarantine.reason_class))).all())
    assert reasons == ["not-authorised", "not-authorised", "oversized"]
    stored = await count_rows(db, RawMessage)
    assert stored == 2 + len(answers) - len(limited_answers)  # a 429 stores nothing


async def test_the_quarantine_api_lists_shows_redrives_and_discards(
    limited: Settings, db: async_sessionmaker[AsyncSession]
) -> None:
    seeded = await seed(db)
    auth = {"Authorization": f"Bearer {seeded.key}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with running_service(limited) as base, httpx.AsyncClient(base_url=base) as client:
        sent = await client.post("/ingest/dho-json", json=_readings(2, NEW_DEVICE), headers=auth)
        assert [m["reason"] for m in sent.json()["measurements"]] == ["unknown-device"] * 2

        listed = (await client.get("/api/quarantine", params={"reason": "unknown-device"})).json()
        ids = [row["id"] for row in listed["quarantine"]]
        assert len(ids) == 2 and all(r["gateway"] == seeded.gateway for r in listed["quarantine"])
        shown = (await client.get(f"/api/quarantine/{ids[0]}")).json()
        assert NEW_DEVICE in shown["payload"] and shown["status"] == "open"
        assert (await client.get("/api/quarantine/999999")).status_code == 404

        refused = await client.post("/api/quarantine/redrive", json={"by": "x", "ids": ids})
        assert refused.status_code == 401
        early = await client.post(
            f"/api/quarantine/{ids[0]}/redrive", json={"by": "kari"}, headers=admin
        )
        assert early.json()["status"] == "open"

        await register_device(
            db, NEW_DEVICE, [(PATIENT_A, datetime.now(UTC) - timedelta(days=2), None)]
        )
        done = await client.post(
            "/api/quarantine/redrive",
            json={"by": "kari", "reason": "unknown-device"},
            headers=admin,
        )
        assert [r["status"] for r in done.json()["results"]] == ["redriven", "redriven"]

        again = await client.post(
            "/ingest/dho-json", json=_readings(1, "AA-BB-CC-DD-EE-FF-00-99"), headers=auth
        )
        [gone] = [r["id"] for r in (await client.get("/api/quarantine")).json()["quarantine"]]
        assert again.status_code == 202
        body = {"by": "kari", "reason": "a test device, not in use"}
        discarded = await client.post(f"/api/quarantine/{gone}/discard", json=body, headers=admin)
        assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
        twice = await client.post(f"/api/quarantine/{gone}/discard", json=body, headers=admin)
        assert twice.status_code == 409
        assert (await client.get("/api/quarantine")).json()["quarantine"] == []
    assert await count_rows(db, ObservationRow) == 2
