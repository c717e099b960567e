"""Resolve stage: device → the patient it was assigned to at the measurement's time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dho.db.models import Device, DeviceAssignment
from dho.ingest.errors import DataError
from dho.ingest.measurement import Measurement
from dho.registry.queries import patient_at


class UnknownDevice(DataError):
    code = "unknown-device"


class UnassignedDevice(DataError):
    code = "unassigned-device"


class GatewayNotPermitted(DataError):
    code = "gateway-not-permitted"


class ClockSkew(DataError):
    code = "clock-skew"


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """What resolve needs for one batch, loaded in bulk beforehand."""

    devices: dict[tuple[str, str], Device] = field(default_factory=dict)
    assignments: dict[str, list[DeviceAssignment]] = field(default_factory=dict)
    patient_organizations: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resolved:
    measurement: Measurement
    device_id: str
    patient_id: str


def resolve(
    m: Measurement, snapshot: RegistrySnapshot, gateway_orgs: set[str], latest_valid: datetime
) -> Resolved:
    """The device and patient for `m`; the gateway must serve one of the patient's organisations.

    A measurement time after `latest_valid` (receipt time plus the allowed clock skew) cannot
    be placed in any assignment period yet and is rejected.
    """
    if m.effective > latest_valid:
        raise ClockSkew(
            f"measurement time {m.effective.isoformat()} is in the future "
            f"(received {latest_valid.isoformat()} plus allowed skew): check the device clock"
        )
    device = snapshot.devices.get((m.device_system, m.device_id))
    if device is None:
        raise UnknownDevice(f"device {m.device_system}|{m.device_id} is not registered")
    patient_id = patient_at(snapshot.assignments.get(device.id, []), m.effective)
    if patient_id is None:
        raise UnassignedDevice(
            f"device {m.device_id} was not assigned to any patient at {m.effective.isoformat()}"
        )
    if not gateway_orgs & snapshot.patient_organizations.get(patient_id, set()):
        raise GatewayNotPermitted(
            "the gateway serves none of the organisations responsible for this device's patient"
        )
    return Resolved(measurement=m, device_id=device.id, patient_id=patient_id)
