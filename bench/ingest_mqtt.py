"""MQTT ingest benchmark: the service's end-to-end throughput and latency against the broker's.

    .venv/bin/python -m bench.ingest_mqtt --messages 20000 --database postgres

In one run, against a fresh database and a private Mosquitto (config/mosquitto/mosquitto.conf):

1. baseline  N QoS 1 messages from a paho publisher to a paho subscriber (own process) that
             acknowledges each on receipt: the broker's raw throughput on this machine;
2. service   the same N messages through `python -m dho serve`: first publish until all N
             Observations are committed (the benchmark polls the row count);
3. latency   `--latency-messages` at `--latency-rate` per second, each carrying its publish
             time; publish-to-commit is measured by a reader that polls the database every
             few milliseconds (see bench/README.md for the method);
4. drain     the service stopped, the same number of messages queued at the broker for its
             persistent session, the service started again: from ready until all committed,
             as after an outage; the restarted process's peak RSS shows what the backlog costs;
5. memory    the service's peak RSS (VmHWM) and CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
    private_broker,
    publish_all,
    raw_broker_latency,
    raw_broker_throughput,
    run_and_print,
    start_paced_publisher,
    summary_ms,
    temp_database,
    workdir,
)

WARMUP = 50
POLL_S = 0.002  # the latency reader's polling interval


@dataclass(frozen=True)
class Params:
    messages: int
    database: str
    batch_max_size: int
    flush_ms: int
    latency_messages: int
    latency_rate: float
    alert_every: int


# ---------------------------------------------------------------- phases


async def service_throughput(
    service: ServiceProcess, probe: Probe, port: int, topic: str, payloads: list[bytes]
) -> dict[str, Any]:
    """First publish until every observation is committed, as the database shows it."""
    before, raw_before = await probe.count("observation"), await probe.last_raw_id()
    stats_before, cpu_before = service.ingest_stats(), service.cpu_seconds()
    published: dict[str, float] = {}

    def publish() -> None:
        published["first"] = publish_all(port, topic, payloads)
        published["acked"] = time.time()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    timeout = 120 + len(payloads) / 100
    committed = await probe.wait_for_observations(
        raw_before + len(payloads), before + len(payloads), timeout
    )
    await asyncio.to_thread(publisher.join, 60)
    elapsed = committed - published["first"]
    stats_after, cpu = service.ingest_stats(), service.cpu_seconds() - cpu_before
    batches = stats_after["batches"] - stats_before["batches"]
    return {
        "messages": len(payloads),
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(len(payloads) / elapsed, 1),
        "publish_acked_s": round(published["acked"] - published["first"], 3),
        "batches": batches,
        "avg_batch": round(len(payloads) / batches, 1) if batches else None,
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_msg": round(cpu * 1000 / len(payloads), 3),
    }


async def drain_throughput(
    service: ServiceProcess, probe: Probe, port: int, topic: str, payloads: list[bytes]
) -> dict[str, Any]:
    """Queue the messages while the service is down, start it, time the backlog away.

    The rate counts from the moment the restarted service is ready; messages it stored
    while starting are left out of both the count and the time.
    """
    service.stop()
    before, raw_before = await probe.count("observation"), await probe.last_raw_id()
    await asyncio.to_thread(publish_all, port, topic, payloads)
    await asyncio.to_thread(service.start)
    ready_at, cpu_ready = time.time(), service.cpu_seconds()
    early = await probe.count("observation") - before
    timeout = 120 + len(payloads) / 100
    committed = await probe.wait_for_observations(
        raw_before + len(payloads), before + len(payloads), timeout
    )
    counted = len(payloads) - early
    cpu = service.cpu_seconds() - cpu_ready
    return {
        "messages": counted,
        "seconds": round(committed - ready_at, 3),
        "msgs_per_s": round(counted / (committed - ready_at), 1),
        "cpu_ms_per_msg": round(cpu * 1000 / max(1, counted), 3),
        "peak_rss_mib": round(service.proc_status_kib("VmHWM") / 1024, 1),
    }


@dataclass
class CommitWatcher:
    """Polls raw_message every POLL_S; the time a poll first saw a row is its commit time.

    The raw message and its Observation are written in one transaction, so they become
    visible together. A row first seen by the poll that started at t was committed between
    the previous poll's start and t: the error is at most one poll period plus one query.
    """

    probe: Probe
    prefix: str
    seen: dict[str, float] = field(default_factory=dict)
    first_id: int = 0
    last_id: int = 0
    polls: int = 0

    async def start_from_current(self) -> None:
        self.first_id = int(await self.probe.scalar("SELECT coalesce(max(id), 0) FROM raw_message"))
        self.last_id = self.first_id

    async def watch(self, expected: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"latency: {len(self.seen)} of {expected} committed")
            await self._poll()
            await asyncio.sleep(POLL_S)

    async def _poll(self) -> None:
        started = time.time()
        rows = await self.probe.rows(
            "SELECT id, message_id FROM raw_message WHERE id > :last ORDER BY id", last=self.last_id
        )
        self.polls += 1
        for row_id, message_id in rows:
            self.last_id = max(self.last_id, int(row_id))
            if message_id and message_id.startswith(self.prefix):
                self.seen.setdefault(message_id, started)


async def latency(
    probe: Probe, port: int, topic: str, payloads: Payloads, n: int, rate: float
) -> dict[str, Any]:
    """Publish-to-commit at a low rate, split into broker hop, batching + compute and commit."""
    watcher = CommitWatcher(probe, "lat-")
    await watcher.start_from_current()
    envelopes = [payloads.envelope("lat") for _ in range(n)]
    publisher = start_paced_publisher(port, topic, envelopes, rate)
    try:
        await watcher.watch(n, timeout_s=60 + n / rate)
    finally:
        await asyncio.to_thread(publisher.join, 60)
    rows = await probe.rows(
        "SELECT r.message_id, r.payload, r.received_at, o.last_updated FROM raw_message r "
        "JOIN observation o ON o.raw_message_id = r.id WHERE r.id > :first",
        first=watcher.first_id,
    )
    return _latency_figures(rows, watcher, n, rate)


def _epoch(value: Any) -> float:
    """A timestamp column as epoch seconds (SQLite hands back naive UTC strings or datetimes)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def _latency_figures(
    rows: list[Any], watcher: CommitWatcher, n: int, rate: float
) -> dict[str, Any]:
    commit, hop, to_record = [], [], []
    for message_id, payload, received_at, last_updated in rows:
        if message_id not in watcher.seen:
            continue
        sent = float(json.loads(bytes(payload))["sent_at"])
        commit.append(watcher.seen[message_id] - sent)
        hop.append(_epoch(received_at) - sent)
        to_record.append(_epoch(last_updated) - sent)
    if len(commit) != n:
        raise BenchError(f"latency: {len(commit)} of {n} messages found with their observation")
    return {
        "messages": n,
        "rate_per_s": rate,
        "poll_ms": POLL_S * 1000,
        "polls": watcher.polls,
        "publish_to_commit_ms": summary_ms(commit),
        "publish_to_received_ms": summary_ms(hop),
        "publish_to_record_ms": summary_ms(to_record),
    }


# ---------------------------------------------------------------- the run


async def _service_phases(
    params: Params, service: ServiceProcess, url: str, port: int, topic: str, payloads: Payloads
) -> dict[str, Any]:
    probe = Probe(url)
    try:
        rss_ready = service.proc_status_kib("VmRSS")
        publish_all(port, topic, payloads.batch("warm", WARMUP))  # also proves the subscription
        await probe.wait_for_observations(WARMUP, WARMUP, timeout_s=60)
        throughput = await service_throughput(
            service, probe, port, topic, payloads.batch("tp", params.messages)
        )
        lat = await latency(
            probe, port, topic, payloads, params.latency_messages, params.latency_rate
        )
        memory = {
            "rss_ready_mib": round(rss_ready / 1024, 1),
            "peak_rss_mib": round(service.proc_status_kib("VmHWM") / 1024, 1),
        }
        drain = await drain_throughput(
            service, probe, port, topic, payloads.batch("drain", params.messages)
        )
        memory["drain_peak_rss_mib"] = drain["peak_rss_mib"]
        stored = {
            "observations": await probe.count("observation"),
            "expected": WARMUP + 2 * params.messages + params.latency_messages,
            "quarantined": await probe.count("quarantine"),
            "alerts": await probe.count("alert"),
        }
    finally:
        await probe.close()
    return {
        "service": throughput,
        "drain": drain,
        "latency": lat,
        "memory": memory,
        "stored": stored,
    }


def run(params: Params) -> dict[str, Any]:
    with workdir("dho-bench-") as tmp, temp_database(params.database, tmp) as url:
        seeded = migrate_and_seed(url)
        topic = f"dho/v1/in/{seeded.gateway}/dho-json"
        payloads = Payloads(run=time.strftime("%H%M%S"), alert_every=params.alert_every)
        results: dict[str, Any] = {"params": params.__dict__, "machine": machine_info(url)}
        other = OtherLoad(database_name(url))
        with private_broker(tmp) as port:
            baseline_payloads = payloads.batch("base", params.messages)
            results["payload_bytes"] = round(
                sum(map(len, baseline_payloads)) / len(baseline_payloads)
            )
            results["baseline"] = raw_broker_throughput(port, topic, baseline_payloads)
            envelopes = [payloads.envelope("blat") for _ in range(params.latency_messages)]
            results["baseline"]["latency_ms"] = raw_broker_latency(
                port, topic, envelopes, params.latency_rate
            )
            config = ServiceConfig(url, port, params.batch_max_size, params.flush_ms)
            service = ServiceProcess(config, tmp)
            service.start()
            try:
                results.update(
                    asyncio.run(_service_phases(params, service, url, port, topic, payloads))
                )
            except BenchError as exc:
                raise BenchError(f"{exc}\nservice log:\n{service.log_tail()}") from exc
            finally:
                service.stop()
        results["machine"]["other_load"] = other.measure()
    base = results["baseline"]["msgs_per_s"]
    for phase in ("service", "drain"):
        results[phase]["fraction_of_baseline"] = round(results[phase]["msgs_per_s"] / base, 4)
    return results


# ---------------------------------------------------------------- output


def render(r: dict[str, Any]) -> str:
    p, m, s, b, lat = r["params"], r["machine"], r["service"], r["baseline"], r["latency"]
    d = r["drain"]
    lines = [
        f"DHO MQTT ingest — {m['database']}, {p['messages']} messages of ~{r['payload_bytes']} B, "
        f"batch {p['batch_max_size']} / flush {p['flush_ms']} ms",
        f"machine: {m['nproc']} CPU ({m['cpu']}), {m['ram_gib']} GiB, Python {m['python']}, "
        f"Mosquitto {m['mosquitto']}; code {m['code']}",
        *busy_warning(m),
        "",
        f"{'throughput':<44}{'msgs/s':>10}{'seconds':>10}{'of base':>9}",
        f"{'baseline: broker raw (paho -> paho, QoS 1)':<44}"
        f"{b['msgs_per_s']:>10,.0f}{b['seconds']:>10.2f}{'100%':>9}",
        f"{'service: first publish -> all committed':<44}"
        f"{s['msgs_per_s']:>10,.0f}{s['seconds']:>10.2f}{s['fraction_of_baseline']:>9.1%}",
        f"  publisher done (broker PUBACKed all) after {s['publish_acked_s']:.2f} s",
        f"  batches {s['batches']} (avg {s['avg_batch']} msgs), service CPU {s['cpu_s']} s "
        f"({s['cpu_ms_per_msg']} ms/msg)",
        f"{'service: backlog drain after a restart':<44}"
        f"{d['msgs_per_s']:>10,.0f}{d['seconds']:>10.2f}{d['fraction_of_baseline']:>9.1%}",
        f"  {d['messages']} msgs queued while down; service CPU {d['cpu_ms_per_msg']} ms/msg",
        "",
        f"latency at {lat['rate_per_s']:g} msgs/s, {lat['messages']} msgs "
        f"(commit seen by a {lat['poll_ms']:g} ms poll)",
        f"{'':<44}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}  ms",
    ]
    for label, v in (
        ("baseline: publish -> raw subscriber", b["latency_ms"]),
        ("service: publish -> received", lat["publish_to_received_ms"]),
        ("service: publish -> record stage", lat["publish_to_record_ms"]),
        ("service: publish -> committed (visible)", lat["publish_to_commit_ms"]),
    ):
        lines.append(f"{label:<44}{v['p50']:>8.1f}{v['p95']:>8.1f}{v['p99']:>8.1f}{v['max']:>8.1f}")
    mem, st = r["memory"], r["stored"]
    lines += [
        "",
        f"service peak RSS {mem['peak_rss_mib']} MiB (at ready {mem['rss_ready_mib']} MiB); "
        f"restarted with {d['messages']} queued: {mem['drain_peak_rss_mib']} MiB",
        f"stored: {st['observations']} observations of {st['expected']} expected, "
        f"{st['quarantined']} quarantined, {st['alerts']} alerts",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Params, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_mqtt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=20_000)
    add_service_arguments(parser)
    parser.add_argument("--latency-messages", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=50.0, help="messages per second")
    args = parser.parse_args(argv)
    params = Params(
        messages=args.messages,
        database=args.database,
        batch_max_size=args.batch_max_size,
        flush_ms=args.flush_ms,
        latency_messages=args.latency_messages,
        latency_rate=args.latency_rate,
        alert_every=args.alert_every,
    )
    return params, bool(args.json)


def main(argv: list[str] | None = None) -> None:
    run_and_print(argv, parse_args, run, render)


if __name__ == "__main__":
    main()
