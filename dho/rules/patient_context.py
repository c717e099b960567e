"""What the rules need about a batch's patients, read in a few bulk queries per batch:
the plan versions that apply, pauses, and recent readings of the types their plans trend.

Loading first locks the patients' rows (PostgreSQL; SQLite has one writer anyway), so two
service processes judging readings of one patient take turns and see each other's alerts.
The history comes from the process's `HistoryCache` where the patient's stamp says it is
still true, and from the database otherwise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.catalogue import Catalogue
from dho.db.base import one_of
from dho.db.models import ObservationRow, Patient, PatientPause, PatientPlan
from dho.ingest.normalise import PlausibilityLimits
from dho.rules import news2_inputs
from dho.rules.history import History, Reading
from dho.rules.history_cache import LOCKED_STAMPS, HistoryCache
from dho.rules.judge import AppliedPlan, PlanRef
from dho.rules.plans import StandardPlan, load_standard_plans, plan_from_document

CHUNK = 500
_EMPTY = History()
# The measurement types NEWS2 reads (blood pressure: its systolic component).
NEWS2_TYPES = (
    "respiratory-rate",
    "oxygen-saturation",
    "blood-pressure",
    "heart-rate",
    "body-temperature",
)


@dataclass(slots=True)
class PlanCatalogue:
    """The standard plans, and patients' plan versions parsed once (versions never change)."""

    config_dir: Path
    types: Catalogue
    limits: PlausibilityLimits
    standard: dict[str, StandardPlan]
    default: str = "general"
    _parsed: dict[str, StandardPlan] = field(default_factory=dict)

    @classmethod
    def load(
        cls, config_dir: Path, types: Catalogue, limits: PlausibilityLimits, default: str
    ) -> PlanCatalogue:
        standard = load_standard_plans(config_dir, types, limits)
        if default not in standard:
            raise ValueError(f"the default plan {default!r} is not under {config_dir}/plans")
        return cls(config_dir, types, limits, standard, default)

    def default_plan(self) -> AppliedPlan:
        return AppliedPlan(
            PlanRef(f"standard:{self.default}", 0, self.default), self.standard[self.default]
        )

    def parsed(self, plan_id: str) -> bool:
        return plan_id in self._parsed

    def parse(self, row: PatientPlan) -> None:
        where = f"plan {row.id} (patient {row.patient_id}, version {row.version})"
        data = jsonutil.loads(row.content)
        plan = plan_from_document(data, where, self.config_dir, self.types, self.limits)
        self._parsed[row.id] = plan

    def version(
        self, plan_id: str, version: int, standard_plan: str, valid_from: datetime
    ) -> AppliedPlan:
        """A parsed patient plan version (see `parse`)."""
        ref = PlanRef(plan_id, version, standard_plan)
        return AppliedPlan(ref, self._parsed[plan_id], valid_from)


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str
    starts_at: datetime
    ends_at: datetime

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True, slots=True)
class Care:
    """A patient's plan versions and pauses, as read at the patient's care stamp."""

    stamp: int | None
    plans: list[AppliedPlan]
    pauses: list[Pause]


class CareCache:
    """Plan versions and pauses of the most recently judged `max_patients` patients, used
    while the patient's `care_stamp` (new with every plan or pause change) stays the same."""

    def __init__(self, max_patients: int) -> None:
        self._max = max_patients
        self._patients: OrderedDict[str, Care] = OrderedDict()

    def get(self, patient_id: str, stamp: int | None) -> Care | None:
        care = self._patients.get(patient_id)
        if care is None or care.stamp != stamp:
            return None
        self._patients.move_to_end(patient_id)
        return care

    def put(self, patient_id: str, care: Care) -> None:
        if self._max <= 0:
            return
        self._patients[patient_id] = care
        self._patients.move_to_end(patient_id)
        while len(self._patients) > self._max:
            self._patients.popitem(last=False)


@dataclass(slots=True)
class PatientContext:
    catalogue: PlanCatalogue
    plans: dict[str, list[AppliedPlan]] = field(default_factory=dict)
    pauses: dict[str, list[Pause]] = field(default_factory=dict)
    # The histories of the types the batch's rules trend.
    history: dict[tuple[str, str], History] = field(default_factory=dict)
    birth_dates: dict[str, date | None] = field(default_factory=dict)
    vitals: dict[str, dict[str, news2_inputs.Reading]] = field(default_factory=dict)

    def plan_for(self, patient_id: str, at: datetime) -> AppliedPlan:
        """The patient's plan version valid at `at`; the default standard plan before any."""
        # Versions are in (valid_from, version) order: the last one valid by `at` applies.
        for version in reversed(self.plans.get(patient_id, ())):
            if version.valid_from is None or version.valid_from <= at:
                return version
        return self.catalogue.default_plan()

    def pause_at(self, patient_id: str, at: datetime) -> Pause | None:
        return next((p for p in self.pauses.get(patient_id, ()) if p.covers(at)), None)

    def tracks(self, patient_id: str, type_key: str) -> bool:
        """Whether a rule of this batch reads the patient's history of the type."""
        return (patient_id, type_key) in self.history

    def readings(self, patient_id: str, type_key: str) -> History:
        """The patient's history of a type."""
        return self.history.get((patient_id, type_key)) or _EMPTY

    def remember(self, patient_id: str, type_key: str, reading: Reading) -> None:
        key = (patient_id, type_key)
        self.history[key] = self.readings(patient_id, type_key).with_reading(reading)

    def recent_vitals(self, patient_id: str) -> list[news2_inputs.Reading]:
        return list(self.vitals.get(patient_id, {}).values())

    def remember_vital(self, patient_id: str, identity: str, reading: news2_inputs.Reading) -> None:
        self.vitals.setdefault(patient_id, {})[identity] = reading


async def load_patient_context(
    session: AsyncSession,
    catalogue: PlanCatalogue,
    readings: Iterable[tuple[str, str, datetime]],
    history: HistoryCache | None = None,
    care: CareCache | None = None,
) -> PatientContext:
    """Lock the patients of (patient, type, effective) readings and read their context."""
    wanted = list(readings)
    ids = sorted({patient for patient, _, _ in wanted})
    context = PatientContext(catalogue)
    if not ids:
        return context
    stamps: dict[str, int | None] = session.info.setdefault(LOCKED_STAMPS, {})
    for chunk in _chunks(ids):
        locked = await session.execute(
            select(Patient.id, Patient.birth_date, Patient.history_stamp, Patient.care_stamp)
            .where(one_of(Patient.id, chunk))
            .order_by(Patient.id)
            .with_for_update(key_share=True)
        )
        care_stamps: dict[str, int | None] = {}
        for pid, born, stamp, care_stamp in locked:
            context.birth_dates[pid] = born
            stamps[pid] = stamp
            kept = care.get(pid, care_stamp) if care is not None else None
            if kept is None:
                care_stamps[pid] = care_stamp
            else:
                context.plans[pid], context.pauses[pid] = kept.plans, kept.pauses
        if care_stamps:
            await _load_care(session, context, sorted(care_stamps))
        if care is not None:
            for pid, care_stamp in care_stamps.items():
                plans, pauses = context.plans.get(pid, []), context.pauses.get(pid, [])
                care.put(pid, Care(care_stamp, plans, pauses))
    await _load_history(session, context, wanted, stamps, history)
    await _load_vitals(session, context, wanted)
    return context


async def _load_care(session: AsyncSession, context: PatientContext, chunk: list[str]) -> None:
    """The patients' plan versions (the content only of versions not parsed before) and
    pauses."""
    catalogue = context.catalogue
    versions = (
        await session.execute(
            select(
                PatientPlan.id,
                PatientPlan.patient_id,
                PatientPlan.version,
                PatientPlan.standard_plan,
                PatientPlan.valid_from,
            )
            .where(one_of(PatientPlan.patient_id, chunk))
            .order_by(PatientPlan.valid_from, PatientPlan.version)
        )
    ).all()
    unparsed = [plan_id for plan_id, *_ in versions if not catalogue.parsed(plan_id)]
    if unparsed:
        for row in await session.scalars(
            select(PatientPlan).where(one_of(PatientPlan.id, unparsed))
        ):
            catalogue.parse(row)
    for plan_id, patient_id, version, standard_plan, valid_from in versions:
        applied = catalogue.version(plan_id, version, standard_plan, valid_from)
        context.plans.setdefault(patient_id, []).append(applied)
    pauses = select(PatientPause).where(one_of(PatientPause.patient_id, chunk))
    for pause in await session.scalars(pauses):
        context.pauses.setdefault(pause.patient_id, []).append(
            Pause(pause.reason, pause.starts_at, pause.ends_at)
        )


async def _load_vitals(
    session: AsyncSession, context: PatientContext, wanted: list[tuple[str, str, datetime]]
) -> None:
    """NEWS2's inputs within the window before each reading, for plans that score it."""
    since: dict[str, datetime] = {}
    for patient, type_key, effective in wanted:
        settings = context.plan_for(patient, effective).plan.news2
        if settings is None or type_key not in NEWS2_TYPES:
            continue
        start = effective - settings.window
        since[patient] = min(since.get(patient, start), start)
    if not since:
        return
    columns = (
        ObservationRow.patient_id,
        ObservationRow.id,
        ObservationRow.identity,
        ObservationRow.type,
        ObservationRow.effective,
        ObservationRow.value,
        ObservationRow.components,
    )
    for chunk in _chunks(sorted(since)):
        rows = await session.execute(
            select(*columns).where(
                one_of(ObservationRow.patient_id, chunk),
                one_of(ObservationRow.type, NEWS2_TYPES),
                ObservationRow.effective >= min(since.values()),
            )
        )
        for patient, oid, identity, type_key, effective, value, components in rows:
            number = jsonutil.loads(components).get("systolic") if components else value
            if number is not None and effective >= since[patient]:
                reading = news2_inputs.Reading(oid, type_key, effective, Decimal(str(number)))
                context.remember_vital(patient, identity, reading)


async def _load_history(
    session: AsyncSession,
    context: PatientContext,
    wanted: list[tuple[str, str, datetime]],
    stamps: dict[str, int | None],
    history: HistoryCache | None,
) -> None:
    """Readings of each trended type back to the longest look-back its rules need."""
    since: dict[tuple[str, str], datetime] = {}
    for patient, type_key, effective in wanted:
        plan = context.plan_for(patient, effective).plan
        looked = plan.lookbacks.get(type_key)
        if looked is None:
            continue
        start = effective - looked
        key = (patient, type_key)
        since[key] = min(since.get(key, start), start)
        context.history.setdefault(key, _EMPTY)
    if history is not None:
        for key, start in list(since.items()):
            cached = history.get(key[0], stamps.get(key[0]), key[1], start)
            if cached is not None:
                context.history[key] = cached
                del since[key]
    if not since:
        return
    earliest: dict[str, datetime] = {}
    for (_, type_key), start in since.items():
        earliest[type_key] = min(earliest.get(type_key, start), start)
    columns = (
        ObservationRow.patient_id,
        ObservationRow.type,
        ObservationRow.identity,
        ObservationRow.effective,
        ObservationRow.value,
    )
    found: dict[tuple[str, str], list[Reading]] = {}
    for type_key, start in sorted(earliest.items()):
        patients = sorted({p for p, t in since if t == type_key})
        for chunk in _chunks(patients):
            rows = await session.execute(
                select(*columns).where(
                    one_of(ObservationRow.patient_id, chunk),
                    ObservationRow.type == type_key,
                    ObservationRow.effective >= start,
                    ObservationRow.value.is_not(None),
                )
            )
            _add_rows(found, since, rows)
    for key in since:
        context.history[key] = History.of(found.get(key, ()))
        if history is not None:
            history.put(key[0], stamps.get(key[0]), key[1], since[key], context.history[key])


def _add_rows(
    found: dict[tuple[str, str], list[Reading]],
    since: dict[tuple[str, str], datetime],
    rows: Iterable[Any],
) -> None:
    """Stored readings (each identity once) of the wanted histories, in any order."""
    for patient, type_key, identity, effective, value in rows:
        key = (patient, type_key)
        if key in since and effective >= since[key]:
            reading = Reading(effective, Decimal(str(value)), identity)
            found.setdefault(key, []).append(reading)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
