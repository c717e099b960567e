"""Planning Device and DeviceUseStatement entries: validated columns and row ids."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from dho.ingest.identifiers import canonical_device
from dho.registry.bundle import Entry, make_id
from dho.registry.elements import bounded, dicts, instant, optional, text
from dho.registry.references import References, link

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"


def plan_device(entry: Entry) -> None:
    """Id from the device's first identifier."""
    res = entry.resource
    first = next(iter(dicts(res.get("identifier"))), {})
    system, value = first.get("system"), first.get("value")
    if not (isinstance(system, str) and system and isinstance(value, str) and value):
        raise entry.fail("the first identifier needs a system and a value (the device's identity)")
    system, value = canonical_device(system, value)
    entry.id = make_id(f"device|{system}|{value}")
    entry.columns = {
        "identifier_system": bounded(entry, system, 200, "identifier system"),
        "identifier_value": bounded(entry, value, 200, "identifier value"),
        "type_code": optional(entry, _device_type(res), 64, "type code"),
        "manufacturer": optional(entry, text(res.get("manufacturer")), 200, "manufacturer"),
        "model": optional(entry, _device_model(res), 200, "model"),
    }


def plan_device_owner(entry: Entry, refs: References) -> None:
    """Device.owner: the organisation whose gateways alone may send for the device."""
    owner = entry.resource.get("owner")
    entry.columns["owner_organization_id"] = (
        None if owner is None else link(entry, refs, owner, "Organization", "owner")
    )


def _device_type(res: dict[str, Any]) -> str | None:
    """The MDC code of Device.type, else its first code."""
    concept = res.get("type")
    found = dicts(concept.get("coding")) if isinstance(concept, dict) else []
    codings = [c for c in found if isinstance(c.get("code"), str)]
    mdc = [c for c in codings if c.get("system") == MDC_SYSTEM]
    return str((mdc or codings)[0]["code"]) if codings else None


def _device_model(res: dict[str, Any]) -> str | None:
    model = text(res.get("modelNumber"))
    if model:
        return model
    for name in dicts(res.get("deviceName")):
        if name.get("type") == "model-name" and text(name.get("name")):
            return text(name.get("name"))
    return None


def plan_device_use(entry: Entry, refs: References) -> None:
    """A device assignment; id from device, patient and start (UTC)."""
    res = entry.resource
    if res.get("status") == "entered-in-error":
        raise entry.fail("status entered-in-error is not supported; end the period instead")
    device = res.get("device")
    device_id = link(entry, refs, device, "Device", "device")
    patient_id = link(entry, refs, res.get("subject"), "Patient", "subject")
    period = res.get("timingPeriod")
    if not isinstance(period, dict):
        raise entry.fail("needs timingPeriod with a start")
    start = instant(entry, period.get("start"), "timingPeriod.start")
    end = None if period.get("end") is None else instant(entry, period["end"], "timingPeriod.end")
    if end is not None and end <= start:
        raise entry.fail("timingPeriod.end must be after timingPeriod.start")
    entry.id = make_id(f"device-use|{device_id}|{patient_id}|{start.astimezone(UTC).isoformat()}")
    entry.columns = {
        "device_id": device_id,
        "patient_id": patient_id,
        "period_start": start,
        "period_end": end,
    }
    entry.label = str(device.get("reference")) if isinstance(device, dict) else device_id
