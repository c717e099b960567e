"""Nothing lost, nothing duplicated: SIGKILL the service mid-stream, or keep it down.

Uses a private Mosquitto started from config/mosquitto/mosquitto.conf (persistence,
raised queue limits) and PostgreSQL; the service runs as a real subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.db.models import ObservationRow, Quarantine, RawMessage
from tests.conftest import free_port
from tests.mosquitto import BASE_CONF, derive_test_config, running_mosquitto
from tests.support import EUI64, OXIMETER, seed, stop_process, wait_for, wait_until_ready

MESSAGES = 5000
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgres"])]


@pytest.fixture
def broker_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    data = tmp_path / "mosquitto-data"
    data.mkdir()
    conf = derive_test_config(BASE_CONF.read_text(encoding="utf-8"), port=port, data_dir=data)
    with running_mosquitto(conf, tmp_path, port):
        yield port


class Service:
    """`python -m dho serve` as a subprocess with a fixed MQTT client id."""

    def __init__(
        self, database_url: str, broker_port: int, log_path: Path, shared_group: str
    ) -> None:
        self.http_port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DHO_DATABASE_URL": database_url,
            "DHO_DATABASE_AUTO_MIGRATE": "false",
            "DHO_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}",
            "DHO_MQTT_EMBEDDED": "false",
            "DHO_MQTT_CLIENT_ID": "dho-crash-test",
            "DHO_MQTT_SHARED_GROUP": shared_group,
            "DHO_HTTP_PORT": str(self.http_port),
            "DHO_LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dho", "serve"], env=self.env, stdout=log, stderr=log
            )
        wait_until_ready(self.proc, f"http://127.0.0.1:{self.http_port}", self.log_path)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)


def _messages(gateway_run: str) -> list[bytes]:
    start = datetime.now(UTC) - timedelta(hours=3)
    return [
        json.dumps(
            {
                "message_id": f"{gateway_run}-{i}",
                "measurements": [
                    {
                        "device": {"system": EUI64, "value": OXIMETER},
                        "type": "heart-rate",
                        "time": (start + timedelta(milliseconds=1500 * i)).isoformat(
                            timespec="milliseconds"
                        ),
                        "value": 60 + i % 30,
                        "unit": "/min",
                    }
                ],
            }
        ).encode()
        for i in range(MESSAGES)
    ]


def _publish_all(port: int, topic: str, payloads: list[bytes]) -> None:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"crash-pub-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


async def _counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int, int]:
    async with sessions() as session:
        obs = await session.scalar(select(func.count()).select_from(ObservationRow))
        raw = await session.scalar(select(func.count()).select_from(RawMessage))
        quarantined = await session.scalar(select(func.count()).select_from(Quarantine))
    return int(obs or 0), int(raw or 0), int(quarantined or 0)


async def _until_count(
    sessions: async_sessionmaker[AsyncSession], at_least: int, timeout_s: float
) -> None:
    async def enough() -> bool:
        return (await _counts(sessions))[0] >= at_least

    await wait_for(enough, timeout_s=timeout_s, interval_s=0.1)


async def _assert_exactly_all(sessions: async_sessionmaker[AsyncSession], service: Service) -> None:
    try:
        await _until_count(sessions, MESSAGES, timeout_s=120)
    except TimeoutError:
        pytest.fail(
            f"only {(await _counts(sessions))} stored:\n{service.log_path.read_text()[-3000:]}"
        )
    await asyncio.sleep(1.0)  # anything still in flight would show up as an extra row now
    observations, raw, quarantined = await _counts(sessions)
    assert (observations, raw, quarantined) == (MESSAGES, MESSAGES, 0)


@pytest.mark.parametrize("shared_group", ["", "dho"], ids=["plain", "shared"])
async def test_sigkill_while_streaming_loses_and_duplicates_nothing(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    broker_port: int,
    tmp_path: Path,
    shared_group: str,
) -> None:
    seeded = await seed(sessions)
    topic = f"dho/v1/in/{seeded.gateway}/dho-json"
    service = Service(database_url, broker_port, tmp_path / "service.log", shared_group)
    service.start()
    try:
        publisher = threading.Thread(
            target=_publish_all, args=(broker_port, topic, _messages("kill")), daemon=True
        )
        publisher.start()
        await _until_count(sessions, 500, timeout_s=60)
        service.kill()
        killed_at = (await _counts(sessions))[0]
        assert killed_at < MESSAGES, "the stream should still be running when the service dies"
        service.start()
        publisher.join(timeout=120)
        assert not publisher.is_alive()
        await _assert_exactly_all(sessions, service)
    finally:
        service.stop()


async def test_service_down_for_the_whole_publish_receives_everything_after(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    broker_port: int,
    tmp_path: Path,
) -> None:
    seeded = await seed(sessions)
    topic = f"dho/v1/in/{seeded.gateway}/dho-json"
    service = Service(database_url, broker_port, tmp_path / "service.log", "")
    service.start()  # the persistent session and its subscription now exist at the broker
    service.kill()
    try:
        _publish_all(broker_port, topic, _messages("down"))
        assert (await _counts(sessions))[0] == 0
        service.start()
        await _assert_exactly_all(sessions, service)
    finally:
        service.stop()
