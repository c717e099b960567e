"""Record stage, the only writer: one micro-batch's rows, in the caller's transaction."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.db.models import (
    Alert,
    ObservationRow,
    ObservationVersion,
    OutboxDelivery,
    Quarantine,
    RawMessage,
)
from dho.ingest.context import ExistingState, StoredObservation
from dho.ingest.errors import DataError
from dho.ingest.plan import ItemPlan, ItemResult, MessagePlan, MessageResult
from dho.rules.evaluate import Decision


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """A destination every new alert is delivered to (until routing decides per alert)."""

    channel: str
    target: str


@dataclass(slots=True)
class _Batch:
    session: AsyncSession
    existing: ExistingState
    targets: tuple[DeliveryTarget, ...]
    now: datetime


async def record(
    session: AsyncSession,
    plans: list[MessagePlan],
    existing: ExistingState,
    *,
    targets: tuple[DeliveryTarget, ...],
    now: datetime,
) -> list[MessageResult]:
    """Write raw messages, observations, alerts, deliveries and quarantine rows; no commit."""
    batch = _Batch(session, existing, targets, now)
    stored: list[tuple[MessagePlan, RawMessage | None]] = []
    for plan in plans:
        key = (plan.raw.gateway, plan.message_id) if plan.message_id else None
        if key is not None and key in existing.message_ids:
            stored.append((plan, None))
            continue
        if key is not None and plan.error is None:
            existing.message_ids.add(key)
        stored.append((plan, _raw_row(plan)))
    session.add_all([row for _, row in stored if row is not None])
    await session.flush()
    results: list[MessageResult] = []
    for plan, row in stored:
        if row is None:
            results.append(MessageResult("duplicate", plan.message_id, None))
        else:
            results.append(await _record_message(batch, plan, row))
    await session.flush()
    return results


def _raw_row(plan: MessagePlan) -> RawMessage:
    raw = plan.raw
    return RawMessage(
        transport=raw.transport,
        topic=raw.topic[:300],
        gateway_id=raw.gateway[:64],
        adapter=raw.adapter[:64],
        # A rejected message does not use up its id: the gateway may send it again, fixed.
        message_id=plan.message_id if plan.error is None else None,
        received_at=raw.received_at,
        payload=raw.payload,
    )


async def _record_message(batch: _Batch, plan: MessagePlan, row: RawMessage) -> MessageResult:
    if plan.error is not None:
        _quarantine(batch, row, None, plan.error)
        return MessageResult(
            "rejected", plan.message_id, row.id, reason_code=plan.error.code, reason=str(plan.error)
        )
    items = [await _record_item(batch, item, row) for item in plan.items]
    return MessageResult("accepted", plan.message_id, row.id, tuple(items))


async def _record_item(batch: _Batch, item: ItemPlan, row: RawMessage) -> ItemResult:
    if item.error is not None or item.resolved is None or item.observation is None:
        error = item.error or DataError("nothing to record", code="processing-error")
        _quarantine(batch, row, item.index, error)
        return ItemResult(item.index, "quarantined", reason_code=error.code, reason=str(error))
    identity = item.resolved.measurement.identity
    digest = _digest(item.observation)
    known = batch.existing.observations.get(identity)
    if known is not None and known.value_digest == digest:
        return ItemResult(item.index, "duplicate", known.id, known.version_id)
    version = 1 if known is None else known.version_id + 1
    resource = _with_meta(item.observation, version, batch.now)
    if known is None:
        _insert_observation(batch, item, row, resource, identity, digest)
    else:
        await _correct_observation(batch, known, row, resource, digest)
    batch.existing.observations[identity] = StoredObservation(resource["id"], version, digest)
    alert = await _raise_alert(batch, item, resource, is_new=known is None)
    return ItemResult(
        item.index,
        "created" if known is None else "corrected",
        resource["id"],
        version,
        alert.id if alert else None,
        alert.severity if alert else None,
    )


def _insert_observation(
    batch: _Batch,
    item: ItemPlan,
    row: RawMessage,
    resource: dict[str, Any],
    identity: str,
    digest: str,
) -> None:
    assert item.resolved is not None
    m = item.resolved.measurement
    text = jsonutil.dumps(resource)
    batch.session.add(
        ObservationRow(
            id=resource["id"],
            identity=identity,
            patient_id=item.resolved.patient_id,
            device_id=item.resolved.device_id,
            type=m.type,
            code=resource["code"]["coding"][0]["code"],
            effective=m.effective,
            last_updated=batch.now,
            version_id=1,
            value_digest=digest,
            raw_message_id=row.id,
            resource=text,
        )
    )
    batch.session.add(_version_row(resource["id"], 1, row, text, batch.now))


async def _correct_observation(
    batch: _Batch, known: StoredObservation, row: RawMessage, resource: dict[str, Any], digest: str
) -> None:
    """The same identity with another value: a new version of the same Observation."""
    text = jsonutil.dumps(resource)
    await batch.session.flush()
    await batch.session.execute(
        update(ObservationRow)
        .where(ObservationRow.id == known.id)
        .values(
            version_id=known.version_id + 1,
            value_digest=digest,
            last_updated=batch.now,
            raw_message_id=row.id,
            resource=text,
        )
    )
    batch.session.add(_version_row(known.id, known.version_id + 1, row, text, batch.now))


def _version_row(
    observation_id: str, version: int, row: RawMessage, text: str, now: datetime
) -> ObservationVersion:
    return ObservationVersion(
        observation_id=observation_id,
        version_id=version,
        last_updated=now,
        raw_message_id=row.id,
        resource=text,
    )


async def _raise_alert(
    batch: _Batch, item: ItemPlan, resource: dict[str, Any], *, is_new: bool
) -> Alert | None:
    if not item.decisions or item.resolved is None:
        return None
    decision = item.decisions[0]
    if not is_new and await _has_alert(batch.session, resource["id"], decision.kind):
        return None
    alert = Alert(
        id=str(uuid.uuid4()),
        kind=decision.kind,
        severity=decision.band.label,
        status="reported",
        patient_id=item.resolved.patient_id,
        observation_id=resource["id"],
        summary=decision.summary,
        details=jsonutil.dumps(decision.details),
        created_at=batch.now,
        updated_at=batch.now,
    )
    await batch.session.flush()
    batch.session.add(alert)
    for target in batch.targets:
        batch.session.add(_delivery(alert, decision, target, resource, batch.now))
    return alert


async def _has_alert(session: AsyncSession, observation_id: str, kind: str) -> bool:
    found = await session.scalar(
        select(Alert.id).where(Alert.observation_id == observation_id, Alert.kind == kind)
    )
    return found is not None


def _delivery(
    alert: Alert,
    decision: Decision,
    target: DeliveryTarget,
    resource: dict[str, Any],
    now: datetime,
) -> OutboxDelivery:
    delivery_id = str(uuid.uuid4())
    payload = {
        "event": "alert.created",
        "delivery_id": delivery_id,
        "alert": {
            "id": alert.id,
            "kind": alert.kind,
            "severity": alert.severity,
            "status": alert.status,
            "summary": alert.summary,
            "details": decision.details,
            "patient": f"Patient/{alert.patient_id}",
            "observation": f"Observation/{alert.observation_id}",
            "created": now.isoformat(timespec="milliseconds"),
        },
        "observation": resource,
    }
    return OutboxDelivery(
        id=delivery_id,
        alert_id=alert.id,
        channel=target.channel,
        target=target.target,
        payload=jsonutil.dumps(payload),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )


def _quarantine(batch: _Batch, row: RawMessage, index: int | None, error: DataError) -> None:
    batch.session.add(
        Quarantine(
            raw_message_id=row.id,
            item_index=index,
            reason_code=error.code,
            reason=str(error)[:2000],
            status="open",
            created_at=batch.now,
        )
    )


def _with_meta(observation: dict[str, Any], version: int, now: datetime) -> dict[str, Any]:
    meta = dict(observation.get("meta", {}))
    meta["versionId"] = str(version)
    meta["lastUpdated"] = now.isoformat(timespec="milliseconds")
    resource = {"resourceType": observation["resourceType"], "id": observation["id"], "meta": meta}
    resource.update((k, v) for k, v in observation.items() if k not in resource)
    return resource


def _digest(observation: dict[str, Any]) -> str:
    content = {k: observation.get(k) for k in ("valueQuantity", "component", "status")}
    return hashlib.sha256(jsonutil.dumps(content).encode()).hexdigest()
