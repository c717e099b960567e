"""Test helpers: a seeded registry, the service on a free port, a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho.app import create_app
from dho.ingest.measurement import RawMessage
from dho.registry.gateways import create_gateway
from dho.registry.importer import import_bundle
from dho.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = ROOT / "config" / "demo" / "registry.json"
EUI64 = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
BP_MONITOR = "00-1C-05-FF-FE-01-00-01"  # patient 1 (Bodø + centre + hospital unit)
OXIMETER = "00-1C-05-FF-FE-01-00-02"
GATEWAY = "test-hub"


def blood_pressure(
    systolic: int, diastolic: int, when: datetime, *, device: str = BP_MONITOR
) -> dict[str, Any]:
    """A dho-json blood-pressure measurement."""
    return {
        "device": {"system": EUI64, "value": device},
        "type": "blood-pressure",
        "time": when.isoformat(timespec="milliseconds"),
        "components": {
            "systolic": {"value": systolic, "unit": "mm[Hg]"},
            "diastolic": {"value": diastolic, "unit": "mm[Hg]"},
        },
    }


def raw_message(body: Any, *, gateway: str = GATEWAY) -> RawMessage:
    """`body` as the HTTP transport would hand it to the pipeline."""
    return RawMessage(
        payload=json.dumps(body).encode(),
        transport="http",
        topic="/ingest/dho-json",
        gateway=gateway,
        adapter="dho-json",
        received_at=datetime.now(UTC),
    )


@dataclass(frozen=True)
class Seeded:
    gateway: str
    key: str


async def seed(sessions: async_sessionmaker[AsyncSession], gateway: str = GATEWAY) -> Seeded:
    """The demo registry and a gateway serving all its organisations."""
    bundle = json.loads(DEMO_BUNDLE.read_text(encoding="utf-8"))
    orgs = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization"
    ]
    async with sessions() as session, session.begin():
        await import_bundle(session, bundle, allow_synthetic=True)
        from sqlalchemy import select

        from dho.db.models import Organization

        ids = list(await session.scalars(select(Organization.id)))
        assert len(ids) == len(orgs)
        key = await create_gateway(session, gateway, "Test hub", ids)
    return Seeded(gateway, key)


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[str]:
    """The whole service (HTTP, MQTT listener, outbox) on the settings' port; yields its URL."""
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=settings.http_port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("service did not start")
        if time.monotonic() > deadline:
            raise TimeoutError("service did not start in 20 s")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        await task


def wait_until_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Wait (30 s at most) until a `dho serve` subprocess answers /readyz with 200."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"service not ready:\n{log.read_text()}")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate a subprocess, killing it when it does not stop within 15 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def count_rows(sessions: async_sessionmaker[AsyncSession], model: Any) -> int:
    """How many rows a table holds."""
    from sqlalchemy import func, select

    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def wait_for(
    condition: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05
) -> Any:
    """Poll an async or sync condition until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A real HTTP server that records what it is sent; `fail_first` answers 503 first."""

    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.received.append(Received(self.path, dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


PATIENT_A = "14834641411"  # Ingrid Hansen (Bodø)
PATIENT_B = "02915113306"  # Olav Johansen


async def patient_id(sessions: async_sessionmaker[AsyncSession], national_id: str) -> str:
    from sqlalchemy import select

    from dho.db.models import Patient

    async with sessions() as session:
        found = await session.scalar(select(Patient.id).where(Patient.national_id == national_id))
    assert found is not None, national_id
    return str(found)


async def register_device(
    sessions: async_sessionmaker[AsyncSession],
    value: str,
    periods: list[tuple[str, datetime, datetime | None]],
    *,
    owner: str | None = None,
) -> None:
    """Register an EUI-64 device, assigned to patients (national id) for the given periods."""
    device_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, value)}"
    device: dict[str, Any] = {
        "resourceType": "Device",
        "identifier": [{"system": EUI64, "value": value}],
    }
    if owner is not None:
        device["owner"] = {"reference": f"Organization/{owner}"}
    entries: list[dict[str, Any]] = [{"fullUrl": device_url, "resource": device}]
    for national_id, start, end in periods:
        period = {"start": start.isoformat()} | ({"end": end.isoformat()} if end else {})
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "DeviceUseStatement",
                    "status": "active",
                    "subject": {"reference": f"Patient/{await patient_id(sessions, national_id)}"},
                    "device": {"reference": device_url},
                    "timingPeriod": period,
                },
            }
        )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    async with sessions() as session, session.begin():
        await import_bundle(session, bundle, allow_synthetic=True)


def reading(device: str, type_: str, when: datetime, value: object, unit: str) -> dict[str, Any]:
    """A single-valued dho-json measurement."""
    return {
        "device": device,
        "type": type_,
        "time": when.isoformat(timespec="milliseconds"),
        "value": value,
        "unit": unit,
    }
