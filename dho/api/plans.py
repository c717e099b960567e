"""Patients' plans and pauses, over HTTP: the plan versions, a new version, pause, resume."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.api.deps import admin_access_allowed, read_access_allowed, runtime, session
from dho.api.problems import problem
from dho.db.models import PatientPause, PatientPlan
from dho.rules import plan_store
from dho.rules.plan_store import PlanRequest, PlanStoreError

router = APIRouter(prefix="/api/patients", tags=["plans"])
PatientId = Annotated[str, Path(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
Hpr = Annotated[str, Field(pattern=r"^[0-9]{6,9}$", description="HPR number")]


class NewPlan(BaseModel):
    """A new plan version: a standard plan copied and adjusted, approved by a clinician."""

    standard: str = Field(max_length=64, description="The standard plan it starts from.")
    author_hpr: Hpr
    approver_hpr: Hpr
    valid_from: AwareDatetime | None = Field(default=None, description="Default: now.")
    adjust: dict[str, Any] = Field(
        default_factory=dict,
        max_length=200,
        description="Dotted paths to set, e.g. measurements.body-weight.cut_points.red_high; "
        "null removes the entry.",
    )
    document: dict[str, Any] | None = Field(
        default=None, description="A whole plan in the standard plans' shape, instead."
    )
    note: str | None = Field(default=None, max_length=2000)


class NewPause(BaseModel):
    reason: str = Field(pattern="^(admitted|holiday|other)$")
    starts_at: AwareDatetime | None = Field(default=None, description="Default: now.")
    ends_at: AwareDatetime
    by: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


@router.get("/{patient_id}/plans")
async def list_plans(
    request: Request, patient_id: PatientId, db: Annotated[AsyncSession, Depends(session)]
) -> JSONResponse:
    """Every plan version of the patient, oldest first."""
    if not read_access_allowed(request):
        return _unauthorized()
    try:
        rows = await plan_store.plan_versions(db, patient_id)
    except LookupError as exc:
        return problem(404, "not-found", "Not found", str(exc))
    return JSONResponse({"plans": [plan_json(row) for row in rows]})


@router.post("/{patient_id}/plans")
async def create_plan(
    request: Request,
    patient_id: PatientId,
    body: NewPlan,
    db: Annotated[AsyncSession, Depends(session)],
) -> JSONResponse:
    """Store the next plan version; readings from `valid_from` on are judged by it."""
    if not admin_access_allowed(request):
        return _unauthorized()
    wanted = PlanRequest(
        standard=body.standard,
        author_hpr=body.author_hpr,
        approver_hpr=body.approver_hpr,
        valid_from=body.valid_from or datetime.now(UTC),
        adjustments=body.adjust,
        document=body.document,
        note=body.note,
    )
    catalogue = runtime(request).reference.plans
    try:
        async with db.begin():
            row = await plan_store.add_plan_version(db, catalogue, patient_id, wanted)
    except LookupError as exc:
        return problem(404, "not-found", "Not found", str(exc))
    except PlanStoreError as exc:
        return problem(422, "invalid-plan", "Invalid plan", str(exc))
    return JSONResponse(plan_json(row), status_code=201)


@router.get("/{patient_id}/pauses")
async def list_pauses(
    request: Request, patient_id: PatientId, db: Annotated[AsyncSession, Depends(session)]
) -> JSONResponse:
    if not read_access_allowed(request):
        return _unauthorized()
    try:
        rows = await plan_store.pauses(db, patient_id)
    except LookupError as exc:
        return problem(404, "not-found", "Not found", str(exc))
    return JSONResponse({"pauses": [pause_json(row) for row in rows]})


@router.post("/{patient_id}/pauses")
async def create_pause(
    request: Request,
    patient_id: PatientId,
    body: NewPause,
    db: Annotated[AsyncSession, Depends(session)],
) -> JSONResponse:
    """Pause the patient's alerts (data is still stored) until `ends_at`."""
    if not admin_access_allowed(request):
        return _unauthorized()
    try:
        async with db.begin():
            row = await plan_store.add_pause(
                db,
                patient_id,
                reason=body.reason,
                starts_at=body.starts_at or datetime.now(UTC),
                ends_at=body.ends_at,
                by=body.by,
                note=body.note,
            )
    except LookupError as exc:
        return problem(404, "not-found", "Not found", str(exc))
    except PlanStoreError as exc:
        return problem(422, "invalid-pause", "Invalid pause", str(exc))
    return JSONResponse(pause_json(row), status_code=201)


@router.post("/{patient_id}/resume")
async def resume(
    request: Request, patient_id: PatientId, db: Annotated[AsyncSession, Depends(session)]
) -> JSONResponse:
    """End the patient's running pause now: the rules apply again."""
    if not admin_access_allowed(request):
        return _unauthorized()
    try:
        async with db.begin():
            ended = await plan_store.end_pauses(db, patient_id, datetime.now(UTC))
    except LookupError as exc:
        return problem(404, "not-found", "Not found", str(exc))
    return JSONResponse({"ended": ended})


def plan_json(row: PatientPlan) -> dict[str, Any]:
    return {
        "id": row.id,
        "patient": f"Patient/{row.patient_id}",
        "version": row.version,
        "standard": row.standard_plan,
        "author_hpr": row.author_hpr,
        "approver_hpr": row.approver_hpr,
        "valid_from": row.valid_from.isoformat(),
        "note": row.note,
        "plan": jsonutil.loads(row.content),
    }


def pause_json(row: PatientPause) -> dict[str, Any]:
    return {
        "id": row.id,
        "patient": f"Patient/{row.patient_id}",
        "reason": row.reason,
        "starts_at": row.starts_at.isoformat(),
        "ends_at": row.ends_at.isoformat(),
        "by": row.created_by,
        "note": row.note,
    }


def _unauthorized() -> JSONResponse:
    return problem(401, "unauthorized", "Unauthorized", "a valid API token is required")
