"""Trends: pure judgements of a new reading against the patient's own history.

A change over a window, in two forms, from a plan's `changes`:
- within `days`: the new value against the lowest (rise) or highest (fall) value of the
  window before it, e.g. weight up more than 2 kg within 3 days;
- from a baseline: the new value against the mean of the patient's own readings over the
  `baseline_days` before it, e.g. SpO2 down 3 points or more from the 7-day baseline,
  judged only once the baseline has `MIN_BASELINE_READINGS` readings.
And outside the patient's own normal, from a plan's `baselines`: beyond mean +/- k SD of
the baseline period, once it has the rule's number of readings.
Late readings belong in the history like any other: they feed trends. A history is a
sequence of readings sorted by time, so a window is found by bisection.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from dho.rules.plans import BaselineRule, ChangeRule
from dho.values import value

MIN_BASELINE_READINGS = 3


@value
class Reading:
    """A value at a time; `identity` is its measurement's (see `Measurement.identity`),
    which a history holds once."""

    effective: datetime
    value: Decimal
    identity: str = ""


def utc_reading(effective: datetime, value: Decimal, identity: str = "") -> Reading:
    """A reading with its time in UTC: times with different offsets compare slowly."""
    return Reading(effective.astimezone(UTC), value, identity)


@value
class Change:
    """A change the rule flags: how much, and from what."""

    by: Decimal
    reference: Decimal
    since: datetime


def window(history: Sequence[Reading], start: datetime, end: datetime) -> Sequence[Reading]:
    """The readings of a time-sorted history from `start` up to (not including) `end`."""
    low = bisect_left(history, start, key=_effective)
    return history[low : bisect_left(history, end, lo=low, key=_effective)]


def _effective(reading: Reading) -> datetime:
    return reading.effective


def change(rule: ChangeRule, new: Reading, history: Sequence[Reading]) -> Change | None:
    """The change `rule` flags for `new` given earlier readings (sorted by time), or None."""
    days = rule.days if rule.days is not None else rule.baseline_days
    assert days is not None
    start = new.effective - timedelta(days=days)
    readings = window(history, start, new.effective)
    reference = _extreme(readings, rule) if rule.days is not None else _baseline(readings)
    if reference is None:
        return None
    moved = new.value - reference if rule.direction == "rise" else reference - new.value
    flagged = moved >= rule.by if rule.at_least else moved > rule.by
    return Change(moved, reference, start) if flagged else None


def _extreme(readings: Sequence[Reading], rule: ChangeRule) -> Decimal | None:
    if not readings:
        return None
    values = [r.value for r in readings]
    return min(values) if rule.direction == "rise" else max(values)


def _baseline(readings: Sequence[Reading]) -> Decimal | None:
    if len(readings) < MIN_BASELINE_READINGS:
        return None
    return sum((r.value for r in readings), Decimal(0)) / len(readings)


@value
class Outside:
    """How far outside the patient's normal a reading is, in standard deviations."""

    mean: Decimal
    sd: Decimal
    deviations: Decimal


def outside_baseline(
    rule: BaselineRule, new: Reading, history: Sequence[Reading]
) -> Outside | None:
    """Whether `new` lies beyond mean +/- k SD of the patient's baseline (`history` sorted
    by time); None when not."""
    start = new.effective - timedelta(days=rule.baseline_days)
    values = [r.value for r in window(history, start, new.effective)]
    n = len(values)
    if n < rule.min_readings:
        return None
    total = sum(values, Decimal(0))
    mean = total / n
    # One pass over the sums: exact for readings' few digits, then rounded only once.
    squares = sum(map(operator.mul, values, values), Decimal(0))
    variance = (squares - total * mean) / (n - 1)
    if variance <= 0:
        return None  # a constant baseline gives no spread to judge by
    # |value - mean| > k SD, squared on both sides: the square root only for a finding.
    deviation = new.value - mean
    if deviation * deviation <= rule.k * rule.k * variance:
        return None
    sd = variance.sqrt()
    return Outside(mean, sd, abs(deviation) / sd)
