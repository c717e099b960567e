"""The range rule: a reading against its plan's four cut-points, with FHIR interpretation.

A panel (blood pressure) is judged per component; the reading takes its worst
component's colour. Each judged value gets an R4 `interpretation` (v3
ObservationInterpretation: N, L, H, LL, HH) and the plan's `referenceRange` (the green
band, yellow-low to yellow-high) so the Observation says what it was judged against.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dho.catalogue import UCUM
from dho.ingest.measurement import Measurement, Quantity
from dho.rules.thresholds import Band, CutPoints, TypeThresholds
from dho.values import value

INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REFERENCE_RANGE_SYSTEM = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
_DISPLAY = {
    "N": "Normal",
    "L": "Low",
    "H": "High",
    "LL": "Critical low",
    "HH": "Critical high",
}


@value
class Judged:
    """One value (or component) judged: its colour, interpretation code and green band."""

    band: Band
    code: str
    points: CutPoints
    quantity: Quantity

    def interpretation(self) -> dict[str, Any]:
        coding = {
            "system": INTERPRETATION_SYSTEM,
            "code": self.code,
            "display": _DISPLAY[self.code],
        }
        return {"coding": [coding]}

    def reference_range(self) -> dict[str, Any] | None:
        """The green band as an R4 referenceRange; None when neither side is bounded."""
        low, high = self.points.yellow_low, self.points.yellow_high
        if low is None and high is None:
            return None
        out: dict[str, Any] = {}
        if low is not None:
            out["low"] = _quantity(low, self.quantity.unit)
        if high is not None:
            out["high"] = _quantity(high, self.quantity.unit)
        out["type"] = {
            "coding": [
                {"system": REFERENCE_RANGE_SYSTEM, "code": "normal", "display": "Normal Range"}
            ],
            "text": "green band of the patient's plan",
        }
        return out


@value
class RangeJudgement:
    """The reading's colour (the worst of its parts) and each part judged."""

    band: Band
    value: Judged | None = None
    components: dict[str, Judged] | None = None


def judge_range(m: Measurement, thresholds: TypeThresholds) -> RangeJudgement | None:
    """The reading against its cut-points; None when the plan sets none for it."""
    if m.value is not None and thresholds.value is not None:
        judged = _judge(m.value, thresholds.value)
        return RangeJudgement(judged.band, value=judged)
    if not m.components or not thresholds.components:
        return None
    parts = {
        name: _judge(quantity, thresholds.components[name])
        for name, quantity in m.components.items()
        if name in thresholds.components
    }
    if not parts:
        return None
    worst = max(part.band for part in parts.values())
    return RangeJudgement(worst, components=parts)


# v3 ObservationInterpretation by (band, below the green band)
_CODES = {
    (Band.GREEN, False): "N",
    (Band.YELLOW, True): "L",
    (Band.YELLOW, False): "H",
    (Band.RED, True): "LL",
    (Band.RED, False): "HH",
}


def _judge(quantity: Quantity, points: CutPoints) -> Judged:
    side = points.side(quantity.value)
    return Judged(side[0], _CODES[side], points, quantity)


def _quantity(value: Decimal, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def annotate(
    observation: dict[str, Any], judged: RangeJudgement, component_keys: list[str], plan: str
) -> None:
    """Write interpretation and referenceRange into an Observation built by `to_fhir`.

    `component_keys` names the Observation's components in order; `plan` says which plan
    version set the band.
    """
    if judged.value is not None:
        _annotate(observation, judged.value, plan)
        return
    parts = judged.components or {}
    for key, component in zip(component_keys, observation.get("component", ()), strict=True):
        if key in parts:
            _annotate(component, parts[key], plan)


def _annotate(element: dict[str, Any], judged: Judged, plan: str) -> None:
    element["interpretation"] = [judged.interpretation()]
    reference = judged.reference_range()
    if reference is not None:
        reference["text"] = f"green band of plan {plan}"
        element["referenceRange"] = [reference]
