"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dho.api.deps import runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The database answers and the MQTT listener is connected."""
    rt = runtime(request)
    checks = {
        "database": "ok" if await rt.database_ready() else "unreachable",
        "mqtt": "ok" if rt.broker_ready() else "not subscribed",
        "workers": "ok" if rt.ingest_running() else "stopped",
    }
    ready = all(v == "ok" for v in checks.values())
    stats = rt.batcher.stats
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "ingest": {"batches": stats.batches, "messages": stats.messages, "retries": stats.retries},
    }
    return JSONResponse(body, status_code=200 if ready else 503)
