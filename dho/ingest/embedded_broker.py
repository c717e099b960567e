"""The embedded in-process MQTT broker (amqtt) for trying the service out.

It is not durable and knows no shared subscriptions: production uses Mosquitto or another
real broker (see docs/operators.md). When a broker already answers on the port, that one
is used; when something else holds the port, start-up fails with one clear line.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Literal

from dho.settings import Settings, is_loopback

log = logging.getLogger(__name__)

PortState = Literal["mqtt", "free", "other"]


class BrokerPortTaken(RuntimeError):
    """The MQTT port is held by something that does not speak MQTT."""


def _connect_packet() -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session and a 5 s keep-alive."""
    client_id = f"dho-probe-{os.getpid()}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x05"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    return b"\x10" + bytes([len(body)]) + body


async def probe(host: str, port: int, timeout_s: float = 2.0) -> PortState:
    """Whether an MQTT broker answers on host:port, nothing listens, or something else does."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return "free"
    try:
        writer.write(_connect_packet())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(4), timeout_s)
        if answer[0] == 0x20 and answer[1] == 0x02:
            writer.write(b"\xe0\x00")
            await writer.drain()
            return "mqtt"
        return "other"
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return "other"
    finally:
        writer.close()


class EmbeddedBroker:
    """amqtt bound to the loopback address, with its logging and $SYS plugins off."""

    def __init__(self, host: str, port: int) -> None:
        from amqtt.broker import Broker

        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(config)
        self.address = f"{host}:{port}"

    async def start(self) -> None:
        await self._broker.start()

    async def stop(self) -> None:
        await self._broker.shutdown()


async def broker_port_state(settings: Settings) -> PortState:
    """What answers on the configured MQTT port; BrokerPortTaken when it is not MQTT."""
    host, port = settings.mqtt_host, settings.mqtt_port
    state = await probe(host, port)
    if state == "other":
        raise BrokerPortTaken(
            f"port {port} on {host} is held by something that is not an MQTT broker; "
            "set DHO_MQTT_URL=mqtt://HOST:PORT to use another broker or a free port"
        )
    return state


async def ensure_broker(settings: Settings) -> EmbeddedBroker | None:
    """Start the embedded broker unless one already answers; None when none was started."""
    host, port = settings.mqtt_host, settings.mqtt_port
    if not settings.mqtt_embedded or not is_loopback(host):
        return None
    if await broker_port_state(settings) == "mqtt":
        log.info("using the MQTT broker already answering on %s:%d", host, port)
        return None
    broker = EmbeddedBroker(host, port)
    await broker.start()
    log.warning(
        "started the embedded MQTT broker on %s:%d: for trying the service out only "
        "(not durable, no shared subscriptions)",
        host,
        port,
    )
    return broker
