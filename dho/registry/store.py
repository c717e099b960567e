"""Writing planned entries as registry rows: insert, update or leave alone; no commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.db.base import utcnow
from dho.db.models.registry import CareTeamMember
from dho.registry.bundle import RESOURCE_TYPES, Entry
from dho.registry.report import ImportReport
from dho.registry.tables import ID_COLUMNS, MODELS, chunks


async def store_all(session: AsyncSession, entries: list[Entry]) -> ImportReport:
    """Store every planned entry, type by type, and count what changed."""
    report = ImportReport()
    now = utcnow()
    for rtype in RESOURCE_TYPES:
        planned = [e for e in entries if e.type == rtype]
        if not planned:
            continue
        ids = [e.id for e in planned]
        old_members = await _members(session, ids) if rtype == "CareTeam" else {}
        existing = await _rows(session, rtype, ids)
        for entry in planned:
            members_changed = entry.members != old_members.get(entry.id, {})
            outcome = _store(session, rtype, entry, existing.get(entry.id), members_changed, now)
            setattr(report[rtype], outcome, getattr(report[rtype], outcome) + 1)
        await session.flush()
        if rtype == "CareTeam":
            await _sync_members(session, planned, old_members)
    return report


async def _rows(session: AsyncSession, rtype: str, ids: Sequence[str]) -> dict[str, Any]:
    model, column = MODELS[rtype], ID_COLUMNS[rtype]
    rows: dict[str, Any] = {}
    for chunk in chunks(ids):
        found: Sequence[Any] = (await session.scalars(select(model).where(column.in_(chunk)))).all()
        rows.update((row.id, row) for row in found)
    return rows


def _store(
    session: AsyncSession,
    rtype: str,
    entry: Entry,
    row: Any,
    members_changed: bool,
    now: datetime,
) -> str:
    """Insert or update one row; returns `created`, `updated` or `unchanged`."""
    if row is None:
        row = MODELS[rtype](id=entry.id, **entry.columns)
        session.add(row)
        outcome = "created"
    elif (
        members_changed
        or any(getattr(row, k) != v for k, v in entry.columns.items())
        or _canonical(_content(jsonutil.loads(row.resource))) != _canonical(entry.resource)
    ):
        for name, value in entry.columns.items():
            setattr(row, name, value)
        outcome = "updated"
    else:
        return "unchanged"
    stamped = dict(entry.resource)
    stamped["meta"] = {**entry.resource.get("meta", {}), "lastUpdated": _instant_text(now)}
    row.resource = jsonutil.dumps(_meta_first(stamped))
    row.updated_at = now
    return outcome


async def _members(
    session: AsyncSession, care_team_ids: Sequence[str]
) -> dict[str, dict[str, str | None]]:
    found: dict[str, dict[str, str | None]] = {}
    for chunk in chunks(care_team_ids):
        stmt = select(CareTeamMember).where(CareTeamMember.care_team_id.in_(chunk))
        for member in await session.scalars(stmt):
            found.setdefault(member.care_team_id, {})[member.organization_id] = member.role
    return found


async def _sync_members(
    session: AsyncSession, teams: list[Entry], old: dict[str, dict[str, str | None]]
) -> None:
    """Make each care team's members exactly those of the bundle."""
    for team in teams:
        before = old.get(team.id, {})
        if team.members == before:
            continue
        for org_id in before.keys() - team.members.keys():
            member = await session.get(CareTeamMember, (team.id, org_id))
            if member is not None:
                await session.delete(member)
        for org_id, role in team.members.items():
            if org_id not in before:
                session.add(CareTeamMember(care_team_id=team.id, organization_id=org_id, role=role))
            elif before[org_id] != role:
                member = await session.get(CareTeamMember, (team.id, org_id))
                if member is not None:
                    member.role = role
    await session.flush()


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without meta.lastUpdated (which changes only with the content)."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    rest = {k: v for k, v in meta.items() if k != "lastUpdated"}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if rest:
        out["meta"] = rest
    return out


def _canonical(node: Any) -> Any:
    """A comparable form in which 36.50 and 36.5 differ and key order does not matter."""
    if isinstance(node, dict):
        return sorted((k, _canonical(v)) for k, v in node.items())
    if isinstance(node, list):
        return [_canonical(v) for v in node]
    if isinstance(node, bool):
        return ("bool", node)
    if isinstance(node, Decimal | float):
        return ("decimal", str(node))
    return node


def _meta_first(resource: dict[str, Any]) -> dict[str, Any]:
    head = {k: resource[k] for k in ("resourceType", "id", "meta") if k in resource}
    return head | {k: v for k, v in resource.items() if k not in head}


def _instant_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
