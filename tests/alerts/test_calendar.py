"""Norwegian public holidays and opening hours, table-driven (Europe/Oslo, DST included)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dho.alerts.calendar import (
    OSLO,
    OpeningHours,
    easter_sunday,
    holiday_name,
    opening_hours,
    public_holidays,
)

# Easter Sunday as published (Den norske kirke's calendars), across the computus's cases.
EASTERS = {
    2000: date(2000, 4, 23),
    2008: date(2008, 3, 23),  # early
    2011: date(2011, 4, 24),  # late
    2019: date(2019, 4, 21),
    2024: date(2024, 3, 31),
    2025: date(2025, 4, 20),
    2026: date(2026, 4, 5),
    2027: date(2027, 3, 28),
    2038: date(2038, 4, 25),  # latest possible
    2285: date(2285, 3, 22),  # earliest possible
}

DAYTIME = opening_hours({day: [("08:00", "15:30")] for day in ("mon", "tue", "wed", "thu", "fri")})


@pytest.mark.parametrize(("year", "easter"), sorted(EASTERS.items()))
def test_easter_sunday(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter
    assert easter.weekday() == 6


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (date(2026, 1, 1), "Første nyttårsdag"),
        (date(2026, 4, 2), "Skjærtorsdag"),
        (date(2026, 4, 3), "Langfredag"),
        (date(2026, 4, 5), "Første påskedag"),
        (date(2026, 4, 6), "Andre påskedag"),
        (date(2026, 5, 1), "Offentlig høytidsdag"),
        (date(2026, 5, 14), "Kristi himmelfartsdag"),
        (date(2026, 5, 17), "Grunnlovsdag"),
        (date(2026, 5, 24), "Første pinsedag"),
        (date(2026, 5, 25), "Andre pinsedag"),
        (date(2026, 12, 25), "Første juledag"),
        (date(2026, 12, 26), "Andre juledag"),
        (date(2027, 3, 29), "Andre påskedag"),
        (date(2027, 5, 6), "Kristi himmelfartsdag"),
    ],
)
def test_public_holidays(day: date, name: str) -> None:
    assert holiday_name(day) == name


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 4, 1),  # the Wednesday before Easter
        date(2026, 4, 4),  # Easter Saturday
        date(2026, 4, 7),
        date(2026, 5, 18),
        date(2026, 12, 24),  # Christmas Eve: not a public holiday
        date(2026, 12, 31),
    ],
)
def test_ordinary_days_are_no_holiday(day: date) -> None:
    assert holiday_name(day) is None


def test_twelve_holidays_every_year_and_both_names_when_two_fall_on_one_day() -> None:
    for year in range(1990, 2100):
        days = public_holidays(year)
        names = [name for joined in days.values() for name in joined.split(", ")]
        assert len(names) == 12, year
        assert all(day.year == year for day in days)
    assert holiday_name(date(2027, 5, 17)) == "Grunnlovsdag, Andre pinsedag"
    assert holiday_name(date(2008, 5, 1)) == "Offentlig høytidsdag, Kristi himmelfartsdag"


def _oslo(*args: int) -> datetime:
    return datetime(*args, tzinfo=OSLO)


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (_oslo(2026, 12, 7, 8, 0), True),  # Monday, opening minute
        (_oslo(2026, 12, 7, 7, 59), False),
        (_oslo(2026, 12, 7, 15, 29), True),
        (_oslo(2026, 12, 7, 15, 30), False),  # closing minute: closed
        (_oslo(2026, 12, 7, 19, 0), False),  # evening
        (_oslo(2026, 12, 5, 10, 0), False),  # Saturday
        (_oslo(2026, 12, 6, 10, 0), False),  # Sunday
        (_oslo(2026, 4, 6, 10, 0), False),  # Easter Monday
        (_oslo(2026, 5, 14, 10, 0), False),  # Ascension Day (a Thursday)
        (_oslo(2027, 5, 17, 10, 0), False),  # 17 May on a Monday (and Whit Monday)
        (_oslo(2026, 5, 18, 10, 0), True),  # the Monday after 17 May 2026, a Sunday
        (_oslo(2026, 12, 24, 10, 0), True),  # Christmas Eve (Thursday): open unless listed
        # Summer time: 08:00 local is 06:00 UTC
        (datetime(2026, 6, 15, 6, 0, tzinfo=UTC), True),
        (datetime(2026, 6, 15, 5, 59, tzinfo=UTC), False),
        # Winter time: 08:00 local is 07:00 UTC
        (datetime(2026, 12, 7, 7, 0, tzinfo=UTC), True),
        (datetime(2026, 12, 7, 6, 59, tzinfo=UTC), False),
    ],
)
def test_weekday_daytime_opening_hours(at: datetime, is_open: bool) -> None:
    assert DAYTIME.is_open(at) is is_open


@pytest.mark.parametrize(
    ("at", "opens"),
    [
        # open now: now
        (_oslo(2026, 12, 7, 9, 0), _oslo(2026, 12, 7, 9, 0)),
        # Monday evening: Tuesday 08:00
        (_oslo(2026, 12, 7, 19, 0), _oslo(2026, 12, 8, 8, 0)),
        # Friday evening: Monday 08:00
        (_oslo(2026, 12, 4, 16, 0), _oslo(2026, 12, 7, 8, 0)),
        # Maundy Thursday morning 2026: closed until the Tuesday after Easter Monday
        (_oslo(2026, 4, 2, 7, 0), _oslo(2026, 4, 7, 8, 0)),
        # Christmas 2026: Friday 25th, Saturday, Sunday; open Monday 28th
        (_oslo(2026, 12, 24, 16, 0), _oslo(2026, 12, 28, 8, 0)),
        # across the autumn change (25 Oct 2026): local 08:00 is 07:00 UTC on Monday
        (_oslo(2026, 10, 23, 16, 0), datetime(2026, 10, 26, 7, 0, tzinfo=UTC)),
    ],
)
def test_next_opening(at: datetime, opens: datetime) -> None:
    found = DAYTIME.next_opening(at)
    assert found == opens
    assert found is not None and DAYTIME.is_open(found)
    assert not DAYTIME.is_open(found - timedelta(minutes=1)) or found == at


def test_extra_closed_days_and_holiday_opening() -> None:
    closes_christmas_eve = opening_hours(
        {"thu": [("08:00", "15:30")]}, closed_days=[date(2026, 12, 24)]
    )
    assert not closes_christmas_eve.is_open(_oslo(2026, 12, 24, 10, 0))
    assert closes_christmas_eve.is_open(_oslo(2026, 12, 17, 10, 0))
    every_day = opening_hours(
        {day: [("07:00", "22:00")] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        open_on_holidays=True,
    )
    assert every_day.is_open(_oslo(2026, 5, 17, 12, 0))
    assert not every_day.is_open(_oslo(2026, 5, 17, 23, 0))


def test_split_days_and_midnight() -> None:
    hours = opening_hours({"mon": [("08:00", "11:00"), ("12:00", "24:00")]})
    assert hours.is_open(_oslo(2026, 12, 7, 10, 59))
    assert not hours.is_open(_oslo(2026, 12, 7, 11, 30))
    assert hours.is_open(_oslo(2026, 12, 7, 23, 59, 59))
    assert hours.next_opening(_oslo(2026, 12, 7, 11, 30)) == _oslo(2026, 12, 7, 12, 0)


def test_a_service_open_around_the_clock_and_one_never_open() -> None:
    assert OpeningHours(always=True).is_open(_oslo(2026, 12, 25, 3, 0))
    assert OpeningHours().next_opening(_oslo(2026, 12, 7, 9, 0)) is None


@pytest.mark.parametrize(
    "week",
    [
        {"monday": [("08:00", "15:00")]},  # not a weekday key
        {"mon": [("15:00", "08:00")]},  # ends before it starts
        {"mon": [("08:00", "25:00")]},
    ],
)
def test_bad_opening_hours_are_refused(week: dict[str, list[tuple[str, str]]]) -> None:
    with pytest.raises(ValueError):
        opening_hours(week)
