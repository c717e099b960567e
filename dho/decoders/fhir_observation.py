"""One FHIR Observation (PHD profiles) → one canonical Measurement, or why it cannot be one."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from dho.catalogue import LOINC, MDC, UCUM, Catalogue, MeasurementType
from dho.decoders.fhir_entries import (
    INVALID,
    Links,
    device_identity,
    ignored_coding,
    patient_identity,
    resolve,
    validate,
)
from dho.ingest.decoded import DecodeContext, DecodedItem
from dho.ingest.errors import DataError, UnitError, Unparseable
from dho.ingest.measurement import Measurement, Quantity, TimeFlag
from dho.ingest.payload import number
from dho.ingest.times import parse_iso

# A preliminary reading is not one the service can judge or keep as final: refused.
ACCEPTED_STATUS = frozenset({"final", "amended", "corrected"})
R4_STATUS = ACCEPTED_STATUS | {
    "preliminary",
    "registered",
    "cancelled",
    "entered-in-error",
    "unknown",
}
_VALUE_KEYS = (
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)

# An MDC reference id as PHD gateways put it in coding.display (e.g. MDC_ATTR_VAL_BATT_CHARGE).
_REFID = re.compile(r"MDC_[A-Z0-9_]{1,60}")

Coded = tuple[tuple[str, str], ...]


def observation_item(
    resource: dict[str, Any],
    label: str,
    links: Links,
    ctx: DecodeContext,
    ignore_codes: frozenset[str],
) -> DecodedItem:
    """The measurement an Observation holds; its error, or a note when it holds none.

    An Observation whose MDC code is in `ignore_codes` (the adapter's list of PHD device
    information: Coincident Time Stamp, battery level, ...) is read, not stored.
    """
    try:
        validate(resource, "Observation", label)
        status = resource.get("status")
        if status not in R4_STATUS:
            raise Unparseable(f"{label}: status is not an R4 Observation status", code=INVALID)
        ignored = ignored_coding(resource, ignore_codes)
        if ignored is not None:
            return DecodedItem(label, note=_device_information(ignored))
        _check_status(status, label)
        absent = _absent_value(resource)
        if absent is not None:
            return DecodedItem(label, note=f"no value ({absent}): nothing to store")
        return DecodedItem(label, measurement=_measurement(resource, label, links, ctx))
    except DataError as error:
        return DecodedItem(label, error=error)


def _device_information(coding: Mapping[str, Any]) -> str:
    """The note for an ignored Observation: its MDC code and reference id (when it has one)."""
    display = coding.get("display")
    refid = f" {display}" if isinstance(display, str) and _REFID.fullmatch(display) else ""
    return f"device information (MDC {coding['code']}{refid}): read, not stored"


def _check_status(status: Any, label: str) -> None:
    if status not in ACCEPTED_STATUS:
        raise DataError(
            f"{label}: status {status!r} is not a reading to store "
            f"(accepted: {', '.join(sorted(ACCEPTED_STATUS))})",
            code="status-not-accepted",
        )


def _absent_value(resource: Mapping[str, Any]) -> str | None:
    """The dataAbsentReason of an Observation with no value and no components (device error)."""
    reason = resource.get("dataAbsentReason")
    if reason is None or "valueQuantity" in resource or resource.get("component"):
        return None
    codes = [c.get("code") for c in reason.get("coding") or () if isinstance(c, dict)]
    shown = next((c for c in codes if isinstance(c, str)), None) or reason.get("text") or "given"
    return f"dataAbsentReason {str(shown)[:40]}"


def _measurement(
    resource: Mapping[str, Any], label: str, links: Links, ctx: DecodeContext
) -> Measurement:
    device = resource.get("device")
    if device is None:
        raise Unparseable(
            f"{label}: no Observation.device: the device is unknown", code="no-device"
        )
    where = f"{label}: Observation.device"
    device_system, device_id = device_identity(resolve(device, "Device", links, where), where)
    subject = resource.get("subject")
    patient = None
    if subject is not None:
        target = resolve(subject, "Patient", links, f"{label}: Observation.subject")
        patient = patient_identity(target)
    effective, flag = _effective(resource, label, ctx)
    mtype, value, components = _values(resource, label, ctx.types)
    return Measurement(
        device_system,
        device_id,
        mtype.key,
        effective,
        value=value,
        components=components,
        time_flag=flag,
        source_identifier=_source_identifier(resource),
        patient=patient,
    )


def _effective(
    resource: Mapping[str, Any], label: str, ctx: DecodeContext
) -> tuple[datetime, TimeFlag | None]:
    """effectiveDateTime, effectivePeriod.start or effectiveInstant, with the device's offset.

    `-00:00` is the PHD IG's "UTC, local offset unknown": the instant is exact and is kept
    in UTC. A time without any offset is not valid FHIR and fails validation before this.
    """
    period = resource.get("effectivePeriod") or {}
    text = (
        resource.get("effectiveDateTime") or period.get("start") or resource.get("effectiveInstant")
    )
    if not isinstance(text, str):
        raise Unparseable(
            f"{label}: no effectiveDateTime, effectivePeriod.start or effectiveInstant",
            code="no-time",
        )
    return parse_iso(text, ctx.local_zone, f"{label}: effective time")


def _values(
    resource: Mapping[str, Any], label: str, types: Catalogue
) -> tuple[MeasurementType, Quantity | None, dict[str, Quantity]]:
    codings = _codings(resource.get("code"))
    other = next((key for key in _VALUE_KEYS if key in resource), None)
    if other is not None:
        raise DataError(
            f"{label}: {other} readings are not stored (only valueQuantity)",
            code="unsupported-value",
        )
    if "valueQuantity" in resource:
        quantity = _quantity(resource["valueQuantity"], f"{label}: valueQuantity")
        return _single_type(codings, quantity.unit, types, label), quantity, {}
    if resource.get("component"):
        mtype = _panel_type(codings, types, label)
        return mtype, None, _components(resource["component"], mtype, label)
    raise Unparseable(f"{label}: neither a valueQuantity nor components", code="no-value")


def _codings(concept: Any) -> Coded:
    if not isinstance(concept, dict):
        return ()
    found = (
        (c.get("system"), c.get("code")) for c in concept.get("coding") or () if isinstance(c, dict)
    )
    return tuple((s, c) for s, c in found if isinstance(s, str) and isinstance(c, str))


def _quantity(raw: Any, where: str) -> Quantity:
    if not isinstance(raw, dict) or raw.get("system") != UCUM or not raw.get("code"):
        raise UnitError(f"{where}: the unit must be a UCUM code (system {UCUM})", code="unit")
    if "comparator" in raw:
        raise DataError(
            f"{where}: a value with a comparator is not an exact reading", code="unsupported-value"
        )
    return Quantity(number(raw.get("value"), f"{where}.value"), str(raw["code"]))


def _single_type(codings: Coded, unit: str, types: Catalogue, label: str) -> MeasurementType:
    """The type on the pair (MDC code, unit); without an MDC coding, the LOINC code."""
    mdc = [code for system, code in codings if system == MDC]
    mtype = _by_mdc(mdc, unit, types, label) if mdc else _by_loinc(codings, unit, types, label)
    for system, code in codings:
        if system != LOINC:
            continue
        try:
            named = types.by_code(LOINC, code)
        except KeyError:
            continue
        if named.key != mtype.key:
            raise DataError(
                f"{label}: LOINC {code} means {named.key}, but the reading is {mtype.key}",
                code="conflicting-codes",
            )
    return mtype


def _by_mdc(codes: list[str], unit: str, types: Catalogue, label: str) -> MeasurementType:
    for code in codes:
        try:
            mtype, component = types.by_mdc(code, unit)
        except KeyError:
            continue
        if component is not None:
            raise UnitError(
                f"{label}: MDC {code} is the {component} component of {mtype.key}, "
                "not a reading of its own",
                code="unknown-code",
            )
        return mtype
    known = [code for code in codes if types.knows_mdc(code)]
    if known:
        raise UnitError(f"{label}: MDC {known[0]} is not known in the unit {unit!r}", code="unit")
    raise UnitError(
        f"{label}: no measurement type has the MDC code {codes[0]}", code="unknown-code"
    )


def _by_loinc(codings: Coded, unit: str, types: Catalogue, label: str) -> MeasurementType:
    for system, code in codings:
        if system != LOINC:
            continue
        try:
            mtype = types.by_code(LOINC, code)
        except KeyError:
            continue
        if mtype.unit is None:
            raise UnitError(
                f"{label}: LOINC {code} is a panel: components, not a value", code="unknown-code"
            )
        if mtype.unit.conversion(unit) is None:
            accepted = ", ".join(mtype.unit.accepted)
            raise UnitError(
                f"{label}: unit {unit!r} is not accepted for {mtype.key} (use {accepted})",
                code="unit",
            )
        return mtype
    shown = ", ".join(f"{s}|{c}" for s, c in codings[:3]) or "none"
    raise UnitError(
        f"{label}: no MDC or LOINC code the catalogue knows (code: {shown})", code="unknown-code"
    )


def _panel_type(codings: Coded, types: Catalogue, label: str) -> MeasurementType:
    for system, code in codings:
        if system not in (MDC, LOINC):
            continue
        try:
            mtype = types.by_code(system, code)
        except KeyError:
            continue
        if not mtype.is_panel:
            raise DataError(
                f"{label}: {mtype.key} has a value, not components", code="unsupported-value"
            )
        return mtype
    shown = ", ".join(f"{s}|{c}" for s, c in codings[:3]) or "none"
    raise UnitError(
        f"{label}: no panel the catalogue knows has this code ({shown})", code="unknown-code"
    )


def _components(raw: Iterable[Any], mtype: MeasurementType, label: str) -> dict[str, Quantity]:
    """The panel's components by key; others (PHD supplemental types, timing) are skipped."""
    found: dict[str, Quantity] = {}
    for position, component in enumerate(raw):
        where = f"{label}: component[{position}]"
        codings = set(_codings(component.get("code")))
        keys = {
            c.key for c in mtype.components if any((k.system, k.code) in codings for k in c.codes)
        }
        if len(keys) > 1:
            raise DataError(
                f"{where}: its codes name {' and '.join(sorted(keys))}", code="conflicting-codes"
            )
        if not keys or "valueQuantity" not in component:
            continue
        key = keys.pop()
        if key in found:
            raise Unparseable(f"{where}: a second {key} component", code="duplicate-component")
        found[key] = _quantity(component["valueQuantity"], f"{where}.valueQuantity")
    if not found:
        raise Unparseable(
            f"{label}: no {mtype.key} component with a valueQuantity", code="no-value"
        )
    return found


def _source_identifier(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first identifier with a value: the PHD Observation identifier (opaque, exact)."""
    for raw in resource.get("identifier") or ():
        value = raw.get("value") if isinstance(raw, dict) else None
        if isinstance(value, str) and value:
            system = raw.get("system")
            return (system if isinstance(system, str) else ""), value
    return None
