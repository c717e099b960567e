"""FHIR write API through the real service: POST /fhir/Observation and POST /fhir Bundles.

Runs on SQLite and on PostgreSQL. Response Bundles and OperationOutcomes are checked as
strict R4 with fhirclient.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirclient.models.bundle import Bundle as R4Bundle
from fhirclient.models.operationoutcome import OperationOutcome as R4OperationOutcome
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.engine import create_engine, session_factory
from dho.db.models import (
    Device,
    ObservationRow,
    Organization,
    Patient,
    Quarantine,
    RawMessage,
)
from dho.registry.gateways import create_gateway
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.fhir_checks import assert_valid_fhir_json
from tests.support import (
    PATIENT_A,
    PATIENT_B,
    Seeded,
    count_rows,
    patient_id,
    running_service,
    seed,
)

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "adapters" / "examples" / "phd-fhir"
EUI64 = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
BP_MONITOR = "00-1C-05-FF-FE-01-00-01"
OXIMETER = "00-1C-05-FF-FE-01-00-02"
GLUCOMETER = "00-1C-05-FF-FE-01-00-04"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def service_settings(database_url: str, tmp_path: Path) -> Settings:
    return base_settings(tmp_path, database_url=database_url, http_port=free_port())


@pytest.fixture
async def sessions(service_settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(service_settings)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> Seeded:
    return await seed(sessions)


@pytest.fixture
async def client(service_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(service_settings) as base, httpx.AsyncClient(base_url=base) as c:
        yield c


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return document


def _minutes_ago(minutes: float, offset_hours: float | None = None) -> str:
    zone = UTC if offset_hours is None else timezone(timedelta(hours=offset_hours))
    moment = (datetime.now(UTC) - timedelta(minutes=minutes)).astimezone(zone)
    return moment.isoformat(timespec="seconds")


def _at(resource: dict[str, Any], when: str, tag: str) -> dict[str, Any]:
    """The resource at another time, with a PHD identifier of its own."""
    changed = copy.deepcopy(resource)
    changed["effectiveDateTime"] = when
    changed["identifier"] = [{"value": f"{tag}-{when}"}]
    return changed


def _bp(when: str, systolic: int = 142) -> dict[str, Any]:
    resource = _at(_example("bp-observation.json"), when, "bp")
    resource["component"][0]["valueQuantity"]["value"] = systolic
    return resource


def _transaction(when: str, kind: str = "transaction") -> dict[str, Any]:
    document = _example("transaction.json")
    document["type"] = kind
    for index, entry in enumerate(document["entry"][3:]):
        entry["resource"] = _at(entry["resource"], when, f"phd-{index}")
        del entry["request"]["ifNoneExist"]
    return document


def _auth(seeded: Seeded) -> dict[str, str]:
    return {"Authorization": f"Bearer {seeded.key}", **FHIR_JSON}


async def _post(
    client: httpx.AsyncClient, seeded: Seeded, path: str, body: Any, **headers: str
) -> httpx.Response:
    return await client.post(path, content=json.dumps(body), headers=_auth(seeded) | headers)


async def _device_id(sessions: async_sessionmaker[AsyncSession], value: str) -> str:
    async with sessions() as session:
        found = await session.scalar(select(Device.id).where(Device.identifier_value == value))
    assert found is not None
    return str(found)


def _bundle(answer: httpx.Response, kind: str) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = answer.json()
    R4Bundle(body, strict=True)
    assert body["type"] == f"{kind}-response"
    return body


def _outcome(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = answer.json()
    R4OperationOutcome(body, strict=True)
    return body


def _raw_message_id(outcome: dict[str, Any]) -> int:
    [extension] = outcome["extension"]
    return int(extension["valueString"])


def _statuses(bundle: dict[str, Any]) -> list[str]:
    return [entry["response"]["status"] for entry in bundle["entry"]]


# ---------------------------------------------------------------- POST /fhir/Observation


async def test_an_observation_is_created_resent_and_corrected(
    client: httpx.AsyncClient,
    seeded: Seeded,
    sessions: async_sessionmaker[AsyncSession],
    service_settings: Settings,
) -> None:
    when = _minutes_ago(3, offset_hours=-3)
    created = await _post(client, seeded, "/fhir/Observation", _bp(when))
    assert created.status_code == 201, created.text
    resource = assert_valid_fhir_json(created.text)
    oid = resource["id"]
    base = service_settings.base_url
    assert created.headers["location"] == f"{base}/fhir/Observation/{oid}/_history/1"
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["last-modified"].endswith(" GMT")
    async with sessions() as session:
        row = await session.get(ObservationRow, oid)
    assert row is not None and created.text == row.resource  # the stored text, as it is
    codes = {(c["system"], c["code"]) for c in resource["code"]["coding"]}
    assert {(LOINC, "85354-9"), (MDC, "150020")} <= codes
    components = {
        (c["code"]["coding"][0]["system"], c["code"]["coding"][0]["code"]): c["valueQuantity"]
        for c in resource["component"]
    }
    assert components[(LOINC, "8480-6")]["value"] == 142
    assert components[(LOINC, "8462-4")]["value"] == 88
    assert components[(MDC, "150023")]["value"] == 106
    assert {q["code"] for q in components.values()} == {"mm[Hg]"}
    assert resource["effectiveDateTime"] == when and when.endswith("-03:00")
    assert resource["subject"]["reference"] == f"Patient/{await patient_id(sessions, PATIENT_A)}"
    assert resource["device"]["reference"] == f"Device/{await _device_id(sessions, BP_MONITOR)}"
    assert {"value": f"bp-{when}"} in resource["identifier"]

    again = await _post(client, seeded, "/fhir/Observation", _bp(when))
    assert again.status_code == 200 and again.text == created.text
    assert again.headers["location"] == created.headers["location"]
    assert await count_rows(sessions, ObservationRow) == 1

    corrected = await _post(client, seeded, "/fhir/Observation", _bp(when, systolic=143))
    assert corrected.status_code == 200
    assert corrected.headers["etag"] == 'W/"2"'
    assert corrected.headers["location"].endswith(f"/Observation/{oid}/_history/2")
    assert corrected.json()["status"] == "amended"
    assert (await client.get(f"/fhir/Observation/{oid}")).text == corrected.text
    assert await count_rows(sessions, ObservationRow) == 1


async def test_a_weight_in_pounds_is_stored_in_kilograms(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    weight = _at(_example("weight-lb.json"), _minutes_ago(2, offset_hours=1), "w")
    answer = await _post(client, seeded, "/fhir/Observation", weight)
    assert answer.status_code == 201, answer.text
    resource = assert_valid_fhir_json(answer.text)
    assert resource["valueQuantity"]["code"] == "kg"
    assert str(resource["valueQuantity"]["value"]) == "80.0"
    assert (LOINC, "29463-7") in {(c["system"], c["code"]) for c in resource["code"]["coding"]}


async def test_an_idempotency_key_sent_again_is_a_duplicate_message(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = _bp(_minutes_ago(2))
    first = await _post(client, seeded, "/fhir/Observation", body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    body["component"][0]["valueQuantity"]["value"] = 150  # not even looked at again
    again = await _post(client, seeded, "/fhir/Observation", body, **{"Idempotency-Key": "k-1"})
    [issue] = _outcome(again, 200)["issue"]
    assert (issue["severity"], issue["code"]) == ("information", "duplicate")
    assert await count_rows(sessions, RawMessage) == 1
    path = httpx.URL(first.headers["location"]).path.split("/_history")[0]
    stored = (await client.get(path)).json()
    assert stored["meta"]["versionId"] == "1"


async def test_a_quarantined_observation_is_an_operation_outcome(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    unknown = _bp(_minutes_ago(2))
    unknown["device"]["identifier"]["value"] = "AA-BB-CC-DD-EE-FF-00-11"
    outcome = _outcome(await _post(client, seeded, "/fhir/Observation", unknown), 422)
    [issue] = outcome["issue"]
    assert issue["severity"] == "error" and issue["code"] == "not-found"
    assert issue["details"]["coding"][0]["code"] == "unknown-device"
    assert "AA-BB-CC-DD-EE-FF-00-11" in issue["diagnostics"]
    async with sessions() as session:
        [row] = (await session.scalars(select(Quarantine))).all()
        raw = await session.get(RawMessage, row.raw_message_id)
    assert raw is not None and raw.adapter == "phd-fhir" and raw.topic == "/fhir/Observation"
    assert _raw_message_id(outcome) == raw.id and row.reason_code == "unknown-device"

    invalid = _bp(_minutes_ago(2))
    invalid["status"] = 7
    outcome = _outcome(await _post(client, seeded, "/fhir/Observation", invalid), 422)
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == "invalid-fhir"
    assert await count_rows(sessions, ObservationRow) == 0


async def test_a_gateway_not_serving_the_patient_is_forbidden(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session, session.begin():
        elsewhere = await session.scalar(
            select(Organization.id).where(Organization.name == "Vestvågøy kommune")
        )
        assert elsewhere is not None
        key = await create_gateway(session, "stranger-hub", "Stranger", [elsewhere])
    answer = await client.post(
        "/fhir/Observation",
        content=json.dumps(_bp(_minutes_ago(2))),
        headers={"Authorization": f"Bearer {key}", **FHIR_JSON},
    )
    outcome = _outcome(answer, 403)
    assert outcome["issue"][0]["code"] == "forbidden"
    assert await count_rows(sessions, ObservationRow) == 0


async def test_requests_refused_before_anything_is_stored(
    client: httpx.AsyncClient,
    seeded: Seeded,
    sessions: async_sessionmaker[AsyncSession],
    service_settings: Settings,
) -> None:
    body = json.dumps(_bp(_minutes_ago(2)))
    no_key = await client.post("/fhir/Observation", content=body, headers=FHIR_JSON)
    assert _outcome(no_key, 401)["issue"][0]["code"] == "login"
    assert no_key.headers["www-authenticate"].startswith("Bearer")

    xml = await client.post(
        "/fhir/Observation",
        content=b'<Observation xmlns="http://hl7.org/fhir"/>',
        headers=_auth(seeded) | {"Content-Type": "application/fhir+xml"},
    )
    assert "XML is not supported" in _outcome(xml, 415)["issue"][0]["diagnostics"]
    latin = await client.post(
        "/fhir",
        content=body,
        headers=_auth(seeded) | {"Content-Type": "application/json; charset=iso-8859-1"},
    )
    _outcome(latin, 415)

    huge = await client.post(
        "/fhir",
        content=b"{" + b" " * service_settings.max_message_bytes + b"}",
        headers=_auth(seeded),
    )
    assert _outcome(huge, 413)["issue"][0]["code"] == "too-long"

    bundle_here = await _post(client, seeded, "/fhir/Observation", _transaction(_minutes_ago(2)))
    assert "takes an Observation" in _outcome(bundle_here, 400)["issue"][0]["diagnostics"]
    observation_there = await _post(client, seeded, "/fhir", _bp(_minutes_ago(2)))
    _outcome(observation_there, 400)
    assert await count_rows(sessions, RawMessage) == 0

    charset = await client.post(
        "/fhir/Observation",
        content=body,
        headers=_auth(seeded) | {"Content-Type": "application/json; charset=UTF-8"},
    )
    assert charset.status_code == 201, charset.text


# ---------------------------------------------------------------- POST /fhir


async def test_a_batch_answers_each_entry_and_stores_the_good_ones(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    when = _minutes_ago(4, offset_hours=1)
    document = _example("batch.json")
    document["entry"] = [
        {**entry, "resource": _at(entry["resource"], when, f"b{index}")}
        for index, entry in enumerate(document["entry"])
    ]
    transaction = _example("transaction.json")
    patient, gateway = transaction["entry"][0], transaction["entry"][1]
    broken = copy.deepcopy(document["entry"][0])
    broken["resource"]["valueQuantity"]["value"] = "a lot"
    document["entry"] += [patient, gateway, broken]
    answer = _bundle(await _post(client, seeded, "/fhir", document), "batch")
    assert _statuses(answer) == [
        "201 Created",
        "200 OK",
        "200 OK",
        "200 OK",
        "422 Unprocessable Entity",
    ]
    glucose, battery, matched, ignored, invalid = (e["response"] for e in answer["entry"])
    assert glucose["location"].startswith("Observation/") and glucose["etag"] == 'W/"1"'
    assert glucose["location"].endswith("/_history/1") and "lastModified" in glucose
    assert "location" not in battery
    [note] = battery["outcome"]["issue"]
    assert (note["severity"], note["expression"]) == ("information", ["Bundle.entry[1]"])
    assert note["diagnostics"].startswith("device information (MDC 67996")
    assert matched["location"] == f"Patient/{await patient_id(sessions, PATIENT_A)}"
    assert "location" not in ignored
    assert "gateway's own device" in ignored["outcome"]["issue"][0]["diagnostics"]
    assert invalid["outcome"]["issue"][0]["details"]["coding"][0]["code"] == "invalid-fhir"

    oid = glucose["location"].split("/")[1]
    read = assert_valid_fhir_json((await client.get(f"/fhir/Observation/{oid}")).text)
    assert (
        read["valueQuantity"]["code"] == "mmol/L" and str(read["valueQuantity"]["value"]) == "5.8"
    )
    assert (LOINC, "14743-9") in {(c["system"], c["code"]) for c in read["code"]["coding"]}
    assert read["device"]["reference"] == f"Device/{await _device_id(sessions, GLUCOMETER)}"
    assert await count_rows(sessions, ObservationRow) == 1
    async with sessions() as session:
        rows = (await session.execute(select(Quarantine.item_label, Quarantine.reason_code))).all()
    assert rows == [("Bundle.entry[4]", "invalid-fhir")]


async def test_a_transaction_is_stored_whole_and_a_resend_creates_nothing(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    document = _transaction(_minutes_ago(5, offset_hours=2))
    answer = _bundle(await _post(client, seeded, "/fhir", document), "transaction")
    assert _statuses(answer) == ["200 OK", "200 OK", "200 OK", "201 Created", "201 Created"]
    patient, gateway, device, spo2, pulse = (e["response"] for e in answer["entry"])
    ingrid = await patient_id(sessions, PATIENT_A)
    assert patient["location"] == f"Patient/{ingrid}"
    assert "location" not in gateway
    assert device["location"] == f"Device/{await _device_id(sessions, OXIMETER)}"
    for response in (spo2, pulse):
        oid = response["location"].split("/")[1]
        read = assert_valid_fhir_json((await client.get(f"/fhir/Observation/{oid}")).text)
        assert read["subject"]["reference"] == f"Patient/{ingrid}"
        assert read["effectiveDateTime"].endswith("+02:00")
    assert await count_rows(sessions, ObservationRow) == 2

    again = _bundle(await _post(client, seeded, "/fhir", document), "transaction")
    assert _statuses(again) == ["200 OK"] * 5
    assert [e["response"].get("location") for e in again["entry"]] == [
        e["response"].get("location") for e in answer["entry"]
    ]
    assert await count_rows(sessions, ObservationRow) == 2


async def test_a_transaction_with_one_bad_entry_stores_nothing_but_the_message(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    document = _transaction(_minutes_ago(5))
    # MDC_LEN_BODY_ACTUAL (body height): no measurement type of this service.
    document["entry"][4]["resource"]["code"]["coding"] = [{"system": MDC, "code": "188752"}]
    outcome = _outcome(await _post(client, seeded, "/fhir", document), 422)
    [issue] = outcome["issue"]
    assert issue["expression"] == ["Bundle.entry[4]"]
    assert issue["details"]["coding"][0]["code"] == "unknown-code"
    assert await count_rows(sessions, ObservationRow) == 0
    async with sessions() as session:
        [raw] = (await session.scalars(select(RawMessage))).all()
        [row] = (await session.scalars(select(Quarantine))).all()
    assert raw.id == _raw_message_id(outcome) and raw.topic == "/fhir"
    assert json.loads(raw.payload) == document
    assert row.raw_message_id == raw.id and row.item_index is None
    assert row.reason_code == "transaction-rejected" and "Bundle.entry[4]" in row.reason


async def test_a_transaction_with_a_time_stamp_and_a_battery_level_is_stored(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    when = _minutes_ago(5, offset_hours=1)
    document = _example("transaction-with-time-stamp.json")
    for entry in document["entry"][3:]:
        resource = entry["resource"]
        resource["effectiveDateTime"] = when
        if "identifier" in resource:
            resource["identifier"] = [{"value": f"{resource['identifier'][0]['value']}-{when}"}]
            del entry["request"]["ifNoneExist"]
    answer = _bundle(await _post(client, seeded, "/fhir", document), "transaction")
    assert _statuses(answer) == ["200 OK"] * 4 + ["201 Created"] * 2 + ["200 OK"]
    _, gateway, device, time_stamp, _, _, battery = (e["response"] for e in answer["entry"])
    assert "location" not in gateway  # the time stamp's `device` is the gateway: not a claim
    assert device["location"] == f"Device/{await _device_id(sessions, BP_MONITOR)}"
    for response, code in ((time_stamp, "67975"), (battery, "67996")):
        [note] = response["outcome"]["issue"]
        assert "location" not in response and note["severity"] == "information"
        assert note["diagnostics"].startswith(f"device information (MDC {code} ")
    async with sessions() as session:
        stored = sorted((await session.scalars(select(ObservationRow.type))).all())
    assert stored == ["blood-pressure", "heart-rate"]
    assert await count_rows(sessions, Quarantine) == 0


@pytest.mark.parametrize("kind", ["batch", "transaction"])
async def test_an_empty_bundle_is_answered_without_an_empty_entry_list(
    client: httpx.AsyncClient, seeded: Seeded, kind: str
) -> None:
    for document in (
        {"resourceType": "Bundle", "type": kind},
        {"resourceType": "Bundle", "type": kind, "entry": []},
    ):
        answer = _bundle(await _post(client, seeded, "/fhir", document), kind)
        assert "entry" not in answer and "[]" not in json.dumps(answer)


async def test_an_unknown_patient_rejects_the_transaction_and_creates_no_patient(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    patients = await count_rows(sessions, Patient)
    document = _transaction(_minutes_ago(5))
    document["entry"][0]["resource"]["identifier"][0]["value"] = "01010112345"
    outcome = _outcome(await _post(client, seeded, "/fhir", document), 422)
    issue, *observations = outcome["issue"]
    assert issue["expression"] == ["Bundle.entry[0]"] and issue["code"] == "not-found"
    # The Observations name that patient too, who is not the one their device was assigned to.
    assert [(i["expression"], i["details"]["coding"][0]["code"]) for i in observations] == [
        (["Bundle.entry[3]"], "patient-mismatch"),
        (["Bundle.entry[4]"], "patient-mismatch"),
    ]
    assert issue["details"]["coding"][0]["code"] == "unknown-patient"
    assert "does not create registry entries" in issue["diagnostics"]
    assert await count_rows(sessions, Patient) == patients
    assert await count_rows(sessions, ObservationRow) == 0


async def test_a_patient_who_is_not_the_devices_patient_is_a_mismatch(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    document = _transaction(_minutes_ago(6), kind="batch")
    document["entry"][0]["resource"]["identifier"][0]["value"] = PATIENT_B
    answer = _bundle(await _post(client, seeded, "/fhir", document), "batch")
    assert _statuses(answer) == ["200 OK", "200 OK", "200 OK"] + ["422 Unprocessable Entity"] * 2
    assert answer["entry"][0]["response"]["location"] == (
        f"Patient/{await patient_id(sessions, PATIENT_B)}"
    )
    for entry in answer["entry"][3:]:
        issue = entry["response"]["outcome"]["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "patient-mismatch"
    async with sessions() as session:
        codes = (await session.scalars(select(Quarantine.reason_code))).all()
    assert codes == ["patient-mismatch", "patient-mismatch"]
    assert await count_rows(sessions, ObservationRow) == 0

    document["type"] = "transaction"
    outcome = _outcome(await _post(client, seeded, "/fhir", document), 422)
    assert [i["expression"] for i in outcome["issue"]] == [["Bundle.entry[3]"], ["Bundle.entry[4]"]]


async def test_a_bundle_sent_again_whole_is_a_duplicate_message(
    client: httpx.AsyncClient, seeded: Seeded, sessions: async_sessionmaker[AsyncSession]
) -> None:
    document = _transaction(_minutes_ago(5))
    document["identifier"] = {
        "system": "urn:ietf:rfc:3986",
        "value": "urn:uuid:5b1d9c1e-0000-4000-8000-000000000001",
    }
    first = _bundle(await _post(client, seeded, "/fhir", document), "transaction")
    assert "201 Created" in _statuses(first)
    again = _bundle(await _post(client, seeded, "/fhir", document), "transaction")
    assert _statuses(again) == ["200 OK"] * 5
    issue = again["entry"][0]["response"]["outcome"]["issue"][0]
    assert (issue["severity"], issue["code"]) == ("information", "duplicate")
    assert await count_rows(sessions, RawMessage) == 1
    assert await count_rows(sessions, ObservationRow) == 2
