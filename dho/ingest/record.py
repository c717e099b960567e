"""Record stage, the only writer: one micro-batch's rows, in the caller's transaction.

Rows are collected first and written with one multi-row INSERT per table, in foreign-key
order: raw messages, observations and their versions, alerts, deliveries, quarantine.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
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
class _Rows:
    """Everything one batch will insert, per table."""

    observations: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Batch:
    session: AsyncSession
    existing: ExistingState
    targets: tuple[DeliveryTarget, ...]
    now: datetime
    rows: _Rows = field(default_factory=_Rows)
    # Rows of this batch not inserted yet, for a reading corrected within the same batch.
    pending_observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_alerts: set[tuple[str, str]] = field(default_factory=set)


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
    fresh = [plan for plan in plans if not _seen_before(plan, existing)]
    raw_ids = await _insert_raw(session, fresh)
    raw_id_of = {id(plan): raw_id for plan, raw_id in zip(fresh, raw_ids, strict=True)}
    results: list[MessageResult] = []
    for plan in plans:
        raw_id = raw_id_of.get(id(plan))
        if raw_id is None:
            results.append(MessageResult("duplicate", plan.message_id, None))
        else:
            results.append(await _record_message(batch, plan, raw_id))
    await _insert_rows(session, batch.rows)
    return results


def _seen_before(plan: MessagePlan, existing: ExistingState) -> bool:
    """Whether the gateway sent this message id before (or earlier in this batch)."""
    if not plan.message_id:
        return False
    key = (plan.raw.gateway, plan.message_id)
    if key in existing.message_ids:
        return True
    if plan.error is None:  # a rejected message does not use up its id
        existing.message_ids.add(key)
    return False


async def _insert_raw(session: AsyncSession, plans: list[MessagePlan]) -> list[int]:
    if not plans:
        return []
    rows = [
        {
            "transport": plan.raw.transport,
            "topic": plan.raw.topic[:300],
            "gateway_id": plan.raw.gateway[:64],
            "adapter": plan.raw.adapter[:64],
            # A rejected message does not use up its id: the gateway may send it again, fixed.
            "message_id": plan.message_id if plan.error is None else None,
            "received_at": plan.raw.received_at,
            "payload": plan.raw.payload,
        }
        for plan in plans
    ]
    statement = insert(RawMessage).returning(RawMessage.id, sort_by_parameter_order=True)
    return list((await session.execute(statement, rows)).scalars())


async def _insert_rows(session: AsyncSession, rows: _Rows) -> None:
    for model, values in (
        (ObservationRow, rows.observations),
        (ObservationVersion, rows.versions),
        (Alert, rows.alerts),
        (OutboxDelivery, rows.deliveries),
        (Quarantine, rows.quarantine),
    ):
        if values:
            await session.execute(insert(model), values)


async def _record_message(batch: _Batch, plan: MessagePlan, raw_id: int) -> MessageResult:
    if plan.error is not None:
        _quarantine(batch, raw_id, None, plan.error)
        return MessageResult(
            "rejected", plan.message_id, raw_id, reason_code=plan.error.code, reason=str(plan.error)
        )
    items = [await _record_item(batch, item, raw_id) for item in plan.items]
    return MessageResult("accepted", plan.message_id, raw_id, tuple(items))


async def _record_item(batch: _Batch, item: ItemPlan, raw_id: int) -> ItemResult:
    if item.error is not None or item.resolved is None or item.observation is None:
        error = item.error or DataError("nothing to record", code="processing-error")
        _quarantine(batch, raw_id, item.index, error)
        return ItemResult(item.index, "quarantined", reason_code=error.code, reason=str(error))
    identity = item.resolved.measurement.identity
    digest = _digest(item.observation)
    known = batch.existing.observations.get(identity)
    if known is not None and known.value_digest == digest:
        return ItemResult(item.index, "duplicate", known.id, known.version_id)
    version = 1 if known is None else known.version_id + 1
    resource = _with_meta(item.observation, version, batch.now)
    text = jsonutil.dumps(resource)
    if known is None:
        row = _observation_row(batch, item, raw_id, text, digest)
        batch.rows.observations.append(row)
        batch.pending_observations[row["id"]] = row
    else:
        await _correct_observation(batch, known, raw_id, text, digest)
    batch.rows.versions.append(_version_row(resource["id"], version, raw_id, text, batch.now))
    batch.existing.observations[identity] = StoredObservation(resource["id"], version, digest)
    alert = await _alert(batch, item, resource, is_new=known is None)
    return ItemResult(
        item.index,
        "created" if known is None else "corrected",
        resource["id"],
        version,
        alert["id"] if alert else None,
        alert["severity"] if alert else None,
    )


def _observation_row(
    batch: _Batch, item: ItemPlan, raw_id: int, text: str, digest: str
) -> dict[str, Any]:
    assert item.resolved is not None and item.observation is not None
    m = item.resolved.measurement
    return {
        "id": item.observation["id"],
        "identity": m.identity,
        "patient_id": item.resolved.patient_id,
        "device_id": item.resolved.device_id,
        "type": m.type,
        "code": item.observation["code"]["coding"][0]["code"],
        "effective": m.effective,
        "last_updated": batch.now,
        "version_id": 1,
        "value_digest": digest,
        "raw_message_id": raw_id,
        "resource": text,
    }


async def _correct_observation(
    batch: _Batch, known: StoredObservation, raw_id: int, text: str, digest: str
) -> None:
    """The same identity with another value: a new version of the same Observation."""
    values = {
        "version_id": known.version_id + 1,
        "value_digest": digest,
        "last_updated": batch.now,
        "raw_message_id": raw_id,
        "resource": text,
    }
    pending = batch.pending_observations.get(known.id)
    if pending is not None:
        pending.update(values)
        return
    await batch.session.execute(
        update(ObservationRow).where(ObservationRow.id == known.id).values(**values)
    )


def _version_row(
    observation_id: str, version: int, raw_id: int, text: str, now: datetime
) -> dict[str, Any]:
    return {
        "observation_id": observation_id,
        "version_id": version,
        "last_updated": now,
        "raw_message_id": raw_id,
        "resource": text,
    }


async def _alert(
    batch: _Batch, item: ItemPlan, resource: dict[str, Any], *, is_new: bool
) -> dict[str, Any] | None:
    if not item.decisions or item.resolved is None:
        return None
    decision = item.decisions[0]
    key = (resource["id"], decision.kind)
    if key in batch.pending_alerts or (
        not is_new and await _has_alert(batch.session, resource["id"], decision.kind)
    ):
        return None
    batch.pending_alerts.add(key)
    alert = {
        "id": str(uuid.uuid4()),
        "kind": decision.kind,
        "severity": decision.band.label,
        "status": "reported",
        "patient_id": item.resolved.patient_id,
        "observation_id": resource["id"],
        "summary": decision.summary,
        "details": jsonutil.dumps(decision.details),
        "created_at": batch.now,
        "updated_at": batch.now,
    }
    batch.rows.alerts.append(alert)
    for target in batch.targets:
        batch.rows.deliveries.append(_delivery(alert, decision, target, resource, batch.now))
    return alert


async def _has_alert(session: AsyncSession, observation_id: str, kind: str) -> bool:
    found = await session.scalar(
        select(Alert.id).where(Alert.observation_id == observation_id, Alert.kind == kind)
    )
    return found is not None


def _delivery(
    alert: dict[str, Any],
    decision: Decision,
    target: DeliveryTarget,
    resource: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    delivery_id = str(uuid.uuid4())
    payload = {
        "event": "alert.created",
        "delivery_id": delivery_id,
        "alert": {
            "id": alert["id"],
            "kind": alert["kind"],
            "severity": alert["severity"],
            "status": alert["status"],
            "summary": alert["summary"],
            "details": decision.details,
            "patient": f"Patient/{alert['patient_id']}",
            "observation": f"Observation/{alert['observation_id']}",
            "created": now.isoformat(timespec="milliseconds"),
        },
        "observation": resource,
    }
    return {
        "id": delivery_id,
        "alert_id": alert["id"],
        "channel": target.channel,
        "target": target.target,
        "payload": jsonutil.dumps(payload),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _quarantine(batch: _Batch, raw_id: int, index: int | None, error: DataError) -> None:
    batch.rows.quarantine.append(
        {
            "raw_message_id": raw_id,
            "item_index": index,
            "reason_code": error.code,
            "reason": str(error)[:2000],
            "status": "open",
            "created_at": batch.now,
        }
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
