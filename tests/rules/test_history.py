"""A history: readings of one type sorted by time, each measurement identity once, with
running sums that give a window's statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dho.rules.history import History, Reading

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _at(seconds: float, identity: str, value: str = "80") -> Reading:
    return Reading(T0 + timedelta(seconds=seconds), Decimal(value), identity)


HISTORY = History.of([_at(20, "c", "3"), _at(0, "a", "1"), _at(10, "b", "2")])


def _identities(history: History) -> list[str]:
    return [r.identity for r in history.readings]


def _sums_are_true(history: History) -> None:
    """Every window's sums equal the sums of its readings."""
    times = [r.effective for r in history.readings]
    edges = [T0 - timedelta(days=1), *times, T0 + timedelta(days=1)]
    for start in edges:
        for end in edges:
            values = [r.value for r in history.window(start, end)]
            sums = history.sums_of(start, end)
            assert (sums.count, sums.total, sums.squares) == (
                len(values),
                sum(values, Decimal(0)),
                sum((v * v for v in values), Decimal(0)),
            )


def test_a_history_is_sorted_by_time() -> None:
    assert _identities(HISTORY) == ["a", "b", "c"]
    _sums_are_true(HISTORY)


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
    added = HISTORY.with_reading(new)
    assert _identities(added) == order
    assert new in added.readings
    _sums_are_true(added)
    assert _identities(HISTORY) == ["a", "b", "c"]  # never changed in place
    _sums_are_true(HISTORY)


def test_a_corrected_value_replaces_the_old_one_in_the_sums() -> None:
    corrected = HISTORY.with_reading(_at(10, "b", "79.5"))
    assert [r.value for r in corrected.readings if r.identity == "b"] == [Decimal("79.5")]
    assert corrected.sums_of(T0, T0 + timedelta(days=1)).total == Decimal("83.5")


@pytest.mark.parametrize(
    ("since", "kept"), [(0, ["a", "b", "c"]), (10, ["b", "c"]), (11, ["c"]), (21, [])]
)
def test_from_time_keeps_the_readings_from_then_on(since: int, kept: list[str]) -> None:
    trimmed = HISTORY.from_time(T0 + timedelta(seconds=since))
    assert _identities(trimmed) == kept
    _sums_are_true(trimmed)
    _sums_are_true(trimmed.with_reading(_at(15, "y", "7")))


@settings(max_examples=100, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=40),  # second
            st.sampled_from("abcdefgh"),  # identity
            st.decimals(min_value=0, max_value=300, places=1),
        ),
        max_size=25,
    ),
    st.integers(min_value=0, max_value=40),
)
def test_any_sequence_of_additions_and_trims_keeps_order_identities_and_sums(
    steps: list[tuple[int, str, Decimal]], trim_at: int
) -> None:
    history = History()
    latest: dict[str, Reading] = {}
    for second, identity, value in steps:
        reading = _at(second, identity, str(value))
        if identity in latest and latest[identity].effective != reading.effective:
            continue  # one identity has one device time
        history = history.with_reading(reading)
        latest[identity] = reading
        if second == trim_at:
            history = history.from_time(T0 + timedelta(seconds=trim_at // 2))
            latest = {i: r for i, r in latest.items() if r in history.readings}
    assert sorted(history.readings, key=lambda r: r.effective) == history.readings
    assert sorted(_identities(history)) == sorted(latest)
    _sums_are_true(history)
