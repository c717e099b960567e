"""Resolve stage: device → the patient it was assigned to at the measurement's time.

The device's registered identifier replaces whatever form the sender used (an identifier
or the service's own `Device/<id>`), so a reading has one identity however it was sent.
A gateway may submit only for devices its organisations own, or, for a device without an
owner, for patients in the care of one of its organisations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from dho.db.models import Device, DeviceAssignment
from dho.ingest.errors import DataError, FromTheFuture, NotAuthorised, UnknownDevice
from dho.ingest.measurement import Measurement
from dho.registry.queries import patient_at

# Systems for references to the service's own ids (`Device/<id>`, `Patient/<id>`).
DEVICE_ID_SYSTEM = "urn:dho:device-id"
PATIENT_ID_SYSTEM = "urn:dho:patient-id"
NATIONAL_ID_SYSTEMS = ("urn:oid:2.16.578.1.12.4.1.4.1", "urn:oid:2.16.578.1.12.4.1.4.2")


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """What resolve needs for one batch, loaded in bulk beforehand."""

    devices: dict[tuple[str, str], Device] = field(default_factory=dict)
    assignments: dict[str, list[DeviceAssignment]] = field(default_factory=dict)
    patient_organizations: dict[str, set[str]] = field(default_factory=dict)
    # (identifier system, value) → patient id, for patients named by identifier.
    patients: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gateway:
    """The sender of a message and the organisations it serves."""

    id: str
    organizations: frozenset[str]
    mqtt_receipts: bool = False


@dataclass(frozen=True, slots=True)
class Resolved:
    measurement: Measurement
    device_id: str
    patient_id: str


def resolve(
    m: Measurement, snapshot: RegistrySnapshot, gateway: Gateway, latest_valid: datetime
) -> Resolved:
    """The device and patient for `m`, with the device's registered identifier.

    A measurement time after `latest_valid` (receipt time plus the allowed clock skew) is
    from the future: the device clock is wrong.
    """
    if m.effective > latest_valid:
        raise FromTheFuture(
            f"measurement time {m.effective.isoformat()} is after {latest_valid.isoformat()}, "
            "the receipt time plus the allowed clock skew: check the device clock"
        )
    device = snapshot.devices.get((m.device_system, m.device_id))
    if device is None:
        raise UnknownDevice(f"device {m.device_system}|{m.device_id} is not registered")
    patient_id = patient_at(snapshot.assignments.get(device.id, []), m.effective)
    if patient_id is None:
        raise UnknownDevice(
            f"device {device.identifier_value} was not assigned to any patient at "
            f"{m.effective.isoformat()}",
            code="unassigned-device",
        )
    _check_authority(device, patient_id, snapshot, gateway)
    _check_patient_claim(m, device, patient_id, snapshot)
    canonical = replace(
        m, device_system=device.identifier_system, device_id=device.identifier_value
    )
    return Resolved(measurement=canonical, device_id=device.id, patient_id=patient_id)


def _check_authority(
    device: Device, patient_id: str, snapshot: RegistrySnapshot, gateway: Gateway
) -> None:
    if device.owner_organization_id is not None:
        if device.owner_organization_id not in gateway.organizations:
            raise NotAuthorised(
                f"device {device.identifier_value} is registered to an organisation this "
                "gateway does not serve",
                code="device-not-registered-to-gateway",
            )
        return
    if not gateway.organizations & snapshot.patient_organizations.get(patient_id, set()):
        raise NotAuthorised(
            "the gateway serves none of the organisations responsible for this device's patient",
            code="gateway-not-permitted",
        )


def _check_patient_claim(
    m: Measurement, device: Device, patient_id: str, snapshot: RegistrySnapshot
) -> None:
    """A sender that names the patient must name the one the device was assigned to."""
    if m.patient is None:
        return
    system, value = m.patient
    if system == PATIENT_ID_SYSTEM:
        claimed: str | None = value
    elif system in NATIONAL_ID_SYSTEMS:
        claimed = snapshot.patients.get(m.patient)
    else:
        return  # an identifier system the registry does not keep: nothing to compare
    if claimed != patient_id:
        raise DataError(
            f"the message names patient {system}|{value}, but device "
            f"{device.identifier_value} was assigned to another patient at "
            f"{m.effective.isoformat()}",
            code="patient-mismatch",
        )
