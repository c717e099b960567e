"""Trends: pure judgements of a new reading against the patient's own history.

A change over a window, in two forms, from a plan's `changes`:
- within `days`: the new value against the lowest (rise) or highest (fall) value of the
  window before it, e.g. weight up more than 2 kg within 3 days;
- from a baseline: the new value against the mean of the patient's own readings over the
  `baseline_days` before it, e.g. SpO2 down 3 points or more from the 7-day baseline,
  judged only once the baseline has `MIN_BASELINE_READINGS` readings.
And outside the patient's own normal, from a plan's `baselines`: beyond mean +/- k SD of
the baseline period, once it has the rule's number of readings.
Late readings belong in the history like any other: they feed trends.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from dho.rules.plans import BaselineRule, ChangeRule

MIN_BASELINE_READINGS = 3


@dataclass(frozen=True, slots=True)
class Reading:
    effective: datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class Change:
    """A change the rule flags: how much, and from what."""

    by: Decimal
    reference: Decimal
    since: datetime


def change(rule: ChangeRule, new: Reading, history: Sequence[Reading]) -> Change | None:
    """The change `rule` flags for `new` given earlier readings, or None."""
    days = rule.days if rule.days is not None else rule.baseline_days
    assert days is not None
    start = new.effective - timedelta(days=days)
    window = [r for r in history if start <= r.effective < new.effective]
    reference = _extreme(window, rule) if rule.days is not None else _baseline(window)
    if reference is None:
        return None
    moved = new.value - reference if rule.direction == "rise" else reference - new.value
    flagged = moved >= rule.by if rule.at_least else moved > rule.by
    return Change(moved, reference, start) if flagged else None


def _extreme(window: Sequence[Reading], rule: ChangeRule) -> Decimal | None:
    if not window:
        return None
    values = [r.value for r in window]
    return min(values) if rule.direction == "rise" else max(values)


def _baseline(window: Sequence[Reading]) -> Decimal | None:
    if len(window) < MIN_BASELINE_READINGS:
        return None
    return sum((r.value for r in window), Decimal(0)) / len(window)


@dataclass(frozen=True, slots=True)
class Outside:
    """How far outside the patient's normal a reading is, in standard deviations."""

    mean: Decimal
    sd: Decimal
    deviations: Decimal


def outside_baseline(
    rule: BaselineRule, new: Reading, history: Sequence[Reading]
) -> Outside | None:
    """Whether `new` lies beyond mean +/- k SD of the patient's baseline; None when not."""
    start = new.effective - timedelta(days=rule.baseline_days)
    values = [r.value for r in history if start <= r.effective < new.effective]
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
    sd = variance.sqrt()
    deviations = abs(new.value - mean) / sd
    return Outside(mean, sd, deviations) if deviations > rule.k else None
