"""A patient's readings of one type as the trend rules read them: sorted by time, each
measurement identity once, with running sums so that a window's count, sum and sum of
squares take two bisections instead of a pass over the window.

A `History` is never changed: adding a reading makes a new one, so the history cache and
a batch's context hand the same one around without copying it first. The sums are exact:
Decimal keeps 28 digits, and readings have a few.
"""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate

from dho.values import value

# Readings of one identity share a device time to the millisecond.
_SAME_IDENTITY_SPAN = timedelta(milliseconds=1)
_ZERO = Decimal(0)


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


def _effective(reading: Reading) -> datetime:
    return reading.effective


@value
class WindowSums:
    """The readings of a window: how many, their sum and the sum of their squares."""

    count: int
    total: Decimal
    squares: Decimal


class History:
    """Readings sorted by time; `sums[k]` and `squares[k]` add up the first k values."""

    __slots__ = ("readings", "squares", "sums")

    def __init__(
        self,
        readings: Sequence[Reading] = (),
        sums: list[Decimal] | None = None,
        squares: list[Decimal] | None = None,
    ) -> None:
        """`readings` sorted by time; the running sums are made when not given."""
        self.readings = list(readings)
        if sums is None or squares is None:
            values = [r.value for r in self.readings]
            sums = list(accumulate(values, initial=_ZERO))
            squares = list(accumulate(map(operator.mul, values, values), initial=_ZERO))
        self.sums, self.squares = sums, squares

    @classmethod
    def of(cls, readings: Iterable[Reading]) -> History:
        """A history of readings given in any order (each identity once)."""
        return cls(sorted(readings, key=_effective))

    def __len__(self) -> int:
        return len(self.readings)

    def _bounds(self, start: datetime, end: datetime) -> tuple[int, int]:
        low = bisect_left(self.readings, start, key=_effective)
        return low, bisect_left(self.readings, end, lo=low, key=_effective)

    def window(self, start: datetime, end: datetime) -> Sequence[Reading]:
        """The readings from `start` up to (not including) `end`."""
        low, high = self._bounds(start, end)
        return self.readings[low:high]

    def sums_of(self, start: datetime, end: datetime) -> WindowSums:
        """Count, sum and sum of squares of the values from `start` up to `end`."""
        low, high = self._bounds(start, end)
        return WindowSums(
            high - low,
            self.sums[high] - self.sums[low],
            self.squares[high] - self.squares[low],
        )

    def with_reading(self, new: Reading) -> History:
        """A new history with `new` added, in place of a reading of the same identity."""
        last = self.readings[-1].effective if self.readings else None
        if last is None or new.effective > last + _SAME_IDENTITY_SPAN:  # the newest: at the end
            value = new.value
            return History(
                [*self.readings, new],
                [*self.sums, self.sums[-1] + value],
                [*self.squares, self.squares[-1] + value * value],
            )
        readings = list(self.readings)
        changed = len(readings)  # the first position whose running sums change
        low = bisect_left(readings, new.effective - _SAME_IDENTITY_SPAN, key=_effective)
        high = bisect_right(readings, new.effective + _SAME_IDENTITY_SPAN, lo=low, key=_effective)
        for index in range(low, high):
            if readings[index].identity == new.identity:
                del readings[index]
                changed = index
                break
        at = bisect_right(readings, new.effective, key=_effective)
        readings.insert(at, new)
        changed = min(changed, at)
        sums, squares = self.sums[: changed + 1], self.squares[: changed + 1]
        for reading in readings[changed:]:
            sums.append(sums[-1] + reading.value)
            squares.append(squares[-1] + reading.value * reading.value)
        return History(readings, sums, squares)

    def from_time(self, since: datetime) -> History:
        """The readings from `since` on (the running sums stay true as differences)."""
        low = bisect_left(self.readings, since, key=_effective)
        return History(self.readings[low:], self.sums[low:], self.squares[low:])
