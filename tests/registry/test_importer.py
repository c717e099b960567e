"""Registry import from a FHIR Bundle, and the bulk reads the pipeline uses."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhirclient.models.bundle import Bundle
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho import jsonutil
from dho.db.models.registry import (
    CareTeam,
    CareTeamMember,
    Device,
    DeviceAssignment,
    Organization,
    Patient,
)
from dho.ingest.measurement import EUI64_SYSTEM
from dho.registry.importer import (
    ImportReport,
    RegistryImportError,
    import_bundle,
    load_bundle_file,
    valid_org_number,
)
from dho.registry.queries import (
    assignments_for_devices,
    devices_by_identifier,
    patient_at,
    patient_organizations,
)

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo" / "registry.json"
Sessions = async_sessionmaker[AsyncSession]
MODELS: tuple[type[Any], ...] = (Organization, Patient, Device, CareTeam, DeviceAssignment)


def demo() -> dict[str, Any]:
    return copy.deepcopy(_DEMO)


_DEMO: dict[str, Any] = json.loads(DEMO.read_text(encoding="utf-8"))


def entries_of(bundle: dict[str, Any], rtype: str) -> list[tuple[int, dict[str, Any]]]:
    return [(i, e) for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == rtype]


async def run_import(
    sessions: Sessions, bundle: dict[str, Any], *, allow_synthetic: bool = True
) -> ImportReport:
    async with sessions.begin() as session:
        return await import_bundle(session, bundle, allow_synthetic=allow_synthetic)


async def snapshot(sessions: Sessions) -> dict[str, dict[str, tuple[str, datetime]]]:
    async with sessions() as session:
        return {
            model.__tablename__: {
                row.id: (row.resource, row.updated_at)
                for row in await session.scalars(select(model))
            }
            for model in MODELS
        }


async def row_count(session: AsyncSession, model: type[Any]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def counts(report: ImportReport) -> dict[str, tuple[int, int, int]]:
    return {t: (c.created, c.updated, c.unchanged) for t, c in report.by_type.items()}


# ------------------------------------------------------------------ the demo bundle


def test_demo_bundle_is_valid_r4() -> None:
    Bundle(demo(), strict=True)


def test_demo_org_numbers_pass_mod11() -> None:
    for _, entry in entries_of(demo(), "Organization"):
        numbers = [
            i["value"]
            for i in entry["resource"]["identifier"]
            if i["system"] == "urn:oid:2.16.578.1.12.4.1.4.101"
        ]
        assert numbers and all(valid_org_number(n) for n in numbers)
    assert valid_org_number("974760673")  # Brønnøysundregistrene
    assert not valid_org_number("974760672")
    assert not valid_org_number("97476067")


async def test_demo_imports(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        report = await load_bundle_file(session, DEMO, allow_synthetic=True)
    assert counts(report) == {
        "Organization": (4, 0, 0),
        "Patient": (5, 0, 0),
        "Device": (16, 0, 0),
        "CareTeam": (5, 0, 0),
        "DeviceUseStatement": (16, 0, 0),
    }
    async with sessions() as session:
        orgs = {o.name: o for o in await session.scalars(select(Organization))}
        assert orgs["Bodø kommune"].kind == "municipality"
        assert orgs["Bodø kommune"].municipality_number == "1804"
        assert orgs["Vestvågøy kommune"].municipality_number == "1860"
        assert orgs["Nordlandssykehuset HF, Medisinsk avdeling"].kind == "hospital-unit"
        centre = orgs["Responssenter Nordland, digital hjemmeoppfølging"]
        assert centre.kind == "response-centre"
        patients = {p.given_name: p for p in await session.scalars(select(Patient))}
        ingrid = patients["Ingrid"]
        assert ingrid.family_name == "Hansen"
        assert ingrid.birth_date is not None and ingrid.birth_date.isoformat() == "1946-03-14"
        assert ingrid.municipality_number == "1804"
        assert patients["Arne"].municipality_number == "1860"
        assert ingrid.national_id_system == "urn:oid:2.16.578.1.12.4.1.4.1"
        resource = jsonutil.loads(ingrid.resource)
        assert resource["id"] == ingrid.id
        assert resource["meta"]["lastUpdated"].endswith("Z")
        assert resource["managingOrganization"]["reference"] == (
            f"Organization/{orgs['Bodø kommune'].id}"
        )
        organizations = await patient_organizations(session, [p.id for p in patients.values()])
        assert organizations[ingrid.id] == {
            orgs["Bodø kommune"].id,
            centre.id,
            orgs["Nordlandssykehuset HF, Medisinsk avdeling"].id,
        }
        assert organizations[patients["Solveig"].id] == {orgs["Vestvågøy kommune"].id, centre.id}
        team = await session.scalar(select(CareTeam).where(CareTeam.patient_id == ingrid.id))
        assert team is not None
        assert jsonutil.loads(team.resource)["subject"]["reference"] == f"Patient/{ingrid.id}"
        roles = {
            m.organization_id: m.role
            for m in await session.scalars(
                select(CareTeamMember).where(CareTeamMember.care_team_id == team.id)
            )
        }
        assert roles[centre.id] == "follow-up"


async def test_device_queries(sessions: Sessions) -> None:
    await run_import(sessions, demo())
    bp = (EUI64_SYSTEM, "00-1C-05-FF-FE-01-00-01")
    async with sessions() as session:
        found = await devices_by_identifier(
            session, [bp, (EUI64_SYSTEM, "00-00-00-00-00-00-00-00")]
        )
        assert list(found) == [bp]
        device = found[bp]
        assert (device.type_code, device.manufacturer, device.model) == (
            "528391",
            "A&D Medical",
            "UA-651BLE",
        )
        assignments = await assignments_for_devices(session, [device.id, "no-such-device"])
        assert assignments["no-such-device"] == []
        (assignment,) = assignments[device.id]
        patient = await session.scalar(select(Patient).where(Patient.given_name == "Ingrid"))
        assert patient is not None and assignment.patient_id == patient.id
        start = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
        assert assignment.period_start == start and assignment.period_end is None
        assert await devices_by_identifier(session, []) == {}


# ------------------------------------------------------------------ re-import


async def test_reimport_changes_nothing(sessions: Sessions) -> None:
    await run_import(sessions, demo())
    before = await snapshot(sessions)
    report = await run_import(sessions, demo())
    assert report.created == report.updated == 0
    assert report.unchanged == len(demo()["entry"])
    assert await snapshot(sessions) == before


async def test_changed_phone_updates_one_patient(sessions: Sessions) -> None:
    await run_import(sessions, demo())
    before = await snapshot(sessions)
    bundle = demo()
    _, entry = entries_of(bundle, "Patient")[0]
    entry["resource"]["telecom"][0]["value"] = "+4799999999"
    report = await run_import(sessions, bundle)
    assert counts(report)["Patient"] == (0, 1, 4)
    assert report.updated == 1
    after = await snapshot(sessions)
    changed = [pid for pid, row in after["patient"].items() if row != before["patient"][pid]]
    assert len(changed) == 1
    new_resource = jsonutil.loads(after["patient"][changed[0]][0])
    old_resource = jsonutil.loads(before["patient"][changed[0]][0])
    assert new_resource["telecom"][0]["value"] == "+4799999999"
    assert new_resource["meta"]["lastUpdated"] != old_resource["meta"]["lastUpdated"]
    for table in ("organization", "device", "care_team", "device_assignment"):
        assert after[table] == before[table]


async def test_reimport_replaces_care_team_members(sessions: Sessions) -> None:
    await run_import(sessions, demo())
    bundle = demo()
    _, team = entries_of(bundle, "CareTeam")[0]
    team["resource"]["participant"] = team["resource"]["participant"][:2]
    report = await run_import(sessions, bundle)
    assert counts(report)["CareTeam"] == (0, 1, 4)
    async with sessions() as session:
        assert await row_count(session, CareTeamMember) == 10


# ------------------------------------------------------------------ rejected bundles


async def expect_rejected(sessions: Sessions, bundle: Any, match: str, **kw: bool) -> None:
    async with sessions() as session:
        with pytest.raises(RegistryImportError, match=match):
            await import_bundle(session, bundle, allow_synthetic=kw.get("allow_synthetic", True))
        for model in MODELS:
            assert await row_count(session, model) == 0, "nothing is written before the checks"


async def test_invalid_national_id_rejected_naming_the_entry(sessions: Sessions) -> None:
    bundle = demo()
    index, entry = entries_of(bundle, "Patient")[2]
    value = entry["resource"]["identifier"][0]["value"]
    entry["resource"]["identifier"][0]["value"] = value[:-1] + str((int(value[-1]) + 1) % 10)
    await expect_rejected(sessions, bundle, rf"entry {index} \(Patient urn:uuid:.*check digit")


async def test_synthetic_id_rejected_unless_allowed(sessions: Sessions) -> None:
    index, _ = entries_of(demo(), "Patient")[0]
    await expect_rejected(
        sessions, demo(), rf"entry {index} \(Patient.*synthetic", allow_synthetic=False
    )


async def test_unknown_resource_type_rejected(sessions: Sessions) -> None:
    bundle = demo()
    bundle["entry"].append({"resource": {"resourceType": "Observation", "status": "final"}})
    last = len(bundle["entry"]) - 1
    await expect_rejected(sessions, bundle, rf"entry {last}: resourceType 'Observation'")


async def test_other_bundle_types_rejected(sessions: Sessions) -> None:
    bundle = demo()
    bundle["type"] = "collection"
    await expect_rejected(sessions, bundle, "batch' or 'transaction'")
    await expect_rejected(sessions, {"resourceType": "Patient"}, "not a FHIR Bundle")


@pytest.mark.parametrize(
    "reference",
    ["urn:uuid:6f0c7d1e-0000-4000-8000-000000000000", "Patient/not-in-registry"],
)
async def test_dangling_reference_rejected(sessions: Sessions, reference: str) -> None:
    bundle = demo()
    index, team = entries_of(bundle, "CareTeam")[1]
    team["resource"]["subject"]["reference"] = reference
    await expect_rejected(sessions, bundle, rf"entry {index} \(CareTeam.*{reference}")


async def test_duplicate_patient_rejected(sessions: Sessions) -> None:
    bundle = demo()
    (first, patient), (second, _) = entries_of(bundle, "Patient")[:2]
    for key in ("identifier", "birthDate"):
        bundle["entry"][second]["resource"][key] = patient["resource"][key]
    await expect_rejected(sessions, bundle, rf"entry {second} .*same Patient as entry {first}")


async def test_overlapping_assignments_in_bundle_rejected(sessions: Sessions) -> None:
    bundle = demo()
    (_, use), *_ = entries_of(bundle, "DeviceUseStatement")
    other = copy.deepcopy(use)
    other["fullUrl"] = "urn:uuid:6f0c7d1e-0000-4000-8000-000000000001"
    other["resource"]["subject"] = entries_of(bundle, "DeviceUseStatement")[-1][1]["resource"][
        "subject"
    ]
    other["resource"]["timingPeriod"] = {"start": "2026-03-01T08:00:00+01:00"}
    bundle["entry"].append(other)
    await expect_rejected(sessions, bundle, "assigned twice at once")


async def test_overlap_with_stored_assignment_rejected(sessions: Sessions) -> None:
    await run_import(sessions, demo())
    async with sessions() as session:
        device = await session.scalar(
            select(Device).where(Device.identifier_value == "00-1C-05-FF-FE-01-00-01")
        )
        patient = await session.scalar(select(Patient).where(Patient.given_name == "Arne"))
    assert device is not None and patient is not None
    use = {
        "resourceType": "DeviceUseStatement",
        "status": "active",
        "subject": {"reference": f"Patient/{patient.id}"},
        "device": {"reference": f"Device/{device.id}"},
        "timingPeriod": {"start": "2026-02-01T00:00:00+01:00"},
    }
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": use}]}
    async with sessions() as session:
        with pytest.raises(RegistryImportError, match=r"entry 0 .*assigned twice at once"):
            await import_bundle(session, bundle, allow_synthetic=True)


async def test_handover_and_patient_at_boundaries(sessions: Sessions) -> None:
    """End one assignment and start the next at the same instant: allowed, end exclusive."""
    bundle = demo()
    uses = entries_of(bundle, "DeviceUseStatement")
    (_, first) = uses[0]
    handover = "2026-02-01T12:00:00+01:00"
    first["resource"]["timingPeriod"]["end"] = handover
    second = copy.deepcopy(first)
    second["fullUrl"] = "urn:uuid:6f0c7d1e-0000-4000-8000-000000000002"
    second["resource"]["subject"] = uses[-1][1]["resource"]["subject"]
    second["resource"]["timingPeriod"] = {"start": handover}
    bundle["entry"].append(second)
    report = await run_import(sessions, bundle)
    assert report["DeviceUseStatement"].created == len(uses) + 1

    async with sessions() as session:
        device = await session.scalar(
            select(Device).where(Device.identifier_value == "00-1C-05-FF-FE-01-00-01")
        )
        assert device is not None
        assignments = (await assignments_for_devices(session, [device.id]))[device.id]
    assert [a.period_start for a in assignments] == sorted(a.period_start for a in assignments)
    ingrid, solveig = assignments[0].patient_id, assignments[1].patient_id
    assert ingrid != solveig
    start = datetime.fromisoformat("2026-01-01T00:00:00+01:00")
    switch = datetime.fromisoformat(handover)
    tick = timedelta(microseconds=1)
    assert patient_at(assignments, start - tick) is None
    assert patient_at(assignments, start) == ingrid
    assert patient_at(assignments, switch - tick) == ingrid
    assert patient_at(assignments, switch) == solveig
    assert patient_at(assignments, switch.astimezone(UTC) + timedelta(days=3650)) == solveig
    assert patient_at([], switch) is None
    with pytest.raises(ValueError, match="aware"):
        patient_at(assignments, datetime(2026, 1, 2))


async def test_reference_to_stored_rows_by_id(sessions: Sessions) -> None:
    """A later bundle can name rows of an earlier import as `Type/<id>`."""
    await run_import(sessions, demo())
    async with sessions() as session:
        patient = await session.scalar(select(Patient).where(Patient.given_name == "Kari"))
    assert patient is not None
    device = {
        "resourceType": "Device",
        "identifier": [{"system": EUI64_SYSTEM, "value": "00-1C-05-FF-FE-03-00-03"}],
        "type": {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "528399"}]},
    }
    use = {
        "resourceType": "DeviceUseStatement",
        "status": "active",
        "subject": {"reference": f"Patient/{patient.id}"},
        "device": {"reference": "Device/scale-3"},
        "timingPeriod": {"start": "2026-02-01T09:30:00Z", "end": "2026-06-01T00:00:00+02:00"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"fullUrl": "https://registry.example.no/fhir/Device/scale-3", "resource": device},
            {"resource": use},
        ],
    }
    report = await run_import(sessions, bundle)
    assert (report["Device"].created, report["DeviceUseStatement"].created) == (1, 1)
    async with sessions() as session:
        row = await session.scalar(
            select(DeviceAssignment).where(
                DeviceAssignment.patient_id == patient.id, DeviceAssignment.period_end.is_not(None)
            )
        )
        assert row is not None
        stored = jsonutil.loads(row.resource)
        assert stored["device"]["reference"].startswith("Device/")
        assert stored["device"]["reference"] != "Device/scale-3"
        assert row.period_end == datetime(2026, 5, 31, 22, 0, tzinfo=UTC)


async def test_organization_kind_defaults_to_other(sessions: Sessions) -> None:
    org = {
        "resourceType": "Organization",
        "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.2", "value": "8143300"}],
        "type": [{"coding": [{"system": "http://example.org/other", "code": "municipality"}]}],
        "name": "Fastlegekontor",
    }
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": org}]}
    await run_import(sessions, bundle)
    async with sessions() as session:
        row = await session.scalar(select(Organization))
    assert row is not None
    assert (row.kind, row.org_number, row.municipality_number) == ("other", None, None)


async def test_invalid_org_number_rejected(sessions: Sessions) -> None:
    bundle = demo()
    index, org = entries_of(bundle, "Organization")[1]
    org["resource"]["identifier"][0]["value"] = "965114008"
    await expect_rejected(sessions, bundle, rf"entry {index} .*organisation number '965114008'")
