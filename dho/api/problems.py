"""Error answers: problem JSON (RFC 9457) for the service API, OperationOutcome for FHIR."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

PROBLEM_BASE = "https://dho.example.no/problems/"
FHIR_JSON = "application/fhir+json"

_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 413: "too-long"}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="dho"'} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def operation_outcome(status: int, diagnostics: str, code: str | None = None) -> JSONResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": code or _ISSUE_CODES.get(status, "processing"),
                "diagnostics": diagnostics,
            }
        ],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)
