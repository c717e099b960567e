"""`dho demo`: the service on its embedded defaults, a demo registry, simulated patients."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dho.db import migrate
from dho.db.engine import create_engine, session_factory
from dho.db.models import Device, DeviceAssignment, Gateway, GatewayOrganization, Organization
from dho.registry.gateways import KEY_PREFIX, create_gateway, hash_key, new_key
from dho.registry.importer import load_bundle_file
from dho.server import build_server, preflight_or_exit
from dho.settings import Settings
from dho.simulator import SimulatedDevice, stream

log = logging.getLogger(__name__)
DEMO_GATEWAY = "demo-hub"


def run_demo(settings: Settings, *, interval_s: float) -> None:
    if settings.auto_migrate:
        migrate.upgrade(settings)
    preflight_or_exit(settings)
    asyncio.run(_demo(settings, interval_s))


async def _demo(settings: Settings, interval_s: float) -> None:
    key, devices = await _prepare_registry(settings)
    server = build_server(settings)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.1)
    if serving.done():
        await serving
        raise SystemExit(1)
    _banner(settings, key)
    topic = f"{settings.mqtt_topic_prefix}/in/{DEMO_GATEWAY}/dho-json"
    simulating = asyncio.create_task(
        stream(settings.mqtt_host, settings.mqtt_port, topic, devices, interval_s)
    )
    try:
        await serving
    finally:
        simulating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await simulating


async def _prepare_registry(settings: Settings) -> tuple[str, list[SimulatedDevice]]:
    """Import the demo Bundle, give the demo gateway a fresh key, list the devices."""
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session, session.begin():
            await load_bundle_file(
                session, settings.config_dir / "demo" / "registry.json", allow_synthetic=True
            )
            organizations = list(await session.scalars(select(Organization.id)))
            key = await _demo_gateway_key(session, organizations)
            rows = await session.execute(
                select(Device, DeviceAssignment.patient_id)
                .join(DeviceAssignment, DeviceAssignment.device_id == Device.id)
                .order_by(Device.identifier_value)
            )
            pairs = [(device, patient) for device, patient in rows]
    finally:
        await engine.dispose()
    first_patient = pairs[0][1] if pairs else None
    devices = [
        SimulatedDevice(
            d.identifier_system, d.identifier_value, d.type_code or "", p == first_patient
        )
        for d, p in pairs
    ]
    return key, devices


async def _demo_gateway_key(session: AsyncSession, organizations: list[str]) -> str:
    if await session.get(Gateway, DEMO_GATEWAY) is None:
        return await create_gateway(
            session, DEMO_GATEWAY, "Demo hub (simulated patients)", organizations
        )
    key = new_key()
    await session.execute(
        update(Gateway)
        .where(Gateway.id == DEMO_GATEWAY)
        .values(key_hash=hash_key(key), key_hint=key[: len(KEY_PREFIX) + 4])
    )
    known = set(
        await session.scalars(
            select(GatewayOrganization.organization_id).where(
                GatewayOrganization.gateway_id == DEMO_GATEWAY
            )
        )
    )
    session.add_all(
        GatewayOrganization(gateway_id=DEMO_GATEWAY, organization_id=o)
        for o in organizations
        if o not in known
    )
    return key


def _banner(settings: Settings, key: str) -> None:
    base = f"http://{settings.http_host}:{settings.http_port}"
    print(
        f"""
DHO demo is running.
  API docs:      {base}/docs
  Alerts:        {base}/api/alerts
  Readiness:     {base}/readyz
  MQTT broker:   mqtt://{settings.mqtt_host}:{settings.mqtt_port}
  MQTT topic:    {settings.mqtt_topic_prefix}/in/{DEMO_GATEWAY}/dho-json
  Demo gateway key (new every start): {key}

Post a reading yourself:
  curl -s -X POST {base}/ingest/dho-json -H 'Authorization: Bearer {key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"device": "00-1C-05-FF-FE-02-00-01", "type": "blood-pressure",
         "time": "'$(date -Iseconds)'", "components": {{
           "systolic": {{"value": 190, "unit": "mm[Hg]"}},
           "diastolic": {{"value": 110, "unit": "mm[Hg]"}}}}}}'

One simulated patient is deteriorating: yellow and red alerts appear within a minute.
Press Ctrl+C to stop.
""",
        flush=True,
    )
