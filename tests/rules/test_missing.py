"""Missing measurements: windows across DST, half-open windows, skipped vs device/gateway outage."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dho.rules.missing import (
    DeviceSeen,
    Outage,
    PatientWindow,
    Window,
    classify,
    judge_window,
    windows_closed,
)
from dho.rules.plans import Schedule

OSLO = ZoneInfo("Europe/Oslo")
DAILY_10 = Schedule(before=time(10, 0))
MS = timedelta(milliseconds=1)
SILENCE = timedelta(hours=24)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# A window on an ordinary winter day: 00:00-10:00 CET is 23:00-09:00 UTC.
WINDOW = Window(date(2026, 11, 20), _utc(2026, 11, 19, 23), _utc(2026, 11, 20, 9))
ALIVE = WINDOW.deadline - timedelta(hours=1)
DEAD = WINDOW.deadline - timedelta(days=3)


def _device(
    device: str, gateway: str, seen: datetime | None, gateway_seen: datetime | None
) -> DeviceSeen:
    return DeviceSeen(device, gateway, seen, gateway_seen)


@pytest.mark.parametrize(
    ("day", "start", "deadline"),
    [
        # spring forward on Sunday 29 March 2026: 02:00 CET -> 03:00 CEST
        (date(2026, 3, 28), _utc(2026, 3, 27, 23), _utc(2026, 3, 28, 9)),
        (date(2026, 3, 29), _utc(2026, 3, 28, 23), _utc(2026, 3, 29, 8)),
        (date(2026, 3, 30), _utc(2026, 3, 29, 22), _utc(2026, 3, 30, 8)),
        # fall back on Sunday 25 October 2026: 03:00 CEST -> 02:00 CET
        (date(2026, 10, 24), _utc(2026, 10, 23, 22), _utc(2026, 10, 24, 8)),
        (date(2026, 10, 25), _utc(2026, 10, 24, 22), _utc(2026, 10, 25, 9)),
        (date(2026, 10, 26), _utc(2026, 10, 25, 23), _utc(2026, 10, 26, 9)),
    ],
)
def test_daily_windows_across_dst_changes(day: date, start: datetime, deadline: datetime) -> None:
    windows = windows_closed(DAILY_10, OSLO, deadline - timedelta(hours=1), deadline)
    assert windows == [Window(day, start, deadline)]
    assert all(w.start.tzinfo is UTC and w.deadline.tzinfo is UTC for w in windows)


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2026, 3, 29), 9), (date(2026, 10, 25), 11), (date(2026, 11, 20), 10)],
)
def test_a_window_is_as_long_as_the_local_clock_says(day: date, hours: int) -> None:
    since = datetime.combine(day, time(0), UTC) - timedelta(hours=6)
    [window] = windows_closed(DAILY_10, OSLO, since, since + timedelta(hours=18))
    assert window.day == day and window.deadline - window.start == timedelta(hours=hours)


@pytest.mark.parametrize(
    ("day", "deadline"),
    [
        # 02:30 does not exist on 29 March: read at +01:00, i.e. 03:30 CEST
        (date(2026, 3, 29), _utc(2026, 3, 29, 1, 30)),
        # 02:30 happens twice on 25 October: the first one, at +02:00
        (date(2026, 10, 25), _utc(2026, 10, 25, 0, 30)),
    ],
)
def test_deadline_in_a_nonexistent_or_repeated_hour(day: date, deadline: datetime) -> None:
    schedule = Schedule(before=time(2, 30))
    since = datetime.combine(day, time(0), UTC) - timedelta(hours=12)
    windows = windows_closed(schedule, OSLO, since, since + timedelta(hours=24))
    assert [(w.day, w.deadline) for w in windows] == [(day, deadline)]


def test_weekday_only_schedule_has_windows_only_on_its_days() -> None:
    schedule = Schedule(before=time(10, 0), days=("mon", "wed", "fri"))
    since = _utc(2026, 11, 15, 12)  # a Sunday
    windows = windows_closed(schedule, OSLO, since, since + timedelta(days=7))
    assert [w.day for w in windows] == [date(2026, 11, 16), date(2026, 11, 18), date(2026, 11, 20)]


@pytest.mark.parametrize(
    ("since", "until", "included"),
    [
        (WINDOW.deadline - MS, WINDOW.deadline, True),  # exactly at until: included
        (WINDOW.deadline, WINDOW.deadline + timedelta(hours=2), False),  # at since: excluded
        (WINDOW.deadline - timedelta(hours=2), WINDOW.deadline - MS, False),
    ],
)
def test_deadline_in_since_exclusive_until_inclusive(
    since: datetime, until: datetime, included: bool
) -> None:
    assert (WINDOW in windows_closed(DAILY_10, OSLO, since, until)) is included


def test_a_year_is_allowed_and_gives_one_window_a_day() -> None:
    since = _utc(2026, 1, 1, 12)
    assert len(windows_closed(DAILY_10, OSLO, since, since + timedelta(days=366))) == 366


@pytest.mark.parametrize(
    ("schedule", "since", "until"),
    [
        (DAILY_10, _utc(2026, 1, 1), _utc(2026, 1, 1) + timedelta(days=366, seconds=1)),
        (DAILY_10, _utc(2026, 1, 2), _utc(2026, 1, 1)),
        (DAILY_10, datetime(2026, 1, 1), _utc(2026, 1, 2)),  # naive
        (Schedule(before=time(0, 0)), _utc(2026, 1, 1), _utc(2026, 1, 2)),
    ],
)
def test_absurd_ranges_and_schedules_are_refused(
    schedule: Schedule, since: datetime, until: datetime
) -> None:
    with pytest.raises(ValueError):
        windows_closed(schedule, OSLO, since, until)


@pytest.mark.parametrize(
    ("effective", "outcome"),
    [
        (WINDOW.start, "measured"),
        (WINDOW.start - MS, "skipped"),
        (WINDOW.deadline - MS, "measured"),
        (WINDOW.deadline, "skipped"),  # the window is half-open
    ],
)
def test_a_reading_counts_only_inside_the_half_open_window(
    effective: datetime, outcome: str
) -> None:
    patient = PatientWindow("p1", (_device("d1", "g1", ALIVE, ALIVE),), (effective,))
    assert classify(WINDOW, patient, SILENCE) == outcome


def test_a_late_synced_reading_counts_by_its_effective_time() -> None:
    synced_at = WINDOW.deadline + timedelta(hours=5)
    devices = (_device("d1", "g1", synced_at, synced_at),)
    in_window = PatientWindow("p1", devices, (WINDOW.deadline - timedelta(hours=2),))
    yesterday = PatientWindow("p1", devices, (WINDOW.start - timedelta(hours=2),))
    assert classify(WINDOW, in_window, SILENCE) == "measured"
    assert classify(WINDOW, yesterday, SILENCE) == "skipped"


@pytest.mark.parametrize(
    ("device_seen", "gateway_seen", "outcome"),
    [
        (WINDOW.deadline - SILENCE, WINDOW.deadline - SILENCE, "skipped"),  # at the cutoff
        (WINDOW.deadline - SILENCE - MS, ALIVE, "device-silent"),
        (None, ALIVE, "device-silent"),
        (WINDOW.deadline - SILENCE - MS, WINDOW.deadline - SILENCE - MS, "gateway-silent"),
        (None, None, "gateway-silent"),
    ],
)
def test_silence_is_nothing_since_the_threshold_before_the_deadline(
    device_seen: datetime | None, gateway_seen: datetime | None, outcome: str
) -> None:
    patient = PatientWindow("p1", (_device("d1", "g1", device_seen, gateway_seen),))
    assert classify(WINDOW, patient, SILENCE) == outcome


@pytest.mark.parametrize(
    ("devices", "outcome"),
    [
        ((_device("d1", "g1", DEAD, DEAD), _device("d2", "g2", ALIVE, ALIVE)), "skipped"),
        ((_device("d1", "g1", DEAD, DEAD), _device("d2", "g2", DEAD, ALIVE)), "device-silent"),
        ((_device("d1", "g1", DEAD, DEAD), _device("d2", "g2", None, None)), "gateway-silent"),
        ((), "skipped"),  # nothing to blame but the patient
    ],
)
def test_a_patient_with_several_devices_skipped_if_any_is_alive(
    devices: tuple[DeviceSeen, ...], outcome: str
) -> None:
    assert classify(WINDOW, PatientWindow("p1", devices), SILENCE) == outcome


def test_a_silent_gateway_with_three_patients_is_one_outage_and_no_patient_finding() -> None:
    patients = [
        PatientWindow(p, (_device(f"d-{p}", "hub-7", DEAD, DEAD),)) for p in ("p3", "p1", "p2")
    ]
    findings = judge_window(WINDOW, patients, SILENCE)
    assert findings.not_reported == ()
    assert findings.outages == (
        Outage("gateway", "hub-7", "hub-7", DEAD, ("p1", "p2", "p3"), WINDOW),
    )


def test_a_silent_device_on_a_live_gateway_is_one_device_outage() -> None:
    patients = [
        PatientWindow("p1", (_device("scale-1", "hub-1", DEAD, ALIVE),)),
        PatientWindow("p2", (_device("cuff-2", "hub-1", ALIVE, ALIVE),), (ALIVE,)),
    ]
    findings = judge_window(WINDOW, patients, SILENCE)
    assert findings.not_reported == ()
    assert findings.outages == (Outage("device", "scale-1", "hub-1", DEAD, ("p1",), WINDOW),)


def test_a_patient_who_skipped_is_one_finding_and_no_outage() -> None:
    patients = [
        PatientWindow("p1", (_device("d1", "g1", ALIVE, ALIVE),)),
        PatientWindow("p2", (_device("d2", "g2", ALIVE, ALIVE),), (ALIVE,)),
    ]
    findings = judge_window(WINDOW, patients, SILENCE)
    assert [f.patient_id for f in findings.not_reported] == ["p1"]
    assert findings.not_reported[0].window == WINDOW
    assert findings.outages == ()


def test_a_mixed_window_sorts_each_empty_window_to_one_cause() -> None:
    patients = [
        PatientWindow("skip", (_device("d0", "live", ALIVE, ALIVE),)),
        PatientWindow("ok", (_device("d1", "dead", DEAD, DEAD),), (ALIVE,)),  # measured
        *(PatientWindow(p, (_device(f"d-{p}", "dead", DEAD, DEAD),)) for p in ("a", "b")),
        PatientWindow("c", (_device("d-c", "live", None, ALIVE),)),
    ]
    findings = judge_window(WINDOW, patients, SILENCE)
    assert [f.patient_id for f in findings.not_reported] == ["skip"]
    assert [(o.kind, o.subject_id, o.patients) for o in findings.outages] == [
        ("gateway", "dead", ("a", "b")),
        ("device", "d-c", ("c",)),
    ]


def test_silence_must_be_positive() -> None:
    with pytest.raises(ValueError):
        judge_window(WINDOW, [PatientWindow("p1", ())], timedelta(0))
