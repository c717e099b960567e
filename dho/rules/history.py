"""A patient's readings of one type as the trend rules read them: a list sorted by time,
holding each measurement identity once.

A history is never changed in place: adding a reading makes a new list, so the history
cache and a batch's context can hand the same list around without copying it first.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from dho.rules.trends import Reading

# Readings of one identity share a device time to the millisecond.
_SAME_IDENTITY_SPAN = timedelta(milliseconds=1)


def _effective(reading: Reading) -> datetime:
    return reading.effective


def sorted_history(readings: Iterable[Reading]) -> list[Reading]:
    """A history of readings given in any order (each identity once)."""
    return sorted(readings, key=_effective)


def with_reading(history: Sequence[Reading], new: Reading) -> list[Reading]:
    """A new history with `new` added, in place of a reading of the same identity."""
    out = list(history)
    low = bisect_left(out, new.effective - _SAME_IDENTITY_SPAN, key=_effective)
    high = bisect_right(out, new.effective + _SAME_IDENTITY_SPAN, lo=low, key=_effective)
    for index in range(low, high):
        if out[index].identity == new.identity:
            del out[index]
            break
    insort(out, new, key=_effective)
    return out


def from_time(history: list[Reading], since: datetime) -> list[Reading]:
    """The readings of a history from `since` on."""
    return history[bisect_left(history, since, key=_effective) :]
