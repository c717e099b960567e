"""The quarantine for operators: list, inspect, re-drive and discard, over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from dho.api.deps import admin_access_allowed, read_access_allowed, runtime, session
from dho.api.problems import problem
from dho.ingest import quarantine as store
from dho.ingest.errors import REASONS
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.ingest.reprocess import RowOutcome, redrive

router = APIRouter(prefix="/api/quarantine", tags=["quarantine"])
MAX_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
Reason = Annotated[str | None, Query(pattern="^(" + "|".join(REASONS) + ")$")]


class Operator(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="Who acts (recorded).")


class RedriveRequest(Operator):
    """Rows to re-drive: by id, or every open row of a reason (and gateway)."""

    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=1000)
    reason: str | None = Field(default=None, pattern="^(" + "|".join(REASONS) + ")$")
    gateway: str | None = Field(default=None, max_length=64)


class DiscardRequest(Operator):
    reason: str = Field(min_length=3, max_length=2000, description="Why (recorded).")


@router.get("")
async def list_quarantine(
    request: Request,
    db: Annotated[AsyncSession, Depends(session)],
    status: Annotated[str | None, Query(pattern="^(open|redriven|discarded|all)$")] = "open",
    reason: Reason = None,
    gateway: Annotated[str | None, Query(max_length=64)] = None,
    adapter: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Quarantine rows, newest first; page with `before` = the last id seen."""
    if not read_access_allowed(request):
        return _unauthorized()
    wanted = store.QuarantineFilter(
        status=None if status == "all" else status,
        reason=reason,
        gateway=gateway,
        adapter=adapter,
        before=before,
        limit=limit,
    )
    rows = await store.list_rows(db, wanted)
    return JSONResponse({"quarantine": [store.describe(q, r) for q, r in rows]})


@router.get("/{row_id}")
async def show_quarantine(
    request: Request, row_id: RowId, db: Annotated[AsyncSession, Depends(session)]
) -> JSONResponse:
    """One row with its raw message (text, or base64 when it is not UTF-8)."""
    if not read_access_allowed(request):
        return _unauthorized()
    found = await store.get_row(db, row_id)
    if found is None:
        return problem(404, "not-found", "Not found", f"no quarantine row {row_id}")
    return JSONResponse(store.describe(*found, with_payload=True))


@router.post("/redrive")
async def redrive_quarantine(
    request: Request, body: RedriveRequest, db: Annotated[AsyncSession, Depends(session)]
) -> JSONResponse:
    """Process rows again after the cause is fixed; each row's state afterwards."""
    if not admin_access_allowed(request):
        return _unauthorized()
    ids = list(body.ids)
    if body.reason is not None:
        wanted = store.QuarantineFilter(reason=body.reason, gateway=body.gateway, limit=1000)
        ids += await store.matching_ids(db, wanted)
    await db.close()
    if not ids:
        return problem(400, "nothing-to-redrive", "Nothing to re-drive", "give ids or a reason")
    rt = runtime(request)
    outcomes = await redrive(await _current_pipeline(request), rt.sessions, ids, body.by)
    return JSONResponse({"results": [_outcome(o) for o in outcomes]})


@router.post("/{row_id}/redrive")
async def redrive_one(request: Request, row_id: RowId, body: Operator) -> JSONResponse:
    """Re-drive one row."""
    if not admin_access_allowed(request):
        return _unauthorized()
    rt = runtime(request)
    outcomes = await redrive(await _current_pipeline(request), rt.sessions, [row_id], body.by)
    if not outcomes:
        return problem(404, "not-found", "Not found", f"no quarantine row {row_id}")
    return JSONResponse(_outcome(outcomes[0]))


@router.post("/{row_id}/discard")
async def discard_quarantine(
    request: Request,
    row_id: RowId,
    body: DiscardRequest,
    db: Annotated[AsyncSession, Depends(session)],
) -> JSONResponse:
    """Close an open row without storing its data; who and why are recorded."""
    if not admin_access_allowed(request):
        return _unauthorized()
    async with db.begin():
        closed = await store.discard(db, [row_id], body.by, body.reason, datetime.now(UTC))
    found = await store.get_row(db, row_id)
    if found is None:
        return problem(404, "not-found", "Not found", f"no quarantine row {row_id}")
    if not closed:
        return problem(409, "not-open", "Not open", f"quarantine row {row_id} is not open")
    return JSONResponse(store.describe(*found))


async def _current_pipeline(request: Request) -> Pipeline:
    """A pipeline with the adapter and catalogue files as they are now, so a fixed adapter
    is used by the re-drive at once (live ingest reads them again at the next start)."""
    rt = runtime(request)
    reference = await asyncio.to_thread(ReferenceData.load, rt.settings)
    return Pipeline(rt.settings, rt.sessions, reference)


def _outcome(outcome: RowOutcome) -> dict[str, object]:
    return {
        "id": outcome.id,
        "status": outcome.status,
        "reason": outcome.reason,
        "detail": outcome.detail,
        "resolution": outcome.resolution,
    }


def _unauthorized() -> JSONResponse:
    return problem(401, "unauthorized", "Unauthorized", "a valid API token is required")
