"""The benchmarks under bench/ still run: tiny sizes, real PostgreSQL and Mosquitto.

This checks that they work and report complete figures, never how fast anything is; the
figures themselves belong in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.common import percentile, summary_ms
from bench.ingest_mqtt import WARMUP
from tests.conftest import PG_ADMIN_URL, mosquitto_binary, port_open, require

ROOT = Path(__file__).resolve().parent.parent


def _require_database(database: str) -> None:
    if database == "postgres":
        parts = urlsplit(PG_ADMIN_URL)
        host, port = parts.hostname or "127.0.0.1", parts.port or 5432
        require(port_open(host, port), f"PostgreSQL on {host}:{port}")


def _run_json(module: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{module} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    results: dict[str, Any] = json.loads(done.stdout)
    return results


def test_percentile_interpolates_and_summary_is_in_ms() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert summary_ms([0.010, 0.020]) == {"p50": 15.0, "p95": 19.5, "p99": 19.9, "max": 20.0}


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_mqtt_benchmark_reports_figures_and_stores_every_message(database: str) -> None:
    mosquitto_binary()
    _require_database(database)
    r = _run_json(
        "bench.ingest_mqtt", "--messages", "300", "--latency-messages", "20",
        "--database", database,
    )  # fmt: skip
    assert r["baseline"]["msgs_per_s"] > 0
    assert r["service"]["msgs_per_s"] > 0
    assert r["service"]["fraction_of_baseline"] > 0
    assert r["drain"]["msgs_per_s"] > 0
    assert r["stored"]["observations"] == r["stored"]["expected"] == WARMUP + 2 * 300 + 20
    assert r["stored"]["quarantined"] == 0
    for key in ("publish_to_commit_ms", "publish_to_received_ms", "publish_to_record_ms"):
        assert 0 < r["latency"][key]["p50"] <= r["latency"][key]["p99"]
    assert r["memory"]["peak_rss_mib"] >= r["memory"]["rss_ready_mib"] > 0
    assert r["memory"]["drain_peak_rss_mib"] > 0


@pytest.mark.slow
def test_http_benchmark_reports_figures_and_stores_every_request() -> None:
    r = _run_json("bench.ingest_http", "--requests", "200", "--database", "sqlite")
    assert r["baseline"]["req_per_s"] > 0
    assert r["service"]["req_per_s"] > 0
    assert r["service"]["statuses"] == {"202": 200}
    assert r["stored"]["observations"] == r["stored"]["expected"]
    assert 0 < r["service"]["latency_ms"]["p50"] <= r["service"]["latency_ms"]["p99"]


@pytest.mark.slow
def test_rules_benchmark_reports_both_pipelines_and_the_overhead() -> None:
    from bench.rules import render

    r = _run_json("bench.rules", "--measurements", "200", "--cadence-hours", "12")
    for label in ("rules", "baseline"):
        v = r[label]
        assert v["measurements"] == 200
        assert v["msgs_per_s"] > 0 and v["us_per_measurement"] > 0
        assert 0 < v["batch_ms"]["p50"] <= v["batch_ms"]["p95"]
        assert v["added"]["observation"] == 200
        assert v["added"]["quarantine"] == 0
    assert r["rules"]["judge_us_per_measurement"] > r["rules"]["rules_us_per_measurement"] > 0
    cache = r["rules"]["history_cache"]
    assert cache["hits"] > 0 and cache["patients"] == r["rules"]["patients"]
    assert r["baseline"]["judge_us_per_measurement"] == 0
    assert r["baseline"]["added"]["alert"] == r["baseline"]["added"]["alert_evidence"] == 0
    assert r["stream"]["history"] > 0
    assert isinstance(r["overhead"]["wall"], float)  # its size is noise at this N: not asserted
    assert "overhead of rule evaluation" in render(r)


@pytest.mark.slow
def test_rules_end_to_end_benchmark_times_both_services() -> None:
    from bench.rules_mqtt import render

    mosquitto_binary()
    r = _run_json(
        "bench.rules_mqtt", "--database", "sqlite", "--registry-copies", "1",
        "--cadence-hours", "4", "--measurements", "300", "--warmup", "40", "--segment", "100",
    )  # fmt: skip
    history, warmup = r["stream"]["history"], r["stream"]["warmup"]
    assert history > 0 and warmup == 40 and r["stream"]["measurements"] == 300
    for label in ("rules", "baseline"):
        v = r[label]
        assert v["messages"] == 300
        assert v["msgs_per_s"] > 0 and v["cpu_us_per_measurement"] > 0
        assert len(v["segments_us_per_measurement"]) == 3
        assert v["stored"]["observation"] == history + warmup + 300
        assert v["stored"]["quarantine"] == 0
    # The baseline service judges nothing: no reading joins or opens an alert.
    assert r["baseline"]["evidence_added"] == 0
    assert r["stream"]["out_of_range"] == 0 or r["rules"]["evidence_added"] > 0
    assert r["overhead"]["segments"] == 3
    assert "overhead of rule evaluation" in render(r)
