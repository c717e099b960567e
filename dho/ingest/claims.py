"""Registry claims: the Patient and Device entries a message describes (a FHIR Bundle's).

Part of the resolve stage: a claim is matched against the registry, and only for a
gateway that may send for that patient or device, so the registry cannot be probed.
"""

from __future__ import annotations

from dho.db.models import Device
from dho.ingest.decoded import RegistryClaim
from dho.ingest.errors import UnknownDevice
from dho.ingest.resolve import DEVICE_ID_SYSTEM, PATIENT_ID_SYSTEM, Gateway, RegistrySnapshot


def resolve_claim(claim: RegistryClaim, snapshot: RegistrySnapshot, gateway: Gateway) -> str:
    """The registry reference (`Patient/<id>`, `Device/<id>`) a claim matches; UnknownDevice.

    Only entries the gateway may send for are matched; to any other gateway a registered
    patient or device looks the same as an unknown one, so the registry cannot be probed.
    """
    keys = list(claim.identifiers)
    if claim.reference is not None:
        system = DEVICE_ID_SYSTEM if claim.resource_type == "Device" else PATIENT_ID_SYSTEM
        keys.append((system, claim.reference.split("/", 1)[-1]))
    for key in keys:
        if claim.resource_type == "Device" and key in snapshot.devices:
            device = snapshot.devices[key]
            if _may_send_for_device(device, snapshot, gateway):
                return f"Device/{device.id}"
        if claim.resource_type == "Patient" and key in snapshot.patients:
            patient_id = snapshot.patients[key]
            if _may_send_for_patient(patient_id, snapshot, gateway):
                return f"Patient/{patient_id}"
    shown = ", ".join(f"{s}|{v}" for s, v in keys) or "no identifier"
    code = "unknown-patient" if claim.resource_type == "Patient" else "unknown-device"
    raise UnknownDevice(
        f"{claim.resource_type} ({shown}) is not registered for this gateway; this service "
        "does not create registry entries from device data",
        code=code,
    )


def _may_send_for_patient(patient_id: str, snapshot: RegistrySnapshot, gateway: Gateway) -> bool:
    """The gateway serves the patient's care team, or owns a device the patient uses."""
    if gateway.organizations & snapshot.patient_organizations.get(patient_id, set()):
        return True
    return any(
        device.owner_organization_id in gateway.organizations
        and any(a.patient_id == patient_id for a in snapshot.assignments.get(device.id, []))
        for device in snapshot.devices.values()
    )


def _may_send_for_device(device: Device, snapshot: RegistrySnapshot, gateway: Gateway) -> bool:
    if device.owner_organization_id is not None:
        return device.owner_organization_id in gateway.organizations
    patients = {a.patient_id for a in snapshot.assignments.get(device.id, [])}
    return any(
        gateway.organizations & snapshot.patient_organizations.get(p, set()) for p in patients
    )
