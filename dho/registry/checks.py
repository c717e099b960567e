"""Checks of planned entries against the database, all made before the first write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from dho.db.models.registry import Device, DeviceAssignment, Organization, Patient
from dho.registry.bundle import RESOURCE_TYPES, Entry
from dho.registry.references import References
from dho.registry.tables import ID_COLUMNS, MODELS, chunks

_Period = tuple[datetime, datetime | None, Entry | None]


async def check_references(session: AsyncSession, refs: References) -> None:
    """References to rows outside the bundle must name rows in the registry."""
    wanted = [t for t in refs.external if t not in refs.entries]
    for rtype in RESOURCE_TYPES:
        ids = sorted(i for t, i in wanted if t == rtype)
        found = await _existing_ids(session, rtype, ids)
        for missing in (i for i in ids if i not in found):
            entry = refs.external[(rtype, missing)]
            raise entry.fail(f"reference {rtype}/{missing} is neither in the bundle nor registry")


async def _existing_ids(session: AsyncSession, rtype: str, ids: Sequence[str]) -> set[str]:
    column = ID_COLUMNS[rtype]
    found: set[str] = set()
    for chunk in chunks(ids):
        found.update(await session.scalars(select(column).where(column.in_(chunk))))
    return found


async def check_unique_keys(session: AsyncSession, entries: list[Entry]) -> None:
    """A business key already held by a row with another id (made some other way) is an error."""
    by_type: dict[str, list[Entry]] = {t: [e for e in entries if e.type == t] for t in MODELS}
    await _check_key(
        session,
        (Patient.national_id,),
        Patient.id,
        {(e.columns["national_id"],): e for e in by_type["Patient"]},
        "this national id",
    )
    await _check_key(
        session,
        (Organization.org_number,),
        Organization.id,
        {(e.columns["org_number"],): e for e in by_type["Organization"] if e.columns["org_number"]},
        "this organisation number",
    )
    await _check_key(
        session,
        (Device.identifier_system, Device.identifier_value),
        Device.id,
        {
            (e.columns["identifier_system"], e.columns["identifier_value"]): e
            for e in by_type["Device"]
        },
        "this device identifier",
    )


async def _check_key(
    session: AsyncSession,
    key_columns: tuple[InstrumentedAttribute[Any], ...],
    id_column: InstrumentedAttribute[str],
    planned: dict[tuple[Any, ...], Entry],
    what: str,
) -> None:
    key: Any = key_columns[0] if len(key_columns) == 1 else tuple_(*key_columns)
    for chunk in chunks(list(planned)):
        values = [k[0] for k in chunk] if len(key_columns) == 1 else chunk
        stmt = select(id_column, *key_columns).where(key.in_(values))
        for row_id, *value in await session.execute(stmt):
            _same_row(planned[tuple(value)], row_id, what)


def _same_row(entry: Entry, row_id: str, what: str) -> None:
    if row_id != entry.id:
        raise entry.fail(f"{what} already belongs to {entry.type}/{row_id} in the registry")


async def check_overlaps(session: AsyncSession, uses: list[Entry]) -> None:
    """Assignments of one device, stored and new, must not overlap in time."""
    periods: dict[str, dict[str, _Period]] = {}
    device_ids = sorted({e.columns["device_id"] for e in uses})
    for chunk in chunks(device_ids):
        stmt = select(DeviceAssignment).where(DeviceAssignment.device_id.in_(chunk))
        for row in await session.scalars(stmt):
            periods.setdefault(row.device_id, {})[row.id] = (row.period_start, row.period_end, None)
    for e in uses:
        periods.setdefault(e.columns["device_id"], {})[e.id] = (
            e.columns["period_start"],
            e.columns["period_end"],
            e,
        )
    for by_id in periods.values():
        _check_device_periods(sorted(by_id.values(), key=lambda p: p[0]))


def _check_device_periods(ordered: list[_Period]) -> None:
    latest = ordered[0]
    for current in ordered[1:]:
        if latest[1] is None or latest[1] > current[0]:
            culprit = current[2] or latest[2]
            if culprit is not None:
                raise culprit.fail(
                    f"device {culprit.label} would be assigned twice at once: "
                    f"{_period(latest)} overlaps {_period(current)}"
                )
        if latest[1] is not None and (current[1] is None or current[1] > latest[1]):
            latest = current


def _period(p: _Period) -> str:
    end = p[1].isoformat() if p[1] else "open end"
    where = f"entry {p[2].index}" if p[2] else "registry"
    return f"[{p[0].isoformat()}, {end}) ({where})"
