"""Registry reads for the pipeline, each one query per micro-batch (IN lists)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from dho.db.base import one_of
from dho.db.models.registry import (
    CareTeam,
    CareTeamMember,
    Device,
    DeviceAssignment,
    Gateway,
    GatewayOrganization,
)


async def devices_by_identifier(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Device]:
    """Devices by (identifier system, identifier value); unknown keys are absent."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    key = tuple_(Device.identifier_system, Device.identifier_value)
    rows = await session.scalars(select(Device).where(key.in_(wanted)))
    return {(d.identifier_system, d.identifier_value): d for d in rows}


async def assignments_for_devices(
    session: AsyncSession, device_ids: Iterable[str]
) -> dict[str, list[DeviceAssignment]]:
    """Every requested device id → its assignments sorted by start (empty list when none)."""
    wanted = sorted(set(device_ids))
    found: dict[str, list[DeviceAssignment]] = {d: [] for d in wanted}
    if not wanted:
        return found
    stmt = (
        select(DeviceAssignment)
        .where(one_of(DeviceAssignment.device_id, wanted))
        .order_by(DeviceAssignment.device_id, DeviceAssignment.period_start)
    )
    for row in await session.scalars(stmt):
        found[row.device_id].append(row)
    return found


def patient_at(assignments: list[DeviceAssignment], when: datetime) -> str | None:
    """The patient whose assignment contains `when` (start inclusive, end exclusive)."""
    if when.tzinfo is None:
        raise ValueError("patient_at needs a time-zone aware datetime")
    for a in assignments:
        if a.period_start <= when and (a.period_end is None or when < a.period_end):
            return a.patient_id
    return None


async def patient_organizations(
    session: AsyncSession, patient_ids: Iterable[str]
) -> dict[str, set[str]]:
    """Every requested patient id → the organisations in its care team (empty set when none)."""
    wanted = sorted(set(patient_ids))
    found: dict[str, set[str]] = {p: set() for p in wanted}
    if not wanted:
        return found
    stmt = (
        select(CareTeam.patient_id, CareTeamMember.organization_id)
        .join(CareTeamMember, CareTeamMember.care_team_id == CareTeam.id)
        .where(one_of(CareTeam.patient_id, wanted))
    )
    for patient_id, organization_id in await session.execute(stmt):
        found[patient_id].add(organization_id)
    return found


async def gateways_by_id(
    session: AsyncSession, ids: Iterable[str]
) -> dict[str, tuple[Gateway, set[str]]]:
    """Gateways (active or not: check `.active`) with their organisation ids; unknown are absent."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    stmt = (
        select(Gateway, GatewayOrganization.organization_id)
        .outerjoin(GatewayOrganization, GatewayOrganization.gateway_id == Gateway.id)
        .where(one_of(Gateway.id, wanted))
    )
    found: dict[str, tuple[Gateway, set[str]]] = {}
    for gateway, organization_id in await session.execute(stmt):
        _, orgs = found.setdefault(gateway.id, (gateway, set()))
        if organization_id is not None:
            orgs.add(organization_id)
    return found
