"""NEWS2 inputs: the latest set of vital signs in a window before a moment, pure.

Per NEWS2 parameter the latest reading with `at - window < effective <= at` is taken (a
reading exactly `window` old is out, one exactly at `at` is in); two readings of a type
at the same instant are told apart by observation id, highest wins, so the choice does
not depend on the order the history was loaded in. Readings of other types are ignored.

Consciousness and supplemental oxygen are not measured at home: consciousness stays
None (so a home score is partial) and `on_oxygen` comes from the patient's plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from dho.rules.news2 import Vitals
from dho.values import value

# Measurement-type keys (fhir/measurement-types.yaml) NEWS2 reads, in NEWS2 chart order.
# For blood pressure the reading carries the systolic component's value.
INPUT_TYPES = (
    "respiratory-rate",
    "oxygen-saturation",
    "blood-pressure",
    "heart-rate",
    "body-temperature",
)


@value
class Reading:
    """One stored reading NEWS2 may use; for blood pressure `value` is the systolic."""

    observation_id: str
    type: str
    effective: datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class VitalsSet:
    """The vitals NEWS2 scores and the readings they came from (in `INPUT_TYPES` order)."""

    vitals: Vitals
    readings: tuple[Reading, ...] = ()

    @property
    def observation_ids(self) -> tuple[str, ...]:
        """The ids of the Observations used: the NEWS2 Observation's derivedFrom."""
        return tuple(dict.fromkeys(r.observation_id for r in self.readings))

    @property
    def effective(self) -> datetime | None:
        """The newest input's time (with its own offset); None when no reading was used."""
        if not self.readings:
            return None
        return max(self.readings, key=lambda r: r.effective).effective

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(r.type for r in self.readings)


def latest_vitals(
    readings: Iterable[Reading],
    at: datetime,
    window: timedelta,
    on_oxygen: bool | None,
) -> VitalsSet:
    """The latest reading of each NEWS2 parameter in `(at - window, at]`, as `Vitals`."""
    if at.utcoffset() is None:
        raise ValueError("latest_vitals needs an aware `at` (with a UTC offset)")
    if window <= timedelta(0):
        raise ValueError(f"the NEWS2 window must be positive, got {window}")
    start = at - window
    latest: dict[str, Reading] = {}
    for reading in readings:
        if reading.type not in INPUT_TYPES:
            continue
        if reading.effective.utcoffset() is None:
            raise ValueError(f"reading {reading.observation_id} has no UTC offset")
        if not start < reading.effective <= at:
            continue
        current = latest.get(reading.type)
        if current is None or _key(reading) > _key(current):
            latest[reading.type] = reading
    used = tuple(latest[t] for t in INPUT_TYPES if t in latest)

    def value(type_: str) -> Decimal | None:
        reading = latest.get(type_)
        return None if reading is None else reading.value

    vitals = Vitals(
        respiratory_rate=value("respiratory-rate"),
        oxygen_saturation=value("oxygen-saturation"),
        on_oxygen=on_oxygen,
        systolic=value("blood-pressure"),
        heart_rate=value("heart-rate"),
        consciousness=None,
        temperature=value("body-temperature"),
    )
    return VitalsSet(vitals, used)


def _key(reading: Reading) -> tuple[datetime, str]:
    return reading.effective, reading.observation_id
