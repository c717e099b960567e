"""The straight line: accept → decode → resolve → normalise → to_fhir → evaluate → record.

One transaction per micro-batch. Data errors are quarantined where they happen; an
unexpected error isolates its message; infrastructure errors propagate so the caller
retries and nothing is acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.alerts.episode_book import delivery_targets, load_episode_book
from dho.catalogue import Catalogue, load_catalogue
from dho.ingest.accept import accept
from dho.ingest.adapter_catalogue import AdapterCatalogue, load_adapters
from dho.ingest.claims import resolve_claim
from dho.ingest.context import (
    ExistingState,
    load_existing,
    load_gateways,
    load_registry,
    load_replies,
)
from dho.ingest.decode import decode
from dho.ingest.decoded import DecodeContext, DecodedItem
from dho.ingest.errors import DataError
from dho.ingest.failures import is_infrastructure_error, is_transient_conflict, processing_error
from dho.ingest.measurement import RawMessage
from dho.ingest.normalise import PlausibilityLimits, load_plausibility, normalise
from dho.ingest.plan import ItemPlan, MessagePlan, MessageResult, QuestionnaireItem
from dho.ingest.record import record
from dho.ingest.record_quarantine import QuarantineKey
from dho.ingest.resolve import Gateway, RegistrySnapshot, Resolved, resolve
from dho.ingest.to_fhir import to_fhir
from dho.questionnaires.catalogue import load_questionnaires
from dho.questionnaires.responses import judge_answers
from dho.rules import news2_inputs
from dho.rules.history import utc_reading
from dho.rules.history_cache import HistoryCache
from dho.rules.judge import judge
from dho.rules.news2_rule import score_news2
from dho.rules.patient_context import (
    NEWS2_TYPES,
    CareCache,
    PatientContext,
    PlanCatalogue,
    load_patient_context,
)
from dho.rules.plans import PlanError
from dho.rules.ranges import annotate
from dho.settings import Settings

log = logging.getLogger(__name__)

# Which items of a stored message to process again: (raw message id, position, item).
Keep = Callable[[int, int, DecodedItem], bool]


@dataclass(frozen=True, slots=True)
class ReferenceData:
    """Catalogues read once at start-up; every batch uses the same copy."""

    adapters: AdapterCatalogue
    types: Catalogue
    limits: PlausibilityLimits
    plans: PlanCatalogue
    context: DecodeContext

    @classmethod
    def load(cls, settings: Settings) -> ReferenceData:
        types = load_catalogue(Path(settings.fhir_dir))
        config = Path(settings.config_dir)
        limits = load_plausibility(config)
        plans = PlanCatalogue.load(config, types, limits, settings.default_plan)
        questionnaires = load_questionnaires(config)
        for name, plan in plans.standard.items():
            unknown = [q for q in plan.questionnaires if questionnaires.get(q) is None]
            if unknown:
                raise PlanError(f"plan {name}: no questionnaire {', '.join(unknown)}")
        return cls(
            adapters=load_adapters(Path(settings.adapters_dir)),
            types=types,
            limits=limits,
            plans=plans,
            context=DecodeContext(
                questionnaires=questionnaires,
                types=types,
                local_zone=ZoneInfo(settings.device_time_zone),
                max_items=settings.max_measurements_per_message,
                fhir_dir=Path(settings.fhir_dir),
            ),
        )


class Pipeline:
    """Processes micro-batches of raw messages into committed results."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        reference: ReferenceData,
        history: HistoryCache | None = None,
    ) -> None:
        """`history`: a cache of patients' readings to share with other pipelines of
        the process (by default one of its own)."""
        self._settings = settings
        self._sessions = sessions
        self._reference = reference
        self._targets = delivery_targets(settings)
        if history is None:
            history = HistoryCache(settings.history_cache_patients)
        self._history = history
        self._care = CareCache(settings.history_cache_patients)

    @property
    def reference(self) -> ReferenceData:
        return self._reference

    @property
    def history(self) -> HistoryCache:
        """The patients' recent readings this pipeline keeps between batches."""
        return self._history

    async def process(self, raws: list[RawMessage]) -> list[MessageResult]:
        """Commit the batch and return one result per message, in order."""
        try:
            return await self._commit(raws)
        except IntegrityError:
            # Another writer stored one of these identities first: re-read and try again.
            log.info("batch of %d raced another writer; retrying", len(raws))
        except Exception as exc:
            if is_infrastructure_error(exc):
                raise
            log.exception("batch of %d failed; isolating its messages", len(raws))
        return [await self._isolate(raw) for raw in raws]

    async def _isolate(self, raw: RawMessage) -> MessageResult:
        """Process one message alone; if it still fails unexpectedly, quarantine it."""
        for _attempt in range(3):
            try:
                return (await self._commit([raw]))[0]
            except IntegrityError:
                continue
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                if is_transient_conflict(exc):
                    continue
                log.exception("message on %s quarantined as a processing error", raw.topic)
                return await self._quarantine_processing_error(raw, exc)
        return await self._quarantine_processing_error(raw, RuntimeError("repeated conflict"))

    async def _quarantine_processing_error(
        self, raw: RawMessage, exc: BaseException
    ) -> MessageResult:
        message_id = raw.message_id or self._message_id(raw)
        plan = MessagePlan(raw=raw, message_id=message_id, error=processing_error(exc))
        keys = [(raw.gateway, message_id)] if message_id else []
        async with self._sessions() as session, session.begin():
            existing = await load_existing(session, keys, [])
            return (await self._record(session, [plan], existing))[0]

    def _message_id(self, raw: RawMessage) -> str | None:
        """The payload's message id, when it can be read at all (for de-duplicating)."""
        try:
            return decode(raw, self._reference.adapters, self._reference.context).message_id
        except Exception:  # the message is broken; it is quarantined without an id
            return None

    async def _commit(self, raws: list[RawMessage]) -> list[MessageResult]:
        async with self._sessions() as session, session.begin():
            plans = await self.compute(session, raws)
            return await self.record_plans(session, plans)

    async def record_plans(
        self,
        session: AsyncSession,
        plans: list[MessagePlan],
        *,
        open_quarantine: dict[QuarantineKey, int] | None = None,
        redriven_by: str | None = None,
    ) -> list[MessageResult]:
        """Write computed plans in the caller's transaction (no commit).

        When re-processing stored messages, `open_quarantine` maps (raw message, item label)
        to the open quarantine row that the result resolves or updates.
        """
        message_keys = [
            (p.raw.gateway, p.message_id) for p in plans if p.message_id and p.raw_id is None
        ]
        measured = [item.resolved.measurement for p in plans for item in p.items if item.resolved]
        scores = [i.news2.identity for p in plans for i in p.items if i.news2 is not None]
        existing = await load_existing(
            session,
            message_keys,
            [m.identity for m in measured] + scores,
            [m.source_key for m in measured if m.source_key],
        )
        existing.open_quarantine = dict(open_quarantine or {})
        replies = [i.questionnaire for p in plans for i in p.items if i.questionnaire]
        await load_replies(
            session, existing, [q.reply.answers.identity(q.patient_id) for q in replies]
        )
        return await self._record(session, plans, existing, redriven_by)

    async def _record(
        self,
        session: AsyncSession,
        plans: list[MessagePlan],
        existing: ExistingState,
        redriven_by: str | None = None,
    ) -> list[MessageResult]:
        now = datetime.now(UTC)
        episodes = await load_episode_book(session, _alerting_patients(plans), self._targets)
        return await record(
            session,
            plans,
            existing,
            episodes=episodes,
            now=now,
            redriven_by=redriven_by,
            history=self._history,
        )

    async def compute(
        self,
        session: AsyncSession,
        raws: list[RawMessage],
        raw_ids: list[int] | None = None,
        keep: Keep | None = None,
    ) -> list[MessagePlan]:
        """Every stage but record, for a batch.

        When re-processing stored messages: `raw_ids` are theirs, and `keep(raw_id, index,
        item)` chooses the items to process again (the others are left as they are).
        """
        gateways = await load_gateways(session, {raw.gateway for raw in raws})
        decoded = [self._decode(raw, gateways) for raw in raws]
        if raw_ids is not None:
            for one, raw_id in zip(decoded, raw_ids, strict=True):
                one.plan.raw_id = raw_id
                if keep is not None:
                    _keep(one, raw_id, keep)
        snapshot = await load_registry(session, [item for d in decoded for _, item in d.items])
        plans = [self._items(d, snapshot) for d in decoded]
        await self._judge(session, plans)
        return plans

    async def _judge(self, session: AsyncSession, plans: list[MessagePlan]) -> None:
        """Judge every reading by its patient's plan, in arrival order, with the history."""
        items = [
            (item, item.resolved, plan.raw.received_at)
            for plan in plans
            if plan.error is None
            for item in plan.items
            if item.resolved is not None and item.observation is not None and item.error is None
        ]
        readings = [
            (r.patient_id, r.measurement.type, r.measurement.effective) for _, r, _ in items
        ]
        replies = [
            (i, i.questionnaire)
            for p in plans
            if p.error is None
            for i in p.items
            if i.questionnaire is not None and i.error is None
        ]
        readings += [(q.patient_id, "", q.reply.answers.authored) for _, q in replies]
        context = await load_patient_context(
            session, self._reference.plans, readings, self._history, self._care
        )
        for item, reply in replies:
            authored = reply.reply.answers.authored
            reply.plan = context.plan_for(reply.patient_id, authored).ref
            item.paused = context.pause_at(reply.patient_id, authored)
        for item, resolved, received_at in items:
            try:
                self._judge_item(item, resolved, context, received_at)
            except Exception as exc:  # quarantine the reading rather than store it unjudged
                log.exception("judging item %s failed unexpectedly", item.label)
                item.error = processing_error(exc)
        for plan in plans:
            if plan.atomic and plan.error is None:
                _all_or_nothing(plan)

    def _judge_item(
        self, item: ItemPlan, resolved: Resolved, context: PatientContext, received_at: datetime
    ) -> None:
        assert item.observation is not None
        m, patient = resolved.measurement, resolved.patient_id
        applied = context.plan_for(patient, m.effective)
        item.judgement = judge(m, applied, context.readings(patient, m.type))
        item.paused = context.pause_at(patient, m.effective)
        if m.value is not None and context.tracks(patient, m.type):
            context.remember(patient, m.type, utc_reading(m.effective, m.value.value, m.identity))
        vital = m.value or m.components.get("systolic")
        if applied.plan.news2 is not None and m.type in NEWS2_TYPES and vital is not None:
            reading = news2_inputs.Reading(item.observation["id"], m.type, m.effective, vital.value)
            context.remember_vital(patient, m.identity, reading)
            item.news2 = score_news2(
                applied,
                patient_id=patient,
                birth_date=context.birth_dates.get(patient),
                readings=context.recent_vitals(patient),
                at=m.effective,
                issued=received_at,
                catalogue=self._reference.types,
            )
        if item.judgement.range is not None:
            mtype = self._reference.types.get(m.type)
            keys = [c.key for c in mtype.components if c.key in m.components]
            annotate(item.observation, item.judgement.range, keys, applied.ref.label)

    def _decode(self, raw: RawMessage, gateways: dict[str, Gateway]) -> _Decoded:
        reference = self._reference
        known = gateways.get(raw.gateway)
        plan = MessagePlan(
            raw=raw, message_id=raw.message_id, wants_receipt=bool(known and known.mqtt_receipts)
        )
        try:
            gateway = accept(raw, gateways, self._settings.max_message_bytes)
            decoded = decode(raw, reference.adapters, reference.context)
        except DataError as error:
            plan.error = error
            return _Decoded(plan)
        except Exception as exc:  # isolate a poison message from its batch
            log.exception("decoding a message on %s failed unexpectedly", raw.topic)
            plan.error = processing_error(exc)
            return _Decoded(plan)
        plan.message_id = raw.message_id or decoded.message_id
        plan.atomic, plan.kind = decoded.atomic, decoded.kind
        return _Decoded(plan, tuple(enumerate(decoded.items)), gateway)

    def _items(self, decoded: _Decoded, snapshot: RegistrySnapshot) -> MessagePlan:
        plan = decoded.plan
        for index, source in decoded.items:
            item = ItemPlan(index=index, label=source.label)
            try:
                self._item(item, source, plan, decoded.gateway, snapshot)
            except DataError as error:
                item.error = error
            except Exception as exc:
                log.exception("item %s on %s failed unexpectedly", source.label, plan.raw.topic)
                item.error = processing_error(exc)
            plan.items.append(item)
        if plan.atomic:
            _all_or_nothing(plan)
        return plan

    def _item(
        self,
        item: ItemPlan,
        source: DecodedItem,
        plan: MessagePlan,
        gateway: Gateway | None,
        snapshot: RegistrySnapshot,
    ) -> None:
        if source.error is not None:
            raise source.error
        assert gateway is not None
        if source.claim is not None:
            item.reference = resolve_claim(source.claim, snapshot, gateway)
            return
        if source.reply is not None:
            patient = resolve_claim(source.reply.patient, snapshot, gateway).split("/", 1)[1]
            judged = judge_answers(source.reply.answers)
            item.questionnaire = QuestionnaireItem(patient, source.reply, judged)
            late_after = timedelta(seconds=self._settings.late_after_s)
            item.late = plan.raw.received_at - source.reply.answers.authored > late_after
            item.quiet = item.late
            return
        if source.measurement is None:
            item.note = source.note or "not stored"
            return
        settings, reference, raw = self._settings, self._reference, plan.raw
        latest_valid = raw.received_at + timedelta(seconds=settings.clock_skew_max_s)
        resolved = resolve(source.measurement, snapshot, gateway, latest_valid)
        normalised = normalise(resolved.measurement, reference.types, reference.limits)
        late_after = timedelta(seconds=settings.late_after_s)
        item.late = raw.received_at - normalised.effective > late_after
        # Re-processed now, a reading is as old as it is now for alerting, not as it was.
        stale_now = (
            plan.raw_id is not None and datetime.now(UTC) - normalised.effective > late_after
        )
        item.resolved = Resolved(normalised, resolved.device_id, resolved.patient_id)
        item.observation = to_fhir(
            normalised,
            patient_id=resolved.patient_id,
            device_id=resolved.device_id,
            catalogue=reference.types,
            received_at=raw.received_at,
            late=item.late,
        )
        # Late readings feed trends but raise no acute alert.
        item.quiet = item.late or stale_now


def _alerting_patients(plans: list[MessagePlan]) -> set[str]:
    """The patients whose alert episodes the batch may change: those with a judged reading
    or a questionnaire reply that is not late."""
    patients: set[str] = set()
    for plan in plans:
        for item in plan.items:
            if item.quiet:
                continue
            if item.judgement is not None and item.resolved is not None:
                patients.add(item.resolved.patient_id)
            elif item.questionnaire is not None:
                patients.add(item.questionnaire.patient_id)
    return patients


def _keep(decoded: _Decoded, raw_id: int, keep: Keep) -> None:
    """Only the items `keep` chooses; an atomic message is processed whole or not at all."""
    everything = decoded.items
    kept = tuple((n, i) for n, i in everything if keep(raw_id, n, i))
    if decoded.plan.atomic and kept:
        kept = everything
    decoded.items = kept
    decoded.plan.partial = len(kept) < len(everything)


def _all_or_nothing(plan: MessagePlan) -> None:
    """An atomic message with a failing item is rejected as a whole."""
    failing = [item for item in plan.items if item.error is not None]
    if not failing:
        return
    first = failing[0]
    assert first.error is not None
    error = DataError(
        f"transaction rejected: {len(failing)} of {len(plan.items)} entries cannot be stored; "
        f"{_labelled(first.label, str(first.error))}",
        code="transaction-rejected",
    )
    error.reason = first.error.reason
    plan.error = error


def _labelled(label: str, text: str) -> str:
    return text if text.startswith(label) else f"{label}: {text}"


@dataclass(slots=True)
class _Decoded:
    """A message after accept and decode, before its items are resolved."""

    plan: MessagePlan
    items: tuple[tuple[int, DecodedItem], ...] = ()  # (position in the message, item)
    gateway: Gateway | None = None
