"""Hysteresis: a colour reached at a cut-point settles lower only once the value is back
past that cut-point by a margin, so a value hovering at a cut-point does not flap.

A value on a cut-point already belongs to the worse band (`CutPoints.band`); going up is
immediate. Going down, the settled colour is the worst band within +/- margin of the
value, but never worse than the colour before.
"""

from __future__ import annotations

from decimal import Decimal

from dho.rules.thresholds import Band, CutPoints

# Per measurement type, in its canonical unit: about the device's own measuring error.
DEFAULT_MARGINS: dict[str, Decimal] = {
    "blood-pressure": Decimal(3),
    "heart-rate": Decimal(3),
    "oxygen-saturation": Decimal(1),
    "respiratory-rate": Decimal(1),
    "body-temperature": Decimal("0.2"),
    "body-weight": Decimal("0.3"),
    "blood-glucose": Decimal("0.3"),
}


def margin_for(type_key: str, own: Decimal | None) -> Decimal:
    """The plan's margin for a type, else the default (none for an unknown type)."""
    if own is not None:
        return own
    return DEFAULT_MARGINS.get(type_key, Decimal(0))


def hold_points(points: CutPoints, margin: Decimal) -> CutPoints:
    """Cut-points against which a value's band is where a falling colour is held, the worst
    band within +/- margin of the value (the bands rise away from green on both sides, so it
    is the worse band of the interval's two ends): each cut-point moved towards green by the
    margin (the worst band within +/- margin is red when the value is within the
    margin of a red cut-point, else yellow when within it of a yellow one). Not ordered
    when the margin is wider than a band; `CutPoints.band` checks red first, so it still
    gives the worse band."""
    return CutPoints(
        _add(points.red_low, margin),
        _add(points.yellow_low, margin),
        _add(points.yellow_high, -margin),
        _add(points.red_high, -margin),
    )


def _add(point: Decimal | None, by: Decimal) -> Decimal | None:
    return None if point is None else point + by


def settle(previous: Band, band: Band, held: Band) -> Band:
    """The colour after a reading: up at once to `band`, down no further than `held`."""
    return max(band, min(previous, held))
