"""Re-drive, discard and replay: stored raw messages again, nothing stored twice."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.models import (
    Alert,
    ObservationRow,
    ObservationVersion,
    Organization,
    Quarantine,
    RawMessage,
)
from dho.ingest import quarantine as store
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.ingest.reprocess import ReplayScope, redrive, replay
from dho.registry.gateways import create_gateway
from dho.settings import Settings
from tests.support import PATIENT_A, ROOT, count_rows, raw_message, reading, register_device, seed

NEW_DEVICE = "00-1C-05-FF-FE-0A-00-01"
KNOWN = "00-1C-05-FF-FE-01-00-02"


async def _rows(sessions: async_sessionmaker[AsyncSession]) -> list[Quarantine]:
    async with sessions() as session:
        return list((await session.scalars(select(Quarantine).order_by(Quarantine.id))).all())


async def test_an_unknown_device_becomes_an_observation_after_registration(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=10)
    message = raw_message(
        [
            reading(KNOWN, "heart-rate", when, 70, "/min"),
            reading(NEW_DEVICE, "heart-rate", when, 71, "/min"),
        ]
    )
    [first] = await pipeline.process([message])
    assert [i.status for i in first.items] == ["accepted", "quarantined"]
    [row] = await _rows(sessions)
    assert (row.reason_class, row.item_index, row.status) == ("unknown-device", 1, "open")

    [still] = await redrive(pipeline, sessions, [row.id], "nurse")
    assert still.status == "open" and still.reason == "unknown-device"
    assert (await _rows(sessions))[0].attempts == 1

    await register_device(sessions, NEW_DEVICE, [(PATIENT_A, when - timedelta(days=1), None)])
    [done] = await redrive(pipeline, sessions, [row.id], "nurse")
    assert done.status == "redriven" and done.resolution is not None
    assert done.resolution.startswith("Observation/")
    [after] = await _rows(sessions)
    assert after.resolved_by == "nurse" and after.resolved_at is not None and after.attempts == 2
    assert await count_rows(sessions, ObservationRow) == 2
    assert await count_rows(sessions, RawMessage) == 1  # the raw message is not stored again

    [again] = await redrive(pipeline, sessions, [row.id], "nurse")
    assert again.status == "redriven"  # not open any more: nothing done
    assert await count_rows(sessions, ObservationVersion) == 2


async def test_a_message_quarantined_whole_is_redriven_item_by_item(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A gateway unknown at first: once created, its message is read; a bad item gets its own row."""
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=10)
    body = [
        reading(KNOWN, "heart-rate", when, 70, "/min"),
        reading(NEW_DEVICE, "heart-rate", when, 71, "/min"),
    ]
    [rejected] = await pipeline.process([raw_message(body, gateway="late-hub")])
    assert rejected.status == "rejected" and rejected.reason == "not-authorised"
    [row] = await _rows(sessions)
    assert row.item_index is None
    async with sessions() as session, session.begin():
        orgs = list(await session.scalars(select(Organization.id)))
        await create_gateway(session, "late-hub", "Late hub", orgs)
    [outcome] = await redrive(pipeline, sessions, [row.id], "operator")
    assert outcome.status == "redriven"
    rows = await _rows(sessions)
    assert [(r.item_index, r.status, r.reason_class) for r in rows] == [
        (None, "redriven", "not-authorised"),
        (1, "open", "unknown-device"),
    ]
    assert await count_rows(sessions, ObservationRow) == 1


async def test_discard_records_who_and_why_and_only_closes_open_rows(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=10)
    await pipeline.process([raw_message(reading(NEW_DEVICE, "heart-rate", when, 71, "/min"))])
    [row] = await _rows(sessions)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        assert (
            await store.discard(session, [row.id], "kari", "test device, not a patient", now) == 1
        )
    async with sessions() as session, session.begin():
        assert await store.discard(session, [row.id], "kari", "again", now) == 0
    [closed] = await _rows(sessions)
    assert (closed.status, closed.resolved_by, closed.resolution) == (
        "discarded",
        "kari",
        "test device, not a patient",
    )
    assert (await redrive(pipeline, sessions, [row.id], "x"))[0].status == "discarded"
    async with sessions() as session:
        assert await store.list_rows(session, store.QuarantineFilter()) == []
        listed = await store.list_rows(session, store.QuarantineFilter(status="discarded"))
    assert [q.id for q, _ in listed] == [row.id]
    assert store.describe(*listed[0], with_payload=True)["payload"].startswith("{")


async def test_replay_stores_nothing_twice_and_resolves_what_now_passes(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    start = datetime.now(UTC) - timedelta(hours=1)
    for minute in range(5):
        when = start + timedelta(minutes=minute)
        await pipeline.process(
            [
                raw_message(
                    [
                        reading(KNOWN, "heart-rate", when, 60 + minute, "/min"),
                        reading(NEW_DEVICE, "heart-rate", when, 60 + minute, "/min"),
                    ]
                )
            ]
        )
    assert await count_rows(sessions, ObservationRow) == 5
    scope = ReplayScope(since=start - timedelta(minutes=1), until=datetime.now(UTC))

    report = await replay(pipeline, sessions, scope)
    assert report.messages == 5
    assert report.items["duplicate"] == 5 and report.items["quarantined"] == 5
    assert report.quarantine_resolved == 0
    assert await count_rows(sessions, ObservationRow) == 5
    assert all(r.attempts == 1 and r.status == "open" for r in await _rows(sessions))

    await register_device(sessions, NEW_DEVICE, [(PATIENT_A, start - timedelta(days=1), None)])
    only_new = ReplayScope(
        since=scope.since,
        until=scope.until,
        device=("urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680", NEW_DEVICE.lower()),
    )
    dry = await replay(pipeline, sessions, only_new, dry_run=True)
    assert (
        dry.items["accepted"] == 5 and dry.quarantine_resolved == 5 and dry.items["duplicate"] == 0
    )
    assert await count_rows(sessions, ObservationRow) == 5  # a dry run stores nothing

    real = await replay(pipeline, sessions, only_new)
    assert real.items["accepted"] == 5 and real.quarantine_resolved == 5
    assert await count_rows(sessions, ObservationRow) == 10
    assert {r.status for r in await _rows(sessions)} == {"redriven"}
    assert await count_rows(sessions, RawMessage) == 5
    again = await replay(pipeline, sessions, scope)
    assert again.items["duplicate"] == 10 and await count_rows(sessions, ObservationRow) == 10


async def test_replay_of_one_device_leaves_a_whole_message_row_open(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A message quarantined whole is closed only when all of it was processed again."""
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=10)
    other = "00-1C-05-FF-FE-01-00-03"
    body = [
        reading(KNOWN, "heart-rate", when, 70, "/min"),
        reading(other, "body-weight", when, 80, "kg"),
    ]
    [rejected] = await pipeline.process([raw_message(body, gateway="late-hub")])
    assert rejected.status == "rejected"
    async with sessions() as session, session.begin():
        orgs = list(await session.scalars(select(Organization.id)))
        await create_gateway(session, "late-hub", "Late hub", orgs)
    scope = ReplayScope(
        since=when - timedelta(hours=1),
        until=datetime.now(UTC),
        device=("urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680", KNOWN),
    )
    report = await replay(pipeline, sessions, scope)
    assert report.items["accepted"] == 1 and report.quarantine_resolved == 0
    [row] = await _rows(sessions)
    assert row.status == "open" and row.item_index is None  # the weight is not yet stored
    [done] = await redrive(pipeline, sessions, [row.id], "operator")
    assert done.status == "redriven"
    async with sessions() as session:
        types = sorted((await session.scalars(select(ObservationRow.type))).all())
    assert types == ["body-weight", "heart-rate"]


async def test_a_redrive_after_an_adapter_fix_stores_every_reading_of_each_row(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A Withings group that failed whole becomes several readings once the adapter is fixed."""
    await seed(sessions)
    broken_dir = tmp_path / "adapters"
    shutil.copytree(ROOT / "adapters", broken_dir)
    adapter = broken_dir / "withings.yaml"
    adapter.write_text(adapter.read_text().replace("[hash_deviceid, deviceid]", "[hash_device_id]"))
    broken = Pipeline(
        settings,
        sessions,
        ReferenceData.load(settings.model_copy(update={"adapters_dir": broken_dir})),
    )
    payload = (ROOT / "adapters" / "examples" / "withings" / "getmeas.json").read_bytes()
    message = replace(
        raw_message({}), payload=payload, adapter="withings", topic="/ingest/withings"
    )
    [first] = await broken.process([message])
    assert [(i.label, i.status) for i in first.items] == [
        ("[0]", "quarantined"),
        ("[1]", "quarantined"),
    ]
    fixed = Pipeline(settings, sessions, ReferenceData.load(settings))
    outcomes = await redrive(fixed, sessions, [r.id for r in await _rows(sessions)], "operator")
    assert [o.status for o in outcomes] == ["redriven", "redriven"]
    assert outcomes[0].resolution is not None and outcomes[0].resolution.count("Observation/") == 2
    async with sessions() as session:
        types = sorted((await session.scalars(select(ObservationRow.type))).all())
    assert types == ["blood-pressure", "body-weight", "heart-rate"]


async def test_a_replay_does_not_undo_a_later_correction(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=30)
    await pipeline.process([raw_message(reading(KNOWN, "heart-rate", when, 70, "/min"))])
    [corrected] = await pipeline.process(
        [raw_message(reading(KNOWN, "heart-rate", when, 72, "/min"))]
    )
    assert corrected.items[0].amended
    scope = ReplayScope(since=when - timedelta(hours=1), until=datetime.now(UTC))
    for _ in range(2):
        report = await replay(pipeline, sessions, scope)
        assert report.amended == 0 and report.items["duplicate"] == 2
    async with sessions() as session:
        versions = (await session.scalars(select(ObservationVersion.version_id))).all()
        [row] = (await session.scalars(select(ObservationRow))).all()
    assert sorted(versions) == [1, 2] and '"value":72' in row.resource


async def test_an_old_reading_redriven_now_raises_no_alert(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Quarantined when it was fresh, re-driven days later: trend data, not an acute alert."""
    await seed(sessions)
    three_days = datetime.now(UTC) - timedelta(days=3)
    message = replace(
        raw_message(reading(NEW_DEVICE, "heart-rate", three_days, 150, "/min")),
        received_at=three_days + timedelta(minutes=1),
    )
    await pipeline.process([message])
    await register_device(sessions, NEW_DEVICE, [(PATIENT_A, three_days - timedelta(days=1), None)])
    [row] = await _rows(sessions)
    [outcome] = await redrive(pipeline, sessions, [row.id], "operator")
    assert outcome.status == "redriven"
    async with sessions() as session:
        [stored] = (await session.scalars(select(ObservationRow))).all()
        alerts = await session.scalar(select(func.count()).select_from(Alert))
    assert alerts == 0
    assert not stored.late  # it came in on time; only alerting judges it by its age now


async def test_a_place_that_yields_nothing_now_stays_open_and_says_why(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await seed(sessions)
    payload = (ROOT / "adapters" / "examples" / "withings" / "shared-scale.json").read_bytes()
    message = replace(
        raw_message({}), payload=payload, adapter="withings", topic="/ingest/withings"
    )
    pipeline = Pipeline(settings, sessions, ReferenceData.load(settings))
    await pipeline.process([message])
    [unknown] = [r for r in await _rows(sessions) if r.reason_code == "unknown-code"]
    folder = tmp_path / "adapters"
    shutil.copytree(ROOT / "adapters", folder)
    adapter = folder / "withings.yaml"
    adapter.write_text(
        adapter.read_text().replace('ignore_codes: ["5",', 'ignore_codes: ["300", "5",')
    )
    fixed = ReferenceData.load(settings.model_copy(update={"adapters_dir": folder}))
    [outcome] = await redrive(Pipeline(settings, sessions, fixed), sessions, [unknown.id], "ola")
    assert outcome.status == "redriven"  # code 300 is now read as device information
    assert outcome.resolution == "code 300: not a measurement this service keeps"
