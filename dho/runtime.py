"""The running service's parts, started and stopped in order by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dho import collector
from dho.alerts.outbox import RetryPolicy, deliver_due
from dho.alerts.webhook import WebhookSender
from dho.api.rate_limit import RateLimiter
from dho.db import migrate
from dho.db.engine import create_engine, session_factory
from dho.ingest.adapter_check import warm_up
from dho.ingest.batcher import Batcher
from dho.ingest.embedded_broker import EmbeddedBroker, ensure_broker
from dho.ingest.mqtt import MqttListener
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.scheduler import start_scheduler
from dho.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    reference: ReferenceData
    batcher: Batcher
    rate_limiter: RateLimiter
    listener: MqttListener | None = None
    broker: EmbeddedBroker | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    scheduler: AsyncIOScheduler | None = None
    http: httpx.AsyncClient | None = None

    async def database_ready(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # any failure means "not ready"
            return False
        return True

    def broker_ready(self) -> bool:
        return self.listener is None or (self.listener.connected and self.listener.subscribed)

    def ingest_running(self) -> bool:
        return all(not task.done() for task in self.tasks)


async def start(settings: Settings) -> Runtime:
    """Open the database (migrating or checking it), then start ingest and delivery."""
    engine = create_engine(settings)
    await _prepare_schema(engine, settings)
    reference = ReferenceData.load(settings)
    for name, error in reference.adapters.broken.items():
        log.error("adapter %s disabled: %s", name, error)
    await asyncio.to_thread(warm_up, Path(settings.adapters_dir), reference)
    collector.tune(settings.gc_threshold)
    sessions = session_factory(engine)
    pipeline = Pipeline(settings, sessions, reference)
    batcher = Batcher(pipeline, max_size=settings.batch_max_size, flush_ms=settings.batch_flush_ms)
    limiter = RateLimiter(settings.gateway_rate_per_s, settings.gateway_rate_burst)
    rt = Runtime(settings, engine, sessions, reference, batcher, limiter)
    rt.tasks.append(asyncio.create_task(batcher.run(), name="batcher"))
    if settings.mqtt_enabled:
        rt.broker = await ensure_broker(settings)
        embedded = rt.broker is not None
        if embedded and settings.mqtt_shared_group:
            log.warning("the embedded broker has no shared subscriptions: subscribing plainly")
        rt.listener = MqttListener(settings, batcher, embedded=embedded)
        rt.listener.start()
    rt.scheduler = start_scheduler(
        settings, sessions, reference.plans, reference.context.questionnaires
    )
    if settings.webhook_url:
        rt.http = httpx.AsyncClient(timeout=settings.webhook_timeout_s)
        rt.tasks.append(asyncio.create_task(_deliver_forever(rt), name="outbox"))
    return rt


async def stop(rt: Runtime) -> None:
    """Stop taking messages, store what is queued, then stop everything else."""
    if rt.listener is not None:
        rt.listener.stop()
    await rt.batcher.drain(timeout_s=10)
    if rt.scheduler is not None:
        rt.scheduler.shutdown(wait=False)
    for task in rt.tasks:
        task.cancel()
    for task in rt.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if rt.http is not None:
        await rt.http.aclose()
    if rt.broker is not None:
        await rt.broker.stop()
    await rt.engine.dispose()


async def _prepare_schema(engine: AsyncEngine, settings: Settings) -> None:
    if settings.auto_migrate:
        await asyncio.to_thread(migrate.upgrade, settings)
    else:
        await migrate.check_current(engine, settings)


async def _deliver_forever(rt: Runtime) -> None:
    settings = rt.settings
    assert rt.http is not None
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    sender = WebhookSender(rt.http, secret)
    policy = RetryPolicy(
        settings.outbox_max_attempts, settings.outbox_backoff_base_s, settings.outbox_backoff_max_s
    )
    lease = timedelta(seconds=settings.outbox_lease_s)
    while True:
        try:
            sent = await deliver_due(
                rt.sessions, sender, policy, worker=settings.mqtt_client_id, lease=lease
            )
        except Exception:
            log.exception("outbox sweep failed; trying again")
            sent = 0
        if sent == 0:
            await asyncio.sleep(settings.outbox_poll_s)
