"""Change over a window, table-driven, with the heart-failure and COPD rules of the plans."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dho.catalogue import load_catalogue
from dho.ingest.normalise import load_plausibility
from dho.rules.history import History, Reading
from dho.rules.plans import load_standard_plans
from dho.rules.trends import change

ROOT = Path(__file__).resolve().parents[2]
PLANS = load_standard_plans(
    ROOT / "config", load_catalogue(ROOT / "fhir"), load_plausibility(ROOT / "config")
)
[WEIGHT] = PLANS["heart-failure"].changes  # rise of more than 2 kg within 3 days
[SPO2] = PLANS["copd"].changes  # fall of 3 points or more from the 7-day baseline
T0 = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def _at(day: float, value: str) -> Reading:
    return Reading(T0 + timedelta(days=day), Decimal(value))


def test_weight_80_0_then_81_2_then_82_1_over_three_days_is_flagged() -> None:
    history = [_at(0, "80.0"), _at(1.5, "81.2")]
    assert change(WEIGHT, _at(1.5, "81.2"), History(history[:1])) is None
    flagged = change(WEIGHT, _at(3, "82.1"), History(history))
    assert (
        flagged is not None
        and flagged.by == Decimal("2.1")
        and flagged.reference == Decimal("80.0")
    )


@pytest.mark.parametrize(
    ("new", "flagged"),
    [("81.9", False), ("82.0", False), ("82.1", True), ("85.0", True)],
)
def test_weight_gain_must_exceed_two_kg(new: str, flagged: bool) -> None:
    assert (change(WEIGHT, _at(2, new), History([_at(0, "80.0")])) is not None) is flagged


@pytest.mark.parametrize(
    ("earlier_day", "flagged"),
    [(0.0, True), (0.01, True), (-0.01, False)],  # the window is the 3 days before
)
def test_only_readings_within_the_window_count(earlier_day: float, flagged: bool) -> None:
    assert (
        change(WEIGHT, _at(3, "82.5"), History([_at(earlier_day, "80.0")])) is not None
    ) is flagged


def test_a_fall_in_weight_is_not_a_gain() -> None:
    assert change(WEIGHT, _at(2, "77.0"), History([_at(0, "80.0")])) is None


def test_no_history_no_change() -> None:
    assert change(WEIGHT, _at(2, "90.0"), History()) is None


@pytest.mark.parametrize(
    ("new", "flagged"),
    [("93", False), ("92.1", False), ("92", True), ("91", True)],  # baseline 95
)
def test_spo2_drop_of_three_points_or_more_from_the_baseline(new: str, flagged: bool) -> None:
    history = [_at(d, v) for d, v in ((1, "94"), (2, "95"), (3, "96"))]
    result = change(SPO2, _at(6, new), History(history))
    assert (result is not None) is flagged
    if result is not None:
        assert result.reference == Decimal(95)


def test_a_baseline_needs_three_readings_in_its_seven_days() -> None:
    two = [_at(4, "95"), _at(5, "95")]
    assert change(SPO2, _at(6, "85"), History(two)) is None
    old = [_at(-5, "95"), *two]  # more than 7 days before: not part of the baseline
    assert change(SPO2, _at(6, "85"), History(old)) is None
    assert change(SPO2, _at(6, "85"), History([_at(0, "95"), *two])) is not None


[PULSE] = PLANS["heart-failure"].baselines  # beyond mean +/- 2.5 SD of 28 days, 14 readings


def _daily(values: list[int]) -> History:
    return History([_at(day, str(value)) for day, value in enumerate(values)])


BASELINE = _daily([68, 70, 72, 70, 69, 71, 70, 68, 72, 70, 71, 69, 70, 70])  # mean 70


@pytest.mark.parametrize(
    ("new", "flagged"),
    # mean 70, SD 1.24: the normal is 66.90 to 73.10
    [("70", False), ("73.1", False), ("73.2", True), ("66.9", False), ("66.8", True), ("90", True)],
)
def test_outside_the_patients_own_normal(new: str, flagged: bool) -> None:
    from dho.rules.trends import outside_baseline

    result = outside_baseline(PULSE, _at(14, new), BASELINE)
    assert (result is not None) is flagged
    if result is not None:
        assert result.mean == Decimal(70) and result.deviations > PULSE.k


def test_no_baseline_judgement_before_the_start_period_is_over() -> None:
    from dho.rules.trends import outside_baseline

    assert outside_baseline(PULSE, _at(14, "120"), History(BASELINE.readings[:13])) is None
    assert outside_baseline(PULSE, _at(14, "120"), _daily([70] * 14)) is None  # no spread


@settings(max_examples=200, derandomize=True)
@given(
    st.lists(
        st.decimals(min_value=20, max_value=250, places=1, allow_nan=False),
        min_size=14,
        max_size=90,
    )
)
def test_the_baselines_mean_and_sd_agree_with_exact_statistics(values: list[Decimal]) -> None:
    from dho.rules.trends import outside_baseline

    history = [_at(-27 + i * 27 / len(values), str(v)) for i, v in enumerate(values)]
    result = outside_baseline(PULSE, _at(1, "10000"), History(history))  # far outside
    exact_sd = statistics.stdev(values)
    if exact_sd == 0:
        assert result is None
        return
    assert result is not None
    assert abs(result.mean - statistics.mean(values)) < Decimal("1e-20")
    assert abs(result.sd - exact_sd) < Decimal("1e-20")


@pytest.mark.parametrize(
    ("start_day", "end_day", "days"),
    [
        (1, 3, [1, 2]),  # from the start on, up to (not including) the end
        (0.5, 2.5, [1, 2]),
        (3, 4, [3]),
        (4, 9, [4]),
        (-1, 0, []),
        (5, 6, []),
    ],
)
def test_a_window_holds_the_readings_from_its_start_up_to_its_end(
    start_day: float, end_day: float, days: list[int]
) -> None:
    history = History([_at(day, str(day)) for day in range(5)])
    start, end = T0 + timedelta(days=start_day), T0 + timedelta(days=end_day)
    assert [r.effective for r in history.window(start, end)] == [
        T0 + timedelta(days=d) for d in days
    ]
    sums = history.sums_of(start, end)
    assert (sums.count, sums.total, sums.squares) == (
        len(days),
        sum(days),
        sum(d * d for d in days),
    )


def test_a_reading_with_a_utc_offset_is_judged_at_the_same_instant() -> None:
    from dho.rules.history import utc_reading

    oslo = timezone(timedelta(hours=1))
    new = utc_reading((T0 + timedelta(days=3)).astimezone(oslo), Decimal("82.5"))
    assert new.effective.utcoffset() == timedelta(0)
    assert new.effective == T0 + timedelta(days=3)
    assert change(WEIGHT, new, History([_at(0, "80.0")])) is not None  # 3 days before: in
    assert change(WEIGHT, new, History([_at(-0.01, "80.0")])) is None
