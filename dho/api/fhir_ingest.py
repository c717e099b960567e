"""FHIR write API for gateways: `POST /fhir/Observation` and `POST /fhir` (batch, transaction).

The adapter `phd-fhir` reads the resources (`adapters/phd-fhir.yaml`). Answers follow the
FHIR R4 REST rules; stored Observations are returned as their stored text, never
re-serialised. Only JSON is accepted: FHIR XML is not supported (415).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.api.deps import runtime, session
from dho.api.gateway_io import (
    Refusal,
    gateway_of,
    raw_message,
    read_body,
    rejection_status,
    submit,
)
from dho.api.problems import FHIR_JSON, operation_outcome
from dho.db.models import ObservationRow
from dho.ingest.errors import DataError
from dho.ingest.measurement import RawMessage
from dho.ingest.payload import parse_json
from dho.ingest.plan import ItemResult, MessageResult

router = APIRouter(prefix="/fhir", tags=["fhir-ingest"])

ADAPTER = "phd-fhir"
MEDIA_TYPES = ("application/fhir+json", "application/json")
RAW_MESSAGE_EXTENSION = "https://dho.example.no/fhir/StructureDefinition/raw-message-id"
REASON_SYSTEM = "https://dho.example.no/fhir/CodeSystem/ingest-reason"
_REFUSAL_ISSUES = {400: "invalid", 415: "not-supported", 429: "throttled", 503: "transient"}
_REASON_ISSUES = {
    "unparseable": "structure",
    "unknown-adapter": "not-supported",
    "unknown-device": "not-found",
    "not-authorised": "forbidden",
    "implausible": "business-rule",
    "future": "business-rule",
    "mapping-error": "processing",
    "oversized": "too-long",
    "processing-error": "exception",
}
_HTTP_STATUS = {
    200: "200 OK",
    201: "201 Created",
    403: "403 Forbidden",
    413: "413 Payload Too Large",
    422: "422 Unprocessable Entity",
}

_ALREADY = "this message was received before: nothing was stored again"

IdempotencyKey = Annotated[str | None, Header(max_length=200)]


@router.post("/Observation")
async def create_observation(
    request: Request,
    db: Annotated[AsyncSession, Depends(session)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Store one Observation: 201 with the stored resource, 200 when it was stored before."""
    try:
        raw = await _received(request, db, "/fhir/Observation", "Observation", idempotency_key)
        result = await submit(request, raw)
    except Refusal as refusal:
        return _refused(refusal)
    if result.status == "rejected":
        return _rejected(result)
    if result.status == "duplicate":
        return _outcome(200, [_issue("information", "duplicate", _ALREADY)], result)
    [item] = result.items
    if item.status == "quarantined":
        return _outcome(_refused_status(item), [_item_issue(item)], result)
    if item.observation_id is None:
        note = item.note or "nothing to store"
        return _outcome(200, [_issue("information", "informational", note)], result)
    return await _stored_observation(request, db, item)


@router.post("")
async def batch_or_transaction(
    request: Request,
    db: Annotated[AsyncSession, Depends(session)],
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A batch (each entry on its own) or a transaction (all or nothing) of PHD resources."""
    try:
        raw = await _received(request, db, "/fhir", "Bundle", idempotency_key)
        result = await submit(request, raw)
    except Refusal as refusal:
        return _refused(refusal)
    if result.status == "rejected":
        return _rejected(result)
    kind = "transaction" if result.kind == "transaction" else "batch"
    if result.status == "duplicate":
        outcome = _outcome_body([_issue("information", "duplicate", _ALREADY)], result)
        entries = [{"response": {"status": "200 OK", "outcome": outcome}}] * _entry_count(raw)
        return _json(200, _response_bundle(kind, entries))
    modified = await _last_modified(db, [i.observation_id for i in result.items])
    entries = [{"response": _response(item, modified, result)} for item in result.items]
    return _json(200, _response_bundle(kind, entries))


async def _received(
    request: Request, db: AsyncSession, path: str, expected: str, message_id: str | None
) -> RawMessage:
    """The request as a raw message, once key, media type, size and resource type are right."""
    gateway = await gateway_of(request, db)
    _check_media_type(request.headers.get("content-type"))
    body = await read_body(request)
    _check_resource_type(body, path, expected)
    return raw_message(gateway, ADAPTER, path, body, message_id)


def _check_media_type(header: str | None) -> None:
    media, *params = (header or "").split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() not in MEDIA_TYPES or charset not in (None, "utf-8", "utf8"):
        raise Refusal(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send FHIR JSON as application/fhir+json or application/json in UTF-8; "
            "FHIR XML is not supported",
        )


def _check_resource_type(body: bytes, path: str, expected: str) -> None:
    """A resource of another type is refused (400) unstored; unreadable bodies are quarantined."""
    try:
        document = parse_json(body)
    except DataError:
        return
    found = document.get("resourceType") if isinstance(document, dict) else None
    if isinstance(found, str) and found != expected:
        raise Refusal(
            400,
            "wrong-resource-type",
            "Wrong resource type",
            f"POST {path} takes {_article(expected)} {expected}, "
            f"not {_article(found)} {found[:64]}",
        )


def _article(word: str) -> str:
    return "an" if word[:1] in "AEIOU" else "a"


async def _stored_observation(request: Request, db: AsyncSession, item: ItemResult) -> Response:
    row = await db.get(ObservationRow, item.observation_id)
    if row is None:  # stored in the committed transaction: only a concurrent purge removes it
        return operation_outcome(500, f"Observation/{item.observation_id} cannot be read back")
    created = item.status == "accepted" and not item.amended
    base = runtime(request).settings.base_url.rstrip("/")
    headers = {
        "Location": f"{base}/fhir/Observation/{row.id}/_history/{row.version_id}",
        "ETag": f'W/"{row.version_id}"',
        "Last-Modified": format_datetime(row.last_updated, usegmt=True),
    }
    return Response(
        row.resource, status_code=201 if created else 200, media_type=FHIR_JSON, headers=headers
    )


async def _last_modified(db: AsyncSession, ids: list[str | None]) -> dict[str, datetime]:
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    rows = await db.execute(
        select(ObservationRow.id, ObservationRow.last_updated).where(ObservationRow.id.in_(wanted))
    )
    return {oid: updated for oid, updated in rows}


def _response(
    item: ItemResult, modified: dict[str, datetime], result: MessageResult
) -> dict[str, Any]:
    """One Bundle.entry.response: what became of the request entry at the same position."""
    if item.status in ("accepted", "duplicate") and item.observation_id is not None:
        created = item.status == "accepted" and not item.amended
        response: dict[str, Any] = {
            "status": _HTTP_STATUS[201 if created else 200],
            "location": f"Observation/{item.observation_id}/_history/{item.version_id}",
            "etag": f'W/"{item.version_id}"',
        }
        if item.observation_id in modified:
            response["lastModified"] = _instant(modified[item.observation_id])
        notes = _time_notes(item)
        if notes:
            response["outcome"] = _outcome_body(notes)
        return response
    if item.status == "matched":
        return {"status": _HTTP_STATUS[200], "location": item.reference}
    if item.status == "ignored":
        note = _issue("information", "informational", item.note or "not stored", item.label)
        return {"status": _HTTP_STATUS[200], "outcome": _outcome_body([note])}
    status = _refused_status(item)
    return {"status": _HTTP_STATUS[status], "outcome": _outcome_body([_item_issue(item)], result)}


def _refused_status(item: ItemResult) -> int:
    """An entry refused: 403 when the gateway may not send it, else 422."""
    return 403 if item.reason == "not-authorised" else 422


def _time_notes(item: ItemResult) -> list[dict[str, Any]]:
    notes = []
    if item.time_flag:
        notes.append(_issue("information", "informational", f"time flag: {item.time_flag}"))
    if item.late:
        notes.append(
            _issue("information", "informational", "synced late: stored for trends, no alert")
        )
    return notes


def _rejected(result: MessageResult) -> JSONResponse:
    """Nothing stored but the raw message and its quarantine row: one issue per failing entry."""
    status = rejection_status(result.reason)
    issues = [_item_issue(item) for item in result.items if item.status == "quarantined"]
    if not issues:
        code = _REASON_ISSUES.get(result.reason or "", "processing")
        detail = result.detail or "the message could not be processed"
        issues = [_issue("error", code, detail, reason_code=result.reason_code)]
    return _outcome(status, issues, result)


def _item_issue(item: ItemResult) -> dict[str, Any]:
    code = _REASON_ISSUES.get(item.reason or "", "processing")
    detail = item.detail or "not stored"
    return _issue("error", code, detail, item.label or None, reason_code=item.reason_code)


def _issue(
    severity: str,
    code: str,
    diagnostics: str,
    expression: str | None = None,
    *,
    reason_code: str | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code}
    if reason_code:
        issue["details"] = {"coding": [{"system": REASON_SYSTEM, "code": reason_code}]}
    issue["diagnostics"] = diagnostics
    if expression:
        issue["expression"] = [expression]
    return issue


def _outcome_body(
    issues: list[dict[str, Any]], result: MessageResult | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if result is not None and result.raw_message_id is not None:
        body["extension"] = [
            {"url": RAW_MESSAGE_EXTENSION, "valueString": str(result.raw_message_id)}
        ]
    body["issue"] = issues
    return body


def _outcome(status: int, issues: list[dict[str, Any]], result: MessageResult) -> JSONResponse:
    return _json(status, _outcome_body(issues, result))


def _refused(refusal: Refusal) -> JSONResponse:
    response = operation_outcome(
        refusal.status, refusal.detail, _REFUSAL_ISSUES.get(refusal.status)
    )
    response.headers.update(refusal.headers)
    if refusal.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dho"'
    return response


def _response_bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch- or transaction-response; no `entry` when empty (FHIR JSON has no `[]`)."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": _instant(datetime.now(UTC))},
        "type": f"{kind}-response",
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry_count(raw: RawMessage) -> int:
    """How many entries the request had (a duplicate's answer has one per entry, at least one)."""
    try:
        document = jsonutil.loads(raw.payload)
    except ValueError:
        return 1
    entries = document.get("entry") if isinstance(document, dict) else None
    return max(1, len(entries)) if isinstance(entries, list) else 1


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _json(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)
