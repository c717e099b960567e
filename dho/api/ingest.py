"""HTTP transport: `POST /ingest/{adapter}` with a gateway key; the answer after the commit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from dho.api import hl7_ack
from dho.api.deps import runtime, session
from dho.api.gateway_io import (
    Refusal,
    gateway_of,
    raw_message,
    read_body,
    rejection_status,
    submit,
)
from dho.api.problems import problem
from dho.ingest.plan import MessageResult
from dho.ingest.receipts import receipt

router = APIRouter(tags=["ingest"])


@router.post("/ingest/{adapter}", status_code=202)
async def ingest(
    request: Request,
    adapter: Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")],
    db: Annotated[AsyncSession, Depends(session)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Store a gateway's message and answer with a receipt per measurement."""
    rt = runtime(request)
    body = b""  # read once the key, rate and adapter are right
    try:
        gateway = await gateway_of(request, db)
        if adapter not in rt.reference.adapters.names():
            raise Refusal(
                404, "unknown-adapter", "Unknown adapter", f"no adapter named {adapter!r}"
            )
        body = await read_body(request)
        raw = raw_message(gateway, adapter, f"/ingest/{adapter}", body, idempotency_key)
        result = await submit(request, raw)
    except Refusal as refusal:
        if hl7_ack.answers_with_ack(rt.reference.adapters, adapter):
            return hl7_ack.refusal(refusal, body)
        response = problem(refusal.status, refusal.code, refusal.title, refusal.detail)
        response.headers.update(refusal.headers)
        return response
    if hl7_ack.answers_with_ack(rt.reference.adapters, adapter):
        return hl7_ack.response(body, result)
    return _answer(result)


def _answer(result: MessageResult) -> JSONResponse:
    if result.status == "rejected" or result.not_authorised:
        return _rejected(result)
    return JSONResponse(receipt(result), status_code=200 if result.status == "duplicate" else 202)


def _rejected(result: MessageResult) -> JSONResponse:
    """The whole message quarantined: 413 too big, 403 not authorised, 422 otherwise."""
    status = rejection_status(result.reason)
    if result.status == "accepted":  # stored, but every item was refused as not authorised
        status, problem_type = 403, "not-authorised"
        reason_code, detail = result.items[0].reason_code, result.items[0].detail or ""
    else:
        problem_type = reason_code = result.reason_code or "invalid-data"
        detail = result.detail or ""
    return problem(
        status,
        problem_type,
        "Message rejected",
        detail or "the message could not be processed",
        reason=result.reason or "not-authorised",
        reason_code=reason_code,
        quarantined=True,
        raw_message_id=result.raw_message_id,
        measurements=receipt(result)["measurements"],
    )
