"""End to end: a measurement over HTTP or MQTT becomes a stored R4 Observation and an alert.

Runs on SQLite + the embedded broker and on PostgreSQL + the machine's Mosquitto.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from dho.db.models import Alert, ObservationRow, Quarantine, RawMessage
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.fhir_checks import assert_valid_fhir_json
from tests.support import (
    BP_MONITOR,
    Seeded,
    WebhookReceiver,
    count_rows,
    running_service,
    seed,
    wait_for,
)
from tests.support import (
    blood_pressure as bp_reading,
)

SECRET = "test-webhook-secret"


@pytest.fixture
def webhook() -> Any:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def stack_settings(
    backend: str,
    database_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    webhook: WebhookReceiver,
) -> Settings:
    """SQLite with the embedded broker, or PostgreSQL with the real Mosquitto."""
    common: dict[str, Any] = {
        "database_url": database_url,
        "http_port": free_port(),
        "mqtt_enabled": True,
        "webhook_url": webhook.url,
        "webhook_secret": SECRET,
        "mqtt_topic_prefix": f"dho-test-{uuid.uuid4().hex[:8]}/v1",
    }
    if backend == "postgres":
        url = request.getfixturevalue("mosquitto_url")
        return base_settings(tmp_path, mqtt_url=url, mqtt_embedded=False, **common)
    return base_settings(tmp_path, mqtt_url=f"mqtt://127.0.0.1:{free_port()}", **common)


@pytest.fixture
async def sessions_for(stack_settings: Settings) -> Any:
    from dho.db.engine import create_engine, session_factory

    engine = create_engine(stack_settings)
    yield session_factory(engine)
    await engine.dispose()


def blood_pressure(
    systolic: int, diastolic: int, *, device: str = BP_MONITOR, when: datetime | None = None
) -> dict[str, Any]:
    """A reading a minute old, in Oslo time unless `when` says otherwise."""
    moment = when or datetime.now(UTC).astimezone(_oslo()) - timedelta(minutes=1)
    return bp_reading(systolic, diastolic, moment, device=device)


def _oslo() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Oslo")


def _check_signature(headers: dict[str, str], body: bytes) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered["x-dho-timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert lowered["x-dho-signature"] == "v1=" + expected.hexdigest()
    assert lowered["idempotency-key"] == json.loads(body)["delivery_id"]


def _assert_red_bp_observation(resource: dict[str, Any], patient_ref: str) -> None:
    codes = {c["code"] for c in resource["code"]["coding"] if c["system"] == "http://loinc.org"}
    assert codes == {"85354-9"}
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in resource["component"]}
    assert components["8480-6"]["value"] == 190 and components["8480-6"]["code"] == "mm[Hg]"
    assert components["8462-4"]["value"] == 110 and components["8462-4"]["code"] == "mm[Hg]"
    assert resource["subject"]["reference"] == patient_ref
    assert resource["device"]["reference"].startswith("Device/")
    assert resource["effectiveDateTime"].endswith(("+01:00", "+02:00"))


async def test_blood_pressure_over_http_is_stored_alerted_and_delivered(
    stack_settings: Settings, sessions_for: Any, webhook: WebhookReceiver
) -> None:
    seeded = await seed(sessions_for)
    async with running_service(stack_settings) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await client.post(
            "/ingest/dho-json",
            json=blood_pressure(190, 110),
            headers={"Authorization": f"Bearer {seeded.key}"},
        )
        assert answer.status_code == 202, answer.text
        receipt = answer.json()
        [item] = receipt["measurements"]
        assert item["status"] == "accepted" and "amended" not in item
        assert item["alert"]["severity"] == "red"

        read = await client.get(f"/fhir/{item['observation']}")
        assert read.status_code == 200
        assert read.headers["content-type"].startswith("application/fhir+json")
        assert read.headers["etag"] == 'W/"1"'
        resource = assert_valid_fhir_json(read.text)
        patient_ref = resource["subject"]["reference"]
        _assert_red_bp_observation(resource, patient_ref)

        search = await client.get("/fhir/Observation", params={"patient": patient_ref})
        bundle = search.json()
        assert bundle["type"] == "searchset" and bundle["total"] == 1
        assert bundle["entry"][0]["resource"]["id"] == resource["id"]

        alerts = (await client.get("/api/alerts")).json()["alerts"]
        assert [(a["severity"], a["observation"]) for a in alerts] == [("red", item["observation"])]

        await wait_for(lambda: webhook.received, timeout_s=10)
        delivered = webhook.received[0]
        _check_signature(delivered.headers, delivered.body)
        payload = json.loads(delivered.body)
        assert payload["alert"]["severity"] == "red"
        assert payload["alert"]["observation"] == item["observation"]
    assert await count_rows(sessions_for, Alert) == 1


async def test_blood_pressure_over_mqtt_is_stored_alerted_and_delivered(
    stack_settings: Settings, sessions_for: Any, webhook: WebhookReceiver
) -> None:
    seeded = await seed(sessions_for)
    async with running_service(stack_settings):
        topic = f"{stack_settings.mqtt_topic_prefix}/in/{seeded.gateway}/dho-json"
        payload = json.dumps(blood_pressure(190, 110)).encode()
        await asyncio.to_thread(_publish, stack_settings, topic, [payload])
        await wait_for(lambda: webhook.received, timeout_s=15)
    async with sessions_for() as session:
        rows = (await session.scalars(select(ObservationRow))).all()
        alerts = (await session.scalars(select(Alert))).all()
    assert len(rows) == 1 and len(alerts) == 1
    assert alerts[0].severity == "red" and alerts[0].observation_id == rows[0].id
    resource = assert_valid_fhir_json(rows[0].resource)
    _assert_red_bp_observation(resource, f"Patient/{rows[0].patient_id}")
    assert json.loads(webhook.received[0].body)["alert"]["id"] == alerts[0].id


async def test_normal_value_stores_observation_without_alert(
    stack_settings: Settings, sessions_for: Any, webhook: WebhookReceiver
) -> None:
    seeded = await seed(sessions_for)
    async with running_service(stack_settings) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await _post(client, seeded, blood_pressure(128, 82))
        assert answer.json()["measurements"][0]["status"] == "accepted"
        assert "alert" not in answer.json()["measurements"][0]
    assert await count_rows(sessions_for, ObservationRow) == 1
    assert await count_rows(sessions_for, Alert) == 0
    assert webhook.received == []


async def test_unregistered_device_is_kept_in_quarantine(
    stack_settings: Settings, sessions_for: Any
) -> None:
    seeded = await seed(sessions_for)
    async with running_service(stack_settings) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await _post(
            client, seeded, blood_pressure(190, 110, device="AA-BB-CC-DD-EE-FF-00-11")
        )
        assert answer.status_code == 202
        [item] = answer.json()["measurements"]
        assert item["status"] == "quarantined" and item["reason"] == "unknown-device"
    async with sessions_for() as session:
        [row] = (await session.scalars(select(Quarantine))).all()
        raw = await session.get(RawMessage, row.raw_message_id)
    assert row.reason_code == "unknown-device" and "AA-BB-CC-DD-EE-FF-00-11" in row.reason
    assert raw is not None and b"AA-BB-CC-DD-EE-FF-00-11" in raw.payload
    assert await count_rows(sessions_for, ObservationRow) == 0


async def test_bad_input_gets_clear_answers_and_loses_nothing(
    stack_settings: Settings, sessions_for: Any
) -> None:
    seeded = await seed(sessions_for)
    async with running_service(stack_settings) as base, httpx.AsyncClient(base_url=base) as client:
        first = await _post(client, seeded, blood_pressure(150, 90))
        assert first.status_code == 202
        auth = {"Authorization": f"Bearer {seeded.key}"}

        garbage = await client.post("/ingest/dho-json", content=b"\x00\xff{not json", headers=auth)
        assert garbage.status_code == 422
        assert garbage.headers["content-type"] == "application/problem+json"
        assert garbage.json()["quarantined"] is True

        huge = await client.post(
            "/ingest/dho-json",
            content=b"[" + b" " * stack_settings.max_message_bytes + b"]",
            headers=auth,
        )
        assert huge.status_code == 413

        no_key = await client.post("/ingest/dho-json", json=blood_pressure(150, 90))
        assert no_key.status_code == 401
        wrong_key = await client.post(
            "/ingest/dho-json",
            json=blood_pressure(150, 90),
            headers={"Authorization": "Bearer dhogw_" + "x" * 43},
        )
        assert wrong_key.status_code == 401

        unknown_adapter = await client.post("/ingest/no-such-format", json={}, headers=auth)
        assert unknown_adapter.status_code == 404

        wrong_unit = dict(blood_pressure(150, 90, when=datetime.now(UTC) - timedelta(minutes=3)))
        wrong_unit["components"] = {
            "systolic": {"value": 150, "unit": "kg"},
            "diastolic": {"value": 90, "unit": "mm[Hg]"},
        }
        unit_answer = await _post(client, seeded, wrong_unit)
        assert unit_answer.json()["measurements"][0]["reason"] == "mapping-error"
        assert unit_answer.json()["measurements"][0]["reason_code"] == "unit"

        future = blood_pressure(150, 90, when=datetime.now(UTC) + timedelta(hours=2))
        skew_answer = await _post(client, seeded, future)
        assert skew_answer.json()["measurements"][0]["reason"] == "future"

        no_offset = blood_pressure(150, 90)
        no_offset["time"] = "2026-11-24T08:00:00"
        offset_answer = await _post(client, seeded, no_offset)
        assert offset_answer.status_code == 202
        [local] = offset_answer.json()["measurements"]
        assert local["time_flag"] == "local-time-assumed" and local["late"] is True
        read = (await client.get(f"/fhir/{local['observation']}")).json()
        assert read["effectiveDateTime"] == "2026-11-24T08:00:00+01:00"

        still_there = await client.get(f"/fhir/{first.json()['measurements'][0]['observation']}")
        assert still_there.status_code == 200
    async with sessions_for() as session:
        reasons = sorted(
            (await session.execute(select(Quarantine.reason_class, Quarantine.reason_code))).all()
        )
    assert reasons == [("future", "future"), ("mapping-error", "unit"), ("unparseable", "decode")]
    assert await count_rows(sessions_for, ObservationRow) == 2


async def test_resends_create_nothing_new_and_corrections_make_versions(
    stack_settings: Settings, sessions_for: Any
) -> None:
    seeded = await seed(sessions_for)
    when = datetime.now(UTC) - timedelta(minutes=5)
    async with running_service(stack_settings) as base, httpx.AsyncClient(base_url=base) as client:
        first = (await _post(client, seeded, blood_pressure(150, 90, when=when))).json()
        again = (await _post(client, seeded, blood_pressure(150, 90, when=when))).json()
        assert again["measurements"][0]["status"] == "duplicate"
        assert again["measurements"][0]["observation"] == first["measurements"][0]["observation"]

        envelope = {"message_id": "gw-msg-1", "measurements": [blood_pressure(140, 85)]}
        sent = await _post(client, seeded, envelope)
        resent = await _post(client, seeded, envelope)
        assert sent.status_code == 202 and resent.status_code == 200
        assert resent.json()["status"] == "duplicate"

        corrected = (await _post(client, seeded, blood_pressure(151, 90, when=when))).json()
        [item] = corrected["measurements"]
        assert item["status"] == "accepted" and item["version"] == 2 and item["amended"] is True
        assert item["observation"] == first["measurements"][0]["observation"]
        read = await client.get(f"/fhir/{item['observation']}")
        assert read.headers["etag"] == 'W/"2"'
        assert read.json()["meta"]["versionId"] == "2"
        assert read.json()["status"] == "amended"
        not_modified = await client.get(
            f"/fhir/{item['observation']}", headers={"If-None-Match": 'W/"2"'}
        )
        assert not_modified.status_code == 304
    assert await count_rows(sessions_for, ObservationRow) == 2
    assert await count_rows(sessions_for, RawMessage) == 4  # the duplicate envelope is not stored


async def test_health_and_readiness(stack_settings: Settings, sessions_for: Any) -> None:
    async with running_service(stack_settings) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await wait_for(lambda: _ready(client), timeout_s=10)
        assert ready["checks"] == {"database": "ok", "mqtt": "ok", "workers": "ok"}


async def _ready(client: httpx.AsyncClient) -> dict[str, Any] | None:
    answer = await client.get("/readyz")
    return answer.json() if answer.status_code == 200 else None


async def _post(client: httpx.AsyncClient, seeded: Seeded, body: Any) -> httpx.Response:
    return await client.post(
        "/ingest/dho-json", json=body, headers={"Authorization": f"Bearer {seeded.key}"}
    )


def _publish(settings: Settings, topic: str, payloads: list[bytes]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
