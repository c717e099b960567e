"""FHIR R4 read API (first part): Observation read and search by patient.

Stored resource text is returned as it is: never re-serialised, so decimals keep their
precision. The searchset Bundle is assembled around those texts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.api.deps import read_access_allowed, runtime, session
from dho.api.problems import FHIR_JSON, operation_outcome
from dho.db.models import ObservationRow

router = APIRouter(prefix="/fhir", tags=["fhir"])

ID_PATTERN = r"^[A-Za-z0-9\-\.]{1,64}$"


@router.get("/Observation/{observation_id}")
async def read_observation(
    request: Request,
    observation_id: Annotated[str, Path(pattern=ID_PATTERN)],
    db: Annotated[AsyncSession, Depends(session)],
) -> Response:
    if not read_access_allowed(request):
        return operation_outcome(401, "a valid bearer token is required")
    row = await db.get(ObservationRow, observation_id)
    if row is None:
        return operation_outcome(404, f"Observation/{observation_id} is not known")
    etag = f'W/"{row.version_id}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    headers = {"ETag": etag, "Last-Modified": format_datetime(row.last_updated, usegmt=True)}
    return Response(row.resource, media_type=FHIR_JSON, headers=headers)


@router.get("/Observation")
async def search_observations(
    request: Request,
    db: Annotated[AsyncSession, Depends(session)],
    patient: Annotated[str, Query(pattern=r"^(Patient/)?[A-Za-z0-9\-\.]{1,64}$")],
    count: Annotated[int, Query(alias="_count", ge=0, le=500)] = 50,
) -> Response:
    """Observations of one patient, newest effective time first."""
    if not read_access_allowed(request):
        return operation_outcome(401, "a valid bearer token is required")
    patient_id = patient.removeprefix("Patient/")
    condition = ObservationRow.patient_id == patient_id
    total = await db.scalar(select(func.count()).select_from(ObservationRow).where(condition))
    rows = (
        await db.execute(
            select(ObservationRow.id, ObservationRow.resource)
            .where(condition)
            .order_by(ObservationRow.effective.desc(), ObservationRow.id)
            .limit(count)
        )
    ).all()
    base = runtime(request).settings.base_url + "/fhir"
    head = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds")},
        "type": "searchset",
        "total": total or 0,
        "link": [
            {"relation": "self", "url": f"{base}/Observation?patient={patient_id}&_count={count}"}
        ],
    }
    entries = ",".join(
        f'{{"fullUrl":{jsonutil.dumps(f"{base}/Observation/{oid}")},"resource":{text},'
        '"search":{"mode":"match"}}'
        for oid, text in rows
    )
    body = jsonutil.dumps(head)[:-1] + f',"entry":[{entries}]}}' if rows else jsonutil.dumps(head)
    return Response(body, media_type=FHIR_JSON)
