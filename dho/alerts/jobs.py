"""Periodic alerting jobs, safe to run in every service process at once.

- repeats: a yellow outlier whose repeat measurement did not come in time is alerted
  (the missing-measurement job is `dho.alerts.missing_job`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.alerts.episode_book import (
    DeliveryTarget,
    EpisodeBook,
    Report,
    load_open_episodes,
    memory_of,
    open_key,
)
from dho.alerts.episodes import RuleMemory
from dho.db.models import RuleState
from dho.rules.judge import OUT_OF_RANGE
from dho.rules.thresholds import Band

BATCH = 200


async def alert_unrepeated(
    sessions: async_sessionmaker[AsyncSession], targets: tuple[DeliveryTarget, ...], now: datetime
) -> int:
    """Raise the yellow alerts whose repeat measurement is overdue; how many."""
    async with sessions() as session, session.begin():
        due = (
            select(RuleState)
            .where(RuleState.repeat_until.is_not(None), RuleState.repeat_until <= now)
            .order_by(RuleState.repeat_until)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        states = list(await session.scalars(due))
        if not states:
            return 0
        book = EpisodeBook(targets)
        subjects = [open_key(f"patient:{s.patient_id}", s.rule) for s in states]
        await load_open_episodes(book, session, subjects)
        for state in states:
            memory = memory_of(state)
            key = (state.patient_id, state.rule)
            book.memories[key] = RuleMemory(Band.YELLOW)
            book.changed_memories.add(key)
            summary = (memory.repeat_summary or state.rule) + " - not measured again in time"
            book.report(
                Report(
                    subject=f"patient:{state.patient_id}",
                    rule=state.rule,
                    kind=OUT_OF_RANGE,
                    band=Band.YELLOW,
                    summary=summary,
                    details={"repeat": "not received", "asked_until": str(state.repeat_until)},
                    patient_id=state.patient_id,
                    observation_id=state.repeat_observation_id,
                    plan=memory.repeat_plan,
                ),
                now,
            )
        await book.flush(session, now)
        return len(states)
