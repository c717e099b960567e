"""Patients' recent readings kept in the process between batches, so a batch reads from the
database only the history it has not seen.

Whether a cached history is still true is told by the patient row's `history_stamp`: the
record stage sets it to a fresh random token in every transaction that writes the patient's
observations, whichever process or path writes them (ingest, re-drive, replay). A batch
reads the stamp with the patient's row lock; a cached history is used only while its stamp
is the one read. The writing pipeline applies its own writes to the cache under the new
token before the commit: if the transaction rolls back, the row keeps the old token, and
the next batch reads the history again.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dho.rules.history import History, Reading
from dho.values import value

# Readings older than a batch needs are dropped once they span this long (the rules look
# at their own windows, so a few older readings served along do no harm).
TRIM_AFTER = timedelta(days=1)
# Where a transaction's session keeps the stamps it read under the patients' row locks.
LOCKED_STAMPS = "dho.history_stamps"


def new_stamp() -> int:
    """A token no other transaction will pick (63 bits: a signed BIGINT)."""
    return secrets.randbits(63)


@value
class Written:
    """An observation row this transaction inserted, as the history sees it."""

    patient_id: str
    type: str
    reading: Reading


@dataclass(slots=True)
class _Span:
    since: datetime  # every reading from here on is held
    readings: History


@dataclass(slots=True)
class _Patient:
    stamp: int | None
    types: dict[str, _Span] = field(default_factory=dict)


class HistoryCache:
    """Readings per (patient, type), for the most recently judged `max_patients` patients."""

    def __init__(self, max_patients: int) -> None:
        self._max = max_patients
        self._patients: OrderedDict[str, _Patient] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._patients)

    def get(
        self, patient_id: str, stamp: int | None, type_key: str, since: datetime
    ) -> History | None:
        """The history from `since` on (and perhaps a few older readings), when the cache
        holds it at `stamp`."""
        patient = self._patients.get(patient_id)
        span = patient.types.get(type_key) if patient is not None else None
        if patient is None or patient.stamp != stamp or span is None or span.since > since:
            self.misses += 1
            return None
        self.hits += 1
        self._patients.move_to_end(patient_id)
        if since - span.since > TRIM_AFTER:
            span.readings = span.readings.from_time(since)
            span.since = since
        return span.readings

    def put(
        self,
        patient_id: str,
        stamp: int | None,
        type_key: str,
        since: datetime,
        readings: History,
    ) -> None:
        """Hold the history the database returned for (patient, type) from `since` at
        `stamp`."""
        if self._max <= 0:
            return
        patient = self._patients.get(patient_id)
        if patient is None or patient.stamp != stamp:
            patient = self._patients[patient_id] = _Patient(stamp)
        patient.types[type_key] = _Span(since, readings)
        self._patients.move_to_end(patient_id)
        while len(self._patients) > self._max:
            self._patients.popitem(last=False)

    def written(
        self,
        stamp: int,
        locked: Mapping[str, int | None],
        writes: Iterable[Written],
        touched: Iterable[str],
    ) -> None:
        """A transaction set the stamp of the `touched` patients to `stamp`.

        `locked` holds the stamps it read under the row locks: a cached history that was
        true then becomes true at the new stamp with `writes` added; any other is dropped.
        """
        touched = set(touched)
        for patient_id in touched:
            patient = self._patients.get(patient_id)
            if patient is None:
                continue
            if patient_id in locked and patient.stamp == locked[patient_id]:
                patient.stamp = stamp
            else:
                del self._patients[patient_id]
        for write in writes:
            patient = self._patients.get(write.patient_id)
            span = patient.types.get(write.type) if patient is not None else None
            if span is not None and write.patient_id in touched:
                span.readings = span.readings.with_reading(write.reading)

    def forget(self, patient_ids: Iterable[str]) -> None:
        for patient_id in patient_ids:
            self._patients.pop(patient_id, None)
