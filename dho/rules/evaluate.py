"""Evaluate stage: a normalised measurement against its cut-points → alert decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from dho.ingest.measurement import Measurement
from dho.rules.thresholds import Band, CutPoints, Thresholds

OUT_OF_RANGE = "measurement-out-of-range"


@dataclass(frozen=True, slots=True)
class Decision:
    """An alert to raise for one observation."""

    kind: str
    band: Band
    summary: str
    details: dict[str, str] = field(default_factory=dict)


def evaluate(m: Measurement, thresholds: Thresholds) -> list[Decision]:
    """At most one out-of-range decision per observation, at its worst component's colour."""
    rule = thresholds.get(m.type)
    if rule is None:
        return []
    bands: dict[str, tuple[Band, Decimal, str]] = {}
    if m.value is not None and rule.value is not None:
        bands[m.type] = (rule.value.band(m.value.value), m.value.value, m.value.unit)
    for name, quantity in m.components.items():
        points: CutPoints | None = (rule.components or {}).get(name)
        if points is not None:
            bands[name] = (points.band(quantity.value), quantity.value, quantity.unit)
    worst = max((band for band, _, _ in bands.values()), default=Band.GREEN)
    if worst == Band.GREEN:
        return []
    flagged = [
        f"{name} {value} {unit}" for name, (band, value, unit) in bands.items() if band == worst
    ]
    return [
        Decision(
            kind=OUT_OF_RANGE,
            band=worst,
            summary=_summary(m.type, flagged, worst),
            details={name: band.label for name, (band, _, _) in bands.items()},
        )
    ]


def _summary(type_key: str, flagged: list[str], band: Band) -> str:
    """E.g. `oxygen-saturation 86 % (red)` or `blood-pressure: systolic 186 mm[Hg] (red)`."""
    values = ", ".join(flagged)
    prefix = "" if values.startswith(type_key) else f"{type_key}: "
    return f"{prefix}{values} ({band.label})"
