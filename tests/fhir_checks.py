"""Reusable FHIR R4 (4.0.1) assertions for the Observations the service builds.

`assert_valid_observation(resource)` checks the exact R4 structure (fhirclient, strict), the
structure again with fhir.resources (R4B models), and the vital-signs profile rules neither
of them checks, against the measurement-type catalogue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.observation import Observation as R4BObservation
from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.models.observation import Observation as R4Observation
from pydantic import ValidationError

from dho import jsonutil
from dho.catalogue import (
    CATEGORY_SYSTEM,
    LOINC,
    UCUM,
    VITAL_SIGNS,
    VITALSIGNS_PROFILE,
    Catalogue,
    Coding,
    MeasurementType,
    UnitSpec,
    default_catalogue,
)
from dho.ingest.measurement import EUI64_SYSTEM, Measurement, Quantity
from dho.ingest.normalise import PlausibilityLimits, Range

# Observation.status has a required binding (R4 ObservationStatus).
OBSERVATION_STATUS = frozenset(
    {"registered", "preliminary", "final", "amended", "corrected", "cancelled"}
    | {"entered-in-error", "unknown"}
)

# A FHIR dateTime/instant with a time must carry a zone offset.
DATETIME_WITH_OFFSET = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-](0\d|1[0-3]):[0-5]\d|[+-]14:00)"
)


def assert_valid_observation(
    resource: Mapping[str, Any], catalogue: Catalogue | None = None
) -> None:
    """Fail unless `resource` (a dict, Decimals allowed) is a valid R4 Observation of ours."""
    assert_valid_fhir_json(jsonutil.dumps(resource), catalogue)


def assert_valid_fhir_json(text: str | bytes, catalogue: Catalogue | None = None) -> dict[str, Any]:
    """Fail unless the JSON text is a valid R4 Observation of ours; return it (Decimals)."""
    _assert_r4_structure(json.loads(text))
    resource: dict[str, Any] = jsonutil.loads(text)
    try:
        R4BObservation.model_validate(resource)
    except ValidationError as exc:
        raise AssertionError(f"fhir.resources rejects the Observation: {exc}") from exc
    assert_profile_rules(resource, catalogue or default_catalogue())
    return resource


def assert_profile_rules(resource: Mapping[str, Any], catalogue: Catalogue) -> None:
    """The rules the structure validators do not check: codes, units, category, offsets."""
    assert resource.get("resourceType") == "Observation", "resourceType must be Observation"
    assert resource.get("status") in OBSERVATION_STATUS, f"bad status {resource.get('status')!r}"
    mtype = measurement_type_of(resource, catalogue)
    _assert_category(resource, mtype)
    _assert_profiles(resource, mtype)
    reference = resource.get("subject", {}).get("reference", "")
    assert reference.startswith("Patient/"), f"subject must reference a Patient: {reference!r}"
    assert "effectiveDateTime" in resource, "vital signs need effective[x]"
    _assert_datetimes(resource)
    if mtype.is_panel:
        _assert_panel(resource, mtype)
    else:
        assert mtype.unit is not None
        _assert_has_value(resource, "Observation")
        _assert_quantity(resource.get("valueQuantity"), mtype.unit, mtype.key)


def measurement_type_of(resource: Mapping[str, Any], catalogue: Catalogue) -> MeasurementType:
    """The one catalogue type whose LOINC code(s) the Observation's code carries."""
    codings = _codings(resource.get("code", {}))
    matches = [t for t in catalogue if {(LOINC, code) for code in t.loinc} <= codings]
    assert len(matches) == 1, f"code {sorted(codings)} must match one catalogue type: {matches}"
    return matches[0]


def _assert_r4_structure(plain: dict[str, Any]) -> None:
    try:
        R4Observation(plain, strict=True)
    except FHIRValidationError as exc:
        raise AssertionError(f"not an R4 Observation (fhirclient): {exc}") from exc


def _codings(concept: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(c.get("system", ""), c.get("code", "")) for c in concept.get("coding", [])}


def _assert_category(resource: Mapping[str, Any], mtype: MeasurementType) -> None:
    codings: set[tuple[str, str]] = set()
    for concept in resource.get("category", []):
        codings |= _codings(concept)
    expected = (CATEGORY_SYSTEM, mtype.category.code)
    assert expected in codings, f"{mtype.key}: category must include {expected}: {codings}"


def _assert_profiles(resource: Mapping[str, Any], mtype: MeasurementType) -> None:
    profiles = resource.get("meta", {}).get("profile", [])
    if mtype.is_vital_sign:
        for url in mtype.profiles:
            assert url in profiles, f"{mtype.key}: meta.profile must list {url}: {profiles}"
    else:
        assert VITALSIGNS_PROFILE not in profiles, f"{mtype.key} is not a vital sign"
    if VITALSIGNS_PROFILE in profiles:
        assert mtype.category.code == VITAL_SIGNS


def _assert_datetimes(resource: Mapping[str, Any]) -> None:
    period = resource.get("effectivePeriod", {})
    values = [
        ("effectiveDateTime", resource.get("effectiveDateTime")),
        ("effectivePeriod.start", period.get("start")),
        ("effectivePeriod.end", period.get("end")),
        ("issued", resource.get("issued")),
        ("meta.lastUpdated", resource.get("meta", {}).get("lastUpdated")),
    ]
    for name, value in values:
        if value is not None:
            assert DATETIME_WITH_OFFSET.fullmatch(value), f"{name} needs a zone offset: {value!r}"


def _assert_has_value(element: Mapping[str, Any], where: str) -> None:
    has_value = any(key.startswith("value") for key in element)
    assert has_value or "dataAbsentReason" in element, f"{where}: value or dataAbsentReason"


def _assert_quantity(quantity: Mapping[str, Any] | None, unit: UnitSpec, where: str) -> None:
    if quantity is None:
        return
    missing = {"value", "unit", "system", "code"} - set(quantity)
    assert not missing, f"{where}: valueQuantity lacks {sorted(missing)}"
    assert quantity["system"] == UCUM, f"{where}: unit system must be {UCUM}"
    assert quantity["code"] == unit.code, f"{where}: unit {quantity['code']!r} is not {unit.code!r}"


def _assert_panel(resource: Mapping[str, Any], mtype: MeasurementType) -> None:
    assert not any(key.startswith("value") for key in resource), f"{mtype.key}: no panel value"
    components = resource.get("component", [])
    assert components, f"{mtype.key}: a panel needs components"
    found = [_assert_component(c, mtype) for c in components]
    required = {c.key for c in mtype.components if c.required}
    assert required <= set(found), f"{mtype.key}: components {sorted(required)} are required"
    assert len(found) == len(set(found)), f"{mtype.key}: a component appears twice: {found}"


def _assert_component(component: Mapping[str, Any], mtype: MeasurementType) -> str:
    codings = _codings(component.get("code", {}))
    spec = next((c for c in mtype.components if _subset(c.codes, codings)), None)
    assert spec is not None, f"{mtype.key}: component code {sorted(codings)} is unknown"
    where = f"{mtype.key}.{spec.key}"
    _assert_has_value(component, where)
    _assert_quantity(component.get("valueQuantity"), spec.unit, where)
    return spec.key


def _subset(codes: Iterable[Coding], codings: set[tuple[str, str]]) -> bool:
    return {(c.system, c.code) for c in codes} <= codings


def sample_measurement(
    mtype: MeasurementType,
    limits: PlausibilityLimits,
    effective: datetime = datetime(2026, 11, 24, 7, 15, tzinfo=UTC),
) -> Measurement:
    """A plausible reading of `mtype` in canonical units: the middle of each plausible range."""
    bounds = limits.get(mtype.key)
    if not mtype.is_panel:
        assert mtype.unit is not None and bounds.value is not None
        value = Quantity(_middle(bounds.value, mtype.unit.decimals), mtype.unit.code)
        return Measurement(EUI64_SYSTEM, "FE-ED-AB-EE-DE-AD-77-C3", mtype.key, effective, value)
    ranges = bounds.components or {}
    components = {
        c.key: Quantity(_middle(ranges[c.key], c.unit.decimals), c.unit.code)
        for c in mtype.components
    }
    return Measurement(
        EUI64_SYSTEM, "FE-ED-AB-EE-DE-AD-77-C3", mtype.key, effective, components=components
    )


def _middle(bounds: Range, decimals: int) -> Decimal:
    return ((bounds.low + bounds.high) / 2).quantize(Decimal(1).scaleb(-decimals))
