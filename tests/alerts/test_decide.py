"""Calm alerting, table-driven: hysteresis at each side of a cut-point, and what a finding
does to an episode (open, raise, attach, nothing, ask for a repeat)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dho.alerts.episodes import Episode, RuleMemory, decide
from dho.rules.hysteresis import hold_points, settle
from dho.rules.judge import OUT_OF_RANGE, Finding
from dho.rules.thresholds import Band, CutPoints

G, Y, R = Band.GREEN, Band.YELLOW, Band.RED
SYSTOLIC = CutPoints(Decimal(80), Decimal(95), Decimal(160), Decimal(180))
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def held_band(points: CutPoints, value: Decimal, margin: Decimal) -> Band:
    """Where a falling colour is held, by definition: the worst band within +/- margin of
    the value (the bands rise away from green, so the worse of the interval's two ends)."""
    return max(points.band(value - margin), points.band(value + margin))


@pytest.mark.parametrize(
    ("value", "held"),
    [
        # margin 3 around yellow-high 160 and red-high 180
        (156, G),
        (157, Y),
        (159, Y),
        (160, Y),
        (176, Y),
        (177, R),
        (183, R),
        # and around yellow-low 95, red-low 80
        (99, G),
        (98, Y),
        (83, R),
        (84, Y),
    ],
)
def test_held_band_is_the_worst_band_within_the_margin(value: int, held: Band) -> None:
    assert held_band(SYSTOLIC, Decimal(value), Decimal(3)) == held


@settings(max_examples=300, derandomize=True)
@given(
    st.sets(st.integers(min_value=0, max_value=60), min_size=4, max_size=4),
    st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    st.integers(min_value=-10, max_value=70),
    st.integers(min_value=0, max_value=8),
)
def test_held_band_is_the_worst_band_of_every_value_within_the_margin(
    points: set[int], kept: tuple[bool, ...], value: int, margin: int
) -> None:
    ordered = sorted(points)  # red-low < yellow-low < yellow-high < red-high, some left out
    cuts = CutPoints(*(Decimal(p) if keep else None for p, keep in zip(ordered, kept, strict=True)))
    tenths = range(10 * (value - margin), 10 * (value + margin) + 1)
    worst = max(cuts.band(Decimal(t) / 10) for t in tenths)
    assert held_band(cuts, Decimal(value), Decimal(margin)) == worst
    # the plan's precomputed hold points give the same band in one look
    assert hold_points(cuts, Decimal(margin)).band(Decimal(value)) == worst


@pytest.mark.parametrize(
    ("previous", "band", "held", "settled"),
    [
        (G, Y, Y, Y),  # up at once
        (G, R, R, R),
        (Y, R, R, R),
        (Y, G, Y, Y),  # down: held while within the margin
        (Y, G, G, G),  # past the margin: down
        (R, Y, R, R),
        (R, G, Y, Y),  # down no further than the held band
        (Y, G, R, Y),  # never worse than before
        (G, G, Y, G),  # a green hovering value near a cut-point does not rise
    ],
)
def test_settle(previous: Band, band: Band, held: Band, settled: Band) -> None:
    assert settle(previous, band, held) == settled


def finding(band: Band, held: Band | None = None, repeatable: bool = True) -> Finding:
    return Finding("range:x", OUT_OF_RANGE, band, held or band, "x", {}, repeatable)


OPEN_Y = Episode("a", Y)
OPEN_R = Episode("a", R)
WAITING = RuleMemory(G, NOW + timedelta(minutes=10), "obs-1")


@pytest.mark.parametrize(
    ("memory", "episode", "found", "repeat", "action", "band"),
    [
        (RuleMemory(G), None, finding(G), None, "none", G),
        (RuleMemory(G), None, finding(Y), None, "open", Y),
        (RuleMemory(G), None, finding(R), None, "open", R),
        (RuleMemory(Y), None, finding(Y), None, "none", Y),  # equal state after a close
        (RuleMemory(Y), None, finding(R), None, "open", R),  # worse after a close
        (RuleMemory(Y), OPEN_Y, finding(Y), None, "attach", Y),
        (RuleMemory(Y), OPEN_Y, finding(R), None, "raise", R),
        (RuleMemory(R), OPEN_R, finding(Y, R), None, "attach", R),  # better: joins, stays red
        (RuleMemory(Y), OPEN_Y, finding(G, Y), None, "none", Y),  # green held: nothing to add
        (RuleMemory(Y), OPEN_Y, finding(G), None, "none", G),
        # a repeat measurement before a single yellow outlier
        (RuleMemory(G), None, finding(Y), 15, "ask-repeat", G),
        (RuleMemory(G), None, finding(R), 15, "open", R),  # red is never held back
        (RuleMemory(G), None, finding(Y, repeatable=False), 15, "open", Y),  # trends: at once
        (WAITING, None, finding(Y), 15, "open", Y),  # the repeat confirms
        (WAITING, None, finding(G), 15, "none", G),  # the repeat is fine
    ],
)
def test_decide(
    memory: RuleMemory,
    episode: Episode | None,
    found: Finding,
    repeat: int | None,
    action: str,
    band: Band,
) -> None:
    within = timedelta(minutes=repeat) if repeat else None
    outcome = decide(found, memory, episode, observation_id="o", now=NOW, repeat_within=within)
    assert (outcome.action, outcome.memory.band) == (action, band)
    if action == "ask-repeat":
        assert outcome.memory.repeat_until == NOW + timedelta(minutes=15)
        assert outcome.memory.repeat_observation_id == "o"
    else:
        assert outcome.memory.repeat_until is None
