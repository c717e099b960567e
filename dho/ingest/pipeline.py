"""The straight line: accept → decode → resolve → normalise → to_fhir → evaluate → record.

One transaction per micro-batch. Data errors are quarantined where they happen; an
unexpected error isolates its message; infrastructure errors propagate so the caller
retries and nothing is acknowledged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.catalogue import Catalogue, load_catalogue
from dho.ingest.accept import accept
from dho.ingest.adapter_catalogue import AdapterCatalogue, load_adapters
from dho.ingest.context import load_existing, load_gateways, load_registry
from dho.ingest.decode import decode
from dho.ingest.errors import DataError
from dho.ingest.failures import is_infrastructure_error, is_transient_conflict, processing_error
from dho.ingest.measurement import Measurement, RawMessage
from dho.ingest.normalise import PlausibilityLimits, load_plausibility, normalise
from dho.ingest.plan import ItemPlan, MessagePlan, MessageResult
from dho.ingest.record import DeliveryTarget, record
from dho.ingest.resolve import RegistrySnapshot, resolve
from dho.ingest.to_fhir import to_fhir
from dho.rules.evaluate import evaluate
from dho.rules.thresholds import Thresholds, load_thresholds
from dho.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReferenceData:
    """Catalogues read once at start-up; every batch uses the same copy."""

    adapters: AdapterCatalogue
    types: Catalogue
    limits: PlausibilityLimits
    thresholds: Thresholds

    @classmethod
    def load(cls, settings: Settings) -> ReferenceData:
        return cls(
            adapters=load_adapters(Path(settings.adapters_dir)),
            types=load_catalogue(Path(settings.fhir_dir)),
            limits=load_plausibility(Path(settings.config_dir)),
            thresholds=load_thresholds(Path(settings.config_dir)),
        )


class Pipeline:
    """Processes micro-batches of raw messages into committed results."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        reference: ReferenceData,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._reference = reference
        self._targets: tuple[DeliveryTarget, ...] = (
            (DeliveryTarget("webhook", settings.webhook_url),) if settings.webhook_url else ()
        )

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
        error = processing_error(exc)
        plan = MessagePlan(raw=raw, message_id=message_id, error=error)
        keys = [(raw.gateway, message_id)] if message_id else []
        async with self._sessions() as session, session.begin():
            existing = await load_existing(session, keys, [])
            return (
                await record(
                    session, [plan], existing, targets=self._targets, now=datetime.now(UTC)
                )
            )[0]

    def _message_id(self, raw: RawMessage) -> str | None:
        """The payload's message id, when it can be read at all (for de-duplicating)."""
        try:
            return decode(raw, self._reference.adapters)[0]
        except Exception:  # the message is broken; it is quarantined without an id
            return None

    async def _commit(self, raws: list[RawMessage]) -> list[MessageResult]:
        async with self._sessions() as session, session.begin():
            plans = await self._compute(session, raws)
            message_keys = [(p.raw.gateway, p.message_id) for p in plans if p.message_id]
            identities = [
                item.resolved.measurement.identity
                for p in plans
                for item in p.items
                if item.resolved is not None
            ]
            existing = await load_existing(session, message_keys, identities)
            return await record(
                session, plans, existing, targets=self._targets, now=datetime.now(UTC)
            )

    async def _compute(self, session: AsyncSession, raws: list[RawMessage]) -> list[MessagePlan]:
        gateways = await load_gateways(session, {raw.gateway for raw in raws})
        decoded = [self._decode(raw, gateways) for raw in raws]
        snapshot = await load_registry(session, [m for d in decoded for m in d.measurements])
        return [self._items(d, snapshot) for d in decoded]

    def _decode(self, raw: RawMessage, gateways: dict[str, set[str]]) -> _Decoded:
        try:
            organizations = accept(raw, gateways, self._settings.max_message_bytes)
            message_id, measurements = decode(raw, self._reference.adapters)
        except DataError as error:
            return _Decoded(MessagePlan(raw=raw, message_id=raw.message_id, error=error))
        except Exception as exc:  # isolate a poison message from its batch
            log.exception("decoding a message on %s failed unexpectedly", raw.topic)
            failure = processing_error(exc)
            return _Decoded(MessagePlan(raw=raw, message_id=raw.message_id, error=failure))
        plan = MessagePlan(raw=raw, message_id=raw.message_id or message_id)
        return _Decoded(plan, measurements, organizations)

    def _items(self, decoded: _Decoded, snapshot: RegistrySnapshot) -> MessagePlan:
        plan = decoded.plan
        latest_valid = plan.raw.received_at + timedelta(seconds=self._settings.clock_skew_max_s)
        for index, m in enumerate(decoded.measurements):
            item = ItemPlan(index=index)
            try:
                resolved = resolve(m, snapshot, decoded.organizations, latest_valid)
                normalised = normalise(m, self._reference.types, self._reference.limits)
                item.resolved = replace(resolved, measurement=normalised)
                item.observation = to_fhir(
                    normalised,
                    patient_id=resolved.patient_id,
                    device_id=resolved.device_id,
                    catalogue=self._reference.types,
                )
                item.decisions = evaluate(normalised, self._reference.thresholds)
            except DataError as error:
                item.error = error
            except Exception as exc:
                log.exception("measurement %d on %s failed unexpectedly", index, plan.raw.topic)
                item.error = processing_error(exc)
            plan.items.append(item)
        return plan


@dataclass(slots=True)
class _Decoded:
    """A message after accept and decode, before its measurements are resolved."""

    plan: MessagePlan
    measurements: list[Measurement] = field(default_factory=list)
    organizations: set[str] = field(default_factory=set)
