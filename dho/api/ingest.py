"""HTTP transport: `POST /ingest/{adapter}` with a gateway key; 202 after the commit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from dho.api.deps import bearer_token, runtime, session
from dho.api.problems import problem
from dho.ingest.batcher import BatcherStopped
from dho.ingest.failures import is_infrastructure_error
from dho.ingest.measurement import RawMessage
from dho.ingest.plan import ItemResult, MessageResult
from dho.registry.gateways import authenticate

router = APIRouter(tags=["ingest"])


class _TooLarge(Exception):
    pass


@router.post("/ingest/{adapter}", status_code=202)
async def ingest(
    request: Request,
    adapter: Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")],
    db: Annotated[AsyncSession, Depends(session)],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JSONResponse:
    """Store a gateway's message and answer with a receipt per measurement."""
    rt = runtime(request)
    token = bearer_token(request)
    try:
        gateway = await authenticate(db, token) if token else None
    except Exception as exc:
        if not is_infrastructure_error(exc):
            raise
        return _unavailable("the database is unreachable")
    finally:
        await db.close()
    if gateway is None:
        return problem(401, "unauthorized", "Unauthorized", "a valid gateway key is required")
    if adapter not in rt.reference.adapters.names():
        return problem(404, "unknown-adapter", "Unknown adapter", f"no adapter named {adapter!r}")
    limit = rt.settings.max_message_bytes
    try:
        body = await _read_body(request, limit)
    except _TooLarge:
        return problem(413, "too-large", "Message too large", f"the limit is {limit} bytes")
    raw = RawMessage(
        payload=body,
        transport="http",
        topic=f"/ingest/{adapter}",
        gateway=gateway.id,
        adapter=adapter,
        received_at=datetime.now(UTC),
        message_id=idempotency_key,
    )
    try:
        result = await asyncio.wait_for(
            asyncio.shield(rt.batcher.submit(raw)), rt.settings.http_ingest_timeout_s
        )
    except BatcherStopped:
        return _unavailable("the service is shutting down")
    except TimeoutError:
        return _unavailable("the message is not stored yet (database slow or unreachable)")
    return _answer(result)


def _unavailable(why: str) -> JSONResponse:
    response = problem(
        503, "unavailable", "Not stored", f"{why}; send it again: re-sends are de-duplicated"
    )
    response.headers["Retry-After"] = "5"
    return response


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(result: MessageResult) -> JSONResponse:
    if result.status == "rejected" or result.not_authorised:
        return _rejected(result)
    body: dict[str, Any] = {
        "status": result.status,
        "message_id": result.message_id,
        "raw_message_id": result.raw_message_id,
        "measurements": [receipt_item(item) for item in result.items],
    }
    return JSONResponse(body, status_code=200 if result.status == "duplicate" else 202)


def _rejected(result: MessageResult) -> JSONResponse:
    """The whole message quarantined: 413 too big, 403 not authorised, 422 otherwise."""
    status = {"oversized": 413, "not-authorised": 403}.get(result.reason or "", 422)
    if result.status == "accepted":  # stored, but every item was refused as not authorised
        status, code, detail = 403, "not-authorised", result.items[0].detail or ""
    else:
        code, detail = result.reason_code or "invalid-data", result.detail or ""
    return problem(
        status,
        code,
        "Message rejected",
        detail or "the message could not be processed",
        reason=result.reason or "not-authorised",
        quarantined=True,
        raw_message_id=result.raw_message_id,
        measurements=[receipt_item(item) for item in result.items if item.status != "not-stored"],
    )


def receipt_item(item: ItemResult) -> dict[str, Any]:
    """One item of a receipt, as HTTP answers and MQTT receipts show it."""
    out: dict[str, Any] = {"index": item.index, "status": item.status}
    if item.observation_id:
        out["observation"] = f"Observation/{item.observation_id}"
        out["version"] = item.version_id
        if item.amended:
            out["amended"] = True
    if item.reference:
        out["reference"] = item.reference
    if item.late:
        out["late"] = True
    if item.time_flag:
        out["time_flag"] = item.time_flag
    if item.alert_id:
        out["alert"] = {"id": item.alert_id, "severity": item.alert_severity}
    if item.reason:
        out["reason"] = item.reason
        out["reason_code"] = item.reason_code
        out["detail"] = item.detail
    return out
