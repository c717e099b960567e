"""The transactional outbox: retries with backoff, dead letters, disjoint claims, leases.

Deliveries come from the real pipeline (a red blood pressure with a webhook configured) or are
inserted as rows; they are sent to a real local HTTP server. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.alerts.outbox import RetryPolicy, claim_due, deliver_due, record_attempt
from dho.alerts.webhook import SendOutcome, WebhookSender
from dho.db.models import DeliveryAttempt, OutboxDelivery
from dho.ingest.pipeline import Pipeline, ReferenceData
from tests.conftest import base_settings, free_port
from tests.support import WebhookReceiver, blood_pressure, raw_message, seed, wait_for

SECRET = "outbox-test-secret"
LEASE = timedelta(seconds=30)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(fail_first=2) as server:
        yield server


@pytest.fixture
def failing_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(fail_first=1_000_000) as server:
        yield server


async def alert_delivery(
    sessions: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path, url: str
) -> OutboxDelivery:
    """The pending delivery the pipeline writes for a red blood pressure."""
    settings = base_settings(tmp_path, database_url=database_url, webhook_url=url)
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=2)
    message = raw_message(blood_pressure(190, 110, when))
    pipeline = Pipeline(settings, sessions, ReferenceData.load(settings))
    [result] = await pipeline.process([message])
    assert result.items[0].alert_severity == "red"
    async with sessions() as session:
        [delivery] = (await session.scalars(select(OutboxDelivery))).all()
    assert delivery.alert_id == result.items[0].alert_id
    assert (delivery.status, delivery.target, delivery.attempts) == ("pending", url, 0)
    return delivery


async def load(
    sessions: async_sessionmaker[AsyncSession], delivery_id: str
) -> tuple[OutboxDelivery, list[DeliveryAttempt]]:
    async with sessions() as session:
        delivery = await session.get(OutboxDelivery, delivery_id)
        attempts = await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)
            .order_by(DeliveryAttempt.id)
        )
        assert delivery is not None
        return delivery, list(attempts)


def header(headers: dict[str, str], name: str) -> str:
    return {k.lower(): v for k, v in headers.items()}[name.lower()]


# ---------------------------------------------------------------- retry until delivered


async def test_failed_sends_back_off_and_the_receiver_gets_one_signed_body(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    receiver: WebhookReceiver,
) -> None:
    delivery = await alert_delivery(sessions, database_url, tmp_path, receiver.url)
    policy = RetryPolicy(max_attempts=5, base_s=0.2, max_s=0.4)
    sends = 0
    async with httpx.AsyncClient() as client:
        sender = WebhookSender(client, SECRET)

        async def sweep() -> int:
            nonlocal sends
            sent = await deliver_due(sessions, sender, policy, worker="w1", lease=LEASE)
            sends += sent
            return sent

        async def delivered() -> bool:
            await sweep()
            return (await load(sessions, delivery.id))[0].status == "delivered"

        assert await sweep() == 1  # answered 503
        assert await sweep() == 0  # backing off: not due again yet
        await wait_for(delivered, timeout_s=4, interval_s=0.02)
        assert await sweep() == 0

    stored, attempts = await load(sessions, delivery.id)
    assert sends == 3 and receiver.attempts == 3
    assert (stored.status, stored.attempts, stored.last_error) == ("delivered", 3, None)
    assert stored.delivered_at is not None and stored.claimed_until is None
    assert [(a.outcome, a.status_code) for a in attempts] == [
        ("error", 503),
        ("error", 503),
        ("ok", 204),
    ]
    # the waits respected the backoff: at least half of 0.2 s, then at least half of 0.4 s
    gaps = [(b.attempted_at - a.attempted_at).total_seconds() for a, b in pairwise(attempts)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2

    [got] = receiver.received
    assert header(got.headers, "Idempotency-Key") == delivery.id
    timestamp = header(got.headers, "X-DHO-Timestamp")
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + got.body, hashlib.sha256)
    assert header(got.headers, "X-DHO-Signature") == "v1=" + expected.hexdigest()
    payload = json.loads(got.body)
    assert payload["delivery_id"] == delivery.id
    assert payload["alert"]["id"] == delivery.alert_id and payload["alert"]["severity"] == "red"


# ---------------------------------------------------------------- dead letters


@pytest.mark.parametrize("failure", ["http-503", "connection-refused"])
async def test_a_delivery_that_keeps_failing_is_dead_lettered(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    failing_receiver: WebhookReceiver,
    failure: str,
) -> None:
    url = failing_receiver.url if failure == "http-503" else f"http://127.0.0.1:{free_port()}/hook"
    delivery = await alert_delivery(sessions, database_url, tmp_path, url)
    policy = RetryPolicy(max_attempts=3, base_s=0.02, max_s=0.05)
    async with httpx.AsyncClient(timeout=2) as client:
        sender = WebhookSender(client, SECRET)

        async def dead() -> bool:
            await deliver_due(sessions, sender, policy, worker="w1", lease=LEASE)
            return (await load(sessions, delivery.id))[0].status == "dead"

        await wait_for(dead, timeout_s=4, interval_s=0.02)
        await asyncio.sleep(0.1)  # longer than any backoff: it would be due again if pending
        assert await deliver_due(sessions, sender, policy, worker="w1", lease=LEASE) == 0

    stored, attempts = await load(sessions, delivery.id)
    assert (stored.status, stored.attempts) == ("dead", 3)
    assert stored.delivered_at is None and stored.claimed_until is None
    assert [a.outcome for a in attempts] == ["error"] * 3
    if failure == "http-503":
        assert stored.last_error == "HTTP 503"
        assert [a.status_code for a in attempts] == [503] * 3
        assert failing_receiver.attempts == 3 and failing_receiver.received == []
    else:
        assert stored.last_error is not None and stored.last_error.startswith("ConnectError")
        assert [a.status_code for a in attempts] == [None] * 3
    far_future = datetime.now(UTC) + timedelta(days=30)
    async with sessions() as session, session.begin():
        assert await claim_due(session, "w2", far_future, LEASE, 100) == []


# ---------------------------------------------------------------- claims and leases


async def insert_due(sessions: async_sessionmaker[AsyncSession], n: int) -> set[str]:
    now = datetime.now(UTC)
    rows = [
        OutboxDelivery(
            id=str(uuid.uuid4()),
            alert_id=None,
            channel="webhook",
            target="http://127.0.0.1:9/hook",
            payload="{}",
            status="pending",
            attempts=0,
            next_attempt_at=now - timedelta(seconds=60 - i),
            created_at=now,
        )
        for i in range(n)
    ]
    async with sessions() as session, session.begin():
        session.add_all(rows)
    return {row.id for row in rows}


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    worker: str,
    limit: int,
    *,
    now: datetime | None = None,
    hold: asyncio.Barrier | None = None,
) -> set[str]:
    """One claim in its own session and transaction; `hold` keeps it open until all arrive."""
    async with sessions() as session, session.begin():
        claimed = await claim_due(session, worker, now or datetime.now(UTC), LEASE, limit)
        if hold is not None:
            await hold.wait()
    return {c.id for c in claimed}


async def claim_while_uncommitted(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[set[str], set[str]]:
    first_claimed = asyncio.Event()

    async def first() -> set[str]:
        async with sessions() as session, session.begin():
            claimed = await claim_due(session, "w1", datetime.now(UTC), LEASE, 40)
            first_claimed.set()
            await asyncio.sleep(0.3)
        return {c.id for c in claimed}

    async def second() -> set[str]:
        await first_claimed.wait()
        return await claim(sessions, "w2", 40)

    a, b = await asyncio.gather(first(), second())
    return a, b


async def claimed_by(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str | None]:
    async with sessions() as session:
        rows = await session.execute(select(OutboxDelivery.id, OutboxDelivery.claimed_by))
        return {delivery_id: worker for delivery_id, worker in rows}


async def test_concurrent_claims_are_disjoint(
    backend: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    due = await insert_due(sessions, 40)
    if backend == "postgres":
        # both transactions stay open until both have claimed: SKIP LOCKED must split the rows
        both = asyncio.Barrier(2)
        first, second = await asyncio.wait_for(
            asyncio.gather(
                claim(sessions, "w1", 20, hold=both), claim(sessions, "w2", 20, hold=both)
            ),
            timeout=5,
        )
        assert len(first) == len(second) == 20
    else:
        # one writer at a time: the second worker reads the rows while the first claim is still
        # uncommitted, then waits for the write lock; its conditional UPDATE must take none
        first, second = await asyncio.wait_for(claim_while_uncommitted(sessions), timeout=5)
        assert second == set()
    assert not first & second
    assert first | second == due
    owners = await claimed_by(sessions)
    assert {d for d, w in owners.items() if w == "w1"} == first
    assert {d for d, w in owners.items() if w == "w2"} == second


async def test_a_lease_keeps_others_away_until_it_expires(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    due = await insert_due(sessions, 40)
    now = datetime.now(UTC)
    first = await claim(sessions, "w1", 15, now=now)
    second = await claim(sessions, "w2", 40, now=now)
    assert len(first) == 15 and len(second) == 25
    assert not first & second and first | second == due
    assert await claim(sessions, "w3", 40, now=now + LEASE - timedelta(seconds=1)) == set()

    after_expiry = now + LEASE + timedelta(seconds=1)
    assert await claim(sessions, "w4", 40, now=after_expiry) == due
    assert set((await claimed_by(sessions)).values()) == {"w4"}


async def test_a_worker_that_lost_its_claim_decides_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    [delivery_id] = await insert_due(sessions, 1)
    policy = RetryPolicy(max_attempts=1, base_s=1.0, max_s=1.0)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        [slow] = await claim_due(session, "slow", now, LEASE, 1)
    async with sessions() as session, session.begin():
        [fast] = await claim_due(session, "fast", now + LEASE + timedelta(seconds=1), LEASE, 1)
    async with sessions() as session, session.begin():
        ok = SendOutcome(True, 204, 5)
        assert await record_attempt(session, fast, ok, policy, now) == "delivered"
    async with sessions() as session, session.begin():
        failed = SendOutcome(False, 503, 5, "HTTP 503")
        assert await record_attempt(session, slow, failed, policy, now) == "claim-lost"
    async with sessions() as session:
        row = await session.get(OutboxDelivery, delivery_id)
        attempts = (await session.scalars(select(DeliveryAttempt.outcome))).all()
    assert row is not None and row.status == "delivered" and row.attempts == 1
    assert sorted(attempts) == ["error", "ok"]  # both sends are audited


# ---------------------------------------------------------------- backoff


def test_retry_delay_grows_exponentially_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=1.0, max_s=60.0)
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    for attempts, ceiling in enumerate(ceilings, start=1):
        delays = [policy.delay(attempts).total_seconds() for _ in range(300)]
        assert all(0.5 * ceiling <= d <= ceiling for d in delays), (attempts, ceiling)
        assert min(delays) < 0.6 * ceiling and max(delays) > 0.9 * ceiling  # really jittered
    huge = policy.delay(10_000).total_seconds()
    assert 30.0 <= huge <= 60.0
