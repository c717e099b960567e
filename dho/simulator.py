"""Simulated patients for the demo: each device sends a reading every few seconds over MQTT.

One patient deteriorates (falling SpO2, rising pulse and blood pressure), so yellow and
then red alerts appear within a minute.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)
OSLO = ZoneInfo("Europe/Oslo")

BLOOD_PRESSURE_MONITOR = "528391"
PULSE_OXIMETER = "528388"
WEIGHING_SCALE = "528399"


@dataclass(frozen=True, slots=True)
class SimulatedDevice:
    system: str
    identifier: str
    type_code: str
    deteriorating: bool


def readings(device: SimulatedDevice, step: int, rng: random.Random) -> list[dict[str, Any]]:
    """The dho-json measurements `device` sends at `step` (0, 1, 2, ...)."""
    now = datetime.now(UTC).astimezone(OSLO).isoformat(timespec="milliseconds")
    worse = min(step, 8) if device.deteriorating else 0  # red from about the 7th reading
    base = {"device": {"system": device.system, "value": device.identifier}, "time": now}
    if device.type_code == BLOOD_PRESSURE_MONITOR:
        systolic = 132 + 7 * worse + rng.randint(-6, 6)
        diastolic = 82 + 4 * worse + rng.randint(-4, 4)
        component = {
            "systolic": {"value": systolic, "unit": "mm[Hg]"},
            "diastolic": {"value": diastolic, "unit": "mm[Hg]"},
        }
        return [{**base, "type": "blood-pressure", "components": component}]
    if device.type_code == PULSE_OXIMETER:
        spo2 = min(99, 96 - worse * 5 // 4 + rng.randint(-1, 1))
        pulse = 72 + 6 * worse + rng.randint(-5, 5)
        return [
            {**base, "type": "oxygen-saturation", "value": spo2, "unit": "%"},
            {**base, "type": "heart-rate", "value": pulse, "unit": "/min"},
        ]
    if device.type_code == WEIGHING_SCALE:
        weight = round(78.0 + 0.3 * worse + rng.uniform(-0.3, 0.3), 1)
        return [{**base, "type": "body-weight", "value": weight, "unit": "kg"}]
    return []


async def stream(
    host: str,
    port: int,
    topic: str,
    devices: list[SimulatedDevice],
    interval_s: float,
    *,
    seed: int = 2026,
) -> None:
    """Publish readings at QoS 1 until cancelled."""
    rng = random.Random(seed)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dho-simulator-{seed}")
    client.connect_async(host, port)
    client.loop_start()
    try:
        for step in itertools.count():
            for device in devices:
                for reading in readings(device, step, rng):
                    client.publish(topic, json.dumps(reading), qos=1)
            await asyncio.sleep(interval_s)
    finally:
        client.disconnect()
        client.loop_stop()
