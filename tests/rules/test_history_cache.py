"""HistoryCache on its own: stamps, look-back, the bound on patients, and writes; the batch
context's time-sorted view of a history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from dho.rules.history import History, Reading
from dho.rules.history_cache import HistoryCache, Written, new_stamp
from dho.rules.judge import AppliedPlan, PlanRef

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
WEIGHT = "body-weight"


def _reading(day: int, value: str, identity: str) -> Reading:
    return Reading(T0 + timedelta(days=day), Decimal(value), identity)


def readings(*days: int) -> History:
    return History([Reading(T0 + timedelta(days=d), Decimal(80 + d), f"w{d}") for d in days])


def identities(history: History | None) -> list[str]:
    return [r.identity for r in history.readings] if history is not None else []


def test_a_history_is_served_only_at_its_stamp_and_for_a_look_back_it_covers() -> None:
    cache = HistoryCache(10)
    cache.put("p", 7, WEIGHT, T0, readings(0, 1, 2))
    assert cache.get("p", 8, WEIGHT, T0) is None  # someone wrote since
    assert cache.get("p", 7, WEIGHT, T0 - timedelta(days=1)) is None  # looks back further
    assert cache.get("p", 7, "heart-rate", T0) is None
    assert identities(cache.get("p", 7, WEIGHT, T0)) == ["w0", "w1", "w2"]
    assert (cache.hits, cache.misses) == (1, 3)


def test_a_look_back_moved_on_by_more_than_a_day_drops_older_readings_for_good() -> None:
    cache = HistoryCache(10)
    cache.put("p", None, WEIGHT, T0, readings(0, 1, 2, 3))
    # Less than a day on: served along (the rules keep to their own windows).
    served = cache.get("p", None, WEIGHT, T0 + timedelta(hours=20))
    assert identities(served) == ["w0", "w1", "w2", "w3"]
    assert identities(cache.get("p", None, WEIGHT, T0 + timedelta(days=2))) == ["w2", "w3"]
    assert cache.get("p", None, WEIGHT, T0 + timedelta(days=1)) is None


def test_a_reading_added_to_a_served_history_leaves_the_cache_as_it_was() -> None:
    from dho.rules.patient_context import PatientContext

    cache = HistoryCache(10)
    cache.put("p", 1, WEIGHT, T0, readings(0))
    context = PatientContext(catalogue=None)  # type: ignore[arg-type]  # plans not needed
    context.history[("p", WEIGHT)] = cache.get("p", 1, WEIGHT, T0) or History()
    context.remember("p", WEIGHT, _reading(1, "81", "phantom"))
    assert identities(context.history[("p", WEIGHT)]) == ["w0", "phantom"]
    assert identities(cache.get("p", 1, WEIGHT, T0)) == ["w0"]


def test_the_least_recently_judged_patients_go_first() -> None:
    cache = HistoryCache(2)
    cache.put("a", 1, WEIGHT, T0, readings(0))
    cache.put("b", 1, WEIGHT, T0, readings(0))
    assert cache.get("a", 1, WEIGHT, T0) is not None
    cache.put("c", 1, WEIGHT, T0, readings(0))
    assert len(cache) == 2
    assert cache.get("b", 1, WEIGHT, T0) is None
    assert cache.get("a", 1, WEIGHT, T0) is not None


def test_a_cache_of_size_zero_holds_nothing() -> None:
    cache = HistoryCache(0)
    cache.put("a", 1, WEIGHT, T0, readings(0))
    assert len(cache) == 0 and cache.get("a", 1, WEIGHT, T0) is None


def test_writes_move_a_locked_history_to_the_new_stamp_and_drop_unlocked_ones() -> None:
    cache = HistoryCache(10)
    cache.put("locked", 1, WEIGHT, T0, readings(0))
    cache.put("stale", 2, WEIGHT, T0, readings(0))
    cache.put("other", 3, WEIGHT, T0, readings(0))
    new = new_stamp()
    fresh = Reading(T0 + timedelta(days=3), Decimal("83.4"), "w3")
    writes = [Written("locked", WEIGHT, fresh), Written("other", WEIGHT, fresh)]
    # "stale" was read at stamp 5 by this transaction, not the 2 the cache holds.
    cache.written(new, {"locked": 1, "stale": 5}, writes, {"locked", "stale"})
    assert cache.get("locked", 1, WEIGHT, T0) is None
    assert (cache.get("locked", new, WEIGHT, T0) or History()).readings[-1] == fresh
    assert cache.get("stale", new, WEIGHT, T0) is None and cache.get("stale", 2, WEIGHT, T0) is None
    assert identities(cache.get("other", 3, WEIGHT, T0)) == ["w0"]  # not touched: unchanged


def test_forget_drops_a_patient() -> None:
    cache = HistoryCache(10)
    cache.put("p", 1, WEIGHT, T0, readings(0))
    cache.forget(["p", "never-seen"])
    assert len(cache) == 0


def test_new_stamps_fit_a_signed_bigint_and_differ() -> None:
    stamps = {new_stamp() for _ in range(1000)}
    assert len(stamps) == 1000 and all(0 <= s < 2**63 for s in stamps)


def test_the_context_serves_a_history_sorted_by_time_as_readings_are_remembered() -> None:
    from dho.rules.patient_context import PatientContext

    context = PatientContext(catalogue=None)  # type: ignore[arg-type]  # plans not needed
    for identity, day, value in (("b", 2, "2"), ("a", 1, "1"), ("d", 4, "4")):
        context.remember("p", "body-weight", _reading(day, value, identity))
    assert [r.value for r in context.readings("p", "body-weight").readings] == [1, 2, 4]
    context.remember("p", "body-weight", _reading(3, "3", "c"))  # into the sorted list
    assert [r.value for r in context.readings("p", "body-weight").readings] == [1, 2, 3, 4]
    context.remember("p", "body-weight", _reading(1, "7", "a"))  # a correction replaces it
    assert [r.value for r in context.readings("p", "body-weight").readings] == [7, 2, 3, 4]
    assert len(context.readings("p", "heart-rate")) == 0


async def test_the_context_tracks_only_the_histories_its_patients_plans_read() -> None:
    from dho.rules.patient_context import PatientContext, _load_history
    from tests.rules.test_plans import PLANS

    context = PatientContext(catalogue=None)  # type: ignore[arg-type]  # plans set below
    applied = AppliedPlan(PlanRef("plan-1", 1, "heart-failure"), PLANS["heart-failure"], T0)
    context.plans["p"] = [applied]
    cache = HistoryCache(10)
    for type_key in ("body-weight", "heart-rate"):
        cache.put("p", 7, type_key, T0 - timedelta(days=30), History())
    wanted = [("p", t, T0) for t in ("body-weight", "heart-rate", "oxygen-saturation")]
    await _load_history(None, context, wanted, {"p": 7}, cache)  # type: ignore[arg-type]
    assert context.tracks("p", "body-weight") and context.tracks("p", "heart-rate")
    assert not context.tracks("p", "oxygen-saturation")  # no rule of the plan trends it
