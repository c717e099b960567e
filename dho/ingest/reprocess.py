"""Re-drive and replay: stored raw messages through the current adapters and registry.

Nothing is stored twice: the raw message is not stored again, and the measurement
identity makes a reading that was stored before a duplicate (or a correction, when the
adapter now reads another value). A quarantine row the item now passes is closed as
`redriven`; one that still fails keeps its place with the new reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.models import Quarantine
from dho.db.models import RawMessage as RawRow
from dho.ingest.decoded import DecodedItem
from dho.ingest.failures import is_transient_conflict
from dho.ingest.identifiers import canonical_device
from dho.ingest.measurement import RawMessage
from dho.ingest.pipeline import Keep, Pipeline
from dho.ingest.plan import MessageResult
from dho.ingest.record_quarantine import QuarantineKey

log = logging.getLogger(__name__)
T = TypeVar("T")
CHUNK = 200
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """A quarantine row after a re-drive."""

    id: int
    status: str
    reason: str
    detail: str
    resolution: str | None = None


@dataclass(slots=True)
class ReplayReport:
    messages: int = 0
    items: Counter[str] = field(default_factory=Counter)
    amended: int = 0
    quarantine_resolved: int = 0
    dry_run: bool = False

    def summary(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.items.items())) or "none"
        what = "would be" if self.dry_run else "were"
        return (
            f"{self.messages} messages replayed; items: {counts}; {self.amended} observations "
            f"{what} amended; {self.quarantine_resolved} quarantine rows {what} resolved"
        )


@dataclass(frozen=True, slots=True)
class ReplayScope:
    """Which stored messages to replay: received in [since, until), optionally narrowed."""

    since: datetime
    until: datetime
    device: tuple[str, str] | None = None
    gateway: str | None = None
    adapter: str | None = None


async def redrive(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], row_ids: list[int], by: str
) -> list[RowOutcome]:
    """Re-drive open quarantine rows; every row's state afterwards, in the order given."""
    for start in range(0, len(row_ids), CHUNK):
        chunk = row_ids[start : start + CHUNK]
        await _retrying(partial(_redrive_chunk, pipeline, sessions, chunk, by))
    async with sessions() as session:
        rows = {
            row.id: row
            for row in await session.scalars(select(Quarantine).where(Quarantine.id.in_(row_ids)))
        }
    return [
        RowOutcome(r.id, r.status, r.reason_class, r.reason, r.resolution)
        for r in (rows[i] for i in row_ids if i in rows)
    ]


async def replay(
    pipeline: Pipeline,
    sessions: async_sessionmaker[AsyncSession],
    scope: ReplayScope,
    *,
    by: str = "replay",
    dry_run: bool = False,
) -> ReplayReport:
    """Replay every stored message in scope; with `dry_run`, report and roll back."""
    report = ReplayReport(dry_run=dry_run)
    after = 0
    while True:
        outcome = await _retrying(
            partial(_replay_chunk, pipeline, sessions, scope, after, by, dry_run, report)
        )
        if outcome is None:
            return report
        after = outcome


async def _redrive_chunk(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], row_ids: list[int], by: str
) -> None:
    async with sessions() as session, session.begin():
        rows = (
            await session.scalars(
                select(Quarantine)
                .where(Quarantine.id.in_(row_ids), Quarantine.status == "open")
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return
        chosen: dict[int, set[str] | None] = {}
        for row in rows:
            label = row_label(row)
            if label is None:
                chosen[row.raw_message_id] = None
            elif row.raw_message_id not in chosen:
                chosen[row.raw_message_id] = {label}
            elif (labels := chosen[row.raw_message_id]) is not None:
                labels.add(label)
        open_rows = {(r.raw_message_id, row_label(r)): r.id for r in rows}

        def keep(raw_id: int, _index: int, item: DecodedItem) -> bool:
            labels = chosen.get(raw_id)
            return labels is None or any(
                item.label == label or item.label.startswith(label + ".") for label in labels
            )

        attempts = {row.id: row.attempts for row in rows}
        raws = await _raw_messages(session, sorted(chosen))
        await _reprocess(pipeline, session, raws, keep, open_rows, by)
        await _note_empty_places(session, attempts, {r.id: row_label(r) for r in rows})


async def _note_empty_places(
    session: AsyncSession, attempts: dict[int, int], labels: dict[int, str | None]
) -> None:
    """A row whose place in the message yields nothing now stays open, and says so.

    That happens when the adapter now skips what failed there, or reads it as part of an
    item at another place: the operator checks and discards the row.
    """
    for row_id, before in attempts.items():
        await session.execute(
            update(Quarantine)
            .where(
                Quarantine.id == row_id,
                Quarantine.status == "open",
                Quarantine.attempts == before,
            )
            .values(
                attempts=before + 1,
                reason=f"re-driven: the message has no item at {labels[row_id]} any more "
                "(the adapter now reads it differently); discard the row if that is right",
            )
        )


async def _replay_chunk(
    pipeline: Pipeline,
    sessions: async_sessionmaker[AsyncSession],
    scope: ReplayScope,
    after: int,
    by: str,
    dry_run: bool,
    report: ReplayReport,
) -> int | None:
    async with sessions() as session:
        transaction = await session.begin()
        query = (
            select(RawRow)
            .where(RawRow.received_at >= scope.since, RawRow.received_at < scope.until)
            .where(RawRow.id > after)
            .order_by(RawRow.id)
            .limit(CHUNK)
        )
        if scope.gateway:
            query = query.where(RawRow.gateway_id == scope.gateway)
        if scope.adapter:
            query = query.where(RawRow.adapter == scope.adapter)
        stored = (await session.scalars(query)).all()
        if not stored:
            await transaction.rollback()
            return None
        ids = [r.id for r in stored]
        open_rows = {
            (q.raw_message_id, row_label(q)): q.id
            for q in await session.scalars(
                select(Quarantine).where(
                    Quarantine.raw_message_id.in_(ids), Quarantine.status == "open"
                )
            )
        }
        wanted = canonical_device(*scope.device) if scope.device else None

        def keep(_raw_id: int, _index: int, item: DecodedItem) -> bool:
            if wanted is None:
                return True
            m = item.measurement
            return m is not None and canonical_device(m.device_system, m.device_id) == wanted

        raws = [(r.id, _message(r)) for r in stored]
        results = await _reprocess(pipeline, session, raws, keep, open_rows, by)
        _count(report, results, narrowed=wanted is not None)
        report.quarantine_resolved += await _resolved(session, list(open_rows.values()))
        if dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
        return ids[-1]


async def _reprocess(
    pipeline: Pipeline,
    session: AsyncSession,
    raws: list[tuple[int, RawMessage]],
    keep: Keep,
    open_rows: dict[QuarantineKey, int],
    by: str,
) -> list[MessageResult]:
    plans = await pipeline.compute(
        session, [raw for _, raw in raws], [raw_id for raw_id, _ in raws], keep
    )
    return await pipeline.record_plans(session, plans, open_quarantine=open_rows, redriven_by=by)


def row_label(row: Quarantine) -> str | None:
    """The label of a row's item (None: the whole message); rows from before labels existed
    were written for dho-json, whose items are labelled by position."""
    if row.item_index is None:
        return None
    return row.item_label or f"[{row.item_index}]"


async def _raw_messages(session: AsyncSession, ids: list[int]) -> list[tuple[int, RawMessage]]:
    rows = await session.scalars(select(RawRow).where(RawRow.id.in_(ids)).order_by(RawRow.id))
    return [(row.id, _message(row)) for row in rows]


def _message(row: RawRow) -> RawMessage:
    return RawMessage(
        payload=row.payload,
        transport="http" if row.transport == "http" else "mqtt",
        topic=row.topic,
        gateway=row.gateway_id,
        adapter=row.adapter,
        received_at=row.received_at,
        message_id=row.message_id,
    )


def _count(report: ReplayReport, results: list[MessageResult], *, narrowed: bool) -> None:
    """Add a chunk's results; narrowed to a device, messages without its readings do not count."""
    for result in results:
        if narrowed and not result.items:
            continue
        report.messages += 1
        if result.status == "rejected":
            report.items["message rejected"] += 1
        for item in result.items:
            report.items[item.status] += 1
            report.amended += item.amended


async def _resolved(session: AsyncSession, row_ids: list[int]) -> int:
    if not row_ids:
        return 0
    found = await session.scalars(
        select(Quarantine.id).where(Quarantine.id.in_(row_ids), Quarantine.status == "redriven")
    )
    return len(found.all())


async def _retrying(step: Callable[[], Awaitable[T]]) -> T:
    for attempt in range(ATTEMPTS):
        try:
            return await step()
        except Exception as exc:
            raced = isinstance(exc, IntegrityError) or is_transient_conflict(exc)
            if not raced or attempt == ATTEMPTS - 1:
                raise
            log.info("re-processing raced a concurrent writer; trying again")
    raise AssertionError("unreachable")
