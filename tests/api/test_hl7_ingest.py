"""IHE PCD-01 over HTTP: HL7 v2 ORU^R01 in, an HL7 ACK out, Observations stored.

The service runs for real (SQLite and PostgreSQL); the ACK rules are also checked on
their own for the results the HTTP tests cannot easily provoke.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hl7
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.api import hl7_ack
from dho.api.gateway_io import Refusal
from dho.db.models import ObservationRow, Patient, Quarantine, RawMessage
from dho.ingest.plan import ItemResult, MessageResult
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.support import Seeded, count_rows, running_service, seed

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "adapters" / "examples" / "ihe-pcd-01"
ER7 = "x-application/hl7-v2+er7"
INGRID = "14834641411"
OLAV = "02915113306"
LOINC = "http://loinc.org"


@pytest.fixture
def hl7_settings(database_url: str, tmp_path: Path) -> Settings:
    return base_settings(tmp_path, database_url=database_url, http_port=free_port())


@pytest.fixture
async def hl7_sessions(hl7_settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    from dho.db.engine import create_engine, session_factory

    engine = create_engine(hl7_settings)
    yield session_factory(engine)
    await engine.dispose()


def _example(name: str) -> bytes:
    return (EXAMPLES / f"{name}.hl7").read_bytes()


async def _post(client: httpx.AsyncClient, seeded: Seeded, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {seeded.key}", "Content-Type": ER7}
    return await client.post("/ingest/ihe-pcd-01", content=body, headers=headers)


def _ack(answer: httpx.Response) -> Any:
    assert answer.headers["content-type"].startswith(ER7)
    assert "\n" not in answer.text and answer.text.endswith("\r")
    return hl7.parse(answer.text)


def _errs(ack: Any) -> list[Any]:
    try:
        return list(ack.segments("ERR"))
    except KeyError:
        return []


def _control_id(payload: bytes) -> str:
    return str(hl7.parse(payload.decode()).segment("MSH")[10])


async def _observations(sessions: async_sessionmaker[AsyncSession]) -> dict[str, ObservationRow]:
    async with sessions() as session:
        return {row.type: row for row in await session.scalars(select(ObservationRow))}


async def _patient_id(sessions: async_sessionmaker[AsyncSession], national_id: str) -> str:
    async with sessions() as session:
        found = await session.scalar(select(Patient.id).where(Patient.national_id == national_id))
    assert found is not None
    return found


async def _quarantine(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[Any, ...]]:
    async with sessions() as session:
        query = select(Quarantine.item_label, Quarantine.reason_class, Quarantine.reason_code)
        return [tuple(row) for row in (await session.execute(query.order_by(Quarantine.id))).all()]


def _values(resource: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """LOINC (or MDC) code → (value, UCUM unit) of the Observation and its components."""
    out: dict[str, tuple[Any, str]] = {}
    for part in [resource, *resource.get("component", [])]:
        if "valueQuantity" in part:
            quantity = part["valueQuantity"]
            for coding in part["code"]["coding"]:
                out[coding["code"]] = (quantity["value"], quantity["code"])
    return out


async def test_examples_are_acknowledged_stored_and_resends_change_nothing(
    hl7_settings: Settings, hl7_sessions: async_sessionmaker[AsyncSession]
) -> None:
    seeded = await seed(hl7_sessions)
    names = ["blood-pressure", "pulse-oximeter", "glucometer-local-time", "thermometer-fahrenheit"]
    async with running_service(hl7_settings) as base, httpx.AsyncClient(base_url=base) as client:
        for name in names:
            before = datetime.now(UTC).replace(microsecond=0)
            answer = await _post(client, seeded, _example(name))
            assert answer.status_code == 200, answer.text
            ack = _ack(answer)
            msh, msa = ack.segment("MSH"), ack.segment("MSA")
            assert (str(msa[1]), str(msa[2])) == ("AA", _control_id(_example(name)))
            assert _errs(ack) == []
            assert str(msh[9]) == "ACK^R01^ACK" and str(msh[12]) == "2.6" and str(msh[11]) == "P"
            assert str(msh[3]) == "DHO-INGEST" and str(msh[4]) == "DHO"
            assert str(msh[5]) == "HomeGateway^001C05FFFE00FF01^EUI-64"
            sent_at = datetime.strptime(str(msh[7]), "%Y%m%d%H%M%S%z")
            assert sent_at - before < timedelta(seconds=30) and sent_at.utcoffset() is not None
            assert str(msh[10]) and str(msh[10]) != _control_id(_example(name))

        rows = await _observations(hl7_sessions)
        assert sorted(rows) == [
            "blood-glucose",
            "blood-pressure",
            "body-temperature",
            "heart-rate",
            "oxygen-saturation",
        ]
        assert await count_rows(hl7_sessions, ObservationRow) == 6  # two heart rates
        ingrid = await _patient_id(hl7_sessions, INGRID)
        resources = {}
        for key, row in rows.items():
            read = await client.get(f"/fhir/Observation/{row.id}")
            assert read.status_code == 200
            resources[key] = read.json()
            assert resources[key]["subject"]["reference"] == f"Patient/{ingrid}"
            assert row.patient_id == ingrid

        bp = resources["blood-pressure"]
        assert {c["code"] for c in bp["code"]["coding"] if c["system"] == LOINC} == {"85354-9"}
        assert _values(bp)["8480-6"] == (128, "mm[Hg]") and _values(bp)["8462-4"] == (82, "mm[Hg]")
        assert bp["effectiveDateTime"] == "2026-11-24T08:15:00+01:00"
        assert _values(resources["oxygen-saturation"])["2708-6"] == (95, "%")
        assert _values(resources["blood-glucose"])["14743-9"] == (6.2, "mmol/L")
        assert resources["blood-glucose"]["effectiveDateTime"] == "2026-11-24T07:30:00+01:00"
        assert _values(resources["body-temperature"])["8310-5"] == (37.0, "Cel")
        assert resources["body-temperature"]["effectiveDateTime"] == "2026-11-24T21:30:00-05:00"

        again = await _post(client, seeded, _example("blood-pressure"))
        assert again.status_code == 200
        msa = _ack(again).segment("MSA")
        assert (str(msa[1]), str(msa[2])) == ("AA", "GW00FF01-20261124081502-0001")
    assert await count_rows(hl7_sessions, ObservationRow) == 6
    assert await count_rows(hl7_sessions, RawMessage) == len(names)
    assert await _quarantine(hl7_sessions) == []


async def test_refused_rows_get_ae_with_one_err_each_and_the_rest_is_stored(
    hl7_settings: Settings, hl7_sessions: async_sessionmaker[AsyncSession]
) -> None:
    seeded = await seed(hl7_sessions)
    async with running_service(hl7_settings) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await _post(client, seeded, _example("scale-pounds-unknown-code"))
        assert answer.status_code == 200
        ack = _ack(answer)
        assert str(ack.segment("MSA")[1]) == "AE"
        assert str(ack.segment("MSA")[2]) == "GW00FF01-20261125071212-0003"
        [err] = _errs(ack)
        assert str(err[2]) == "OBX^4^3"
        assert str(err[3]) == "103^Table value not found^HL70357"
        assert str(err[4]) == "E" and "188752" in str(err[7])
        rows = await _observations(hl7_sessions)
        assert sorted(rows) == ["body-height", "body-weight"]
        weight = (await client.get(f"/fhir/Observation/{rows['body-weight'].id}")).json()
        height = (await client.get(f"/fhir/Observation/{rows['body-height'].id}")).json()
        assert _values(weight)["29463-7"] == (70.1, "kg")
        assert _values(height)["8302-2"] == (168.9, "cm")

        # Olav's fødselsnummer on Ingrid's pulse oximeter: caught, and not echoed in the ACK.
        wrong = _example("pulse-oximeter").replace(INGRID.encode(), OLAV.encode())
        wrong = wrong.replace(b"-0002|", b"-0102|")
        answer = await _post(client, seeded, wrong)
        assert answer.status_code == 200
        ack = _ack(answer)
        assert str(ack.segment("MSA")[1]) == "AE"
        errs = _errs(ack)
        assert [str(e[2]) for e in errs] == ["PID^1^3", "PID^1^3"]
        assert {str(e[3]) for e in errs} == {"204^Unknown key identifier^HL70357"}
        assert OLAV not in answer.text and INGRID not in answer.text

        # An EUI-64 that is not registered.
        stranger = _example("pulse-oximeter").replace(b"001C05FFFE010002", b"001C05FFFE0100EE")
        stranger = stranger.replace(b"-0002|", b"-0202|")
        errs = _errs(_ack(await _post(client, seeded, stranger)))
        assert [str(e[2]) for e in errs] == ["OBX^2^18", "OBX^3^18"]
        assert {str(e[3]).split("^")[0] for e in errs} == {"204"}
    assert await count_rows(hl7_sessions, ObservationRow) == 2
    assert await _quarantine(hl7_sessions) == [
        ("OBX[4]", "mapping-error", "unknown-code"),
        ("OBX[2]", "mapping-error", "patient-mismatch"),
        ("OBX[3]", "mapping-error", "patient-mismatch"),
        ("OBX[2]", "unknown-device", "unknown-device"),
        ("OBX[3]", "unknown-device", "unknown-device"),
    ]


async def test_unreadable_messages_get_ar_and_are_quarantined(
    hl7_settings: Settings, hl7_sessions: async_sessionmaker[AsyncSession]
) -> None:
    seeded = await seed(hl7_sessions)
    async with running_service(hl7_settings) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await _post(client, seeded, b"this is not HL7 at all")
        assert answer.status_code == 422
        ack = _ack(answer)
        assert str(ack.segment("MSH")[9]) == "ACK^R01^ACK"
        assert str(ack.segment("MSH")[11]) == "P"
        assert str(ack.segment("MSA")[1]) == "AR" and ack.extract_field("MSA", 1, 2) == ""
        [err] = _errs(ack)
        assert str(err[3]).startswith("102^Data type error")

        adt = _example("blood-pressure").replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01")
        answer = await _post(client, seeded, adt)
        assert answer.status_code == 422
        ack = _ack(answer)
        assert str(ack.segment("MSA")[1]) == "AR"
        assert str(ack.segment("MSA")[2]) == "GW00FF01-20261124081502-0001"
        [err] = _errs(ack)
        assert (str(err[2]), str(err[3])) == ("MSH^1^9", "200^Unsupported message type^HL70357")

        # A rejected message does not use up its control id: the fixed message is stored.
        fixed = await _post(client, seeded, _example("blood-pressure"))
        assert str(_ack(fixed).segment("MSA")[1]) == "AA"
    assert await _quarantine(hl7_sessions) == [
        (None, "unparseable", "decode"),
        (None, "unparseable", "message-type"),
    ]
    assert await count_rows(hl7_sessions, ObservationRow) == 2


async def test_too_many_rows_get_ar_with_413(
    database_url: str, tmp_path: Path, hl7_sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = base_settings(
        tmp_path, database_url=database_url, http_port=free_port(), max_measurements_per_message=3
    )
    seeded = await seed(hl7_sessions)
    async with running_service(settings) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await _post(client, seeded, _example("blood-pressure"))
        assert answer.status_code == 413
        ack = _ack(answer)
        assert str(ack.segment("MSA")[1]) == "AR"
        [err] = _errs(ack)
        assert "limit is 3" in str(err[7]) and str(err[3]) == "104^Value too long^HL70357"
    assert await _quarantine(hl7_sessions) == [(None, "oversized", "too-many-measurements")]


async def test_requests_refused_before_reading_get_an_ack_ar_with_their_status(
    database_url: str, tmp_path: Path, hl7_sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = base_settings(
        tmp_path, database_url=database_url, http_port=free_port(), max_message_bytes=1024
    )
    seeded = await seed(hl7_sessions)
    message = _example("blood-pressure")
    async with running_service(settings) as base, httpx.AsyncClient(base_url=base) as client:
        anonymous = await client.post(
            "/ingest/ihe-pcd-01", content=message, headers={"Content-Type": ER7}
        )
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="dho"'
        ack = _ack(anonymous)
        # The body is not read before the key is checked: the ACK cannot echo MSH-10.
        assert str(ack.segment("MSA")[1]) == "AR" and ack.extract_field("MSA", 1, 2) == ""
        [err] = _errs(ack)
        assert str(err[3]) == "207^Application internal error^HL70357"
        assert str(err[5]) == "unauthorized^Unauthorized^99DHO"

        too_large = await _post(client, seeded, message + b"NTE|1||" + b"x" * 1024 + b"\r")
        assert too_large.status_code == 413
        ack = _ack(too_large)
        assert str(ack.segment("MSA")[1]) == "AR"
        [err] = _errs(ack)
        assert str(err[3]) == "104^Value too long^HL70357"
        assert str(err[5]).startswith("too-large^") and "1024 bytes" in str(err[7])

        # Other adapters keep problem JSON.
        json_sender = await client.post("/ingest/dho-json", content=b"{}")
        assert json_sender.status_code == 401
        assert json_sender.headers["content-type"].startswith("application/problem+json")
    assert await count_rows(hl7_sessions, RawMessage) == 0


# ------------------------------------------------------------------ the ACK on its own


def _result(*items: ItemResult, **fields: Any) -> MessageResult:
    return MessageResult(fields.pop("status", "accepted"), "C-1", 1, items, **fields)


def _quarantined(label: str, reason: str, code: str, detail: str = "bad") -> ItemResult:
    return ItemResult(0, "quarantined", label, reason=reason, reason_code=code, detail=detail)


@pytest.mark.parametrize(
    ("result", "status", "code"),
    [
        (
            _result(ItemResult(0, "accepted", "OBX[3]"), ItemResult(1, "ignored", "OBX[4]")),
            200,
            "AA",
        ),
        (_result(status="duplicate"), 200, "AA"),
        (_result(ItemResult(0, "duplicate", "OBX[3]")), 200, "AA"),
        (_result(_quarantined("OBX[3]", "implausible", "implausible")), 200, "AE"),
        (_result(status="rejected", reason="oversized", reason_code="too-large"), 413, "AR"),
        (_result(status="rejected", reason="unparseable", reason_code="decode"), 422, "AR"),
        (_result(status="rejected", reason="not-authorised", reason_code="x"), 403, "AR"),
        (_result(_quarantined("OBX[3]", "not-authorised", "gateway-not-permitted")), 403, "AR"),
    ],
)
def test_ack_code_and_http_status(result: MessageResult, status: int, code: str) -> None:
    answer = hl7_ack.response(_example("blood-pressure"), result)
    ack = hl7.parse(bytes(answer.body).decode())
    assert answer.status_code == status and answer.media_type == ER7
    assert str(ack.segment("MSA")[1]) == code
    assert len(_errs(ack)) == (0 if code == "AA" else 1)


def test_ack_err_fields_and_swapped_header() -> None:
    payload = _example("pulse-oximeter").replace(b"|P|2.6|", b"|T|2.6|")
    result = _result(
        ItemResult(0, "accepted", "OBX[2]"),
        _quarantined("OBX[3]", "implausible", "implausible", f"pulse|300 of {INGRID}^x\rnext"),
        _quarantined("OBX[5]", "processing-error", "processing-error"),
    )
    text = bytes(hl7_ack.response(payload, result).body).decode()
    ack = hl7.parse(text)
    msh = ack.segment("MSH")
    assert (str(msh[3]), str(msh[5]), str(msh[11])) == (
        "DHO-INGEST",
        "HomeGateway^001C05FFFE00FF01^EUI-64",
        "T",
    )
    assert str(msh[21]) == "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
    first, second = _errs(ack)
    assert str(first[2]) == "OBX^3^5" and str(first[3]).startswith("207^")
    assert str(first[5]) == "implausible^implausible^99DHO"
    assert first.extract_field(1, 7) == "pulse|300 of [national id]^x next"
    assert INGRID not in text and text.count("\r") == 4
    assert str(second[2]) == "OBX^5"


@pytest.mark.parametrize(
    ("refused", "hl7_code"),
    [
        (Refusal(503, "unavailable", "Not stored", "later", {"Retry-After": "5"}), 206),
        (Refusal(429, "rate-limited", "Too many requests", "wait 3 s", {"Retry-After": "3"}), 207),
        (Refusal(413, "too-large", "Message too large", "the limit is 1024 bytes"), 104),
    ],
)
def test_a_refusal_after_reading_the_body_answers_its_msh(refused: Refusal, hl7_code: int) -> None:
    payload = _example("blood-pressure")
    answer = hl7_ack.refusal(refused, payload)
    assert answer.status_code == refused.status and answer.media_type == ER7
    assert answer.headers.get("retry-after") == refused.headers.get("Retry-After")
    assert "www-authenticate" not in answer.headers
    ack = hl7.parse(bytes(answer.body).decode())
    assert (str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])) == (
        "AR",
        _control_id(payload),
    )
    [err] = _errs(ack)
    assert str(err[3]).startswith(f"{hl7_code}^") and str(err[4]) == "E"
    assert str(err[5]) == f"{refused.code}^{refused.title}^99DHO"
    assert err.extract_field(1, 7) == refused.detail


@pytest.mark.parametrize("payload", [b"garbage", b"MSH|", b"\xff\xfe", b""])
def test_ack_for_an_unreadable_header_uses_defaults(payload: bytes) -> None:
    result = _result(status="rejected", reason="unparseable", reason_code="decode", detail="x")
    ack = hl7.parse(bytes(hl7_ack.response(payload, result).body).decode())
    msh = ack.segment("MSH")
    assert (str(msh[3]), str(msh[9]), str(msh[11]), str(msh[12])) == (
        "DHO",
        "ACK^R01^ACK",
        "P",
        "2.6",
    )
    assert str(ack.segment("MSA")[1]) == "AR" and ack.extract_field("MSA", 1, 2) == ""
