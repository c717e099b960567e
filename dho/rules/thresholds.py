"""Cut-points and the traffic-light bands they divide a value into."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum


class Band(IntEnum):
    """Traffic-light colour; the number is the VKP severity (1 green, 2 yellow, 3 red)."""

    GREEN = 1
    YELLOW = 2
    RED = 3

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {band: band.name.lower() for band in Band}


_RED_LOW, _RED_HIGH = (Band.RED, True), (Band.RED, False)
_YELLOW_LOW, _YELLOW_HIGH = (Band.YELLOW, True), (Band.YELLOW, False)
_GREEN = (Band.GREEN, False)


@dataclass(frozen=True, slots=True)
class CutPoints:
    """red_low < yellow_low < yellow_high < red_high; a value on a cut-point is the worse band."""

    red_low: Decimal | None = None
    yellow_low: Decimal | None = None
    yellow_high: Decimal | None = None
    red_high: Decimal | None = None

    def band(self, value: Decimal) -> Band:
        return self.side(value)[0]

    def side(self, value: Decimal) -> tuple[Band, bool]:
        """The band of a value, and whether it lies below the green band."""
        if self.red_low is not None and value <= self.red_low:
            return _RED_LOW
        if self.red_high is not None and value >= self.red_high:
            return _RED_HIGH
        if self.yellow_low is not None and value <= self.yellow_low:
            return _YELLOW_LOW
        if self.yellow_high is not None and value >= self.yellow_high:
            return _YELLOW_HIGH
        return _GREEN

    def ordered(self) -> bool:
        points = [self.red_low, self.yellow_low, self.yellow_high, self.red_high]
        present = [p for p in points if p is not None]
        return all(a < b for a, b in itertools.pairwise(present))


@dataclass(frozen=True, slots=True)
class TypeThresholds:
    """Cut-points for a single-valued type (`value`) or per component of a panel."""

    value: CutPoints | None = None
    components: dict[str, CutPoints] | None = None
