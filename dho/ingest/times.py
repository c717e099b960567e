"""Device times: ISO 8601 or epoch, with an offset or read as local time in a zone.

A local time without an offset is read in the configured zone (Europe/Oslo by default)
and flagged: `local-time-assumed`; around a daylight-saving change a wall-clock time can
happen twice (`ambiguous-local-time`, the first occurrence is taken) or not at all
(`nonexistent-local-time`, read with the offset in force before the change).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, DecimalException
from zoneinfo import ZoneInfo

from dho.ingest.errors import Unparseable
from dho.ingest.measurement import TimeFlag

EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def parse_iso(text: str, zone: ZoneInfo, what: str) -> tuple[datetime, TimeFlag | None]:
    """An ISO 8601 date-time; without an offset it is local time in `zone` (flagged)."""
    if not 10 < len(text) <= 40 or "T" not in text.upper():
        raise Unparseable(f"{what} {text[:40]!r} is not an ISO 8601 date-time with a time")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Unparseable(f"{what} {text!r} is not an ISO 8601 date-time") from exc
    if parsed.tzinfo is None:
        return local(parsed, zone, what)
    return _in_range(parsed, what), None


def local(naive: datetime, zone: ZoneInfo, what: str) -> tuple[datetime, TimeFlag]:
    """A wall-clock time in `zone`, with the flag that says how sure that reading is."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    flag: TimeFlag = "local-time-assumed"
    if first.utcoffset() != second.utcoffset():
        round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        flag = "ambiguous-local-time" if round_trip == naive else "nonexistent-local-time"
    aware = first.astimezone(UTC).astimezone(zone)
    return _in_range(aware, what), flag


def from_epoch(value: object, zone: ZoneInfo, unit_seconds: int, what: str) -> datetime:
    """Seconds (or milliseconds, `unit_seconds`=1000) since 1970 as a time in `zone`."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise Unparseable(f"{what} must be a number of seconds since 1970")
    try:
        millis = int(Decimal(value) * 1000 / unit_seconds)
    except (DecimalException, OverflowError, ValueError) as exc:
        raise Unparseable(f"{what} is not a usable epoch time") from exc
    return _epoch_millis(millis, what).astimezone(zone)


def zone_named(name: object, fallback: ZoneInfo) -> ZoneInfo:
    """The IANA zone `name` from a payload, or `fallback` when there is none."""
    if name is None:
        return fallback
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise Unparseable("time zone must be an IANA name such as Europe/Oslo")
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as exc:
        raise Unparseable(f"time zone {name!r} is not an IANA zone name") from exc


def _epoch_millis(millis: int, what: str) -> datetime:
    low = (EARLIEST - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    high = (LATEST - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if not low <= millis < high:
        raise Unparseable(f"{what} is not between {EARLIEST.year} and {LATEST.year}")
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)


def _in_range(moment: datetime, what: str) -> datetime:
    offset = moment.utcoffset()
    if offset is None or offset % timedelta(minutes=1) or abs(offset) >= timedelta(hours=18):
        raise Unparseable(f"{what} has an offset that is not whole minutes within ±18 hours")
    if not EARLIEST <= moment < LATEST:
        raise Unparseable(f"{what} is not between {EARLIEST.year} and {LATEST.year}")
    return moment


def fhir_datetime(moment: datetime) -> str:
    """FHIR dateTime with the device's own offset; fractions only when non-zero."""
    offset = moment.utcoffset()
    if offset is None or offset % timedelta(minutes=1):
        raise Unparseable(f"effective time {moment.isoformat()} has no usable UTC offset")
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond % 1000:
        text += f".{moment.microsecond:06d}"
    elif moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + _offset(offset)


def _offset(offset: timedelta) -> str:
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"
