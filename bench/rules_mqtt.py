"""Rule evaluation end to end: the real service ingesting over MQTT with every reading judged,
against the same service with judging switched off.

    .venv/bin/python -m bench.rules_mqtt --database postgres

`bench.rules` isolates the pipeline; this one measures what issue 4 names, the cost of
ingesting a measurement, the whole way: broker → paho → batcher → pipeline → commit →
acknowledgement. In one run:

1. two fresh databases prepared as `bench.rules` prepares them: the demo registry
   `--registry-copies` times over, a gateway, the heart-failure plan for every patient and
   30 days of history ingested (and judged) before the clock starts;
2. two private Mosquitto brokers and two service processes, one per database:
   rules      `python -m dho serve`, the service as shipped;
   baseline   `python -m bench.unjudged_service`, the same with `Pipeline._judge` a no-op;
3. a warm-up (`--warmup` messages, not timed) through both, which fills their history caches
   as a running service has them;
4. the measured stream (the readings of `bench.rules`, as dho-json over MQTT) in segments of
   `--segment` messages; each segment goes to one service and then the other, the order
   swapped every segment. A segment is published at QoS 1 as fast as the broker takes it and
   timed from the first publish until the service's database holds every Observation (polled
   every 20 ms); the service process's CPU time comes from /proc.

The overhead is (rules - baseline) / baseline of the wall time per measurement, over the
whole stream and as the median of the segments; likewise for the service's CPU time.
`--check` exits with 1 when the whole stream's or the median segment's wall overhead is
above 20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    BenchError,
    OtherLoad,
    Probe,
    ServiceConfig,
    ServiceProcess,
    add_serve_arguments,
    busy_warning,
    database_name,
    machine_info,
    private_broker,
    publish_all,
    temp_database,
    workdir,
)
from bench.rules import (
    LIMIT,
    PLAN,
    Stream,
    bench_settings,
    checked_main,
    clean_environment,
    demo_bundle,
    load_history,
    make_stream,
    segment_overhead,
)

VARIANTS: dict[str, tuple[str, ...]] = {
    "rules": ("-m", "dho", "serve"),
    "baseline": ("-m", "bench.unjudged_service"),
}
HISTORY_CACHE = 2000  # the service's default DHO_HISTORY_CACHE_PATIENTS


@dataclass(frozen=True)
class Params:
    measurements: int
    segment: int
    warmup: int
    database: str
    registry_copies: int
    cadence_hours: float
    batch_max_size: int
    flush_ms: int
    check: bool


@dataclass
class _Timing:
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    messages: int = 0
    batches: int = 0
    segments: list[float] = field(default_factory=list)  # wall µs per message
    cpu_segments: list[float] = field(default_factory=list)  # service CPU µs per message

    def report(self) -> dict[str, Any]:
        n = self.messages
        return {
            "messages": n,
            "seconds": round(self.seconds, 3),
            "msgs_per_s": round(n / self.seconds, 1),
            "us_per_measurement": round(self.seconds / n * 1e6, 1),
            "cpu_us_per_measurement": round(self.cpu_seconds / n * 1e6, 1),
            "avg_batch": round(n / self.batches, 1) if self.batches else None,
            "segments_us_per_measurement": [round(us, 1) for us in self.segments],
            "segments_cpu_us_per_measurement": [round(us, 1) for us in self.cpu_segments],
        }


@dataclass
class _Service:
    label: str
    url: str
    port: int
    process: ServiceProcess
    probe: Probe | None = None
    timing: _Timing = field(default_factory=_Timing)


def _prepare_database(params: Params, url: str, bundle: dict[str, Any], stream: Stream) -> int:
    """Migrate, seed, give plans and ingest the history (in this process); the patients."""
    from dho.db import migrate
    from dho.db.engine import create_engine, session_factory

    settings = bench_settings(url, params.batch_max_size, HISTORY_CACHE)
    migrate.upgrade(settings)

    async def go() -> int:
        engine = create_engine(settings)
        try:
            _, patients, _ = await load_history(
                settings, session_factory(engine), engine, bundle, stream
            )
            return patients
        finally:
            await engine.dispose()

    return asyncio.run(go())


async def _deliver(
    service: _Service, topic: str, payloads: list[bytes], timing: _Timing | None
) -> None:
    """Publish `payloads` to the service's broker and wait until all are committed; add the
    wall time, the service's CPU time and its batches to `timing`."""
    probe = service.probe
    assert probe is not None
    before, raw_before = await probe.count("observation"), await probe.last_raw_id()
    batches_before = service.process.ingest_stats()["batches"]
    cpu_before = service.process.cpu_seconds()
    started: dict[str, float] = {}

    def publish() -> None:
        started["first"] = publish_all(service.port, topic, payloads)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    committed = await probe.wait_for_observations(
        raw_before + len(payloads), before + len(payloads), 120 + len(payloads) / 50
    )
    cpu = service.process.cpu_seconds() - cpu_before
    await asyncio.to_thread(publisher.join, 60)
    if timing is None:
        return
    elapsed = committed - started["first"]
    timing.seconds += elapsed
    timing.cpu_seconds += cpu
    timing.messages += len(payloads)
    timing.batches += service.process.ingest_stats()["batches"] - batches_before
    timing.segments.append(elapsed / len(payloads) * 1e6)
    timing.cpu_segments.append(cpu / len(payloads) * 1e6)


async def _measure(
    params: Params, services: list[_Service], topic: str, payloads: list[bytes]
) -> dict[str, Any]:
    warm, measured = payloads[: params.warmup], payloads[params.warmup :]
    for service in services:
        service.probe = Probe(service.url)
    try:
        for service in services:
            await _deliver(service, topic, warm, None)
        evidence_before = {s.label: await _evidence(s) for s in services}
        for n, first in enumerate(range(0, len(measured), params.segment)):
            segment = measured[first : first + params.segment]
            for service in services if n % 2 == 0 else services[::-1]:
                await _deliver(service, topic, segment, service.timing)
        results: dict[str, Any] = {}
        for service in services:
            assert service.probe is not None
            result = service.timing.report()
            result["stored"] = {
                "observation": await service.probe.count("observation"),
                "alert": await service.probe.count("alert"),
                "quarantine": await service.probe.count("quarantine"),
            }
            result["evidence_added"] = await _evidence(service) - evidence_before[service.label]
            result["peak_rss_mib"] = round(service.process.proc_status_kib("VmHWM") / 1024, 1)
            results[service.label] = result
        return results
    finally:
        for service in services:
            if service.probe is not None:
                await service.probe.close()


async def _evidence(service: _Service) -> int:
    """Alert evidence rows: every alert a judged reading opened or joined adds one."""
    assert service.probe is not None
    return await service.probe.count("alert_evidence")


def run(params: Params) -> dict[str, Any]:
    clean_environment()  # the history is ingested in this process
    cadence = timedelta(hours=params.cadence_hours)
    bundle = demo_bundle(params.registry_copies)
    total = params.warmup + params.measurements
    stream, homes = make_stream(bundle, total, cadence, gateway="bench-hub")
    topic = f"dho/v1/in/{stream.gateway}/dho-json"
    payloads = [raw.payload for raw in stream.measured]
    # Every reading of the stream is judged as fresh (none late), as in bench.rules.
    late_after = datetime.now(UTC) - stream.first + timedelta(days=1)
    results: dict[str, Any] = {
        "params": asdict(params),
        "stream": {
            "measurements": len(payloads) - params.warmup,
            "warmup": params.warmup,
            "patients": len(homes),
            "history": len(stream.history),
            "types": dict(sorted(stream.types.items())),
            "out_of_range": stream.out_of_range,
        },
    }
    with ExitStack() as stack:
        tmp = stack.enter_context(workdir("dho-bench-rules-mqtt-"))
        services: list[_Service] = []
        for label, command in VARIANTS.items():
            home = tmp / label
            home.mkdir()
            url = stack.enter_context(temp_database(params.database, home))
            results["patients"] = _prepare_database(params, url, bundle, stream)
            port = stack.enter_context(private_broker(home))
            config = ServiceConfig(
                url,
                port,
                params.batch_max_size,
                params.flush_ms,
                command=command,
                env={"DHO_LATE_AFTER_S": str(int(late_after.total_seconds()))},
            )
            process = ServiceProcess(config, home)
            stack.callback(process.stop)
            process.start()
            services.append(_Service(label, url, port, process))
        results["machine"] = machine_info(services[0].url)
        names = [database_name(s.url) for s in services]
        other = OtherLoad(names[0] if all(names) else None)
        try:
            results |= asyncio.run(_measure(params, services, topic, payloads))
        except BenchError as exc:
            logs = "\n".join(f"{s.label}:\n{s.process.log_tail()}" for s in services)
            raise BenchError(f"{exc}\nservice logs:\n{logs}") from exc
        results["machine"]["other_load"] = other.measure()
    results["overhead"] = segment_overhead(results["rules"], results["baseline"], cpu_segments=True)
    return results


def render(r: dict[str, Any]) -> str:
    m, s, o = r["machine"], r["stream"], r["overhead"]
    lines = [
        f"DHO rule evaluation end to end (MQTT) — {m['database']}, broker {m.get('broker', '?')}, "
        f"{s['measurements']} measurements ({s['warmup']} more to warm up), {s['patients']} "
        f"patients on the {PLAN} plan, {s['out_of_range']} readings out of range",
        f"machine: {m['nproc']} CPU ({m['cpu']}), {m['ram_gib']} GiB, Python {m['python']}; "
        f"code {m['code']}",
        *busy_warning(m),
        "",
        f"{'':<36}{'msgs/s':>8}{'µs/msg':>8}{'CPU µs':>8}{'batch':>7}{'alerts':>8}{'RSS MiB':>9}",
    ]
    for label, name in (
        ("rules", "rules: python -m dho serve"),
        ("baseline", "baseline: judging off"),
    ):
        v = r[label]
        lines.append(
            f"{name:<36}{v['msgs_per_s']:>8,.0f}{v['us_per_measurement']:>8,.0f}"
            f"{v['cpu_us_per_measurement']:>8,.0f}{v['avg_batch'] or 0:>7.0f}"
            f"{v['stored']['alert']:>8}{v['peak_rss_mib']:>9.1f}"
        )
    low, high = o["segment_quartiles"]
    verdict = "within" if o["within_limit"] else "ABOVE"
    lines += [
        f"overhead of rule evaluation: {o['wall']:+.1%} wall time per measurement, "
        f"{o['cpu']:+.1%} CPU of the service; median of {o['segments']} segments "
        f"{o['median_segment']:+.1%} wall (quartiles {low:+.1%}, {high:+.1%}), "
        f"{o['median_segment_cpu']:+.1%} CPU — {verdict} the {o['limit']:.0%} limit",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Params, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rules_mqtt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--measurements", type=int, default=20_000)
    parser.add_argument("--segment", type=int, default=2000, help="messages per timed segment")
    parser.add_argument("--warmup", type=int, default=1000, help="messages before the clock")
    parser.add_argument(
        "--registry-copies", type=int, default=40, help="the demo registry's patients K times"
    )
    parser.add_argument(
        "--cadence-hours", type=float, default=8.0, help="how often each patient measures"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 when the whole stream or the median segment is above {LIMIT:.0%}%",
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    positive = (args.measurements, args.segment, args.registry_copies, args.batch_max_size)
    if min(positive) < 1 or args.cadence_hours <= 0 or args.warmup < 0 or args.flush_ms < 0:
        parser.error(
            "--measurements, --segment, --registry-copies, --batch-max-size, --cadence-hours: "
            "above 0; --warmup, --flush-ms: 0 or more"
        )
    params = Params(
        measurements=args.measurements,
        segment=args.segment,
        warmup=args.warmup,
        database=args.database,
        registry_copies=args.registry_copies,
        cadence_hours=args.cadence_hours,
        batch_max_size=args.batch_max_size,
        flush_ms=args.flush_ms,
        check=args.check,
    )
    return params, bool(args.json)


def main(argv: list[str] | None = None) -> None:
    checked_main(argv, parse_args, run, render)


if __name__ == "__main__":
    main()
