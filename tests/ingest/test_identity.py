"""Who a reading belongs to, who may send it, and that it is stored once.

The pipeline is driven directly on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho import jsonutil
from dho.db.engine import create_engine, session_factory
from dho.db.models import (
    Alert,
    CareTeam,
    CareTeamMember,
    ObservationRow,
    ObservationVersion,
    Organization,
    Quarantine,
)
from dho.ingest.accept import OVERSIZED_KEPT_BYTES
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.registry.gateways import create_gateway
from dho.settings import Settings
from tests.support import (
    PATIENT_A,
    PATIENT_B,
    blood_pressure,
    count_rows,
    patient_id,
    raw_message,
    reading,
    register_device,
    seed,
)

MOVED = "00-1C-05-FF-FE-09-00-01"


async def test_a_device_moved_between_patients_attributes_each_reading(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    moved_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    start = moved_at - timedelta(days=30)
    await register_device(
        sessions, MOVED, [(PATIENT_A, start, moved_at), (PATIENT_B, moved_at, None)]
    )
    before = reading(MOVED, "heart-rate", moved_at - timedelta(minutes=1), 64, "/min")
    at = reading(MOVED, "heart-rate", moved_at, 65, "/min")
    after = reading(MOVED, "heart-rate", moved_at + timedelta(minutes=1), 66, "/min")
    [result] = await pipeline.process([raw_message([before, at, after])])
    assert [i.status for i in result.items] == ["accepted"] * 3
    async with sessions() as session:
        rows = (
            await session.scalars(select(ObservationRow).order_by(ObservationRow.effective))
        ).all()
    a, b = await patient_id(sessions, PATIENT_A), await patient_id(sessions, PATIENT_B)
    assert [row.patient_id for row in rows] == [a, b, b]  # the period end is exclusive
    for row in rows:
        assert jsonutil.loads(row.resource)["subject"] == {"reference": f"Patient/{row.patient_id}"}


async def test_a_reading_before_the_first_assignment_is_quarantined(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    start = datetime.now(UTC) - timedelta(days=1)
    await register_device(sessions, MOVED, [(PATIENT_A, start, None)])
    early = reading(MOVED, "heart-rate", start - timedelta(hours=1), 64, "/min")
    [result] = await pipeline.process([raw_message(early)])
    [item] = result.items
    assert (item.status, item.reason, item.reason_code) == (
        "quarantined",
        "unknown-device",
        "unassigned-device",
    )


async def test_a_gateway_may_send_only_for_devices_of_its_organisations(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    seeded = await seed(sessions)
    async with sessions() as session, session.begin():
        orgs = {o.name: o.id for o in await session.scalars(select(Organization))}
        [bodo] = [oid for name, oid in orgs.items() if "Bodø" in name]
        [other] = [oid for name, oid in orgs.items() if oid != bodo][:1]
        await create_gateway(session, "other-hub", "Other hub", [other])
    since = datetime.now(UTC) - timedelta(days=1)
    await register_device(sessions, MOVED, [(PATIENT_A, since, None)], owner=bodo)
    when = datetime.now(UTC) - timedelta(minutes=2)
    refused, allowed = await pipeline.process(
        [
            raw_message(reading(MOVED, "heart-rate", when, 70, "/min"), gateway="other-hub"),
            raw_message(reading(MOVED, "heart-rate", when, 70, "/min"), gateway=seeded.gateway),
        ]
    )
    assert refused.not_authorised
    [item] = refused.items
    assert (item.reason, item.reason_code) == ("not-authorised", "device-not-registered-to-gateway")
    assert allowed.items[0].status == "accepted"
    async with sessions() as session:
        reasons = (await session.scalars(select(Quarantine.reason_class))).all()
    assert reasons == ["not-authorised"]


async def test_an_unknown_gateway_is_not_authorised(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=2)
    [result] = await pipeline.process([raw_message(blood_pressure(120, 80, when), gateway="ghost")])
    assert result.status == "rejected" and result.reason == "not-authorised"
    assert result.reason_code == "unknown-gateway" and result.not_authorised


async def test_the_same_batch_three_times_and_a_correction(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=4)
    batch = [
        blood_pressure(150, 95, when),
        reading("00-1C-05-FF-FE-01-00-02", "oxygen-saturation", when, 96, "%"),
    ]
    first, second, third = [(await pipeline.process([raw_message(batch)]))[0] for _ in range(3)]
    assert [i.status for i in first.items] == ["accepted", "accepted"]
    for again in (second, third):
        assert [i.status for i in again.items] == ["duplicate", "duplicate"]
        assert [i.observation_id for i in again.items] == [i.observation_id for i in first.items]
    assert await count_rows(sessions, ObservationRow) == 2
    corrected = (await pipeline.process([raw_message(blood_pressure(152, 95, when))]))[0]
    [item] = corrected.items
    assert item.status == "accepted" and item.amended and item.version_id == 2
    assert item.observation_id == first.items[0].observation_id
    async with sessions() as session:
        row = await session.get(ObservationRow, item.observation_id)
        versions = (await session.scalars(select(ObservationVersion.resource))).all()
    assert row is not None and jsonutil.loads(row.resource)["status"] == "amended"
    assert sorted(jsonutil.loads(v)["status"] for v in versions) == ["amended", "final", "final"]
    assert await count_rows(sessions, ObservationRow) == 2
    again = (await pipeline.process([raw_message(blood_pressure(152, 95, when))]))[0]
    assert again.items[0].status == "duplicate" and again.items[0].version_id == 2


async def test_two_service_processes_receiving_one_batch_store_it_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two pipelines with engines of their own, like two replicas, race on the same batch."""
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=3)
    batch = [
        reading(
            "00-1C-05-FF-FE-01-00-02", "heart-rate", when + timedelta(seconds=s), 60 + s, "/min"
        )
        for s in range(20)
    ]
    engines = [create_engine(settings) for _ in range(2)]
    try:
        pipelines = [
            Pipeline(settings, session_factory(e), ReferenceData.load(settings)) for e in engines
        ]
        results = await asyncio.gather(
            *(p.process([raw_message(batch)]) for p in pipelines for _ in range(2))
        )
    finally:
        for engine in engines:
            await engine.dispose()
    statuses = sorted(i.status for [r] in results for i in r.items)
    assert statuses.count("accepted") == 20 and statuses.count("duplicate") == 60
    assert await count_rows(sessions, ObservationRow) == 20
    assert await count_rows(sessions, ObservationVersion) == 20


async def test_a_late_reading_is_stored_marked_and_raises_no_alert(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await seed(sessions)
    late = datetime.now(UTC) - timedelta(seconds=settings.late_after_s + 600)
    fresh = datetime.now(UTC) - timedelta(minutes=1)
    results = await pipeline.process(
        [raw_message(blood_pressure(200, 120, late)), raw_message(blood_pressure(200, 120, fresh))]
    )
    [old], [new] = (r.items for r in results)
    assert old.late and old.alert_id is None
    assert not new.late and new.alert_severity == "red"
    async with sessions() as session:
        row = await session.get(ObservationRow, old.observation_id)
        alerts = (await session.scalars(select(Alert.observation_id))).all()
    assert row is not None and row.late
    tags = jsonutil.loads(row.resource)["meta"]["tag"]
    assert [t["code"] for t in tags] == ["late"]
    assert alerts == [new.observation_id]


async def test_a_claimed_patient_must_be_the_devices_patient(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A sender naming another patient than the device's is stopped (wrong-patient hazard)."""
    from dataclasses import replace

    from dho.ingest.decode import decode

    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=2)
    raw = raw_message(blood_pressure(130, 80, when))
    reference = pipeline.reference
    [item] = decode(raw, reference.adapters, reference.context).items
    assert item.measurement is not None
    wrong = replace(item.measurement, patient=("urn:oid:2.16.578.1.12.4.1.4.1", PATIENT_B))
    right = replace(item.measurement, patient=("urn:oid:2.16.578.1.12.4.1.4.1", PATIENT_A))
    from dho.ingest.context import load_registry
    from dho.ingest.resolve import Gateway, resolve

    async with sessions() as session:
        snapshot = await load_registry(
            session, [replace(item, measurement=m) for m in (wrong, right)]
        )
    gateway = Gateway(
        "test-hub", frozenset(o for orgs in snapshot.patient_organizations.values() for o in orgs)
    )
    with pytest.raises(Exception, match="names patient") as caught:
        resolve(wrong, snapshot, gateway, datetime.now(UTC))
    assert getattr(caught.value, "code", None) == "patient-mismatch"
    assert resolve(right, snapshot, gateway, datetime.now(UTC)).patient_id == await patient_id(
        sessions, PATIENT_A
    )


async def test_every_quarantine_reason_is_produced_and_keeps_the_raw_bytes(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One message (or item) per reason class, through the real pipeline and database."""
    from dho.ingest import pipeline as pipeline_module
    from dho.ingest.errors import REASONS
    from dho.ingest.measurement import RawMessage as Raw

    await seed(sessions)
    pipeline = Pipeline(settings, sessions, ReferenceData.load(settings))
    real_to_fhir = pipeline_module.to_fhir

    def to_fhir_with_a_bug(m: Any, **kwargs: Any) -> dict[str, Any]:
        if m.value is not None and m.value.value == 77:
            raise RuntimeError("a bug in to_fhir")
        return dict(real_to_fhir(m, **kwargs))

    monkeypatch.setattr("dho.ingest.pipeline.to_fhir", to_fhir_with_a_bug)
    now = datetime.now(UTC)
    ago = now - timedelta(minutes=5)
    ox = "00-1C-05-FF-FE-01-00-02"
    messages = {
        "unparseable": Raw(b"\x00{not json", "mqtt", "t", "test-hub", "dho-json", now),
        "unknown-adapter": Raw(b"{}", "mqtt", "t", "test-hub", "vendor-x", now),
        "unknown-device": raw_message(
            reading("AA-BB-CC-DD-EE-FF-00-01", "heart-rate", ago, 70, "/min")
        ),
        "not-authorised": raw_message(reading(ox, "heart-rate", ago, 70, "/min"), gateway="ghost"),
        "implausible": raw_message(reading(ox, "oxygen-saturation", ago, 101, "%")),
        "future": raw_message(reading(ox, "heart-rate", now + timedelta(hours=2), 70, "/min")),
        "mapping-error": raw_message(reading(ox, "oxygen-saturation", ago, 95, "ratio")),
        "oversized": Raw(
            b"[" + b" " * settings.max_message_bytes + b"]",
            "mqtt",
            "t",
            "test-hub",
            "dho-json",
            now,
        ),
        "processing-error": raw_message(reading(ox, "heart-rate", ago, 77, "/min")),
    }
    assert set(messages) == set(REASONS)
    await pipeline.process(list(messages.values()))
    async with sessions() as session:
        from dho.db.models import RawMessage as RawRow

        rows = (await session.execute(select(Quarantine, RawRow).join(RawRow))).all()
    by_reason = {q.reason_class: (q, r) for q, r in rows}
    assert set(by_reason) == set(REASONS)
    for reason, (row, raw) in by_reason.items():
        sent = messages[reason].payload
        kept = sent[:OVERSIZED_KEPT_BYTES] if reason == "oversized" else sent
        assert raw.payload == kept, reason
        assert row.status == "open" and row.reason
    assert (
        len(by_reason["oversized"][1].payload) == OVERSIZED_KEPT_BYTES < settings.max_message_bytes
    )
    assert await count_rows(sessions, ObservationRow) == 0


def _phd_pulse(device: str, when: datetime, value: int, identifier: str) -> Any:
    """A PHD heart-rate Observation whose sender numbers its readings (identifier `value`)."""
    from dho.ingest.measurement import RawMessage as Raw

    observation = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"value": identifier}],
        "code": {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "149546"}]},
        "effectiveDateTime": when.isoformat(),
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
        "device": {
            "identifier": {
                "system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680",
                "value": device,
            }
        },
    }
    return Raw(
        jsonutil.dumps(observation).encode(),
        "http",
        "/fhir/Observation",
        "test-hub",
        "phd-fhir",
        datetime.now(UTC),
    )


async def test_senders_identifiers_are_not_keys_across_devices(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two gateways numbering their readings "1" must not merge two patients' readings."""
    await seed(sessions)
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    a, b = "00-1C-05-FF-FE-01-00-01", "00-1C-05-FF-FE-02-00-01"
    first, second = await pipeline.process(
        [_phd_pulse(a, when, 70, "1"), _phd_pulse(b, when - timedelta(minutes=1), 90, "1")]
    )
    assert first.items[0].status == second.items[0].status == "accepted"
    assert not second.items[0].amended
    async with sessions() as session:
        rows = (
            await session.scalars(select(ObservationRow).order_by(ObservationRow.effective))
        ).all()
    assert len(rows) == 2 and rows[0].patient_id != rows[1].patient_id
    for row in rows:
        assert jsonutil.loads(row.resource)["id"] == row.id
    # The same device's reading again, its time written another way: a duplicate.
    again = _phd_pulse(a, when.astimezone(UTC), 70, "1")
    [result] = await pipeline.process([again])
    assert result.items[0].status == "duplicate"


async def test_a_message_whose_items_were_all_refused_keeps_its_id_free(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The gateway sends it again, under the same id, once the device is registered."""
    await seed(sessions)
    when = datetime.now(UTC) - timedelta(minutes=5)
    envelope = {
        "message_id": "gw-9",
        "measurements": [reading(MOVED, "heart-rate", when, 70, "/min")],
    }
    [first] = await pipeline.process([raw_message(envelope)])
    assert first.status == "accepted" and first.items[0].reason == "unknown-device"
    await register_device(sessions, MOVED, [(PATIENT_A, when - timedelta(days=1), None)])
    [second] = await pipeline.process([raw_message(envelope)])
    assert second.status == "accepted" and second.items[0].status == "accepted"
    [third] = await pipeline.process([raw_message(envelope)])
    assert third.status == "duplicate"


async def test_a_gateway_cannot_probe_the_registry_with_claims(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A Patient entry is matched only for a gateway that serves the patient's care team."""
    from dho.ingest.measurement import RawMessage as Raw

    await seed(sessions)
    a = await patient_id(sessions, PATIENT_A)
    [outsider, *_] = await _outside_the_care_of(sessions, a)
    async with sessions() as session, session.begin():
        await create_gateway(session, "other-hub", "Another municipality", [outsider])
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": PATIENT_A}],
    }
    entry = {
        "fullUrl": "urn:uuid:0b1f7c54-5d22-4f0d-9a8e-3d1b6a1e2f00",
        "resource": patient,
        "request": {"method": "POST", "url": "Patient"},
    }
    payload = jsonutil.dumps({"resourceType": "Bundle", "type": "batch", "entry": [entry]}).encode()
    own, other = await pipeline.process(
        [
            Raw(payload, "http", "/fhir", "test-hub", "phd-fhir", datetime.now(UTC)),
            Raw(payload, "http", "/fhir", "other-hub", "phd-fhir", datetime.now(UTC)),
        ]
    )
    assert own.items[0].status == "matched" and own.items[0].reference == f"Patient/{a}"
    [refused] = other.items
    assert (refused.status, refused.reason_code) == ("quarantined", "unknown-patient")
    assert a not in (refused.detail or "")


async def test_a_later_reading_with_the_same_value_and_identifier_is_stored(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Numbered per upload, "1" half an hour apart: two readings, not one re-sent."""
    await seed(sessions)
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    device = "00-1C-05-FF-FE-01-00-01"
    first, later = await pipeline.process(
        [
            _phd_pulse(device, when, 70, "1"),
            _phd_pulse(device, when + timedelta(minutes=30), 70, "1"),
        ]
    )
    assert first.items[0].status == later.items[0].status == "accepted"
    assert first.items[0].observation_id != later.items[0].observation_id
    assert await count_rows(sessions, ObservationRow) == 2


async def test_the_owner_of_a_device_may_name_the_devices_patient(
    pipeline: Pipeline, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A gateway of the device's owner sends a PHD batch naming the patient: matched."""
    from dho.ingest.measurement import RawMessage as Raw

    await seed(sessions)
    a = await patient_id(sessions, PATIENT_A)
    [owner, *_] = await _outside_the_care_of(sessions, a)
    async with sessions() as session, session.begin():
        await create_gateway(session, "owner-hub", "The owner's hub", [owner])
    since = datetime.now(UTC) - timedelta(days=1)
    await register_device(sessions, MOVED, [(PATIENT_A, since, None)], owner=owner)
    pulse = jsonutil.loads(
        _phd_pulse(MOVED, datetime.now(UTC) - timedelta(minutes=2), 66, "x").payload
    )
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": PATIENT_A}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "fullUrl": "urn:uuid:5d0b1c3e-0000-4000-8000-000000000001",
                "resource": patient,
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:5d0b1c3e-0000-4000-8000-000000000002",
                "resource": pulse,
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    raw = Raw(
        jsonutil.dumps(bundle).encode(), "http", "/fhir", "owner-hub", "phd-fhir", datetime.now(UTC)
    )
    [result] = await pipeline.process([raw])
    assert [i.status for i in result.items] == ["matched", "accepted"]
    assert result.items[0].reference == f"Patient/{a}"


async def _outside_the_care_of(
    sessions: async_sessionmaker[AsyncSession], patient: str
) -> list[str]:
    """Organisations not in the patient's care team (the demo registry has some)."""
    async with sessions() as session:
        caring = set(
            await session.scalars(
                select(CareTeamMember.organization_id)
                .join(CareTeam, CareTeam.id == CareTeamMember.care_team_id)
                .where(CareTeam.patient_id == patient)
            )
        )
        outsiders = sorted(set(await session.scalars(select(Organization.id))) - caring)
    assert outsiders
    return outsiders
