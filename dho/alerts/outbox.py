"""The transactional outbox: claim due deliveries, send them, record every attempt.

Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL and a lease (`claimed_until`) on every
database, so several workers in several processes never send one delivery at once, and a
delivery claimed by a worker that died is picked up again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.alerts.webhook import SendOutcome
from dho.db.models import DeliveryAttempt, OutboxDelivery

log = logging.getLogger(__name__)


class Sender(Protocol):
    async def send(self, delivery_id: str, url: str, body: str) -> SendOutcome: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    max_s: float

    def delay(self, attempts: int) -> timedelta:
        """Exponential backoff with jitter after the `attempts`-th failure."""
        ceiling = min(self.max_s, self.base_s * 2 ** min(attempts - 1, 30))
        return timedelta(seconds=ceiling * random.uniform(0.5, 1.0))


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    target: str
    payload: str
    attempts: int
    worker: str


async def claim_due(
    session: AsyncSession, worker: str, now: datetime, lease: timedelta, limit: int
) -> list[Claimed]:
    """Take up to `limit` due, unclaimed deliveries for `worker` until the lease ends."""
    candidates = (
        select(OutboxDelivery.id)
        .where(
            OutboxDelivery.status == "pending",
            OutboxDelivery.next_attempt_at <= now,
            or_(OutboxDelivery.claimed_until.is_(None), OutboxDelivery.claimed_until < now),
        )
        .order_by(OutboxDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.scalars(candidates)).all())
    if not ids:
        return []
    claimed = await session.execute(
        update(OutboxDelivery)
        .where(
            OutboxDelivery.id.in_(ids),
            or_(OutboxDelivery.claimed_until.is_(None), OutboxDelivery.claimed_until < now),
        )
        .values(claimed_by=worker, claimed_until=now + lease)
        .returning(
            OutboxDelivery.id,
            OutboxDelivery.target,
            OutboxDelivery.payload,
            OutboxDelivery.attempts,
        )
    )
    return [Claimed(*row, worker=worker) for row in claimed]


async def record_attempt(
    session: AsyncSession,
    delivery: Claimed,
    outcome: SendOutcome,
    policy: RetryPolicy,
    now: datetime,
) -> str:
    """Store the attempt and the delivery's next state: delivered, pending again, or dead.

    The state changes only while this worker still holds the claim: a send that outlasted
    its lease is recorded as an attempt but decides nothing (another worker owns it now).
    """
    attempts = delivery.attempts + 1
    session.add(
        DeliveryAttempt(
            delivery_id=delivery.id,
            attempted_at=now,
            outcome="ok" if outcome.ok else "error",
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
        )
    )
    values: dict[str, object] = {"attempts": attempts, "claimed_by": None, "claimed_until": None}
    if outcome.ok:
        values.update(status="delivered", delivered_at=now, last_error=None)
    elif attempts >= policy.max_attempts:
        values.update(status="dead", last_error=outcome.error)
        log.error(
            "delivery %s dead-lettered after %d attempts: %s", delivery.id, attempts, outcome.error
        )
    else:
        values.update(next_attempt_at=now + policy.delay(attempts), last_error=outcome.error)
    changed = await session.execute(
        update(OutboxDelivery)
        .where(
            OutboxDelivery.id == delivery.id,
            OutboxDelivery.claimed_by == delivery.worker,
            OutboxDelivery.status == "pending",
        )
        .values(**values)
    )
    if getattr(changed, "rowcount", 1) == 0:
        log.warning("delivery %s: claim lost before the attempt was recorded", delivery.id)
        return "claim-lost"
    return str(values.get("status", "pending"))


async def deliver_due(
    sessions: async_sessionmaker[AsyncSession],
    sender: Sender,
    policy: RetryPolicy,
    *,
    worker: str,
    lease: timedelta,
    limit: int = 50,
) -> int:
    """One sweep: claim, send concurrently, record. Returns how many were attempted."""
    async with sessions() as session, session.begin():
        claimed = await claim_due(session, worker, datetime.now(UTC), lease, limit)
    if not claimed:
        return 0
    outcomes = await asyncio.gather(*(sender.send(d.id, d.target, d.payload) for d in claimed))
    async with sessions() as session, session.begin():
        now = datetime.now(UTC)
        for delivery, outcome in zip(claimed, outcomes, strict=True):
            await record_attempt(session, delivery, outcome, policy, now)
    return len(claimed)
