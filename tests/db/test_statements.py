"""The statement helpers of dho.db.base on both databases: bulk writes and `one_of`."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.base import bulk_insert, bulk_update, bulk_upsert, one_of
from dho.db.models import Patient, RuleState
from tests.support import seed

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _state(patient: str, rule: str, band: int) -> dict[str, object]:
    return {
        "patient_id": patient,
        "rule": rule,
        "band": band,
        "repeat_until": None,
        "repeat_observation_id": None,
        "repeat_summary": None,
        "repeat_plan_id": None,
        "repeat_plan_version": None,
        "updated_at": NOW,
    }


async def test_insert_update_and_upsert_write_many_rows_in_one_statement(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions)
    async with sessions() as session, session.begin():
        a, b = sorted(await session.scalars(select(Patient.id)))[:2]
        await session.execute(bulk_insert(RuleState), [_state(a, "range:x", 1)])
        upsert = bulk_upsert(session.get_bind().dialect.name, RuleState, ("patient_id", "rule"),
                             ("band", "updated_at"))  # fmt: skip
        await session.execute(upsert, [_state(a, "range:x", 3), _state(b, "range:x", 2)])
        update = bulk_update(RuleState, ("patient_id", "rule"), ("band",))
        await session.execute(update, [{"key_patient_id": b, "key_rule": "range:x", "band": 1}])
    async with sessions() as session:
        rows = await session.execute(select(RuleState.patient_id, RuleState.band))
        assert dict(rows.all()) == {a: 3, b: 1}


async def test_one_of_finds_the_rows_in_lists_of_any_length(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions)
    async with sessions() as session:
        ids = sorted(await session.scalars(select(Patient.id)))
        dialect = session.get_bind().dialect
        for wanted in (ids[:1], ids[1:3], ids, [*ids[:2], "no-such-patient"], []):
            statement = select(Patient.id).where(one_of(Patient.id, wanted))
            assert sorted(await session.scalars(statement)) == sorted(set(ids) & set(wanted))
        rendered = str(statement.compile(dialect=dialect))
        assert ("= ANY" in rendered) is (dialect.name == "postgresql")
