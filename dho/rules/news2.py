"""NEWS2 (Royal College of Physicians, 2017): a pure score from one set of vital signs.

Inputs are read at the chart's resolution (whole numbers; temperature to 0.1 °C, half up)
before scoring. SpO2 scale 2 applies only to patients with a prescribed 88-92 % target. A
score from fewer than all seven parameters is marked partial. Patients under 16 and
pregnant patients are not scored: NEWS2 is not validated for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

Consciousness = Literal["alert", "new-confusion", "voice", "pain", "unresponsive"]
Response = Literal["none", "low", "low-medium", "medium", "high"]
PARAMETERS = (
    "respiratory-rate",
    "oxygen-saturation",
    "supplemental-oxygen",
    "systolic",
    "heart-rate",
    "consciousness",
    "body-temperature",
)
MINIMUM_AGE = 16

# (upper bound inclusive, points), tried in order; the last bound is open.
Table = tuple[tuple[int | Decimal | None, int], ...]
_RESPIRATION: Table = ((8, 3), (11, 1), (20, 0), (24, 2), (None, 3))
_SPO2_SCALE_1: Table = ((91, 3), (93, 2), (95, 1), (None, 0))
_SPO2_SCALE_2_AIR: Table = ((83, 3), (85, 2), (87, 1), (None, 0))
_SPO2_SCALE_2_OXYGEN: Table = ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (None, 3))
_SYSTOLIC: Table = ((90, 3), (100, 2), (110, 1), (219, 0), (None, 3))
_PULSE: Table = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (None, 3))
_TEMPERATURE: Table = (
    (Decimal("35.0"), 3),
    (Decimal("36.0"), 1),
    (Decimal("38.0"), 0),
    (Decimal("39.0"), 1),
    (None, 2),
)


@dataclass(frozen=True, slots=True)
class Vitals:
    """The latest value of each NEWS2 parameter; None when there is none in the window."""

    respiratory_rate: Decimal | None = None
    oxygen_saturation: Decimal | None = None
    on_oxygen: bool | None = None
    systolic: Decimal | None = None
    heart_rate: Decimal | None = None
    consciousness: Consciousness | None = None
    temperature: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Patient:
    """What decides whether and how a patient is scored."""

    age_years: int
    pregnant: bool = False
    spo2_target_88_92: bool = False  # prescribed: SpO2 scale 2


@dataclass(frozen=True, slots=True)
class Score:
    total: int
    points: dict[str, int]
    missing: tuple[str, ...] = ()
    response: Response = "none"
    single_three: bool = False
    scale: int = 1

    @property
    def partial(self) -> bool:
        return bool(self.missing)


@dataclass(frozen=True, slots=True)
class NotScored:
    reason: str
    details: dict[str, str] = field(default_factory=dict)


def news2(vitals: Vitals, patient: Patient) -> Score | NotScored:
    """The NEWS2 score of `vitals`, or why the patient is not scored."""
    if patient.age_years < MINIMUM_AGE:
        return NotScored("under-16", {"age": str(patient.age_years)})
    if patient.pregnant:
        return NotScored("pregnant")
    scale = 2 if patient.spo2_target_88_92 else 1
    points: dict[str, int] = {}
    _add(points, "respiratory-rate", vitals.respiratory_rate, _RESPIRATION, whole=True)
    _add_spo2(points, vitals, scale)
    if vitals.on_oxygen is not None:
        points["supplemental-oxygen"] = 2 if vitals.on_oxygen else 0
    _add(points, "systolic", vitals.systolic, _SYSTOLIC, whole=True)
    _add(points, "heart-rate", vitals.heart_rate, _PULSE, whole=True)
    if vitals.consciousness is not None:
        points["consciousness"] = 0 if vitals.consciousness == "alert" else 3
    _add(points, "body-temperature", vitals.temperature, _TEMPERATURE, whole=False)
    total = sum(points.values())
    single_three = any(p == 3 for p in points.values())
    return Score(
        total=total,
        points=points,
        missing=tuple(p for p in PARAMETERS if p not in points),
        response=_response(total, single_three),
        single_three=single_three,
        scale=scale,
    )


def chart_value(value: Decimal, *, whole: bool) -> Decimal:
    """A value as the chart records it: whole numbers, or temperature to 0.1, half up."""
    return value.quantize(Decimal(1) if whole else Decimal("0.1"), rounding=ROUND_HALF_UP)


def _add_spo2(points: dict[str, int], vitals: Vitals, scale: int) -> None:
    if vitals.oxygen_saturation is None:
        return
    table: Table
    if scale == 1:
        table = _SPO2_SCALE_1
    else:  # on scale 2, above 92 % scores only on oxygen; unknown oxygen is read as air
        table = _SPO2_SCALE_2_OXYGEN if vitals.on_oxygen else _SPO2_SCALE_2_AIR
    _add(points, "oxygen-saturation", vitals.oxygen_saturation, table, whole=True)


def _add(
    points: dict[str, int],
    name: str,
    value: Decimal | None,
    table: Table,
    *,
    whole: bool,
) -> None:
    if value is None:
        return
    charted = chart_value(value, whole=whole)
    for upper, score in table:
        if upper is None or charted <= upper:
            points[name] = score
            return


def _response(total: int, single_three: bool) -> Response:
    if total >= 7:
        return "high"
    if total >= 5:
        return "medium"
    if single_three:
        return "low-medium"
    return "low" if total >= 1 else "none"
