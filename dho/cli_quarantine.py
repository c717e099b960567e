"""`dho quarantine` (list, show, redrive, discard) and `dho replay`, straight on the database."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho import jsonutil
from dho.cli_common import load_settings
from dho.db.engine import create_engine, session_factory
from dho.ingest import quarantine as store
from dho.ingest.errors import REASONS
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.ingest.reprocess import ReplayScope, RowOutcome, redrive, replay
from dho.ingest.times import EARLIEST

T = TypeVar("T")


@click.group()
def quarantine() -> None:
    """Messages and measurements set aside with a reason."""


@quarantine.command("list")
@click.option("--status", type=click.Choice([*store.STATUSES, "all"]), default="open")
@click.option("--reason", type=click.Choice(REASONS), default=None)
@click.option("--gateway", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def quarantine_list(status: str, reason: str | None, gateway: str | None, limit: int) -> None:
    """Quarantine rows, newest first."""
    wanted = store.QuarantineFilter(
        status=None if status == "all" else status, reason=reason, gateway=gateway, limit=limit
    )

    async def rows(sessions: async_sessionmaker[AsyncSession], _p: Pipeline) -> list[str]:
        async with sessions() as session:
            found = await store.list_rows(session, wanted)
        return [
            f"{q.id:>7}  {q.status:<9} {q.reason_class:<16} {q.reason_code:<32} "
            f"{r.gateway_id}/{r.adapter} raw {r.id}"
            + (f" item {q.item_label or q.item_index}" if q.item_index is not None else "")
            + f"\n         {q.reason}"
            for q, r in found
        ]

    for line in _run(rows):
        click.echo(line)


@quarantine.command("show")
@click.argument("row_id", type=int)
def quarantine_show(row_id: int) -> None:
    """One row with its raw message."""

    async def show(sessions: async_sessionmaker[AsyncSession], _p: Pipeline) -> str:
        async with sessions() as session:
            found = await store.get_row(session, row_id)
        if found is None:
            raise click.ClickException(f"no quarantine row {row_id}")
        return jsonutil.dumps_pretty(store.describe(*found, with_payload=True))

    click.echo(_run(show))


@quarantine.command("redrive")
@click.argument("row_ids", type=int, nargs=-1)
@click.option("--reason", type=click.Choice(REASONS), default=None, help="Every open row of it.")
@click.option("--gateway", default=None, help="With --reason: only this gateway's rows.")
@click.option("--by", default=None, help="Who re-drives (default: the login name).")
def quarantine_redrive(
    row_ids: tuple[int, ...], reason: str | None, gateway: str | None, by: str | None
) -> None:
    """Process rows again (after registering the device or fixing the adapter)."""
    if not row_ids and reason is None:
        raise click.UsageError("name quarantine row ids, or --reason to re-drive all of a reason")

    async def run(
        sessions: async_sessionmaker[AsyncSession], pipeline: Pipeline
    ) -> list[RowOutcome]:
        ids = list(row_ids)
        if reason is not None:
            async with sessions() as session:
                wanted = store.QuarantineFilter(reason=reason, gateway=gateway, limit=10_000)
                ids += await store.matching_ids(session, wanted)
        return await redrive(pipeline, sessions, ids, by or getpass.getuser())

    outcomes = _run(run)
    for o in outcomes:
        shown = o.detail if o.status == "open" else o.resolution or f"{o.reason}: {o.detail}"
        click.echo(f"{o.id:>7}  {o.status:<9} {shown}")
    still_open = sum(1 for o in outcomes if o.status == "open")
    redriven = sum(1 for o in outcomes if o.status == "redriven")
    click.echo(f"{len(outcomes)} row(s): {redriven} re-driven, {still_open} still open")


@quarantine.command("discard")
@click.argument("row_ids", type=int, nargs=-1, required=True)
@click.option("--reason", "why", required=True, help="Why the data is not wanted (recorded).")
@click.option("--by", default=None, help="Who discards (default: the login name).")
def quarantine_discard(row_ids: tuple[int, ...], why: str, by: str | None) -> None:
    """Close open rows without storing their data; the raw message is kept."""

    async def run(sessions: async_sessionmaker[AsyncSession], _p: Pipeline) -> int:
        async with sessions() as session, session.begin():
            return await store.discard(
                session, list(row_ids), by or getpass.getuser(), why, datetime.now(UTC)
            )

    click.echo(f"{_run(run)} row(s) discarded")


@click.command("replay")
@click.option("--since", type=click.DateTime(), default=None, help="Received from (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="Received before (UTC).")
@click.option("--device", default=None, help="SYSTEM|VALUE, or an EUI-64 value.")
@click.option("--gateway", default=None)
@click.option("--adapter", default=None)
@click.option("--dry-run", is_flag=True, help="Report what would change; store nothing.")
def replay_command(
    since: datetime,
    until: datetime | None,
    device: str | None,
    gateway: str | None,
    adapter: str | None,
    dry_run: bool,
) -> None:
    """Re-run stored raw messages through the current adapters; nothing is stored twice.

    Give a time range, a device, or both (a device alone replays all of its history).
    """
    if since is None and device is None:
        raise click.UsageError("give --since, --device, or both")
    scope = ReplayScope(
        since=_utc(since) if since else EARLIEST,
        until=_utc(until) if until else datetime.now(UTC),
        device=_device(device) if device else None,
        gateway=gateway,
        adapter=adapter,
    )

    async def run(sessions: async_sessionmaker[AsyncSession], pipeline: Pipeline) -> str:
        return (await replay(pipeline, sessions, scope, dry_run=dry_run)).summary()

    click.echo(_run(run))


def _device(text: str) -> tuple[str, str]:
    from dho.ingest.measurement import EUI64_SYSTEM

    system, _, value = text.rpartition("|")
    return (system or EUI64_SYSTEM, value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _run(step: Callable[[async_sessionmaker[AsyncSession], Pipeline], Awaitable[T]]) -> T:
    async def main() -> T:
        async with _pipeline() as (sessions, pipeline):
            return await step(sessions, pipeline)

    return asyncio.run(main())


@asynccontextmanager
async def _pipeline() -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], Pipeline]]:
    settings = load_settings()
    engine = create_engine(settings)
    try:
        sessions = session_factory(engine)
        yield sessions, Pipeline(settings, sessions, ReferenceData.load(settings))
    finally:
        await engine.dispose()
