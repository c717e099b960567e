"""FastAPI application factory; the lifespan starts and stops the runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dho import runtime
from dho.api import alerts, fhir, fhir_ingest, health, ingest, plans, quarantine
from dho.api.problems import operation_outcome, problem
from dho.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service's HTTP app; MQTT ingest, batching and delivery run in its lifespan."""
    chosen = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await runtime.start(chosen)
        try:
            yield
        finally:
            await runtime.stop(app.state.runtime)

    app = FastAPI(
        title="DHO integration service",
        version="0.1.0",
        summary="Home-monitoring measurements in, FHIR R4 Observations and alerts out.",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(fhir_ingest.router)
    app.include_router(fhir.router)
    app.include_router(alerts.router)
    app.include_router(quarantine.router)
    app.include_router(plans.router)
    return app


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """Bad parameters: an OperationOutcome under /fhir, problem JSON elsewhere."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = (
        "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
            for err in errors
        )
        or "invalid request"
    )
    if request.url.path.startswith("/fhir"):
        return operation_outcome(400, detail)
    return problem(400, "invalid-request", "Invalid request", detail)
