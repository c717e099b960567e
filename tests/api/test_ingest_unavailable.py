"""An ingest request whose commit cannot happen in time gets 503 and loses nothing."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dho.db.engine import create_engine, session_factory
from dho.db.models import ObservationRow
from tests.conftest import base_settings, free_port
from tests.support import BP_MONITOR, EUI64, running_service, seed, wait_for


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_locked_database_gives_503_then_the_message_is_stored_once(
    database_url: str, tmp_path: Path
) -> None:
    settings = base_settings(
        tmp_path, database_url=database_url, http_port=free_port(), http_ingest_timeout_s=1.0
    )
    engine = create_engine(settings)
    sessions = session_factory(engine)
    seeded = await seed(sessions)
    body = {
        "device": {"system": EUI64, "value": BP_MONITOR},
        "type": "blood-pressure",
        "time": (datetime.now(UTC) - timedelta(minutes=2)).isoformat(),
        "components": {
            "systolic": {"value": 120, "unit": "mm[Hg]"},
            "diastolic": {"value": 80, "unit": "mm[Hg]"},
        },
    }
    headers = {"Authorization": f"Bearer {seeded.key}"}
    blocker = sqlite3.connect(database_url.removeprefix("sqlite+aiosqlite:///"), timeout=1)
    try:
        async with running_service(settings) as base, httpx.AsyncClient(base_url=base) as client:
            blocker.execute("BEGIN EXCLUSIVE")
            answer = await client.post("/ingest/dho-json", json=body, headers=headers)
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "5"
            assert "re-sends are de-duplicated" in answer.json()["detail"]
            blocker.rollback()

            async def stored() -> int:
                async with sessions() as session:
                    return int(
                        await session.scalar(select(func.count()).select_from(ObservationRow)) or 0
                    )

            await wait_for(stored, timeout_s=40)
            resend = await client.post("/ingest/dho-json", json=body, headers=headers)
            assert resend.status_code == 202
            assert resend.json()["measurements"][0]["status"] == "duplicate"
            assert await stored() == 1
    finally:
        blocker.close()
        await engine.dispose()
