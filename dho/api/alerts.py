"""The alert list for staff and integrations (the full workflow API comes later)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.api.deps import read_access_allowed, session
from dho.api.problems import problem
from dho.db.models import Alert

router = APIRouter(prefix="/api", tags=["alerts"])


@router.get("/alerts")
async def list_alerts(
    request: Request,
    db: Annotated[AsyncSession, Depends(session)],
    status: Annotated[str | None, Query(max_length=32)] = None,
    patient: Annotated[str | None, Query(max_length=72)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Alerts, newest first; filter by status or patient."""
    if not read_access_allowed(request):
        return problem(401, "unauthorized", "Unauthorized", "a valid read API token is required")
    query = select(Alert).order_by(Alert.created_at.desc(), Alert.id).limit(limit)
    if status:
        query = query.where(Alert.status == status)
    if patient:
        query = query.where(Alert.patient_id == patient.removeprefix("Patient/"))
    rows = (await db.scalars(query)).all()
    return JSONResponse({"alerts": [_alert_json(a) for a in rows]})


def _alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "rule": alert.rule,
        "severity": alert.severity,
        "status": alert.status,
        "open": alert.open_key is not None,
        "summary": alert.summary,
        "details": jsonutil.loads(alert.details),
        "patient": f"Patient/{alert.patient_id}" if alert.patient_id else None,
        "gateway": alert.gateway_id,
        "device": f"Device/{alert.device_id}" if alert.device_id else None,
        "observation": f"Observation/{alert.observation_id}" if alert.observation_id else None,
        "plan": {"id": alert.plan_id, "version": alert.plan_version} if alert.plan_id else None,
        "created": alert.created_at.isoformat(timespec="milliseconds"),
        "updated": alert.updated_at.isoformat(timespec="milliseconds"),
    }
