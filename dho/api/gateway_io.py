"""What every gateway write endpoint does before and after the pipeline.

Authenticate the gateway key (401), apply its rate limit (429 with Retry-After), read the
body within the size limit (413), and wait for the commit (503 with Retry-After when it
cannot happen in time). Endpoints turn a `Refusal` into problem JSON or an
OperationOutcome.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from dho.api.deps import bearer_token, runtime
from dho.db.models import Gateway
from dho.ingest.batcher import BatcherStopped
from dho.ingest.failures import is_infrastructure_error
from dho.ingest.measurement import RawMessage
from dho.ingest.plan import MessageResult
from dho.registry.gateways import authenticate

RESEND = "send it again: re-sends are de-duplicated"


def rejection_status(reason: str | None) -> int:
    """The HTTP status of a message refused whole: too large, not authorised, or bad data."""
    return {"oversized": 413, "not-authorised": 403}.get(reason or "", 422)


@dataclass
class Refusal(Exception):
    """An answer before anything was stored."""

    status: int
    code: str
    title: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


async def gateway_of(request: Request, db: AsyncSession) -> Gateway:
    """The gateway whose key the request carries, within its rate limit."""
    token = bearer_token(request)
    try:
        gateway = await authenticate(db, token) if token else None
    except Exception as exc:
        if not is_infrastructure_error(exc):
            raise
        raise _unavailable("the database is unreachable") from exc
    finally:
        await db.close()
    if gateway is None:
        raise Refusal(401, "unauthorized", "Unauthorized", "a valid gateway key is required")
    wait = runtime(request).rate_limiter.retry_after(gateway.id)
    if wait:
        raise Refusal(
            429,
            "rate-limited",
            "Too many requests",
            f"gateway {gateway.id} sends faster than this service accepts; wait {wait} s",
            {"Retry-After": str(wait)},
        )
    return gateway


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it passes the size limit."""
    limit = runtime(request).settings.max_message_bytes
    declared = request.headers.get("content-length")
    too_large = Refusal(413, "too-large", "Message too large", f"the limit is {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def raw_message(
    gateway: Gateway, adapter: str, path: str, body: bytes, message_id: str | None
) -> RawMessage:
    return RawMessage(
        payload=body,
        transport="http",
        topic=path,
        gateway=gateway.id,
        adapter=adapter,
        received_at=datetime.now(UTC),
        message_id=message_id,
    )


async def submit(request: Request, raw: RawMessage) -> MessageResult:
    """The committed result, or a 503 Refusal when it cannot be committed in time."""
    rt = runtime(request)
    try:
        return await asyncio.wait_for(
            asyncio.shield(rt.batcher.submit(raw)), rt.settings.http_ingest_timeout_s
        )
    except BatcherStopped as exc:
        raise _unavailable("the service is shutting down") from exc
    except TimeoutError as exc:
        raise _unavailable("the message is not stored yet (database slow or unreachable)") from exc


def _unavailable(why: str) -> Refusal:
    return Refusal(503, "unavailable", "Not stored", f"{why}; {RESEND}", {"Retry-After": "5"})
