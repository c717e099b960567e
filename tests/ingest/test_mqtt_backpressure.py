"""The MQTT listener holds at most `mqtt_receive_maximum` unacknowledged messages."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from dho.ingest.measurement import RawMessage
from dho.ingest.mqtt import MqttListener
from dho.ingest.plan import MessageResult
from tests.conftest import base_settings
from tests.support import wait_for

BOUND = 50
SENT = 400


class HeldCommits:
    """Stands in for the batcher: nothing commits until the test says so."""

    def __init__(self) -> None:
        self.waiting: list[Any] = []

    def submit_nowait(self, raw: RawMessage, done: Any) -> None:
        self.waiting.append(done)

    def commit_all(self) -> int:
        waiting, self.waiting = self.waiting, []
        for done in waiting:
            done(MessageResult("accepted", None, 1))
        return len(waiting)


def _publish(url_port: int, topic: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bp-pub-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    try:
        infos = [client.publish(topic, b'{"n": %d}' % i, qos=1) for i in range(SENT)]
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_a_backlog_is_taken_in_no_faster_than_it_is_committed(
    mosquitto_url: str, tmp_path: Path
) -> None:
    settings = base_settings(
        tmp_path,
        mqtt_enabled=True,
        mqtt_url=mosquitto_url,
        mqtt_embedded=False,
        mqtt_receive_maximum=BOUND,
        mqtt_topic_prefix=f"bp-{uuid.uuid4().hex[:8]}/v1",
    )
    held = HeldCommits()
    listener = MqttListener(settings, held)  # type: ignore[arg-type]
    listener.start()
    try:
        await wait_for(lambda: listener.subscribed, timeout_s=10)
        topic = f"{settings.mqtt_topic_prefix}/in/gw/dho-json"
        await asyncio.to_thread(_publish, settings.mqtt_port, topic)
        await wait_for(lambda: listener.received == BOUND, timeout_s=10)
        await asyncio.sleep(1.0)  # nothing more may arrive while nothing is committed
        assert listener.received == BOUND
        committed = 0
        while committed < SENT:
            committed += held.commit_all()
            await asyncio.sleep(0.02)
            assert listener.received - committed <= BOUND
        assert listener.received == SENT and listener.acknowledged == SENT
    finally:
        listener.stop()
