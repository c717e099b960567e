"""A history: readings of one type sorted by time, each measurement identity once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dho.rules.history import from_time, sorted_history, with_reading
from dho.rules.trends import Reading

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _at(seconds: float, identity: str, value: str = "80") -> Reading:
    return Reading(T0 + timedelta(seconds=seconds), Decimal(value), identity)


HISTORY = sorted_history([_at(20, "c"), _at(0, "a"), _at(10, "b")])


def test_a_history_is_sorted_by_time() -> None:
    assert [r.identity for r in HISTORY] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("new", "order"),
    [
        (_at(5, "x"), ["a", "x", "b", "c"]),
        (_at(30, "x"), ["a", "b", "c", "x"]),
        (_at(-1, "x"), ["x", "a", "b", "c"]),
        (_at(10, "x"), ["a", "b", "x", "c"]),  # same time, another identity: both kept
        (_at(10, "b", "81"), ["a", "b", "c"]),  # same identity: replaced
        (_at(10.0004, "b", "81"), ["a", "b", "c"]),  # within its millisecond
    ],
)
def test_a_reading_is_added_in_time_order_or_replaces_its_identity(
    new: Reading, order: list[str]
) -> None:
    added = with_reading(HISTORY, new)
    assert [r.identity for r in added] == order
    assert new in added
    assert [r.identity for r in HISTORY] == ["a", "b", "c"]  # never changed in place


def test_a_corrected_value_replaces_the_old_one() -> None:
    corrected = with_reading(HISTORY, _at(10, "b", "79.5"))
    assert [r.value for r in corrected if r.identity == "b"] == [Decimal("79.5")]


@pytest.mark.parametrize(
    ("since", "kept"), [(0, ["a", "b", "c"]), (10, ["b", "c"]), (11, ["c"]), (21, [])]
)
def test_from_time_keeps_the_readings_from_then_on(since: int, kept: list[str]) -> None:
    assert [r.identity for r in from_time(HISTORY, T0 + timedelta(seconds=since))] == kept
