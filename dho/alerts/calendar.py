"""Norwegian public holidays and an organisation's opening hours, in Europe/Oslo.

A follow-up service is usually open on weekday daytime and closed on the public holidays
(*helligdager* and the two statutory holidays, 1 and 17 May). The moving holidays follow
Easter Sunday (the Gregorian computus). Christmas Eve and New Year's Eve are not public
holidays; an organisation that closes on them lists them as extra closed days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

OSLO = ZoneInfo("Europe/Oslo")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Days after Easter Sunday, and their Norwegian names.
_MOVING = (
    (-3, "Skjærtorsdag"),
    (-2, "Langfredag"),
    (0, "Første påskedag"),
    (1, "Andre påskedag"),
    (39, "Kristi himmelfartsdag"),
    (49, "Første pinsedag"),
    (50, "Andre pinsedag"),
)
_FIXED = (
    (1, 1, "Første nyttårsdag"),
    (5, 1, "Offentlig høytidsdag"),
    (5, 17, "Grunnlovsdag"),
    (12, 25, "Første juledag"),
    (12, 26, "Andre juledag"),
)


def easter_sunday(year: int) -> date:
    """Easter Sunday of a Gregorian year (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    weekday_shift = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * weekday_shift) // 451
    month, day = divmod(h + weekday_shift - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def public_holidays(year: int) -> Mapping[date, str]:
    """Norway's public holidays of a year, each with its name."""
    easter = easter_sunday(year)
    named = [(date(year, month, day), name) for month, day, name in _FIXED]
    named += [(easter + timedelta(days=offset), name) for offset, name in _MOVING]
    days: dict[date, str] = {}
    for day, name in named:  # two on one day (17 May on Whit Monday): both names
        days[day] = f"{days[day]}, {name}" if day in days else name
    return dict(sorted(days.items()))


def holiday_name(day: date) -> str | None:
    return public_holidays(day.year).get(day)


@dataclass(frozen=True, slots=True)
class Interval:
    """Open from `start` until just before `end`, local time on one day."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError(f"opening interval {self.start} to {self.end}: starts after it ends")


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """When an organisation's staff are there: per weekday intervals (local time), closed on
    public holidays unless `open_on_holidays`, and on any `closed_days`. `always` is a
    24/7 service."""

    week: Mapping[str, tuple[Interval, ...]] = field(default_factory=dict)
    open_on_holidays: bool = False
    closed_days: frozenset[date] = frozenset()
    always: bool = False

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        if self.closed_on(day):
            return ()
        return tuple(self.week.get(WEEKDAYS[day.weekday()], ()))

    def closed_on(self, day: date) -> bool:
        """Closed all day by the calendar (a public holiday or an extra closed day)."""
        if day in self.closed_days:
            return True
        return not self.open_on_holidays and holiday_name(day) is not None

    def is_open(self, at: datetime) -> bool:
        if self.always:
            return True
        local = at.astimezone(OSLO)
        now = local.time().replace(tzinfo=None)
        return any(i.start <= now < i.end for i in self.intervals_on(local.date()))

    def next_opening(self, at: datetime, *, horizon_days: int = 400) -> datetime | None:
        """`at` when open; else the next moment it opens (UTC); None if it never does."""
        if self.is_open(at):
            return at
        local = at.astimezone(OSLO)
        for ahead in range(horizon_days + 1):
            day = local.date() + timedelta(days=ahead)
            for interval in self.intervals_on(day):
                opens = _local(day, interval.start)
                if opens > at:
                    return opens.astimezone(UTC)
        return None


def _local(day: date, at: time) -> datetime:
    """A local wall-clock time; one skipped by the spring change is read with the offset
    before it (02:30 is 03:30)."""
    return datetime.combine(day, at, tzinfo=OSLO)


def opening_hours(
    week: Mapping[str, Iterable[tuple[str, str]]],
    *,
    open_on_holidays: bool = False,
    closed_days: Iterable[date] = (),
) -> OpeningHours:
    """Opening hours from plain values: {"mon": [("08:00", "15:30")], ...}."""
    unknown = set(week) - set(WEEKDAYS)
    if unknown:
        raise ValueError(f"unknown weekday {', '.join(sorted(unknown))}; use {WEEKDAYS}")
    parsed = {
        day: tuple(Interval(time.fromisoformat(start), _end_of(end)) for start, end in intervals)
        for day, intervals in week.items()
    }
    return OpeningHours(parsed, open_on_holidays, frozenset(closed_days))


def _end_of(text: str) -> time:
    """`24:00` closes at midnight."""
    return time.max if text == "24:00" else time.fromisoformat(text)
