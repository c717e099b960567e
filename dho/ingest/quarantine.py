"""The quarantine as operators see it: list, inspect and discard (queries in one place)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dho.db.models import Quarantine, RawMessage

STATUSES = ("open", "redriven", "discarded")


@dataclass(frozen=True, slots=True)
class QuarantineFilter:
    """Which quarantine rows: all fields optional; rows newest first, `before` an id."""

    status: str | None = "open"
    reason: str | None = None
    gateway: str | None = None
    adapter: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None
    limit: int = 100


async def list_rows(
    session: AsyncSession, wanted: QuarantineFilter
) -> list[tuple[Quarantine, RawMessage]]:
    """Quarantine rows with their raw messages, newest first."""
    query = (
        select(Quarantine, RawMessage)
        .join(RawMessage, RawMessage.id == Quarantine.raw_message_id)
        .where(*_conditions(wanted))
        .order_by(Quarantine.id.desc())
        .limit(wanted.limit)
    )
    return [(q, r) for q, r in (await session.execute(query)).all()]


async def matching_ids(session: AsyncSession, wanted: QuarantineFilter) -> list[int]:
    """Ids of the rows a filter selects, oldest first (the order to re-drive in)."""
    query = (
        select(Quarantine.id)
        .join(RawMessage, RawMessage.id == Quarantine.raw_message_id)
        .where(*_conditions(wanted))
        .order_by(Quarantine.id)
        .limit(wanted.limit)
    )
    return list(await session.scalars(query))


async def get_row(session: AsyncSession, row_id: int) -> tuple[Quarantine, RawMessage] | None:
    found = (
        await session.execute(
            select(Quarantine, RawMessage)
            .join(RawMessage, RawMessage.id == Quarantine.raw_message_id)
            .where(Quarantine.id == row_id)
        )
    ).first()
    return None if found is None else (found[0], found[1])


async def discard(
    session: AsyncSession, row_ids: list[int], by: str, why: str, now: datetime
) -> int:
    """Close open rows without re-driving them; returns how many were open."""
    closed = await session.scalars(
        update(Quarantine)
        .where(Quarantine.id.in_(row_ids), Quarantine.status == "open")
        .values(status="discarded", resolved_at=now, resolved_by=by[:200], resolution=why)
        .returning(Quarantine.id)
    )
    return len(closed.all())


def describe(row: Quarantine, raw: RawMessage, *, with_payload: bool = False) -> dict[str, Any]:
    """A quarantine row as the API and the CLI show it."""
    out: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "reason": row.reason_class,
        "reason_code": row.reason_code,
        "detail": row.reason,
        "created": row.created_at.isoformat(timespec="milliseconds"),
        "attempts": row.attempts,
        "raw_message_id": raw.id,
        "item": row.item_index,
        "item_label": row.item_label,
        "gateway": raw.gateway_id,
        "adapter": raw.adapter,
        "transport": raw.transport,
        "topic": raw.topic,
        "received": raw.received_at.isoformat(timespec="milliseconds"),
    }
    if row.resolved_at is not None:
        out["resolved"] = row.resolved_at.isoformat(timespec="milliseconds")
        out["resolved_by"] = row.resolved_by
        out["resolution"] = row.resolution
    if with_payload:
        out["payload_bytes"] = len(raw.payload)
        try:
            out["payload"] = raw.payload.decode("utf-8")
        except UnicodeDecodeError:
            out["payload_base64"] = base64.b64encode(raw.payload).decode("ascii")
    return out


def _conditions(wanted: QuarantineFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if wanted.status:
        conditions.append(Quarantine.status == wanted.status)
    if wanted.reason:
        conditions.append(Quarantine.reason_class == wanted.reason)
    if wanted.gateway:
        conditions.append(RawMessage.gateway_id == wanted.gateway)
    if wanted.adapter:
        conditions.append(RawMessage.adapter == wanted.adapter)
    if wanted.since:
        conditions.append(Quarantine.created_at >= wanted.since)
    if wanted.until:
        conditions.append(Quarantine.created_at < wanted.until)
    if wanted.before:
        conditions.append(Quarantine.id < wanted.before)
    return conditions
