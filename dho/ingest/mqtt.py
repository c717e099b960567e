"""MQTT transport: QoS 1 with a persistent session; PUBACK only after the commit.

paho-mqtt runs its network loop in a thread with `manual_ack=True`; messages cross into
the event loop and are acknowledged once the batch holding them is committed. A gateway
that asks for receipts (MQTT 5 Response Topic, or the gateway's receipts setting) gets one
on `<prefix>/receipts/{gateway}` after the commit, before the acknowledgement. An
acknowledgement due from an earlier connection is dropped: the broker redelivers that
message on the new one, and the measurement identity makes the repeat harmless.

At most `mqtt_receive_maximum` messages are held unacknowledged: when that many wait for
their commit, paho's thread stops reading and TCP pushes back on the broker. Brokers do
not all honour the client's Receive Maximum (Mosquitto 2.0 sends a whole backlog at once),
and without this bound a long outage's backlog would land in the service's memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from dho import jsonutil
from dho.ingest.batcher import Batcher, BatcherStopped
from dho.ingest.measurement import RawMessage
from dho.ingest.plan import MessageResult
from dho.ingest.receipts import receipt
from dho.settings import Settings

log = logging.getLogger(__name__)


def ingest_topic_filter(settings: Settings, *, shared: bool = True) -> str:
    """The subscription: `<prefix>/in/{gateway}/{adapter}`, shared when a group is set."""
    topic = f"{settings.mqtt_topic_prefix}/in/+/+"
    group = settings.mqtt_shared_group if shared else ""
    return f"$share/{group}/{topic}" if group else topic


def receipt_topic(settings: Settings, gateway: str) -> str:
    """Where a gateway's receipts are published: `<prefix>/receipts/{gateway}`."""
    return f"{settings.mqtt_topic_prefix}/receipts/{gateway}"


def _receipt_request(msg: paho.MQTTMessage) -> tuple[bool, bytes | None]:
    """Whether an MQTT 5 publisher asked for a receipt (Response Topic), and its correlation."""
    properties = getattr(msg, "properties", None)
    if properties is None or not hasattr(properties, "ResponseTopic"):
        return False, None
    correlation = getattr(properties, "CorrelationData", None)
    return True, bytes(correlation) if correlation is not None else None


def parse_topic(settings: Settings, topic: str) -> tuple[str, str]:
    """(gateway, adapter) from an ingest topic; empty strings when it does not fit."""
    prefix = f"{settings.mqtt_topic_prefix}/in/"
    if not topic.startswith(prefix):
        return "", ""
    parts = topic[len(prefix) :].split("/")
    return (parts[0], parts[1]) if len(parts) == 2 else ("", "")


class MqttListener:
    """Subscribes to the ingest topics and feeds every message to the batcher."""

    def __init__(self, settings: Settings, batcher: Batcher, *, embedded: bool = False) -> None:
        self._settings = settings
        self._batcher = batcher
        # The embedded broker (amqtt) speaks MQTT 3.1.1 only and knows no shared subscriptions.
        self._mqtt_v5 = not embedded
        self._topic = ingest_topic_filter(settings, shared=not embedded)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._unacknowledged = threading.BoundedSemaphore(settings.mqtt_receive_maximum)
        self._stopping = threading.Event()
        self.connected = False
        self.subscribed = False
        self.received = 0
        self.acknowledged = 0
        self.receipts = 0
        self._client = self._make_client()

    def _make_client(self) -> paho.Client:
        settings = self._settings
        if self._mqtt_v5:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=settings.mqtt_client_id,
                protocol=paho.MQTTv5,
                manual_ack=True,
            )
        else:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=settings.mqtt_client_id,
                clean_session=False,
                protocol=paho.MQTTv311,
                manual_ack=True,
            )
        if settings.mqtt_username:
            password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            client.username_pw_set(settings.mqtt_username, password)
        if settings.mqtt_url.startswith("mqtts://"):
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(settings.mqtt_receive_maximum)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a failure."""
        self._loop = asyncio.get_running_loop()
        settings = self._settings
        if self._mqtt_v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = settings.mqtt_session_expiry_s
            props.ReceiveMaximum = settings.mqtt_receive_maximum
            self._client.connect_async(
                settings.mqtt_host,
                settings.mqtt_port,
                keepalive=30,
                clean_start=False,
                properties=props,
            )
        else:
            self._client.connect_async(settings.mqtt_host, settings.mqtt_port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()
        self.connected = False
        self.subscribed = False

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
            return
        self.connected = True
        client.subscribe(self._topic, qos=1)
        log.info(
            "MQTT connected to %s:%d as %s, subscribing to %s",
            self._settings.mqtt_host,
            self._settings.mqtt_port,
            self._settings.mqtt_client_id,
            self._topic,
        )

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        failed = [reason for reason in reasons if reason.is_failure]
        self.subscribed = not failed
        if failed:
            log.error("MQTT broker refused the subscription to %s: %s", self._topic, failed[0])

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._generation += 1
        self.connected = False
        self.subscribed = False
        if self._stopping.is_set():
            log.info("MQTT disconnected (%s)", reason)
        else:
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        """Runs in paho's thread: wait for room, then hand the message to the event loop."""
        assert self._loop is not None
        while not self._unacknowledged.acquire(timeout=0.5):
            if self._stopping.is_set():
                return  # not acknowledged: the broker delivers it again
        received_at = datetime.now(UTC)
        generation = self._generation
        self._loop.call_soon_threadsafe(self._submit, msg, received_at, generation)

    def _submit(self, msg: paho.MQTTMessage, received_at: datetime, generation: int) -> None:
        self.received += 1
        gateway, adapter = parse_topic(self._settings, msg.topic)
        raw = RawMessage(
            payload=bytes(msg.payload),
            transport="mqtt",
            topic=msg.topic,
            gateway=gateway,
            adapter=adapter,
            received_at=received_at,
        )
        asked, correlation = _receipt_request(msg)

        def done(result: MessageResult) -> None:
            if gateway and (asked or result.wants_receipt):
                self._publish_receipt(gateway, msg.topic, result, correlation)
            self._ack(msg.mid, msg.qos, generation)

        try:
            self._batcher.submit_nowait(raw, done)
        except BatcherStopped:
            self._unacknowledged.release()
            log.info("shutting down: message %d left for the broker to redeliver", msg.mid)

    def _publish_receipt(
        self, gateway: str, topic: str, result: MessageResult, correlation: bytes | None
    ) -> None:
        """The receipt on `<prefix>/receipts/{gateway}`, after the commit (QoS 1)."""
        body = receipt(result) | {"topic": topic}
        properties = None
        if self._mqtt_v5 and correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        self._client.publish(
            receipt_topic(self._settings, gateway),
            jsonutil.dumps(body).encode(),
            qos=1,
            properties=properties,
        )
        self.receipts += 1

    def _ack(self, mid: int, qos: int, generation: int) -> None:
        self._unacknowledged.release()
        if generation != self._generation:
            return
        if qos > 0:
            self._client.ack(mid, qos)
        self.acknowledged += 1
