"""The periodic jobs of a service process (APScheduler on the service's event loop).

Every process runs them; each job is safe to run in several processes at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.alerts.episode_book import delivery_targets
from dho.alerts.jobs import alert_unrepeated
from dho.alerts.missing_job import check_missing
from dho.questionnaires.catalogue import QuestionnaireCatalogue
from dho.rules.patient_context import PlanCatalogue
from dho.settings import Settings

log = logging.getLogger(__name__)
REPEAT_CHECK_S = 60


def start_scheduler(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    plans: PlanCatalogue,
    questionnaires: QuestionnaireCatalogue | None = None,
) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone=UTC)
    targets = delivery_targets(settings)
    zone = ZoneInfo(settings.device_time_zone)
    silence = timedelta(seconds=settings.device_silent_after_s)

    async def missing() -> None:
        run = await check_missing(
            sessions,
            plans,
            targets,
            zone=zone,
            silence=silence,
            now=datetime.now(UTC),
            questionnaires=questionnaires,
        )
        if run is not None and (run.not_reported or run.outages or run.missing_questionnaires):
            log.info(
                "windows up to %s: %d patient(s) did not measure, %d outage(s), "
                "%d questionnaire(s) not answered",
                run.until.isoformat(timespec="minutes"),
                run.not_reported,
                run.outages,
                run.missing_questionnaires,
            )

    async def repeats() -> None:
        raised = await alert_unrepeated(sessions, targets, datetime.now(UTC))
        if raised:
            log.info("%d yellow alert(s) raised: repeat measurement not received", raised)

    _every(scheduler, "repeat-measurements", REPEAT_CHECK_S, repeats)
    _every(scheduler, "missing-measurements", settings.missing_check_interval_s, missing)
    scheduler.start()
    return scheduler


def _every(
    scheduler: AsyncIOScheduler, name: str, seconds: float, job: Callable[[], Awaitable[None]]
) -> None:
    async def guarded() -> None:
        try:
            await job()
        except Exception:  # the next run tries again; the job's work is transactional
            log.exception("scheduled job %s failed", name)

    scheduler.add_job(guarded, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True)
