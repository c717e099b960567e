"""The pipeline driven directly (no transport): isolation, concurrent writers, retries, batches.

Runs on SQLite and on the real PostgreSQL; the infrastructure tests put a real TCP proxy
between the service and PostgreSQL and switch it off and on.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.engine import create_engine, session_factory
from dho.db.models import (
    Alert,
    AlertEvidence,
    ObservationRow,
    ObservationVersion,
    Quarantine,
    RawMessage,
)
from dho.ingest import pipeline as pipeline_module
from dho.ingest.batcher import Batcher
from dho.ingest.failures import is_infrastructure_error
from dho.ingest.measurement import Measurement
from dho.ingest.measurement import RawMessage as Raw
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.ingest.plan import MessagePlan, MessageResult
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.support import blood_pressure, count_rows, raw_message, seed

POISON_SYSTOLIC = 177


@pytest.fixture(autouse=True)
def pipeline_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dho.ingest.pipeline")


@pytest.fixture
def reference(settings: Settings) -> ReferenceData:
    return ReferenceData.load(settings)


@pytest.fixture
def pipeline(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], reference: ReferenceData
) -> Pipeline:
    return Pipeline(settings, sessions, reference)


def bp(systolic: int, diastolic: int, when: datetime, message_id: str | None = None) -> Raw:
    body = blood_pressure(systolic, diastolic, when)
    if message_id is None:
        return raw_message(body)
    return raw_message({"message_id": message_id, "measurements": [body]})


def minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def counts(sessions: async_sessionmaker[AsyncSession], *models: Any) -> list[int]:
    """Row counts of several tables, in the order given."""
    return [await count_rows(sessions, model) for model in models]


async def stored_payloads(
    sessions: async_sessionmaker[AsyncSession], results: list[MessageResult]
) -> list[bytes]:
    """The stored raw payload behind each result, in the results' order."""
    async with sessions() as session:
        rows = {r.id: r.payload for r in (await session.scalars(select(RawMessage))).all()}
    return [rows[r.raw_message_id] for r in results if r.raw_message_id is not None]


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Batches that did not commit in one go (a lost race or an isolated failure)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "dho.ingest.pipeline" and r.getMessage().startswith("batch of")
    ]


# ---------------------------------------------------------------- isolation


async def test_unexpected_failure_quarantines_only_its_measurement(
    pipeline: Pipeline,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await seed(sessions)
    real_to_fhir = pipeline_module.to_fhir

    def buggy_to_fhir(m: Measurement, **kwargs: Any) -> dict[str, Any]:
        if m.components["systolic"].value == POISON_SYSTOLIC:
            raise RuntimeError("bug in to_fhir")
        return real_to_fhir(m, **kwargs)

    monkeypatch.setattr("dho.ingest.pipeline.to_fhir", buggy_to_fhir)
    systolics = [150, 160, POISON_SYSTOLIC, 140, 130]
    raws = [bp(s, 90, minutes_ago(10 - i)) for i, s in enumerate(systolics)]

    results = await pipeline.process(raws)

    assert [r.status for r in results] == ["accepted"] * 5
    items = [r.items[0] for r in results]
    assert [i.status for i in items] == [
        "accepted",
        "accepted",
        "quarantined",
        "accepted",
        "accepted",
    ]
    assert items[2].reason == items[2].reason_code == "processing-error"
    assert items[2].detail is not None
    assert items[2].detail.startswith("unexpected RuntimeError while processing")
    assert await stored_payloads(sessions, results) == [r.payload for r in raws]
    async with sessions() as session:
        [quarantined] = (await session.scalars(select(Quarantine))).all()
        observations = (await session.scalars(select(ObservationRow))).all()
    assert quarantined.reason_code == "processing-error" and quarantined.item_index == 0
    assert quarantined.raw_message_id == results[2].raw_message_id
    assert {o.id for o in observations} == {i.observation_id for i in items if i.observation_id}
    assert len(observations) == 4
    assert fallbacks(caplog) == []  # contained in its item: the batch committed in one go


async def test_record_failing_on_a_poison_message_isolates_it(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in `record` that one message triggers, after rows were already flushed."""
    await seed(sessions)
    raws = [bp(150 + i, 90, minutes_ago(10 - i)) for i in range(5)]
    poison = raws[3]
    real_record = pipeline_module.record
    calls: list[int] = []

    async def buggy_record(
        session: AsyncSession, plans: list[MessagePlan], *args: Any, **kwargs: Any
    ) -> list[MessageResult]:
        calls.append(len(plans))
        results = await real_record(session, plans, *args, **kwargs)
        if any(p.raw is poison and p.error is None for p in plans):
            raise ValueError("bug in record")
        return results

    monkeypatch.setattr("dho.ingest.pipeline.record", buggy_record)

    results = await pipeline.process(raws)

    assert [r.status for r in results] == ["accepted"] * 3 + ["rejected", "accepted"]
    assert results[3].reason == results[3].reason_code == "processing-error"
    assert results[3].detail is not None
    assert results[3].detail.startswith("unexpected ValueError while processing")
    assert [r.items[0].status for i, r in enumerate(results) if i != 3] == ["accepted"] * 4
    # the failed batch left nothing behind; every message was stored exactly once
    assert await stored_payloads(sessions, results) == [r.payload for r in raws]
    assert await count_rows(sessions, RawMessage) == 5
    assert await count_rows(sessions, ObservationRow) == 4
    async with sessions() as session:
        [quarantined] = (await session.scalars(select(Quarantine))).all()
    assert quarantined.raw_message_id == results[3].raw_message_id
    assert quarantined.reason_code == "processing-error" and quarantined.item_index is None
    assert calls[0] == 5 and calls[1:] == [1, 1, 1, 1, 1, 1]  # batch, 5 alone, quarantine


async def test_record_failing_once_stores_the_whole_batch_message_by_message(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(sessions)
    raws = [bp(150 + i, 90, minutes_ago(10 - i)) for i in range(4)]
    real_record = pipeline_module.record
    calls: list[int] = []

    async def record_failing_once(
        session: AsyncSession, plans: list[MessagePlan], *args: Any, **kwargs: Any
    ) -> list[MessageResult]:
        calls.append(len(plans))
        results = await real_record(session, plans, *args, **kwargs)
        if len(calls) == 1:
            raise KeyError("transient bug")
        return results

    monkeypatch.setattr("dho.ingest.pipeline.record", record_failing_once)

    results = await pipeline.process(raws)

    assert calls == [4, 1, 1, 1, 1]
    assert [(r.status, r.items[0].status) for r in results] == [("accepted", "accepted")] * 4
    assert await stored_payloads(sessions, results) == [r.payload for r in raws]
    assert await counts(sessions, RawMessage, ObservationRow, Quarantine) == [4, 4, 0]


# ---------------------------------------------------------------- duplicates


async def test_message_id_resent_in_the_same_batch_is_a_duplicate(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    await seed(sessions)
    when = minutes_ago(5)
    first = bp(150, 90, when, message_id="gw-msg-1")
    again = bp(150, 90, when, message_id="gw-msg-1")
    other = bp(140, 85, minutes_ago(4), message_id="gw-msg-2")

    results = await pipeline.process([first, again, other])

    assert [r.status for r in results] == ["accepted", "duplicate", "accepted"]
    assert [r.message_id for r in results] == ["gw-msg-1", "gw-msg-1", "gw-msg-2"]
    assert results[1].raw_message_id is None and results[1].items == ()
    assert await count_rows(sessions, RawMessage) == 2
    assert await count_rows(sessions, ObservationRow) == 2
    assert fallbacks(caplog) == []  # recognised in the batch, not by the unique key

    [later] = await pipeline.process([bp(150, 90, when, message_id="gw-msg-1")])
    assert later.status == "duplicate"
    assert await count_rows(sessions, RawMessage) == 2


# ---------------------------------------------------------------- concurrent writers


@pytest.mark.parametrize("with_message_id", [False, True], ids=["identity", "message-id"])
async def test_concurrent_writers_store_each_measurement_once(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    reference: ReferenceData,
    caplog: pytest.LogCaptureFixture,
    with_message_id: bool,
    backend: str,
) -> None:
    await seed(sessions)
    other_engine = create_engine(settings)
    first = Pipeline(settings, sessions, reference)
    second = Pipeline(settings, session_factory(other_engine), reference)
    start = minutes_ago(30)
    try:
        for i in range(20):
            message_id = f"gw-{i}" if with_message_id else None
            message = bp(190, 110, start + timedelta(seconds=i), message_id)
            [a], [b] = await asyncio.gather(first.process([message]), second.process([message]))
            if with_message_id:
                assert sorted([a.status, b.status]) == ["accepted", "duplicate"]
                [winner] = [r for r in (a, b) if r.status == "accepted"]
                assert winner.items[0].status == "accepted"
            else:
                assert (a.status, b.status) == ("accepted", "accepted")
                assert sorted([a.items[0].status, b.items[0].status]) == ["accepted", "duplicate"]
                assert a.items[0].observation_id == b.items[0].observation_id
    finally:
        await other_engine.dispose()

    async with sessions() as session:
        identities = (await session.scalars(select(ObservationRow.identity))).all()
        alerts = (await session.scalars(select(Alert))).all()
        evidence = (await session.scalars(select(AlertEvidence.observation_id))).all()
    assert len(identities) == len(set(identities)) == 20
    # one red episode for the patient, every stored reading attached to it once
    assert [(a.rule, a.severity) for a in alerts] == [("range:blood-pressure", "red")]
    assert len(evidence) == len(set(evidence)) == 20
    assert await count_rows(sessions, Quarantine) == 0
    if with_message_id:
        assert await count_rows(sessions, RawMessage) == 20
    if backend == "sqlite":
        # the writers really raced: at least one lost at the unique key and retried
        assert any("raced another writer" in m for m in fallbacks(caplog))
    else:
        # PostgreSQL: the patient's row lock makes the second writer wait, then see the first
        assert not any("raced another writer" in m for m in fallbacks(caplog))


async def test_concurrent_batches_in_opposite_order_store_each_measurement_once(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    reference: ReferenceData,
) -> None:
    """Overlapping batches written in opposite orders (a deadlock on PostgreSQL) still settle."""
    await seed(sessions)
    other_engine = create_engine(settings)
    first = Pipeline(settings, sessions, reference)
    second = Pipeline(settings, session_factory(other_engine), reference)
    start = minutes_ago(30)
    messages = [bp(190, 110, start + timedelta(seconds=i)) for i in range(10)]
    try:
        a, b = await asyncio.gather(
            first.process(messages), second.process(list(reversed(messages)))
        )
    finally:
        await other_engine.dispose()
    b.reverse()
    for ra, rb in zip(a, b, strict=True):
        assert sorted([ra.items[0].status, rb.items[0].status]) == ["accepted", "duplicate"]
        assert ra.items[0].observation_id == rb.items[0].observation_id
    assert await counts(sessions, ObservationRow, Alert, AlertEvidence, Quarantine) == [
        10,
        1,
        10,
        0,
    ]


# ---------------------------------------------------------------- infrastructure errors


class PostgresProxy:
    """A real TCP proxy in front of PostgreSQL that can refuse, answer 'starting up', or forward.

    `closed`: nothing listens (connection refused). `starting`: answers every connection the way
    a PostgreSQL server that is still starting does (FATAL 57P03). `open`: forwards the bytes.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.port = free_port()
        self.mode = "closed"
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "closed":
            await self.stop()
        elif self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.mode == "starting":
                await _answer_starting_up(reader, writer)
                return
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _answer_starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the SSL request and startup packet, then FATAL 57P03 as PostgreSQL sends it."""
    length, code = struct.unpack("!ii", await reader.readexactly(8))
    if code == 80877103:  # SSLRequest: refuse TLS, then the real startup packet follows
        writer.write(b"N")
        await writer.drain()
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        await reader.readexactly(length - 4)
    else:
        await reader.readexactly(length - 8)
    fields = [("S", "FATAL"), ("V", "FATAL"), ("C", "57P03")]
    fields.append(("M", "the database system is starting up"))
    body = b"".join(k.encode() + v.encode() + b"\0" for k, v in fields) + b"\0"
    writer.write(b"E" + struct.pack("!i", len(body) + 4) + body)
    await writer.drain()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PostgresProxy]:
    url = make_url(database_url)
    server = PostgresProxy(url.host or "127.0.0.1", url.port or 5432)
    yield server
    await server.stop()


def through(database_url: str, port: int) -> str:
    return make_url(database_url).set(host="127.0.0.1", port=port).render_as_string(False)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_unreachable_database_raises_an_infrastructure_error(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], reference: ReferenceData
) -> None:
    await seed(sessions)
    nowhere = base_settings(
        tmp_path, database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"
    )
    engine = create_engine(nowhere)
    try:
        with pytest.raises(Exception) as caught:
            await Pipeline(nowhere, session_factory(engine), reference).process(
                [bp(150, 90, minutes_ago(5))]
            )
    finally:
        await engine.dispose()
    assert is_infrastructure_error(caught.value)


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("outage", [["closed"], ["closed", "starting"]], ids=["down", "restarting"])
async def test_batcher_retries_until_the_database_is_back(
    tmp_path: Path,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    reference: ReferenceData,
    proxy: PostgresProxy,
    outage: list[str],
) -> None:
    await seed(sessions)
    settings = base_settings(tmp_path, database_url=through(database_url, proxy.port))
    engine = create_engine(settings)
    batcher = Batcher(
        Pipeline(settings, session_factory(engine), reference),
        max_size=10,
        flush_ms=5,
        retry_base_s=0.05,
        retry_max_s=0.1,
    )
    runner = asyncio.create_task(batcher.run())
    try:
        submitted = asyncio.ensure_future(batcher.submit(bp(190, 110, minutes_ago(5))))
        for mode in outage:
            await proxy.set_mode(mode)
            await asyncio.sleep(0.5)
            assert not submitted.done() and not runner.done()
        retries_while_down = batcher.stats.retries
        await proxy.set_mode("open")
        result = await asyncio.wait_for(submitted, timeout=5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await engine.dispose()

    assert retries_while_down >= 1
    assert result.status == "accepted" and result.items[0].status == "accepted"
    assert (batcher.stats.batches, batcher.stats.messages) == (1, 1)
    assert await counts(sessions, RawMessage, ObservationRow, Alert, Quarantine) == [1, 1, 1, 0]


# ---------------------------------------------------------------- batching


async def test_batcher_closes_batches_at_the_size_limit(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(sessions)
    sizes: list[int] = []
    real_process = pipeline.process

    async def spy(raws: list[Raw]) -> list[MessageResult]:
        sizes.append(len(raws))
        return await real_process(raws)

    monkeypatch.setattr(pipeline, "process", spy)
    batcher = Batcher(pipeline, max_size=20, flush_ms=50)
    runner = asyncio.create_task(batcher.run())
    start = minutes_ago(60)
    messages = [bp(130 + i % 20, 85, start + timedelta(seconds=i)) for i in range(50)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(m) for m in messages)), timeout=10
        )
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    assert [r.items[0].status for r in results] == ["accepted"] * 50
    assert await stored_payloads(sessions, results) == [m.payload for m in messages]
    assert batcher.stats.batches >= 3 and batcher.stats.messages == 50
    assert sum(sizes) == 50 and max(sizes) <= 20 and len(sizes) == batcher.stats.batches
    assert await count_rows(sessions, ObservationRow) == 50


async def test_a_reading_corrected_within_one_batch_is_one_observation_in_two_versions(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    await seed(sessions)
    when = minutes_ago(7)
    results = await pipeline.process([bp(185, 90, when), bp(186, 90, when), bp(186, 90, when)])
    assert [r.items[0].status for r in results] == ["accepted", "accepted", "duplicate"]
    assert [r.items[0].version_id for r in results] == [1, 2, 2]
    assert fallbacks(caplog) == []  # one commit, no conflict
    async with sessions() as session:
        [row] = (await session.scalars(select(ObservationRow))).all()
        versions = (await session.scalars(select(ObservationVersion.version_id))).all()
        alerts = (await session.scalars(select(Alert))).all()
    assert row.version_id == 2 and '"value":186' in row.resource
    assert sorted(versions) == [1, 2]
    assert len(alerts) == 1 and alerts[0].observation_id == row.id


def test_only_patients_whose_episodes_may_change_have_them_loaded() -> None:
    from decimal import Decimal

    from dho.ingest.measurement import Quantity
    from dho.ingest.plan import ItemPlan
    from dho.ingest.resolve import Resolved
    from dho.rules.judge import Judgement, PlanRef
    from dho.rules.plans import Texts
    from dho.rules.thresholds import Band

    at = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    judged = Judgement(PlanRef("standard:general", 0, "general"), Band.GREEN, Texts("", ""))

    def item(patient: str, *, judgement: Judgement | None, quiet: bool = False) -> ItemPlan:
        m = Measurement("urn:x", patient, "heart-rate", at, value=Quantity(Decimal(70), "/min"))
        resolved = Resolved(m, f"device-{patient}", patient)
        return ItemPlan(0, "x", resolved=resolved, judgement=judgement, quiet=quiet)

    plan = MessagePlan(raw_message({}))
    plan.items = [
        item("judged", judgement=judged),
        item("late", judgement=judged, quiet=True),  # raises nothing: no episodes needed
        item("unjudged", judgement=None),  # refused before judging
    ]
    assert pipeline_module._alerting_patients([plan]) == {"judged"}
