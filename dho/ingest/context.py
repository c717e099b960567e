"""What a micro-batch needs from the database, read in a few bulk queries before computing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho.db.models import Device, DeviceAssignment, ObservationRow, RawMessage
from dho.ingest.measurement import Measurement
from dho.ingest.resolve import RegistrySnapshot
from dho.registry import queries

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredObservation:
    id: str
    version_id: int
    value_digest: str


@dataclass(slots=True)
class ExistingState:
    """Rows already stored that decide duplicate / correction."""

    message_ids: set[tuple[str, str]] = field(default_factory=set)
    observations: dict[str, StoredObservation] = field(default_factory=dict)


async def load_gateways(session: AsyncSession, ids: Iterable[str]) -> dict[str, set[str]]:
    """Active gateways by id, with the organisations each serves."""
    found = await queries.gateways_by_id(session, set(ids))
    return {gid: orgs for gid, (gateway, orgs) in found.items() if gateway.active}


async def load_registry(
    session: AsyncSession, measurements: Iterable[Measurement]
) -> RegistrySnapshot:
    keys = {(m.device_system, m.device_id) for m in measurements}
    devices: dict[tuple[str, str], Device] = await queries.devices_by_identifier(session, keys)
    assignments: dict[str, list[DeviceAssignment]] = await queries.assignments_for_devices(
        session, [d.id for d in devices.values()]
    )
    patients = {a.patient_id for rows in assignments.values() for a in rows}
    organizations = await queries.patient_organizations(session, patients)
    return RegistrySnapshot(
        devices=devices, assignments=assignments, patient_organizations=organizations
    )


async def load_existing(
    session: AsyncSession, message_keys: Iterable[tuple[str, str]], identities: Iterable[str]
) -> ExistingState:
    state = ExistingState()
    wanted = set(message_keys)
    gateways = sorted({gateway for gateway, _ in wanted})
    # Two plain IN lists let PostgreSQL use the (gateway_id, message_id) index; a row-value
    # IN list does not, and turns into a scan that grows with the table.
    for chunk in _chunks(sorted({message_id for _, message_id in wanted})):
        rows = await session.execute(
            select(RawMessage.gateway_id, RawMessage.message_id).where(
                RawMessage.gateway_id.in_(gateways), RawMessage.message_id.in_(chunk)
            )
        )
        state.message_ids.update((g, str(m)) for g, m in rows if (g, m) in wanted)
    for identity_chunk in _chunks(list(set(identities))):
        result = await session.execute(
            select(
                ObservationRow.identity,
                ObservationRow.id,
                ObservationRow.version_id,
                ObservationRow.value_digest,
            ).where(ObservationRow.identity.in_(identity_chunk))
        )
        for identity, obs_id, version, digest in result:
            state.observations[identity] = StoredObservation(obs_id, version, digest)
    return state


def _chunks(items: list[T], size: int = 500) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
