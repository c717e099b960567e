"""What a micro-batch needs from the database, read in a few bulk queries before computing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho.db.base import one_of
from dho.db.models import Device, ObservationRow, Patient, QuestionnaireResponseRow, RawMessage
from dho.ingest.decoded import DecodedItem
from dho.ingest.record_quarantine import QuarantineKey
from dho.ingest.resolve import (
    DEVICE_ID_SYSTEM,
    NATIONAL_ID_SYSTEMS,
    PATIENT_ID_SYSTEM,
    Gateway,
    RegistrySnapshot,
)
from dho.registry import queries

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredObservation:
    id: str
    version_id: int
    value_digest: str
    identity: str
    raw_id: int  # the raw message the current version came from
    patient_id: str | None = None


@dataclass(slots=True)
class ExistingState:
    """Rows already stored that decide duplicate / correction."""

    message_ids: set[tuple[str, str]] = field(default_factory=set)
    observations: dict[str, StoredObservation] = field(default_factory=dict)
    by_source_identifier: dict[str, list[StoredObservation]] = field(default_factory=dict)
    # When re-processing stored messages: open quarantine rows by (raw message, item label).
    open_quarantine: dict[QuarantineKey, int] = field(default_factory=dict)
    questionnaire_responses: dict[str, str] = field(default_factory=dict)  # identity -> id


async def load_gateways(session: AsyncSession, ids: Iterable[str]) -> dict[str, Gateway]:
    """Active gateways by id, with the organisations each serves."""
    found = await queries.gateways_by_id(session, set(ids))
    return {
        gid: Gateway(gid, frozenset(orgs), gateway.mqtt_receipts)
        for gid, (gateway, orgs) in found.items()
        if gateway.active
    }


async def load_registry(session: AsyncSession, items: Iterable[DecodedItem]) -> RegistrySnapshot:
    """Devices, their assignments and patients for every measurement and claim of a batch."""
    device_keys: set[tuple[str, str]] = set()
    patient_keys: set[tuple[str, str]] = set()
    for item in items:
        if item.measurement is not None:
            device_keys.add((item.measurement.device_system, item.measurement.device_id))
            if item.measurement.patient is not None:
                patient_keys.add(item.measurement.patient)
        elif (claim := item.claim or (item.reply.patient if item.reply else None)) is not None:
            keys = set(claim.identifiers)
            if claim.reference is not None:
                system = DEVICE_ID_SYSTEM if claim.resource_type == "Device" else PATIENT_ID_SYSTEM
                keys.add((system, claim.reference.split("/", 1)[-1]))
            (device_keys if claim.resource_type == "Device" else patient_keys).update(keys)
    devices = await _devices(session, device_keys)
    assignments = await queries.assignments_for_devices(session, [d.id for d in devices.values()])
    patients = await _patients(session, patient_keys)
    in_care = {a.patient_id for rows in assignments.values() for a in rows}
    organizations = await queries.patient_organizations(session, in_care | set(patients.values()))
    return RegistrySnapshot(
        devices=devices,
        assignments=assignments,
        patient_organizations=organizations,
        patients=patients,
    )


async def _devices(
    session: AsyncSession, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], Device]:
    by_identifier = {k for k in keys if k[0] != DEVICE_ID_SYSTEM}
    found = await queries.devices_by_identifier(session, by_identifier)
    ids = sorted(value for system, value in keys if system == DEVICE_ID_SYSTEM)
    for chunk in _chunks(ids):
        for device in await session.scalars(select(Device).where(one_of(Device.id, chunk))):
            found[(DEVICE_ID_SYSTEM, device.id)] = device
    return found


async def _patients(
    session: AsyncSession, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    national = sorted(value for system, value in keys if system in NATIONAL_ID_SYSTEMS)
    ids = sorted(value for system, value in keys if system == PATIENT_ID_SYSTEM)
    found: dict[tuple[str, str], str] = {}
    for chunk in _chunks(national):
        stmt = select(Patient.id, Patient.national_id_system, Patient.national_id).where(
            one_of(Patient.national_id, chunk)
        )
        for patient_id, system, value in await session.execute(stmt):
            found[(system, value)] = patient_id
    for chunk in _chunks(ids):
        for patient_id in await session.scalars(
            select(Patient.id).where(one_of(Patient.id, chunk))
        ):
            found[(PATIENT_ID_SYSTEM, patient_id)] = patient_id
    return found


async def load_existing(
    session: AsyncSession,
    message_keys: Iterable[tuple[str, str]],
    identities: Iterable[str],
    source_identifiers: Iterable[str] = (),
) -> ExistingState:
    state = ExistingState()
    wanted = set(message_keys)
    gateways = sorted({gateway for gateway, _ in wanted})
    # Two plain IN lists let PostgreSQL use the (message_id, gateway_id) index; a row-value
    # IN list does not, and turns into a scan that grows with the table.
    for chunk in _chunks(sorted({message_id for _, message_id in wanted})):
        rows = await session.execute(
            select(RawMessage.gateway_id, RawMessage.message_id).where(
                one_of(RawMessage.gateway_id, gateways), one_of(RawMessage.message_id, chunk)
            )
        )
        state.message_ids.update((g, str(m)) for g, m in rows if (g, m) in wanted)
    columns = (
        ObservationRow.identity,
        ObservationRow.id,
        ObservationRow.version_id,
        ObservationRow.value_digest,
        ObservationRow.raw_message_id,
        ObservationRow.source_identifier,
        ObservationRow.patient_id,
    )
    for column, keys in (
        (ObservationRow.identity, identities),
        (ObservationRow.source_identifier, source_identifiers),
    ):
        for chunk in _chunks(sorted(set(keys))):
            for identity, obs_id, version, digest, raw_id, source, patient in await session.execute(
                select(*columns).where(one_of(column, chunk))
            ):
                stored = StoredObservation(obs_id, version, digest, identity, raw_id, patient)
                state.observations[identity] = stored
                if source is not None:
                    readings = state.by_source_identifier.setdefault(source, [])
                    if all(r.id != obs_id for r in readings):
                        readings.append(stored)
    return state


async def load_replies(
    session: AsyncSession, state: ExistingState, identities: Iterable[str]
) -> None:
    """The questionnaire replies already stored under these identities."""
    for chunk in _chunks(sorted(set(identities))):
        rows = await session.execute(
            select(QuestionnaireResponseRow.identity, QuestionnaireResponseRow.id).where(
                one_of(QuestionnaireResponseRow.identity, chunk)
            )
        )
        state.questionnaire_responses.update((identity, rid) for identity, rid in rows)


def _chunks(items: list[T], size: int = 500) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
