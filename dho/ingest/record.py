"""Record stage, the only writer: one micro-batch's rows, in the caller's transaction.

Rows are collected first and written with one multi-row INSERT per table, in foreign-key
order: raw messages, observations and their versions, alerts, deliveries, quarantine.

A re-processed message (re-drive, replay) is not stored again: its open quarantine rows
are resolved when the item now becomes data, or updated with the new reason
(`record_quarantine`). It never amends an Observation that a later message changed.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from dho import jsonutil
from dho.alerts.episode_book import EpisodeBook, Report
from dho.db.base import bulk_insert, one_of
from dho.db.models import (
    ObservationRow,
    ObservationVersion,
    Patient,
    Quarantine,
    QuestionnaireResponseRow,
    RawMessage,
)
from dho.ingest.accept import OVERSIZED_KEPT_BYTES
from dho.ingest.context import ExistingState, StoredObservation
from dho.ingest.errors import DataError
from dho.ingest.measurement import Measurement
from dho.ingest.plan import ItemPlan, ItemResult, MessagePlan, MessageResult, QuestionnaireItem
from dho.ingest.record_quarantine import QuarantineBook
from dho.questionnaires.responses import QUESTIONNAIRE_ANSWER
from dho.rules.history import utc_reading
from dho.rules.history_cache import LOCKED_STAMPS, HistoryCache, Written, new_stamp
from dho.rules.judge import Judgement
from dho.rules.news2_fhir import NEWS2_CODE
from dho.rules.news2_rule import RULE as NEWS2_TYPE
from dho.rules.news2_rule import News2Result
from dho.rules.thresholds import Band

# What the plan adds to a reading: not part of the reading itself.
_JUDGED = ("interpretation", "referenceRange")
# How far apart the device times of one re-sent reading (same sender identifier) may be.
SAME_READING_WINDOW_MS = 5 * 60 * 1000


@dataclass(slots=True)
class _Rows:
    """Everything one batch will insert, per table."""

    observations: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Batch:
    session: AsyncSession
    existing: ExistingState
    episodes: EpisodeBook
    now: datetime
    redriven_by: str | None
    quarantine: QuarantineBook
    rows: _Rows = field(default_factory=_Rows)
    # Rows of this batch not inserted yet, for a reading corrected within the same batch.
    pending_observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    deferred_updates: list[Any] = field(default_factory=list)  # UPDATEs after the INSERTs
    replies: list[dict[str, Any]] = field(default_factory=list)  # questionnaire replies
    corrected: set[str] = field(default_factory=set)  # patients of stored rows changed


async def record(
    session: AsyncSession,
    plans: list[MessagePlan],
    existing: ExistingState,
    *,
    episodes: EpisodeBook,
    now: datetime,
    redriven_by: str | None = None,
    history: HistoryCache | None = None,
) -> list[MessageResult]:
    """Write raw messages, observations, alerts, deliveries and quarantine rows; no commit.

    Every patient whose observations change gets a new history stamp; `history`, the
    process's cache, learns what was written.
    """
    book = QuarantineBook(dict(existing.open_quarantine), reprocessing=redriven_by is not None)
    batch = _Batch(session, existing, episodes, now, redriven_by, book)
    fresh = [p for p in plans if p.raw_id is None and not _seen_before(p, existing)]
    raw_ids = await _insert_raw(session, fresh)
    raw_id_of = {id(plan): raw_id for plan, raw_id in zip(fresh, raw_ids, strict=True)}
    results: list[MessageResult] = []
    for plan in plans:
        raw_id = plan.raw_id if plan.raw_id is not None else raw_id_of.get(id(plan))
        if raw_id is None:
            results.append(
                MessageResult(
                    "duplicate",
                    plan.message_id,
                    None,
                    kind=plan.kind,
                    wants_receipt=plan.wants_receipt,
                )
            )
        else:
            results.append(await _record_message(batch, plan, raw_id))
    await _insert_rows(session, batch.rows)
    for statement in batch.deferred_updates:
        await session.execute(statement)
    await _stamp_history(batch, history)
    if batch.replies:
        await session.execute(bulk_insert(QuestionnaireResponseRow), batch.replies)
    await episodes.flush(session, now)
    if book.new_rows:
        await session.execute(bulk_insert(Quarantine), book.new_rows)
    await book.apply(session, now, redriven_by)
    return results


async def _stamp_history(batch: _Batch, history: HistoryCache | None) -> None:
    # The stamps this transaction read under its row locks; a later transaction of the same
    # session must read its own.
    locked = batch.session.info.pop(LOCKED_STAMPS, {})
    rows = batch.rows.observations
    touched = {row["patient_id"] for row in rows} | batch.corrected
    if not touched:
        return
    stamp = new_stamp()
    await batch.session.execute(
        update(Patient).where(one_of(Patient.id, sorted(touched))).values(history_stamp=stamp)
    )
    if history is None:
        return
    writes = [
        Written(
            row["patient_id"],
            row["type"],
            utc_reading(row["effective"], value, row["identity"]),
        )
        for row in rows
        if (value := _decimal(row["value"])) is not None
    ]
    history.written(stamp, locked, writes, touched)
    history.forget(batch.corrected)


def _corrected(batch: _Batch, patient_id: str, known: StoredObservation) -> None:
    """A stored row changes: its patient's history (and the one it leaves) is not the same."""
    batch.corrected.add(patient_id)
    if known.patient_id is not None:
        batch.corrected.add(known.patient_id)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _seen_before(plan: MessagePlan, existing: ExistingState) -> bool:
    """Whether the gateway sent this message id before (or earlier in this batch)."""
    if not plan.message_id:
        return False
    key = (plan.raw.gateway, plan.message_id)
    if key in existing.message_ids:
        return True
    if _uses_message_id(plan):
        existing.message_ids.add(key)
    return False


def _uses_message_id(plan: MessagePlan) -> bool:
    """A message uses up its id only when something of it can be stored.

    Rejected whole, or every item refused: the gateway may send it again, fixed, under the
    same id (after the device is registered, say).
    """
    return plan.error is None and any(
        item.observation is not None or item.questionnaire is not None for item in plan.items
    )


async def _insert_raw(session: AsyncSession, plans: list[MessagePlan]) -> list[int]:
    if not plans:
        return []
    rows = [
        {
            "transport": plan.raw.transport,
            "topic": plan.raw.topic[:300],
            "gateway_id": plan.raw.gateway[:64],
            "adapter": plan.raw.adapter[:64],
            "message_id": plan.message_id if _uses_message_id(plan) else None,
            "received_at": plan.raw.received_at,
            "payload": _kept_payload(plan),
        }
        for plan in plans
    ]
    statement = insert(RawMessage).returning(RawMessage.id, sort_by_parameter_order=True)
    return list((await session.execute(statement, rows)).scalars())


def _kept_payload(plan: MessagePlan) -> bytes:
    """The bytes kept: all of them, but only the start of a message refused as too large."""
    if plan.error is not None and plan.error.code == "too-large":
        return plan.raw.payload[:OVERSIZED_KEPT_BYTES]
    return plan.raw.payload


async def _insert_rows(session: AsyncSession, rows: _Rows) -> None:
    for model, values in (
        (ObservationRow, rows.observations),
        (ObservationVersion, rows.versions),
    ):
        if values:
            await session.execute(bulk_insert(model), values)


async def _record_message(batch: _Batch, plan: MessagePlan, raw_id: int) -> MessageResult:
    if plan.error is not None:
        error = plan.error
        batch.quarantine.message_failed(raw_id, error, batch.now)
        return MessageResult(
            "rejected",
            plan.message_id,
            raw_id,
            tuple(_unstored(item) for item in plan.items),
            reason=error.reason,
            reason_code=error.code,
            detail=str(error),
            kind=plan.kind,
            wants_receipt=plan.wants_receipt,
        )
    batch.quarantine.message_read(raw_id, whole=not plan.partial)
    items = [await _record_item(batch, plan, item, raw_id) for item in plan.items]
    return MessageResult(
        "accepted",
        plan.message_id,
        raw_id,
        tuple(items),
        kind=plan.kind,
        wants_receipt=plan.wants_receipt,
    )


def _unstored(item: ItemPlan) -> ItemResult:
    """An item of a rejected (atomic) message: its own error, or stored not at all."""
    if item.error is None:
        return ItemResult(item.index, "not-stored", item.label)
    return _quarantined_result(item, item.error)


def _quarantined_result(item: ItemPlan, error: DataError) -> ItemResult:
    return ItemResult(
        item.index,
        "quarantined",
        item.label,
        reason=error.reason,
        reason_code=error.code,
        detail=str(error),
    )


async def _record_item(batch: _Batch, plan: MessagePlan, item: ItemPlan, raw_id: int) -> ItemResult:
    book = batch.quarantine
    if item.reference is not None:
        book.item_stored(raw_id, item.label, f"matches {item.reference}")
        return ItemResult(item.index, "matched", item.label, reference=item.reference)
    if item.note is not None:
        book.item_stored(raw_id, item.label, item.note)
        return ItemResult(item.index, "ignored", item.label, note=item.note)
    if item.questionnaire is not None and item.error is None:
        return _record_reply(batch, item, item.questionnaire, raw_id)
    if item.error is not None or item.resolved is None or item.observation is None:
        error = item.error or DataError("nothing to record", code="processing-error")
        book.item_failed(raw_id, item.index, item.label, error, batch.now)
        return _quarantined_result(item, error)
    m = item.resolved.measurement
    digest = _digest(item.observation)
    flags: dict[str, Any] = {"late": item.late, "time_flag": m.time_flag}
    known = batch.existing.observations.get(m.identity) or _same_reading(batch, m, digest)
    if known is not None and (
        known.value_digest == digest or (plan.raw_id is not None and raw_id < known.raw_id)
    ):
        # Stored before; or, re-processing an older message, superseded by a later one.
        book.item_stored(raw_id, item.label, f"Observation/{known.id} (stored)")
        return ItemResult(item.index, "duplicate", item.label, known.id, known.version_id, **flags)
    version = 1 if known is None else known.version_id + 1
    resource = _with_meta(item.observation, version, batch.now)
    text = jsonutil.dumps(resource)
    if known is None:
        row = _observation_row(batch, plan, item, raw_id, text, digest)
        batch.rows.observations.append(row)
        batch.pending_observations[row["id"]] = row
    else:
        await _correct_observation(batch, plan, known, item, raw_id, text, digest)
    observation_id = str(known.id if known is not None else resource["id"])
    batch.rows.versions.append(_version_row(observation_id, version, raw_id, text, batch.now))
    patient_id = item.resolved.patient_id
    stored = StoredObservation(observation_id, version, digest, m.identity, raw_id, patient_id)
    batch.existing.observations[m.identity] = stored
    if m.source_key is not None:
        batch.existing.by_source_identifier.setdefault(m.source_key, []).append(stored)
    book.item_stored(raw_id, item.label, f"Observation/{observation_id}")
    judged = _alerting(batch, item, item.judgement, resource, observation_id)
    if item.news2 is not None:
        score_id, score_resource = _record_news2(batch, item, item.news2, raw_id)
        if score_id is not None:
            scored = _alerting(batch, item, item.news2.judgement, score_resource, score_id)
            if scored.get("alert_id") and not judged.get("alert_id"):
                judged |= {k: scored[k] for k in ("alert_id", "alert_severity")}
    return ItemResult(
        item.index,
        "accepted",
        item.label,
        observation_id,
        version,
        amended=known is not None,
        **flags,
        **judged,
    )


def _alerting(
    batch: _Batch,
    item: ItemPlan,
    judgement: Judgement | None,
    resource: dict[str, Any],
    observation_id: str,
) -> dict[str, Any]:
    """The reading's findings against the patient's episodes; what its receipt says."""
    resolved = item.resolved
    if judgement is None or resolved is None:
        return {}
    out: dict[str, Any] = {
        "colour": judgement.colour.label,
        "plan": judgement.plan.label,
        "patient_text": judgement.texts.patient,
    }
    if item.quiet:
        return out
    if item.paused is not None:
        batch.episodes.forget(resolved.patient_id, judgement.findings)
        return out | {"paused_until": item.paused.ends_at.isoformat(timespec="minutes")}
    repeat_within = judgement.standard.repeat_within if judgement.standard else None
    touched = batch.episodes.apply(
        judgement,
        patient_id=resolved.patient_id,
        observation_id=observation_id,
        resource=resource,
        now=batch.now,
        repeat_within=repeat_within,
    )
    if touched is None:
        return out
    if touched.action == "ask-repeat" and repeat_within is not None:
        return out | {"repeat_within_minutes": repeat_within // timedelta(minutes=1)}
    return out | {"alert_id": touched.alert_id, "alert_severity": touched.severity.label}


def _record_reply(
    batch: _Batch, item: ItemPlan, reply: QuestionnaireItem, raw_id: int
) -> ItemResult:
    """Store a questionnaire reply once, and report a yellow or red one as an alert."""
    answers, judged = reply.reply.answers, reply.judgement
    identity = answers.identity(reply.patient_id)
    known = batch.existing.questionnaire_responses.get(identity)
    label = "QuestionnaireResponse"
    shown: dict[str, Any] = {
        "colour": judged.colour.label,
        "plan": answers.questionnaire.id,
        "patient_text": judged.texts.patient,
    }
    if known is not None:
        batch.quarantine.item_stored(raw_id, item.label, f"{label}/{known} (stored)")
        return ItemResult(
            item.index, "duplicate", item.label, reference=f"{label}/{known}", **shown
        )
    reply_id = str(uuid.uuid5(uuid.NAMESPACE_URL, identity))
    resource = dict(reply.reply.resource) | {
        "id": reply_id,
        "meta": {"versionId": "1", "lastUpdated": batch.now.isoformat(timespec="milliseconds")},
    }
    batch.replies.append(
        {
            "id": reply_id,
            "identity": identity,
            "patient_id": reply.patient_id,
            "questionnaire": answers.questionnaire.id,
            "version": answers.questionnaire.version,
            "authored": answers.authored,
            "received_at": batch.now,
            "colour": judged.colour.label,
            "raw_message_id": raw_id,
            "resource": jsonutil.dumps(resource),
        }
    )
    batch.existing.questionnaire_responses[identity] = reply_id
    batch.quarantine.item_stored(raw_id, item.label, f"{label}/{reply_id}")
    out: dict[str, Any] = {}
    if item.paused is not None:
        out["paused_until"] = item.paused.ends_at.isoformat(timespec="minutes")
    elif not item.quiet and judged.colour > Band.GREEN:
        touched = batch.episodes.report(
            Report(
                subject=f"patient:{reply.patient_id}",
                rule=f"questionnaire:{answers.questionnaire.id}",
                kind=QUESTIONNAIRE_ANSWER,
                band=judged.colour,
                summary=judged.summary,
                details={
                    "questionnaire_response": f"{label}/{reply_id}",
                    "answers": {k: answers.answers[k] for k in judged.flagged},
                    "staff_text": judged.texts.staff,
                    "patient_text": judged.texts.patient,
                },
                patient_id=reply.patient_id,
                plan=reply.plan,
            ),
            batch.now,
        )
        out = {"alert_id": touched.alert_id, "alert_severity": touched.severity.label}
    return ItemResult(
        item.index,
        "accepted",
        item.label,
        reference=f"{label}/{reply_id}",
        late=item.late,
        **shown,
        **out,
    )


def _record_news2(
    batch: _Batch, item: ItemPlan, score: News2Result, raw_id: int
) -> tuple[str | None, dict[str, Any]]:
    """Store the NEWS2 this reading completed: new, or a new version when its inputs
    changed the score; (None, ...) when the stored score already says the same."""
    assert item.resolved is not None
    digest = _digest(score.resource)
    known = batch.existing.observations.get(score.identity)
    if known is not None and known.value_digest == digest:
        return None, score.resource
    version = 1 if known is None else known.version_id + 1
    resource = _with_meta(score.resource, version, batch.now)
    text = jsonutil.dumps(resource)
    observation_id = str(resource["id"])
    values: dict[str, Any] = {
        "patient_id": item.resolved.patient_id,
        "device_id": item.resolved.device_id,
        "value": str(score.total),
        "components": None,
        "received_at": batch.now,
        "late": item.late,
        "version_id": version,
        "value_digest": digest,
        "last_updated": batch.now,
        "raw_message_id": raw_id,
        "resource": text,
    }
    pending = batch.pending_observations.get(observation_id)
    if pending is not None:
        pending.update(values)
    elif known is None:
        row = values | {
            "id": observation_id,
            "identity": score.identity,
            "source_identifier": None,
            "type": NEWS2_TYPE,
            "code": NEWS2_CODE,
            "effective": score.effective,
        }
        batch.rows.observations.append(row)
        batch.pending_observations[observation_id] = row
    else:
        statement = update(ObservationRow).where(ObservationRow.id == observation_id)
        batch.deferred_updates.append(statement.values(**values))
        _corrected(batch, item.resolved.patient_id, known)
    batch.rows.versions.append(_version_row(observation_id, version, raw_id, text, batch.now))
    patient_id = item.resolved.patient_id
    stored = StoredObservation(observation_id, version, digest, score.identity, raw_id, patient_id)
    batch.existing.observations[score.identity] = stored
    return observation_id, resource


def _same_reading(batch: _Batch, m: Measurement, digest: str) -> StoredObservation | None:
    """A stored reading the sender's identifier says this one repeats: same device, type and
    value, its time within a few minutes (a re-sent reading whose time the gateway wrote
    again after a clock sync). Never a correction: senders' identifiers are not unique."""
    if m.source_key is None:
        return None
    series, millis = m.identity.rsplit("|", 1)
    for stored in batch.existing.by_source_identifier.get(m.source_key, ()):
        stored_series, stored_millis = stored.identity.rsplit("|", 1)
        if (
            stored_series == series
            and stored.value_digest == digest
            and abs(int(stored_millis) - int(millis)) <= SAME_READING_WINDOW_MS
        ):
            return stored
    return None


def _observation_row(
    batch: _Batch, plan: MessagePlan, item: ItemPlan, raw_id: int, text: str, digest: str
) -> dict[str, Any]:
    assert item.resolved is not None and item.observation is not None
    m = item.resolved.measurement
    return {
        "id": item.observation["id"],
        "identity": m.identity,
        "source_identifier": m.source_key,
        "patient_id": item.resolved.patient_id,
        "device_id": item.resolved.device_id,
        "type": m.type,
        "code": item.observation["code"]["coding"][0]["code"],
        "effective": m.effective,
        **_numbers(m),
        "last_updated": batch.now,
        "received_at": plan.raw.received_at,
        "late": item.late,
        "version_id": 1,
        "value_digest": digest,
        "raw_message_id": raw_id,
        "resource": text,
    }


async def _correct_observation(
    batch: _Batch,
    plan: MessagePlan,
    known: StoredObservation,
    item: ItemPlan,
    raw_id: int,
    text: str,
    digest: str,
) -> None:
    """The same identity with another value: a new version of the same Observation."""
    assert item.resolved is not None
    values = {
        "patient_id": item.resolved.patient_id,
        "device_id": item.resolved.device_id,
        **_numbers(item.resolved.measurement),
        "received_at": plan.raw.received_at,
        "late": item.late,
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
    _corrected(batch, item.resolved.patient_id, known)
    await batch.session.execute(
        update(ObservationRow).where(ObservationRow.id == known.id).values(**values)
    )


def _numbers(m: Measurement) -> dict[str, str | None]:
    """The reading's numbers as decimal text, for the rules' history."""
    components = {name: str(q.value) for name, q in m.components.items()}
    return {
        "value": str(m.value.value) if m.value is not None else None,
        "components": jsonutil.dumps(components) if components else None,
    }


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


def _with_meta(observation: dict[str, Any], version: int, now: datetime) -> dict[str, Any]:
    meta = dict(observation.get("meta", {}))
    meta["versionId"] = str(version)
    meta["lastUpdated"] = now.isoformat(timespec="milliseconds")
    resource = {"resourceType": observation["resourceType"], "id": observation["id"], "meta": meta}
    resource.update((k, v) for k, v in observation.items() if k not in resource)
    if version > 1:
        resource["status"] = "amended"
    return resource


def _digest(observation: dict[str, Any]) -> str:
    """What decides duplicate or correction: the values and their units, not the status.

    The status stays in the digested content as `final` so digests stored by earlier
    versions still compare equal.
    """
    parts = [
        {k: v for k, v in part.items() if k not in _JUDGED}
        for part in observation.get("component") or ()
    ]
    content = {"valueQuantity": observation.get("valueQuantity"), "component": parts or None}
    content["status"] = "final"
    return hashlib.sha256(jsonutil.dumps(content).encode()).hexdigest()
