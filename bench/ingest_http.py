"""HTTP ingest benchmark: `POST /ingest/dho-json` against the same server's `/healthz`.

    .venv/bin/python -m bench.ingest_http --requests 5000 --concurrency 16 --database postgres

In one run, against a fresh database, with `python -m dho serve` (MQTT off) as a subprocess:

1. baseline  `--requests` GET /healthz from `--concurrency` concurrent httpx clients: what the
             HTTP stack (uvicorn + FastAPI + this client) does with no database work;
2. service   the same number of POST /ingest/dho-json requests, each one measurement with a
             gateway key; each answer (202) comes only after its batch is committed, so the
             request latency is the gateway's publish-to-commit latency;
3. memory    the service's peak RSS (VmHWM) and CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    BenchError,
    OtherLoad,
    Payloads,
    Probe,
    ServiceConfig,
    ServiceProcess,
    add_service_arguments,
    busy_warning,
    database_name,
    machine_info,
    migrate_and_seed,
    run_and_print,
    summary_ms,
    temp_database,
    workdir,
)

WARMUP = 50


@dataclass(frozen=True)
class Params:
    requests: int
    concurrency: int
    database: str
    batch_max_size: int
    flush_ms: int
    alert_every: int


Request = Callable[[httpx.AsyncClient, int], Any]


async def _drive(url: str, n: int, concurrency: int, send: Request) -> dict[str, Any]:
    """`n` requests from `concurrency` workers, each with its own keep-alive connection.

    One client per worker: a single httpx connection pool shared by many tasks is itself a
    bottleneck at a few hundred requests per second and would cap the baseline.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(n))

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for index in counter:
                started = time.perf_counter()
                response = await send(client, index)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "requests": n,
        "seconds": round(elapsed, 3),
        "req_per_s": round(n / elapsed, 1),
        "latency_ms": summary_ms(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def _healthz(client: httpx.AsyncClient, _index: int) -> Any:
    return client.get("/healthz")


def _ingest(key: str, bodies: list[bytes]) -> Request:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def send(client: httpx.AsyncClient, index: int) -> Any:
        return client.post("/ingest/dho-json", content=bodies[index], headers=headers)

    return send


async def _sessions_opened(probe: Probe, url: str) -> int | None:
    """PostgreSQL's count of sessions ever opened to this database (None on SQLite)."""
    if url.startswith("sqlite"):
        return None
    await asyncio.sleep(1.5)  # backends publish their statistics about once a second
    sql = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    return int(await probe.scalar(sql))


async def _phases(params: Params, service: ServiceProcess, url: str, key: str) -> dict[str, Any]:
    payloads = Payloads(run=time.strftime("%H%M%S"), alert_every=params.alert_every)
    n, c = params.requests, params.concurrency
    probe = Probe(url)
    await _drive(service.url, WARMUP, c, _ingest(key, payloads.batch("warm", WARMUP)))
    baseline = await _drive(service.url, n, c, _healthz)
    sessions_before = await _sessions_opened(probe, url)
    stats_before, cpu_before = service.ingest_stats(), service.cpu_seconds()
    ingest = await _drive(service.url, n, c, _ingest(key, payloads.batch("http", n)))
    cpu = service.cpu_seconds() - cpu_before
    batches = service.ingest_stats()["batches"] - stats_before["batches"]
    sessions_after = await _sessions_opened(probe, url)
    ingest.update(
        fraction_of_baseline=round(ingest["req_per_s"] / baseline["req_per_s"], 4),
        batches=batches,
        avg_batch=round(n / batches, 1) if batches else None,
        cpu_s=round(cpu, 2),
        cpu_ms_per_msg=round(cpu * 1000 / n, 3),
        db_sessions_opened=(
            None if sessions_after is None else sessions_after - (sessions_before or 0)
        ),
    )
    try:
        stored = {
            "observations": await probe.count("observation"),
            "expected": WARMUP + n,
            "quarantined": await probe.count("quarantine"),
        }
    finally:
        await probe.close()
    memory = {"peak_rss_mib": round(service.proc_status_kib("VmHWM") / 1024, 1)}
    return {"baseline": baseline, "service": ingest, "stored": stored, "memory": memory}


def run(params: Params) -> dict[str, Any]:
    with workdir("dho-bench-http-") as tmp, temp_database(params.database, tmp) as url:
        seeded = migrate_and_seed(url)
        results: dict[str, Any] = {"params": params.__dict__, "machine": machine_info(url)}
        other = OtherLoad(database_name(url))
        config = ServiceConfig(url, 0, params.batch_max_size, params.flush_ms, mqtt_enabled=False)
        service = ServiceProcess(config, tmp)
        service.start()
        try:
            results.update(asyncio.run(_phases(params, service, url, seeded.key)))
        except (BenchError, httpx.HTTPError) as exc:
            raise BenchError(f"{exc}\nservice log:\n{service.log_tail()}") from exc
        finally:
            service.stop()
        results["machine"]["other_load"] = other.measure()
    return results


def render(r: dict[str, Any]) -> str:
    p, m, b, s = r["params"], r["machine"], r["baseline"], r["service"]
    lines = [
        f"DHO HTTP ingest — {m['database']}, {p['requests']} requests, "
        f"{p['concurrency']} concurrent, batch {p['batch_max_size']} / flush {p['flush_ms']} ms",
        f"machine: {m['nproc']} CPU ({m['cpu']}), {m['ram_gib']} GiB, Python {m['python']}; "
        f"code {m['code']}",
        *busy_warning(m),
        "",
        f"{'':<36}{'req/s':>9}{'of base':>9}{'p50':>8}{'p95':>8}{'p99':>8}  ms",
    ]
    for label, v, share in (
        ("baseline: GET /healthz", b, 1.0),
        ("service: POST /ingest/dho-json", s, s["fraction_of_baseline"]),
    ):
        lat = v["latency_ms"]
        lines.append(
            f"{label:<36}{v['req_per_s']:>9,.0f}{share:>9.1%}"
            f"{lat['p50']:>8.1f}{lat['p95']:>8.1f}{lat['p99']:>8.1f}"
        )
    st = r["stored"]
    lines += [
        f"  statuses {s['statuses']}; batches {s['batches']} (avg {s['avg_batch']} msgs); "
        f"service CPU {s['cpu_s']} s ({s['cpu_ms_per_msg']} ms/msg)",
        f"  new database sessions opened by the service while ingesting: "
        f"{s['db_sessions_opened'] if s['db_sessions_opened'] is not None else 'n/a (SQLite)'}",
        f"service memory: peak RSS {r['memory']['peak_rss_mib']} MiB",
        f"stored: {st['observations']} observations of {st['expected']} expected, "
        f"{st['quarantined']} quarantined",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Params, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    add_service_arguments(parser)
    args = parser.parse_args(argv)
    params = Params(
        requests=args.requests,
        concurrency=args.concurrency,
        database=args.database,
        batch_max_size=args.batch_max_size,
        flush_ms=args.flush_ms,
        alert_every=args.alert_every,
    )
    return params, bool(args.json)


def main(argv: list[str] | None = None) -> None:
    run_and_print(argv, parse_args, run, render)


if __name__ == "__main__":
    main()
