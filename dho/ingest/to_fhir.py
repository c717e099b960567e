"""The to_fhir stage: a normalised Measurement becomes an R4 Observation as a plain dict."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from dho.catalogue import UCUM, Catalogue, Coding, MeasurementType, UnitSpec
from dho.ingest.measurement import Measurement, Quantity
from dho.ingest.times import fhir_datetime

# uuid5(NAMESPACE_URL, "urn:dho:observation"). Never change it: stored Observation ids and
# identifiers derive from it, and re-sent readings are recognised by them.
OBSERVATION_NAMESPACE = uuid.UUID("1629afc9-f351-5376-a18b-83ed2d953d46")

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
FLAG_SYSTEM = "https://dho.example.no/fhir/CodeSystem/observation-flag"
_FLAG_DISPLAY = {
    "late": "Synced late: feeds trends, raises no acute alert",
    "local-time-assumed": "Device time had no UTC offset: read as local time",
    "ambiguous-local-time": "Device local time falls in the hour repeated by a DST change",
    "nonexistent-local-time": "Device local time falls in the hour skipped by a DST change",
}


def observation_id(m: Measurement) -> str:
    """The Observation id: a uuid5 of the measurement identity (device, type, time to the ms)."""
    return str(uuid.uuid5(OBSERVATION_NAMESPACE, m.identity))


def to_fhir(
    m: Measurement,
    *,
    patient_id: str,
    device_id: str,
    catalogue: Catalogue,
    received_at: datetime | None = None,
    late: bool = False,
) -> dict[str, Any]:
    """The Observation for a normalised measurement; values stay Decimal (use jsonutil.dumps).

    `issued` is when the service received it; `meta.tag` flags a late reading and a device
    time that had no offset.
    """
    mtype = catalogue.get(m.type)
    effective = fhir_datetime(m.effective)
    oid = observation_id(m)
    resource: dict[str, Any] = {"resourceType": "Observation", "id": oid}
    meta = _meta(mtype.profiles, late, m.time_flag)
    if meta:
        resource["meta"] = meta
    resource["identifier"] = _identifiers(oid, m.source_identifier)
    resource["status"] = "final"
    resource["category"] = [{"coding": [mtype.category.as_fhir()]}]
    resource["code"] = _concept(mtype.codes, mtype.title)
    resource["subject"] = {"reference": _reference("Patient", patient_id)}
    resource["effectiveDateTime"] = effective
    if received_at is not None:
        resource["issued"] = received_at.astimezone(UTC).isoformat(timespec="milliseconds")
    if not mtype.is_panel:
        resource["valueQuantity"] = _quantity(m.value, mtype.unit, m.type)
    resource["device"] = {"reference": _reference("Device", device_id)}
    if mtype.is_panel:
        resource["component"] = _components(m, mtype)
    return resource


def _meta(profiles: tuple[str, ...], late: bool, time_flag: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if profiles:
        meta["profile"] = list(profiles)
    flags = [flag for flag in ("late" if late else None, time_flag) if flag]
    if flags:
        meta["tag"] = [
            {"system": FLAG_SYSTEM, "code": flag, "display": _FLAG_DISPLAY[flag]} for flag in flags
        ]
    return meta


def _identifiers(oid: str, source: tuple[str, str] | None) -> list[dict[str, str]]:
    identifiers = [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{oid}"}]
    if source is not None:
        system, value = source
        identifiers.append({"system": system, "value": value} if system else {"value": value})
    return identifiers


def _concept(codes: Iterable[Coding], text: str) -> dict[str, Any]:
    return {"coding": [c.as_fhir() for c in codes], "text": text}


def _reference(resource_type: str, resource_id: str) -> str:
    if not _FHIR_ID.fullmatch(resource_id):
        raise ValueError(f"{resource_id!r} is not a valid FHIR {resource_type} id")
    return f"{resource_type}/{resource_id}"


def _quantity(quantity: Quantity | None, spec: UnitSpec | None, label: str) -> dict[str, Any]:
    if quantity is None or spec is None or quantity.unit != spec.code:
        raise ValueError(f"{label}: to_fhir needs a normalised value in {spec and spec.code}")
    return {"value": quantity.value, "unit": spec.display, "system": UCUM, "code": spec.code}


def _components(m: Measurement, mtype: MeasurementType) -> list[dict[str, Any]]:
    unknown = set(m.components) - {c.key for c in mtype.components}
    if unknown or not m.components or m.value is not None:
        got = sorted(m.components)
        raise ValueError(f"{m.type}: to_fhir needs normalised components, got {got}")
    return [
        {
            "code": _concept(c.codes, c.title),
            "valueQuantity": _quantity(m.components[c.key], c.unit, f"{m.type}.{c.key}"),
        }
        for c in mtype.components
        if c.key in m.components
    ]
