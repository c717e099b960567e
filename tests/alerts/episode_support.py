"""Shared by the alerting tests: devices of two patients, a plan for a patient, a send."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.ingest.plan import ItemResult
from dho.rules import plan_store
from dho.rules.plan_store import PlanRequest
from tests.support import raw_message

SCALE_A = "00-1C-05-FF-FE-0A-00-01"
SCALE_B = "00-1C-05-FF-FE-0A-00-02"
OXIMETER_A = "00-1C-05-FF-FE-0A-00-03"
HPR_NURSE, HPR_GP = "1234567", "7654321"
NOW = datetime.now(UTC).replace(microsecond=0)
DAY0 = NOW - timedelta(days=2, hours=12)


async def give_plan(
    sessions: async_sessionmaker[AsyncSession],
    reference: ReferenceData,
    patient: str,
    standard: str,
    adjust: dict[str, Any] | None = None,
) -> str:
    request = PlanRequest(standard, HPR_NURSE, HPR_GP, NOW - timedelta(days=30), adjust)
    async with sessions() as session, session.begin():
        row = await plan_store.add_plan_version(session, reference.plans, patient, request)
    return row.id


async def send(
    pipeline: Pipeline, body: Any, received: datetime | None = None, status: str = "accepted"
) -> ItemResult:
    """One measurement, received when it was measured (a live reading) unless told."""
    raw = raw_message(body)
    when = received or datetime.fromisoformat(body["time"]) + timedelta(seconds=5)
    [result] = await pipeline.process([dataclasses.replace(raw, received_at=when)])
    [item] = result.items
    assert item.status == status, item
    return item
