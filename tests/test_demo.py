"""`dho demo`, the README's run command: the embedded defaults, a registry, alerts in a minute."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dho.simulator import BLOOD_PRESSURE_MONITOR, PULSE_OXIMETER, SimulatedDevice, readings
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def test_demo_streams_simulated_patients_until_alerts_appear(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHO_")}
    env.update({"DHO_HTTP_PORT": str(port), "DHO_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"})
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dho", "demo", "--interval", "0.5"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        red = _wait_for_red_alert(base, proc, log, timeout_s=60)
        assert red["kind"] == "measurement-out-of-range"
        assert (tmp_path / "var" / "dho.sqlite3").exists()
        key = re.search(r"Demo gateway key \(new every start\): (dhogw_\S+)", log.read_text())
        assert key, log.read_text()
        alerts = httpx.get(f"{base}/api/alerts", params={"limit": 1000}).json()["alerts"]
        patients = {a["patient"] for a in alerts}
        assert len(patients) == 1, "only the deteriorating patient should raise alerts"
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["checks"] == {"database": "ok", "mqtt": "ok", "workers": "ok"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal it caught (exit by SIGTERM).
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
    assert "started the embedded MQTT broker" in log.read_text()


def _wait_for_red_alert(
    base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            alerts = httpx.get(f"{base}/api/alerts", params={"limit": 1000}).json()["alerts"]
        except httpx.HTTPError:
            alerts = []
        reds = [a for a in alerts if a["severity"] == "red"]
        if reds:
            return reds[0]
        time.sleep(0.25)
    raise AssertionError(f"no red alert within {timeout_s} s:\n{log.read_text()[-3000:]}")


def test_the_deteriorating_patient_crosses_into_red_and_the_others_stay_green() -> None:
    import random

    sick = SimulatedDevice("s", "x", PULSE_OXIMETER, deteriorating=True)
    well = SimulatedDevice("s", "y", PULSE_OXIMETER, deteriorating=False)
    rng = random.Random(1)
    early = [r["value"] for r in readings(sick, 0, rng) if r["type"] == "oxygen-saturation"]
    # Reading 8 comes 40 s after the first at the default 5 s interval: red whatever the noise.
    late = [r["value"] for r in readings(sick, 8, rng) if r["type"] == "oxygen-saturation"]
    assert early[0] >= 95 and late[0] <= 87
    for step in range(50):
        [spo2, pulse] = readings(well, step, rng)
        assert 95 <= spo2["value"] <= 99 and 60 <= pulse["value"] <= 80
        [bp] = readings(SimulatedDevice("s", "z", BLOOD_PRESSURE_MONITOR, False), step, rng)
        assert bp["components"]["systolic"]["value"] < 160
