"""Fixtures of the alerting tests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.alerts.episode_support import NOW, OXIMETER_A, SCALE_A, SCALE_B
from tests.support import PATIENT_A, PATIENT_B, patient_id, register_device, seed


@pytest.fixture
async def patients(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    await seed(sessions)
    start = NOW - timedelta(days=60)
    await register_device(sessions, SCALE_A, [(PATIENT_A, start, None)])
    await register_device(sessions, SCALE_B, [(PATIENT_B, start, None)])
    await register_device(sessions, OXIMETER_A, [(PATIENT_A, start, None)])
    return {
        PATIENT_A: await patient_id(sessions, PATIENT_A),
        PATIENT_B: await patient_id(sessions, PATIENT_B),
    }
