"""Patients' plans and pauses in the database: a new plan version, a pause, a pause ended.

A plan version starts as a copy of a standard plan (or a whole plan document), changed by
dotted-path adjustments, checked like the standard plans, and stored with who wrote it,
who approved it (HPR numbers) and from when it applies. Versions are never changed.
"""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import yaml
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.db.models import Patient, PatientPause, PatientPlan
from dho.rules.history_cache import new_stamp
from dho.rules.patient_context import PlanCatalogue
from dho.rules.plans import PlanError, plan_from_document

HPR = re.compile(r"^[0-9]{6,9}$")
PAUSE_REASONS = ("admitted", "holiday", "other")
LONGEST_PAUSE = timedelta(days=366)


class PlanStoreError(ValueError):
    """A plan or pause request that cannot be stored; the message says why."""


@dataclass(frozen=True, slots=True)
class PlanRequest:
    standard: str
    author_hpr: str
    approver_hpr: str
    valid_from: datetime
    adjustments: dict[str, Any] | None = None  # dotted path -> value
    document: dict[str, Any] | None = None  # a whole plan instead of the standard's copy
    note: str | None = None


async def add_plan_version(
    session: AsyncSession, catalogue: PlanCatalogue, patient_id: str, request: PlanRequest
) -> PatientPlan:
    """Store the patient's next plan version (no commit)."""
    await _patient(session, patient_id)
    for role, number in (("author", request.author_hpr), ("approver", request.approver_hpr)):
        if not HPR.fullmatch(number):
            raise PlanStoreError(f"{role} HPR number {number!r} must be 6 to 9 digits")
    if request.valid_from.tzinfo is None:
        raise PlanStoreError("valid_from needs a time zone")
    if request.standard not in catalogue.standard:
        known = ", ".join(sorted(catalogue.standard))
        raise PlanStoreError(f"unknown standard plan {request.standard!r} (known: {known})")
    document = copy.deepcopy(request.document) if request.document is not None else None
    if document is None:
        source = catalogue.config_dir / "plans" / f"{request.standard}.yaml"
        document = yaml.safe_load(source.read_text(encoding="utf-8"))
    for path, value in (request.adjustments or {}).items():
        _set(document, path, value)
    try:
        plan_from_document(
            document,
            f"plan for {patient_id}",
            catalogue.config_dir,
            catalogue.types,
            catalogue.limits,
        )
    except PlanError as exc:
        raise PlanStoreError(str(exc)) from exc
    latest = await session.scalar(
        select(func.max(PatientPlan.version)).where(PatientPlan.patient_id == patient_id)
    )
    row = PatientPlan(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        version=(latest or 0) + 1,
        standard_plan=request.standard,
        content=jsonutil.dumps(document),
        author_hpr=request.author_hpr,
        approver_hpr=request.approver_hpr,
        valid_from=request.valid_from,
        note=request.note,
    )
    session.add(row)
    await session.flush()
    await _changed(session, patient_id)
    return row


async def plan_versions(session: AsyncSession, patient_id: str) -> list[PatientPlan]:
    await _patient(session, patient_id)
    query = select(PatientPlan).where(PatientPlan.patient_id == patient_id)
    return list(await session.scalars(query.order_by(PatientPlan.version)))


async def add_pause(
    session: AsyncSession,
    patient_id: str,
    *,
    reason: str,
    starts_at: datetime,
    ends_at: datetime,
    by: str,
    note: str | None = None,
) -> PatientPause:
    """Pause the patient's alerts from `starts_at` until `ends_at` (no commit)."""
    await _patient(session, patient_id)
    if reason not in PAUSE_REASONS:
        raise PlanStoreError(f"reason must be one of {', '.join(PAUSE_REASONS)}")
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise PlanStoreError("a pause's start and end need a time zone")
    if not starts_at < ends_at <= starts_at + LONGEST_PAUSE:
        raise PlanStoreError("a pause must end after it starts, within a year")
    if not by.strip():
        raise PlanStoreError("say who pauses the patient")
    row = PatientPause(
        id=str(uuid.uuid4()),
        patient_id=patient_id,
        reason=reason,
        note=note,
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=by,
    )
    session.add(row)
    await session.flush()
    await _changed(session, patient_id)
    return row


async def end_pauses(session: AsyncSession, patient_id: str, at: datetime) -> int:
    """End the patient's pauses running at `at` (no commit); how many were running."""
    await _patient(session, patient_id)
    running = await session.scalars(
        select(PatientPause).where(
            PatientPause.patient_id == patient_id,
            PatientPause.starts_at <= at,
            PatientPause.ends_at > at,
        )
    )
    count = 0
    for pause in running:
        pause.ends_at = at
        count += 1
    await session.flush()
    await _changed(session, patient_id)
    return count


async def pauses(session: AsyncSession, patient_id: str) -> list[PatientPause]:
    await _patient(session, patient_id)
    query = select(PatientPause).where(PatientPause.patient_id == patient_id)
    return list(await session.scalars(query.order_by(PatientPause.starts_at)))


async def _changed(session: AsyncSession, patient_id: str) -> None:
    """A new care stamp: every process reads the patient's plans and pauses again."""
    stamp = new_stamp()
    await session.execute(update(Patient).where(Patient.id == patient_id).values(care_stamp=stamp))


async def _patient(session: AsyncSession, patient_id: str) -> None:
    if await session.get(Patient, patient_id) is None:
        raise LookupError(f"no patient {patient_id}")


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a nested document (creating sections), or remove it for None."""
    keys = path.split(".")
    if not all(keys):
        raise PlanStoreError(f"adjustment {path!r} is not a dotted path")
    node = document
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise PlanStoreError(f"adjustment {path!r}: {key!r} is not a section")
        node = child
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
