"""Missing measurements: which windows closed, and whether an empty one was skipped or lost.

A schedule ("blood pressure daily before 10:00") gives, for each scheduled local day D,
the window [local midnight of D, D at `before`) in the patient's zone. A window that
closes without a reading of the type is either skipped by the patient or explained by an
outage: nothing arrived from the patient's devices (device-silent) or from the whole
gateway (gateway-silent) within `silence` before the deadline. Outages are reported once
per gateway or device, never once per patient.

Local times follow zoneinfo with fold=0: a deadline in a nonexistent hour (spring forward)
is read with the offset before the change, so it lands that much later in wall-clock time
(02:30 on 29 March 2026 in Europe/Oslo is 01:30 UTC, i.e. 03:30 CEST); a deadline in a
repeated hour (fall back) is its first occurrence.

Readings count by effective time, so a reading stored on a device and synced after the
deadline still fills its window. Last-seen times should include anything a device or
gateway sends (status, battery, heartbeat): a device that only ever sends readings looks
silent whenever its patient skips longer than `silence`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dho.rules.plans import WEEKDAYS, Schedule

MAX_RANGE = timedelta(days=366)

Outcome = Literal["measured", "skipped", "device-silent", "gateway-silent"]


@dataclass(frozen=True, slots=True)
class Window:
    """One scheduled day's measuring window, [start, deadline), both aware UTC."""

    day: date
    start: datetime
    deadline: datetime


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A device expected to deliver the type; when anything last came from it and its gateway."""

    device_id: str
    gateway_id: str
    last_seen: datetime | None
    gateway_last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class PatientWindow:
    """One patient and type in one window: their devices and the readings' effective times."""

    patient_id: str
    devices: tuple[DeviceSeen, ...]
    effective: tuple[datetime, ...] = ()


@dataclass(frozen=True, slots=True)
class NotReported:
    """The patient skipped the window: "measurement not reported"."""

    patient_id: str
    window: Window


@dataclass(frozen=True, slots=True)
class Outage:
    """A silent gateway, or a silent device on a live gateway, and the patients it left empty."""

    kind: Literal["gateway", "device"]
    subject_id: str  # the gateway id or the device id
    gateway_id: str
    last_seen: datetime | None
    patients: tuple[str, ...]
    window: Window


@dataclass(frozen=True, slots=True)
class WindowFindings:
    not_reported: tuple[NotReported, ...]
    outages: tuple[Outage, ...]


def windows_closed(
    schedule: Schedule, zone: ZoneInfo, since: datetime, until: datetime
) -> list[Window]:
    """Every window of `schedule` in `zone` whose deadline is in (since, until], in order."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be aware datetimes")
    if until < since or until - since > MAX_RANGE:
        raise ValueError(f"range {since} .. {until} must run forward and span at most 366 days")
    if schedule.before == time(0):
        raise ValueError("a window before 00:00 would be empty")
    # A deadline is on its local day, never more than a day from its UTC date.
    day = since.astimezone(zone).date() - timedelta(days=1)
    last = until.astimezone(zone).date() + timedelta(days=1)
    windows = []
    while day <= last:
        if WEEKDAYS[day.weekday()] in schedule.days:
            start = _utc(datetime.combine(day, time(0), zone))
            deadline = _utc(datetime.combine(day, schedule.before, zone))
            if since < deadline <= until:
                windows.append(Window(day, start, deadline))
        day += timedelta(days=1)
    return windows


def classify(window: Window, patient: PatientWindow, silence: timedelta) -> Outcome:
    """Measured, skipped, or empty because every device (or its whole gateway) went silent."""
    if any(window.start <= t < window.deadline for t in patient.effective):
        return "measured"
    cutoff = _cutoff(window, silence)
    if not patient.devices or any(not _silent(d.last_seen, cutoff) for d in patient.devices):
        return "skipped"
    if all(_silent(d.gateway_last_seen, cutoff) for d in patient.devices):
        return "gateway-silent"
    return "device-silent"


def judge_window(
    window: Window, patients: Iterable[PatientWindow], silence: timedelta
) -> WindowFindings:
    """Findings for one closed window: a finding per skipping patient, one per outage."""
    cutoff = _cutoff(window, silence)
    skipped: list[NotReported] = []
    gateways: dict[str, list[DeviceSeen]] = {}
    devices: dict[str, list[DeviceSeen]] = {}
    affected: dict[tuple[str, str], set[str]] = {}
    for patient in patients:
        outcome = classify(window, patient, silence)
        if outcome == "skipped":
            skipped.append(NotReported(patient.patient_id, window))
        elif outcome != "measured":
            for seen in patient.devices:
                if _silent(seen.gateway_last_seen, cutoff):
                    key = ("gateway", seen.gateway_id)
                    gateways.setdefault(seen.gateway_id, []).append(seen)
                else:
                    key = ("device", seen.device_id)
                    devices.setdefault(seen.device_id, []).append(seen)
                affected.setdefault(key, set()).add(patient.patient_id)
    outages = [
        Outage(
            "gateway",
            gateway_id,
            gateway_id,
            _latest(s.gateway_last_seen for s in seen),
            tuple(sorted(affected[("gateway", gateway_id)])),
            window,
        )
        for gateway_id, seen in sorted(gateways.items())
    ] + [
        Outage(
            "device",
            device_id,
            seen[0].gateway_id,
            _latest(s.last_seen for s in seen),
            tuple(sorted(affected[("device", device_id)])),
            window,
        )
        for device_id, seen in sorted(devices.items())
    ]
    return WindowFindings(
        tuple(sorted(skipped, key=lambda f: f.patient_id)),
        tuple(outages),
    )


def _utc(local: datetime) -> datetime:
    return local.astimezone(UTC)


def _cutoff(window: Window, silence: timedelta) -> datetime:
    if silence <= timedelta(0):
        raise ValueError(f"silence {silence} must be positive")
    return window.deadline - silence


def _silent(last_seen: datetime | None, cutoff: datetime) -> bool:
    return last_seen is None or last_seen < cutoff


def _latest(times: Iterable[datetime | None]) -> datetime | None:
    return max((t for t in times if t is not None), default=None)
