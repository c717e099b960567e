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

from datetime import datetime, timedelta
from decimal import Decimal

from dho.rules.history import History, Reading
from dho.rules.plans import BaselineRule, ChangeRule
from dho.values import value

MIN_BASELINE_READINGS = 3


@value
class Change:
    """A change the rule flags: how much, and from what."""

    by: Decimal
    reference: Decimal
    since: datetime


def change(rule: ChangeRule, new: Reading, history: History) -> Change | None:
    """The change `rule` flags for `new` given earlier readings, or None."""
    days = rule.days if rule.days is not None else rule.baseline_days
    assert days is not None
    start = new.effective - timedelta(days=days)
    reference = (
        _extreme(history, start, new.effective, rule)
        if rule.days is not None
        else _mean(history, start, new.effective)
    )
    if reference is None:
        return None
    moved = new.value - reference if rule.direction == "rise" else reference - new.value
    flagged = moved >= rule.by if rule.at_least else moved > rule.by
    return Change(moved, reference, start) if flagged else None


def _extreme(history: History, start: datetime, end: datetime, rule: ChangeRule) -> Decimal | None:
    values = [r.value for r in history.window(start, end)]
    if not values:
        return None
    return min(values) if rule.direction == "rise" else max(values)


def _mean(history: History, start: datetime, end: datetime) -> Decimal | None:
    sums = history.sums_of(start, end)
    if sums.count < MIN_BASELINE_READINGS:
        return None
    return sums.total / sums.count


@value
class Outside:
    """How far outside the patient's normal a reading is, in standard deviations."""

    mean: Decimal
    sd: Decimal
    deviations: Decimal


def outside_baseline(rule: BaselineRule, new: Reading, history: History) -> Outside | None:
    """Whether `new` lies beyond mean +/- k SD of the patient's baseline; None when not."""
    sums = history.sums_of(new.effective - timedelta(days=rule.baseline_days), new.effective)
    n = sums.count
    if n < rule.min_readings:
        return None
    mean = sums.total / n
    # From the sums: exact for readings' few digits, then rounded only once.
    variance = (sums.squares - sums.total * mean) / (n - 1)
    if variance <= 0:
        return None  # a constant baseline gives no spread to judge by
    # |value - mean| > k SD, squared on both sides: the square root only for a finding.
    deviation = new.value - mean
    if deviation * deviation <= rule.k * rule.k * variance:
        return None
    sd = variance.sqrt()
    return Outside(mean, sd, abs(deviation) / sd)
