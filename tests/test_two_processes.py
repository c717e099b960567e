"""Two `dho serve` processes on one PostgreSQL receive the same batches at once.

Each Observation is stored once, whichever process commits first; the other answers
`duplicate`. With a message id, exactly one process accepts the message.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from dho.db.engine import create_engine, session_factory
from dho.db.models import ObservationRow, ObservationVersion, RawMessage
from dho.settings import Settings
from tests.conftest import free_port
from tests.support import OXIMETER, count_rows, reading, seed, stop_process, wait_until_ready

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgres"])]


class Serve:
    """`python -m dho serve` on its own port, HTTP only."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("DHO_")}
        env |= {
            "DHO_DATABASE_URL": database_url,
            "DHO_DATABASE_AUTO_MIGRATE": "false",
            "DHO_MQTT_ENABLED": "false",
            "DHO_HTTP_PORT": str(self.port),
            "DHO_GATEWAY_RATE_PER_S": "0",
            "DHO_LOG_LEVEL": "WARNING",
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dho", "serve"], env=env, stdout=out, stderr=out
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        wait_until_ready(self.proc, self.url, self.log)

    def stop(self) -> None:
        stop_process(self.proc)


async def test_two_processes_store_each_reading_once(database_url: str, tmp_path: Path) -> None:
    engine = create_engine(Settings(_env_file=None, database_url=database_url))  # type: ignore[call-arg]
    sessions = session_factory(engine)
    try:
        seeded = await seed(sessions)
        services = [Serve(database_url, tmp_path / f"serve-{i}.log") for i in range(2)]
        try:
            for service in services:
                await asyncio.to_thread(service.wait_ready)
            start = datetime.now(UTC) - timedelta(minutes=30)
            batch = [
                reading(OXIMETER, "heart-rate", start + timedelta(seconds=s), 60 + s % 30, "/min")
                for s in range(50)
            ]
            auth = {"Authorization": f"Bearer {seeded.key}"}
            async with httpx.AsyncClient(timeout=30) as client:
                plain = await asyncio.gather(
                    *(
                        client.post(f"{s.url}/ingest/dho-json", json=batch, headers=auth)
                        for s in services
                        for _ in range(3)
                    )
                )
                envelope = {"message_id": "gw-batch-7", "measurements": batch}
                enveloped = await asyncio.gather(
                    *(
                        client.post(f"{s.url}/ingest/dho-json", json=envelope, headers=auth)
                        for s in services
                        for _ in range(3)
                    )
                )
        finally:
            for service in services:
                service.stop()
        assert all(a.status_code == 202 for a in plain), [a.text for a in plain]
        statuses = [item["status"] for a in plain for item in a.json()["measurements"]]
        assert statuses.count("accepted") == 50 and statuses.count("duplicate") == 250
        assert sorted(a.status_code for a in enveloped) == [200] * 5 + [202]
        [accepted] = [a.json() for a in enveloped if a.status_code == 202]
        assert {m["status"] for m in accepted["measurements"]} == {"duplicate"}
        assert await count_rows(sessions, ObservationRow) == 50
        assert await count_rows(sessions, ObservationVersion) == 50
        assert await count_rows(sessions, RawMessage) == 7  # six plain posts and one envelope
    finally:
        await engine.dispose()
