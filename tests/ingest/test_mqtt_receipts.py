"""MQTT receipts: a gateway that asks learns after the commit what became of its message.

MQTT 5 publishers ask with a Response Topic (the Correlation Data comes back); MQTT 3.1.1
gateways (the embedded broker speaks only 3.1.1) are set to get receipts for everything.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.engine import create_engine, session_factory
from dho.db.models import ObservationRow, Quarantine
from dho.registry.gateways import set_mqtt_receipts
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.support import blood_pressure, running_service, seed, wait_for


@pytest.fixture
def mqtt_settings(
    backend: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    common: dict[str, Any] = {
        "database_url": database_url,
        "http_port": free_port(),
        "mqtt_enabled": True,
        "mqtt_topic_prefix": f"dho-test-{uuid.uuid4().hex[:8]}/v1",
        "max_message_bytes": 4096,
    }
    if backend == "postgres":
        url = request.getfixturevalue("mosquitto_url")
        return base_settings(tmp_path, mqtt_url=url, mqtt_embedded=False, **common)
    return base_settings(tmp_path, mqtt_url=f"mqtt://127.0.0.1:{free_port()}", **common)


@pytest.fixture
async def mqtt_sessions(mqtt_settings: Settings) -> Any:
    engine = create_engine(mqtt_settings)
    yield session_factory(engine)
    await engine.dispose()


async def _subscribed(base: str) -> bool:
    """True once the service's MQTT listener holds its subscription."""
    async with httpx.AsyncClient(base_url=base) as client:
        return bool((await client.get("/readyz")).json()["checks"]["mqtt"] == "ok")


class ReceiptListener:
    """A gateway's own MQTT client: subscribed to its receipts, publishing its readings."""

    def __init__(self, settings: Settings, gateway: str, *, v5: bool) -> None:
        self.received: list[tuple[dict[str, Any], bytes | None]] = []
        self._subscribed = threading.Event()
        self.v5 = v5
        protocol = paho.MQTTv5 if v5 else paho.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:8]}", protocol=protocol
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()
        self.client.subscribe(f"{settings.mqtt_topic_prefix}/receipts/{gateway}", qos=1)
        assert self._subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None) if self.v5 else None
        self.received.append((json.loads(msg.payload), correlation))

    def publish(self, topic: str, payload: bytes, correlation: bytes | None = None) -> None:
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = topic.replace("/in/", "/receipts/").rsplit("/", 1)[0]
            properties.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_receipts_tell_the_gateway_what_was_stored(
    backend: str, mqtt_settings: Settings, mqtt_sessions: async_sessionmaker[AsyncSession]
) -> None:
    seeded = await seed(mqtt_sessions)
    v5 = backend == "postgres"  # Mosquitto speaks MQTT 5; the embedded broker 3.1.1
    if not v5:
        async with mqtt_sessions() as session, session.begin():
            await set_mqtt_receipts(session, seeded.gateway, True)
    topic = f"{mqtt_settings.mqtt_topic_prefix}/in/{seeded.gateway}/dho-json"
    when = datetime.now(UTC) - timedelta(minutes=2)
    async with running_service(mqtt_settings) as base:
        await wait_for(lambda: _subscribed(base), timeout_s=15)
        gateway = await asyncio.to_thread(ReceiptListener, mqtt_settings, seeded.gateway, v5=v5)
        try:
            good = {"message_id": "m-1", "measurements": [blood_pressure(191, 112, when)]}
            await asyncio.to_thread(
                gateway.publish, topic, json.dumps(good).encode(), b"c-1" if v5 else None
            )
            await asyncio.to_thread(gateway.publish, topic, b"{broken", b"c-2" if v5 else None)
            huge = json.dumps({"pad": "x" * 5000}).encode()
            await asyncio.to_thread(gateway.publish, topic, huge, b"c-3" if v5 else None)
            await wait_for(lambda: len(gateway.received) >= 3, timeout_s=15)
        finally:
            await asyncio.to_thread(gateway.close)
    by_status = {
        body["status"] + (body.get("reason") or ""): (body, c) for body, c in gateway.received
    }
    accepted, correlation = by_status["accepted"]
    [item] = accepted["measurements"]
    assert accepted["message_id"] == "m-1" and accepted["topic"] == topic
    assert item["status"] == "accepted" and item["alert"]["severity"] == "red"
    async with mqtt_sessions() as session:
        stored = await session.get(ObservationRow, item["observation"].split("/")[1])
        reasons = sorted((await session.scalars(select(Quarantine.reason_class))).all())
    assert stored is not None  # the receipt came after the commit
    broken, _ = by_status["rejectedunparseable"]
    assert broken["raw_message_id"] is not None
    oversized, _ = by_status["rejectedoversized"]
    assert oversized["reason_code"] == "too-large"
    assert reasons == ["oversized", "unparseable"]
    if v5:
        assert correlation == b"c-1"
        assert {c for _, c in gateway.received} == {b"c-1", b"c-2", b"c-3"}
