"""Rule evaluation benchmark: ingest with every reading judged by the patient's plan, against
the same ingest with judging switched off.

    .venv/bin/python -m bench.rules
    .venv/bin/python -m bench.rules --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

In-process, no transport: `Pipeline.process` is called directly with batches of raw dho-json
messages (one measurement each), the way the MQTT and HTTP transports hand them over. The
same stream runs through two pipelines, each on a fresh database of its own (a temporary
SQLite file, or a database on the PostgreSQL server `--database-url` names, dropped
afterwards):

1. rules     the real pipeline: the patients' context is loaded and locked (plan versions,
             pauses, the history of trended types), every reading is judged, and the record
             stage applies the findings to the patients' alert episodes;
2. baseline  the same pipeline with `_judge` switched off: no context, no findings, no
             alerts; everything else (accept, decode, resolve, normalise, FHIR, record) runs.

Both databases hold the demo registry (`--registry-copies K`: its five patients K times
over, with new national ids and device identifiers), a gateway, the `heart-failure` plan
for every patient (range rules, weight gain over 3 days, heart rate outside the patient's
28-day normal) and 30 days of history ingested before the clock starts. The stream
continues that history: every `--cadence-hours` each patient measures blood pressure, SpO2
and heart rate (and weight once a day, where the patient has a scale), the patients spread
over the round, about 4 % of the readings out of range; each reading is received two seconds
after it was taken, so none is late.

On PostgreSQL both databases are ANALYZEd after the history, as autovacuum would have done
in service: without planner statistics every batch's duplicate check scans its tables.

Timed: the measured stream in segments of `--segment-batches` batches (default one); each
segment goes through both pipelines in turn, the order swapped every segment, so that a
checkpoint, an autovacuum or another process's burst falls on both alike. Each
`Pipeline.process` call (one transaction per batch) is timed; `judge µs` is the part spent
in the judge stage (context load and rules), `rules µs` the part of that spent judging the
readings, the rest of the difference is the record stage applying the findings (alert
episodes, rule states, annotated resources). The timed pipeline starts with the history
cache of the one that ingested the history, as a process in service would have it
(`--history-cache 0` measures without the cache). The overhead is
(rules - baseline) / baseline of the wall time per measurement, over the whole stream and
segment by segment; `--check` exits with 1 when the whole stream's or the median
segment's is above 20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from bench.common import (
    BenchError,
    OtherLoad,
    busy_warning,
    machine_info,
    run_and_print,
    summary_ms,
    workdir,
)
from dho.ingest.measurement import EUI64_SYSTEM, RawMessage
from dho.ingest.pipeline import Pipeline, ReferenceData
from dho.ingest.plan import MessagePlan
from dho.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "config" / "demo" / "registry.json"
PLAN = "heart-failure"
HISTORY_DAYS = 30  # longer than the plan's longest look-back (28 days of heart rate)
LIMIT = 0.20  # issue 4: rule evaluation adds less than 20 % to the cost of ingesting
OUT_OF_RANGE = 0.04  # share of BP / SpO2 / heart-rate readings outside the plan's range
RECEIVED_AFTER = timedelta(seconds=2)
HPR_AUTHOR, HPR_APPROVER = "1234567", "7654321"
DEFAULT_BATCH = int(Settings.model_fields["batch_max_size"].default)

# ISO/IEEE 11073 device specialisation codes of the demo registry's devices.
BP_MONITOR, OXIMETER, SCALE = "528391", "528388", "528399"


# ---------------------------------------------------------------- the stream


@dataclass(frozen=True, slots=True)
class Device:
    system: str
    value: str


@dataclass(slots=True)
class Home:
    """One demo patient's devices and personal normal values."""

    patient: str  # the registry bundle's reference, only to tell homes apart
    bp: Device | None = None
    oximeter: Device | None = None
    scale: Device | None = None
    systolic: float = 125.0
    pulse: float = 70.0
    weight: float = 80.0


def demo_bundle(copies: int = 1) -> dict[str, Any]:
    """The demo registry; with `copies` > 1 its patients, care teams, devices and device
    assignments again and again, under new national ids (the same birth dates) and device
    identifiers, in the same organisations."""
    bundle: dict[str, Any] = json.loads(REGISTRY.read_text(encoding="utf-8"))
    orgs = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization"]
    rest = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Organization"]
    text = json.dumps(rest)
    used = {
        e["resource"]["identifier"][0]["value"]
        for e in rest
        if e["resource"]["resourceType"] == "Patient"
    }
    entries = orgs + rest
    for copy in range(1, copies):
        copied = text
        for entry in rest:
            again = uuid.uuid5(uuid.NAMESPACE_URL, f"{entry['fullUrl']}|{copy}")
            copied = copied.replace(entry["fullUrl"], f"urn:uuid:{again}")
        for entry in json.loads(copied):
            resource, ident = entry["resource"], entry["resource"].get("identifier", [{}])[0]
            if resource["resourceType"] == "Patient":
                ident["value"] = _another_national_id(ident["value"], used)
            elif resource["resourceType"] == "Device":
                ident["value"] = _device_copy(ident["system"], ident["value"], copy)
            entries.append(entry)
    bundle["entry"] = entries
    return bundle


def _another_national_id(original: str, used: set[str]) -> str:
    """A valid (synthetic) national id with the same birth date as `original`."""
    from dho.registry.national_id import InvalidNationalId, parse_national_id

    first = int(original[6:9])
    for step in range(1, 500):
        stem = f"{original[:6]}{(first + step) % 500:03d}"
        for checks in range(100):
            candidate = f"{stem}{checks:02d}"
            try:
                parse_national_id(candidate, allow_synthetic=True)
            except InvalidNationalId:
                continue
            if candidate not in used:
                used.add(candidate)
                return candidate
    raise BenchError(f"no more national ids with the birth date of {original}")


def _device_copy(system: str, value: str, copy: int) -> str:
    if copy > 255:
        raise BenchError("at most 256 copies of the demo registry")
    if system == EUI64_SYSTEM:  # 00-1C-05-FF-FE-<patient>-00-<device>: the 7th byte
        parts = value.split("-")
        parts[6] = f"{copy:02X}"
        return "-".join(parts)
    return f"c{copy:03x}{value[4:]}"  # the Withings hashes: another 40-hex-digit id


def demo_homes(bundle: dict[str, Any]) -> tuple[list[Home], datetime]:
    """The registry's patients with the devices they use; the latest assignment start.

    Which device serves which measurement type follows from its type code: a blood-pressure
    monitor sends blood pressure, a pulse oximeter SpO2 and heart rate, a scale weight.
    """
    devices: dict[str, tuple[str, Device]] = {}
    uses: list[tuple[str, str, datetime]] = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Device":
            code = resource["type"]["coding"][0]["code"]
            ident = resource["identifier"][0]
            devices[entry["fullUrl"]] = (code, Device(ident["system"], ident["value"]))
        elif resource["resourceType"] == "DeviceUseStatement":
            start = datetime.fromisoformat(resource["timingPeriod"]["start"])
            uses.append((resource["subject"]["reference"], resource["device"]["reference"], start))
    homes: dict[str, Home] = {}
    latest_start = datetime.min.replace(tzinfo=UTC)
    for patient, device_ref, start in uses:
        code, device = devices[device_ref]
        home = homes.setdefault(patient, Home(patient))
        slot = {BP_MONITOR: "bp", OXIMETER: "oximeter", SCALE: "scale"}.get(code)
        if slot is None:
            continue
        current: Device | None = getattr(home, slot)
        # One device per slot; the EUI-64 devices (the PHD gateways') first.
        if current is None or (current.system != EUI64_SYSTEM and device.system == EUI64_SYSTEM):
            setattr(home, slot, device)
        latest_start = max(latest_start, start)
    ordered = list(homes.values())  # the bundle's order: copy after copy
    for n, home in enumerate(ordered):
        k = n % 5
        home.systolic, home.pulse, home.weight = 118.0 + 5 * k, 62.0 + 4 * k, 68.0 + 7 * k
    return ordered, latest_start


@dataclass(slots=True)
class Stream:
    """The raw messages: history first (not timed), then the measured ones."""

    gateway: str
    history: list[RawMessage]
    measured: list[RawMessage]
    types: Counter[str] = field(default_factory=Counter)
    out_of_range: int = 0

    @property
    def first(self) -> datetime:
        return self.measured[0].received_at - RECEIVED_AFTER

    @property
    def last(self) -> datetime:
        return self.measured[-1].received_at - RECEIVED_AFTER


class _Readings:
    """Readings of every home, round after round, as the devices would send them."""

    def __init__(self, homes: list[Home], cadence: timedelta, rng: random.Random) -> None:
        self.homes, self.cadence, self.rng = homes, cadence, rng
        self.out_of_range = 0
        self.share = 0.0  # of the readings put out of range

    def per_round(self) -> float:
        daily = max(1, round(timedelta(days=1) / self.cadence))
        return sum(
            (2 if h.oximeter else 0) + (1 if h.bp else 0) + (1 / daily if h.scale else 0)
            for h in self.homes
        )

    def from_(
        self, start: datetime, measured_from: datetime
    ) -> Iterator[tuple[bool, datetime, dict[str, Any]]]:
        """(measured?, time, reading) from `start` on; rounds from `measured_from` are the
        measured ones, and only they have readings put out of range."""
        rng = self.rng
        for n in range(sys.maxsize):
            at = start + n * self.cadence
            measured = at >= measured_from
            self.share = OUT_OF_RANGE if measured else 0.0
            morning = (at - self.cadence).date() != at.date() or self.cadence >= timedelta(days=1)
            for k, home in enumerate(self.homes):
                when = at + self.cadence * k / len(self.homes)  # spread over the round
                if home.scale is not None and morning:
                    yield measured, when, self._weight(home, when, k)
                if home.bp is not None:
                    yield measured, when + timedelta(minutes=1), self._blood_pressure(home, rng)
                if home.oximeter is not None:
                    later = when + timedelta(minutes=2)
                    yield measured, later, self._spo2(home, rng)
                    yield measured, later, self._pulse(home, rng)

    def _abnormal(self) -> bool:
        if self.rng.random() < self.share:
            self.out_of_range += 1
            return True
        return False

    def _weight(self, home: Home, when: datetime, k: int) -> dict[str, Any]:
        # Every 11 days a patient retains fluid for three days: +1.1 kg a day, then back.
        day = (when.toordinal() + 4 * k) % 11
        gain = 1.1 * (day + 1) if day < 3 else 0.0
        value = round(home.weight + gain + self.rng.gauss(0, 0.3), 1)
        return _one(home.scale, "body-weight", value=value, unit="kg")

    def _blood_pressure(self, home: Home, rng: random.Random) -> dict[str, Any]:
        systolic = round(rng.gauss(home.systolic, 8))
        diastolic = round(rng.gauss(78, 6))
        if self._abnormal():
            systolic = rng.choice((90, 166, 172, 186))
            diastolic = min(diastolic, systolic - 30)
        components = {
            "systolic": {"value": systolic, "unit": "mm[Hg]"},
            "diastolic": {"value": diastolic, "unit": "mm[Hg]"},
        }
        return _one(home.bp, "blood-pressure", components=components)

    def _spo2(self, home: Home, rng: random.Random) -> dict[str, Any]:
        value = min(100, round(rng.gauss(96.5, 1.1)))
        if self._abnormal():
            value = rng.choice((86, 90, 91))
        return _one(home.oximeter, "oxygen-saturation", value=value, unit="%")

    def _pulse(self, home: Home, rng: random.Random) -> dict[str, Any]:
        value = round(rng.gauss(home.pulse, 5))
        if self._abnormal():
            value = rng.choice((44, 108, 126))
        return _one(home.oximeter, "heart-rate", value=value, unit="/min")


def _one(device: Device | None, type_key: str, **reading: Any) -> dict[str, Any]:
    assert device is not None
    return {"device": {"system": device.system, "value": device.value}, "type": type_key, **reading}


def make_stream(
    bundle: dict[str, Any], measurements: int, cadence: timedelta, gateway: str, seed: int = 2026
) -> tuple[Stream, list[Home]]:
    """The same readings for any seed and size, ending within two rounds before now."""
    homes, assigned_from = demo_homes(bundle)
    readings = _Readings(homes, cadence, random.Random(seed))
    rounds = math.ceil(measurements / readings.per_round()) + 1
    history_rounds = math.ceil(timedelta(days=HISTORY_DAYS) / cadence)
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    measured_from = end - (rounds + 1) * cadence
    start = measured_from - history_rounds * cadence
    if start < assigned_from + timedelta(days=1):
        most = int((measured_from - assigned_from).days / cadence.total_seconds() * 86_400)
        raise BenchError(
            f"{measurements} measurements at one round every {cadence} reach back before the "
            f"demo devices were assigned ({assigned_from:%Y-%m-%d}); use a longer cadence "
            f"or fewer measurements (about {most * readings.per_round():.0f} fit)"
        )
    stream = Stream(gateway, [], [])
    for index, (measured, when, reading) in enumerate(readings.from_(start, measured_from)):
        if len(stream.measured) == measurements:
            break
        envelope = {
            "message_id": f"rules-{index}",
            "measurements": [reading | {"time": when.isoformat(timespec="milliseconds")}],
        }
        raw = RawMessage(
            payload=json.dumps(envelope, separators=(",", ":")).encode(),
            transport="http",
            topic="/ingest/dho-json",
            gateway=gateway,
            adapter="dho-json",
            received_at=when + RECEIVED_AFTER,
        )
        if not measured:
            stream.history.append(raw)
        else:
            stream.measured.append(raw)
            stream.types[reading["type"]] += 1
    stream.out_of_range = readings.out_of_range
    return stream, homes


# ---------------------------------------------------------------- databases


def _asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_admin(server_url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(_asyncpg_url(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database(server_url: str | None, tmp: Path, name: str) -> Iterator[str]:
    """A new empty database: a SQLite file in `tmp`, or database `name` on the PostgreSQL
    server of `server_url` (created from its database, dropped afterwards) — like the tests'
    `scratch_pg_database`, so nobody else's tables are touched."""
    if server_url is None:
        yield f"sqlite+aiosqlite:///{tmp / f'{name}.sqlite3'}"
        return
    asyncio.run(_pg_admin(server_url, f'CREATE DATABASE "{name}"'))
    parts = urlsplit(server_url)
    url = parts._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
    try:
        yield url
    finally:
        asyncio.run(_pg_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def bench_settings(url: str, batch: int, history_cache: int) -> Settings:
    return Settings(
        _env_file=None,
        database_url=url,
        batch_max_size=batch,
        history_cache_patients=history_cache,
    )


async def seed(sessions: Any, bundle: dict[str, Any], gateway: str) -> None:
    """The registry and a gateway serving all its organisations (as `tests.support.seed`)."""
    from sqlalchemy import select

    from dho.db.models import Organization
    from dho.registry.gateways import create_gateway
    from dho.registry.importer import import_bundle

    async with sessions() as session, session.begin():
        await import_bundle(session, bundle, allow_synthetic=True)
        organisations = list(await session.scalars(select(Organization.id)))
        await create_gateway(session, gateway, "Bench hub", organisations)


async def give_plans(pipeline: Pipeline, sessions: Any, valid_from: datetime) -> int:
    """The heart-failure plan, from `valid_from`, for every patient of the registry."""
    from sqlalchemy import select

    from dho.db.models import Patient
    from dho.rules.plan_store import PlanRequest, add_plan_version

    request = PlanRequest(PLAN, HPR_AUTHOR, HPR_APPROVER, valid_from, note="bench.rules")
    async with sessions() as session, session.begin():
        patients = list(await session.scalars(select(Patient.id)))
        for patient in patients:
            await add_plan_version(session, pipeline.reference.plans, patient, request)
    return len(patients)


# ---------------------------------------------------------------- the two pipelines


class TimedPipeline(Pipeline):
    """The real pipeline; it only adds up the time its judge stage takes (context + rules)
    and, of that, the rules themselves (judging each reading)."""

    judge_s = 0.0
    rules_s = 0.0

    async def _judge(self, session: Any, plans: list[MessagePlan]) -> None:
        started = time.perf_counter()
        try:
            await super()._judge(session, plans)
        finally:
            self.judge_s += time.perf_counter() - started

    def _judge_item(self, *args: Any) -> None:
        started = time.perf_counter()
        try:
            super()._judge_item(*args)
        finally:
            self.rules_s += time.perf_counter() - started


class UnjudgedPipeline(TimedPipeline):
    """The baseline: the real pipeline with judging switched off (no patient context, no
    findings, no alert episodes); every other stage runs as in production."""

    async def _judge(self, session: Any, plans: list[MessagePlan]) -> None:
        return None


@dataclass(frozen=True)
class Params:
    measurements: int
    batch: int
    database_url: str | None
    cadence_hours: float
    registry_copies: int
    check: bool
    profile: str | None
    history_cache: int = 2000
    segment_batches: int = 1
    gc_threshold: int = int(Settings.model_fields["gc_threshold"].default)


@dataclass(slots=True)
class _Timing:
    """What one variant's timed segments added up to."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    measurements: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    segments: list[float] = field(default_factory=list)  # µs per measurement, each segment

    def report(self) -> dict[str, Any]:
        n = self.measurements
        return {
            "measurements": n,
            "seconds": round(self.seconds, 3),
            "msgs_per_s": round(n / self.seconds, 1),
            "us_per_measurement": round(self.seconds / n * 1e6, 1),
            "cpu_us_per_measurement": round(self.cpu_seconds / n * 1e6, 1),
            "batches": len(self.latencies),
            "batch_ms": summary_ms(self.latencies),
            "statuses": dict(sorted(self.statuses.items())),
            "segments_us_per_measurement": [round(us, 1) for us in self.segments],
        }


async def _feed(
    pipeline: Pipeline,
    raws: list[RawMessage],
    batch: int,
    profiler: cProfile.Profile | None = None,
    timing: _Timing | None = None,
) -> _Timing:
    """Process `raws` in batches; add wall and CPU time of this process and the per-batch
    latency to `timing`."""
    timing = timing if timing is not None else _Timing()
    cpu_started, started = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for first in range(0, len(raws), batch):
        chunk = raws[first : first + batch]
        began = time.perf_counter()
        results = await pipeline.process(chunk)
        timing.latencies.append(time.perf_counter() - began)
        timing.statuses.update(item.status for result in results for item in result.items)
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - started
    timing.seconds += elapsed
    timing.cpu_seconds += time.process_time() - cpu_started
    timing.measurements += len(raws)
    if raws:
        timing.segments.append(elapsed / len(raws) * 1e6)
    return timing


async def _stored(sessions: Any) -> dict[str, int]:
    from sqlalchemy import text

    counts = {}
    async with sessions() as session:
        for table in ("observation", "quarantine", "alert", "alert_evidence", "rule_state"):
            counts[table] = int(
                (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            )
    return counts


async def _analyze(engine: Any) -> None:
    from sqlalchemy import text

    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()


@contextmanager
def _collector_as_in_service(threshold: int) -> Iterator[None]:
    """The garbage collector as `dho serve` sets it after start-up (`dho.collector`): what
    exists before the clock starts is frozen, which also keeps the harness's own
    objects (above all the stream's ~70,000 raw messages, which a service does not hold)
    out of the collections; they would time the harness, in both variants alike."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@dataclass(slots=True)
class _Variant:
    """One database with its history ingested, and the pipeline to time on it."""

    label: str
    url: str
    engine: Any
    sessions: Any
    pipeline: TimedPipeline
    patients: int
    history_s: float
    before: dict[str, int]
    cache_before: tuple[int, int]
    profiler: cProfile.Profile | None
    timing: _Timing = field(default_factory=_Timing)


async def load_history(
    settings: Settings, sessions: Any, engine: Any, bundle: dict[str, Any], stream: Stream
) -> tuple[Pipeline, int, float]:
    """Seed a migrated database, give every patient the plan and ingest the history with the
    real pipeline. Returns that pipeline (its history cache holds what it judged), the number
    of patients and the seconds the history took."""
    real = Pipeline(settings, sessions, ReferenceData.load(settings))
    await seed(sessions, bundle, stream.gateway)
    history_from = stream.history[0].received_at - timedelta(days=1)
    patients = await give_plans(real, sessions, history_from)
    # The history is judged in every database, so all start alike (alerts and rule
    # states included) and the code paths are warm before the clock starts.
    history_started = time.perf_counter()
    await _feed(real, stream.history, settings.batch_max_size)
    history_s = time.perf_counter() - history_started
    if not str(engine.url).startswith("sqlite"):
        # A database in service has planner statistics (autovacuum); these fresh ones not
        # yet, and without them PostgreSQL scans raw_message and observation for every
        # batch's duplicate check, in both variants alike.
        await _analyze(engine)
    return real, patients, history_s


async def _prepare(
    params: Params,
    bundle: dict[str, Any],
    stream: Stream,
    url: str,
    pipeline_class: type[TimedPipeline],
    label: str,
) -> _Variant:
    """Seed a migrated database and ingest the history; the pipeline to time on it."""
    from dho.db.engine import create_engine, session_factory

    settings = bench_settings(url, params.batch, params.history_cache)
    engine = create_engine(settings)
    sessions = session_factory(engine)
    real, patients, history_s = await load_history(settings, sessions, engine, bundle, stream)
    # A service process that has been running: its history cache holds what it judged
    # before (a cold cache costs one history read per patient).
    pipeline = pipeline_class(settings, sessions, real.reference, real.history)
    return _Variant(
        label=label,
        url=url,
        engine=engine,
        sessions=sessions,
        pipeline=pipeline,
        patients=patients,
        history_s=history_s,
        before=await _stored(sessions),
        cache_before=(real.history.hits, real.history.misses),
        profiler=cProfile.Profile() if params.profile else None,
    )


async def _time_segments(params: Params, stream: Stream, variants: list[_Variant]) -> None:
    """The measured stream in segments, each fed to every variant in turn (the order swapped
    every segment), so that what the machine and the database servers do meanwhile falls
    on both variants alike."""
    measured = stream.measured
    size = params.segment_batches * params.batch
    with _collector_as_in_service(params.gc_threshold):
        for n, first in enumerate(range(0, len(measured), size)):
            segment = measured[first : first + size]
            for variant in variants if n % 2 == 0 else variants[::-1]:
                await _feed(
                    variant.pipeline, segment, params.batch, variant.profiler, variant.timing
                )


async def _report(params: Params, variant: _Variant) -> dict[str, Any]:
    pipeline, n = variant.pipeline, variant.timing.measurements
    if variant.profiler is not None:
        variant.profiler.dump_stats(f"{params.profile}.{variant.label}.prof")
    after = await _stored(variant.sessions)
    result = variant.timing.report()
    result["judge_us_per_measurement"] = round(pipeline.judge_s / n * 1e6, 1)
    result["rules_us_per_measurement"] = round(pipeline.rules_s / n * 1e6, 1)
    hits, misses = variant.cache_before
    result["history_cache"] = {
        "hits": pipeline.history.hits - hits,
        "misses": pipeline.history.misses - misses,
        "patients": len(pipeline.history),
    }
    result["added"] = {k: after[k] - variant.before[k] for k in after}
    result["patients"] = variant.patients
    result["history_s"] = round(variant.history_s, 1)
    return result


def _machine(url: str) -> dict[str, Any]:
    return machine_info(url, broker=False)


_VARIANTS: tuple[tuple[str, type[TimedPipeline]], ...] = (
    ("rules", TimedPipeline),
    ("baseline", UnjudgedPipeline),
)


def run_variants(
    params: Params, bundle: dict[str, Any], stream: Stream, urls: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Prepare a database per variant, then time them segment by segment, interleaved."""
    from dho.db import migrate

    for url in urls.values():
        migrate.upgrade(bench_settings(url, params.batch, params.history_cache))

    async def go() -> dict[str, dict[str, Any]]:
        variants: list[_Variant] = []
        try:
            for label, pipeline_class in _VARIANTS:
                variants.append(
                    await _prepare(params, bundle, stream, urls[label], pipeline_class, label)
                )
            await _time_segments(params, stream, variants)
            return {v.label: await _report(params, v) for v in variants}
        finally:
            for variant in variants:
                await variant.engine.dispose()

    return asyncio.run(go())


def segment_overhead(
    rules: dict[str, Any], baseline: dict[str, Any], cpu_segments: bool = False
) -> dict[str, Any]:
    """Rules against baseline: over the whole stream, and segment by segment (the median
    and the quartiles of the segments' overheads); with `cpu_segments`, also the median
    segment of CPU time."""

    def per_segment(key: str) -> list[float]:
        pairs = zip(rules[key], baseline[key], strict=True)
        return [r / b - 1 for r, b in pairs]

    wall = rules["us_per_measurement"] / baseline["us_per_measurement"] - 1
    cpu = rules["cpu_us_per_measurement"] / baseline["cpu_us_per_measurement"] - 1
    segments = per_segment("segments_us_per_measurement")
    median = statistics.median(segments)
    quartiles = statistics.quantiles(segments, n=4) if len(segments) > 1 else [median] * 3
    result = {
        "wall": round(wall, 4),
        "cpu": round(cpu, 4),
        "segments": len(segments),
        "median_segment": round(median, 4),
        "segment_quartiles": [round(quartiles[0], 4), round(quartiles[2], 4)],
        "limit": LIMIT,
        "within_limit": wall <= LIMIT and median <= LIMIT,
    }
    if cpu_segments:
        cpu_median = statistics.median(per_segment("segments_cpu_us_per_measurement"))
        result["median_segment_cpu"] = round(cpu_median, 4)
    return result


def _overhead(rules: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    judge = rules["judge_us_per_measurement"] / baseline["us_per_measurement"]
    return segment_overhead(rules, baseline) | {"judge_stage": round(judge, 4)}


def clean_environment() -> None:
    """The settings made in this process must not pick up the caller's DHO_* variables."""
    for key in [k for k in os.environ if k.upper().startswith("DHO_")]:
        del os.environ[key]


def run(params: Params) -> dict[str, Any]:
    clean_environment()
    cadence = timedelta(hours=params.cadence_hours)
    bundle = demo_bundle(params.registry_copies)
    stream, homes = make_stream(bundle, params.measurements, cadence, gateway="bench-hub")
    prefix = f"dho_bench_rules_{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {"params": asdict(params)}
    results["stream"] = {
        "history": len(stream.history),
        "measurements": len(stream.measured),
        "patients": len(homes),
        "types": dict(sorted(stream.types.items())),
        "out_of_range": stream.out_of_range,
        "first": stream.first.isoformat(timespec="minutes"),
        "last": stream.last.isoformat(timespec="minutes"),
    }
    other = OtherLoad(None if params.database_url is None else prefix)
    with ExitStack() as stack:
        tmp = stack.enter_context(workdir("dho-bench-rules-"))
        urls = {
            label: stack.enter_context(
                fresh_database(params.database_url, tmp, f"{prefix}_{label}")
            )
            for label, _ in _VARIANTS
        }
        results["machine"] = _machine(urls["rules"])
        results |= run_variants(params, bundle, stream, urls)
    results["machine"]["other_load"] = other.measure()
    results["overhead"] = _overhead(results["rules"], results["baseline"])
    return results


def render(r: dict[str, Any]) -> str:
    p, m, s, o = r["params"], r["machine"], r["stream"], r["overhead"]
    types = ", ".join(f"{k} {v}" for k, v in s["types"].items())
    lines = [
        f"DHO rule evaluation — {m['database']}, {s['measurements']} measurements in batches "
        f"of {p['batch']}, {s['patients']} patients on the {PLAN} plan",
        f"machine: {m['nproc']} CPU ({m['cpu']}), {m['ram_gib']} GiB, Python {m['python']}; "
        f"code {m['code']}",
        *busy_warning(m),
        f"stream: {types}; {s['out_of_range']} out of range; each patient every "
        f"{p['cadence_hours']:g} h from {s['first']} to {s['last']}, after {s['history']} "
        "readings of history",
        "",
        f"{'':<32}{'msgs/s':>8}{'µs/msg':>8}{'CPU µs':>8}{'judge µs':>9}{'rules µs':>9}"
        f"{'p50':>8}{'p95':>8}{'max':>8}  ms/batch",
    ]
    for label, name in (
        ("rules", "rules: judged, alert episodes"),
        ("baseline", "baseline: judging off"),
    ):
        v = r[label]
        lat = v["batch_ms"]
        lines.append(
            f"{name:<32}{v['msgs_per_s']:>8,.0f}{v['us_per_measurement']:>8,.0f}"
            f"{v['cpu_us_per_measurement']:>8,.0f}{v['judge_us_per_measurement']:>9,.0f}"
            f"{v['rules_us_per_measurement']:>9,.0f}"
            f"{lat['p50']:>8.1f}{lat['p95']:>8.1f}{lat['max']:>8.1f}"
        )
    ra, ba = r["rules"]["added"], r["baseline"]["added"]
    verdict = "within" if o["within_limit"] else "ABOVE"
    record = o["wall"] - o["judge_stage"]
    cache = r["rules"]["history_cache"]
    low, high = o["segment_quartiles"]
    lines += [
        f"overhead of rule evaluation: {o['wall']:+.1%} wall time per measurement "
        f"({o['cpu']:+.1%} CPU of this process); median of {o['segments']} segments "
        f"{o['median_segment']:+.1%} (quartiles {low:+.1%}, {high:+.1%}) — {verdict} the "
        f"{o['limit']:.0%} limit",
        f"  judge stage (patient context + rules) {o['judge_stage']:+.1%}, record stage "
        f"(alert episodes, annotated resources) and the rest {record:+.1%}",
        f"  garbage collector: first threshold {p['gc_threshold']:,}, start-up frozen",
        f"  history cache ({p['history_cache']} patients): {cache['hits']} hits, "
        f"{cache['misses']} misses, {cache['patients']} patients held",
        f"  rules stored {ra['observation']} observations, {ra['alert']} new alerts, "
        f"{ra['alert_evidence']} evidence rows, {ra['rule_state']} new rule states, "
        f"{ra['quarantine']} quarantined",
        f"  baseline stored {ba['observation']} observations, {ba['alert']} new alerts, "
        f"{ba['quarantine']} quarantined",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Params, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rules",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--measurements", type=int, default=10_000)
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="messages per Pipeline.process call"
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to make the two databases on, e.g. "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/test (default: SQLite files)",
    )
    parser.add_argument(
        "--cadence-hours", type=float, default=2.0, help="how often each patient measures"
    )
    parser.add_argument(
        "--registry-copies", type=int, default=1, help="the demo registry's patients K times"
    )
    parser.add_argument(
        "--history-cache",
        type=int,
        default=2000,
        help="patients whose history the pipeline keeps (DHO_HISTORY_CACHE_PATIENTS; 0: none)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=Params.gc_threshold,
        help="the collector's first threshold (DHO_GC_THRESHOLD; CPython's default: 700)",
    )
    parser.add_argument(
        "--segment-batches",
        type=int,
        default=1,
        help="batches per segment; each segment is timed on both variants in turn",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 when the whole stream or the median segment is above {LIMIT:.0%}%",
    )
    parser.add_argument("--profile", help="write cProfile stats of the timed phases to PATH.*.prof")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    url = args.database_url
    if url is not None and not url.startswith(("postgresql://", "postgresql+asyncpg://")):
        parser.error("--database-url must be a PostgreSQL URL; SQLite is the default")
    if (
        min(args.measurements, args.batch, args.registry_copies, args.segment_batches) < 1
        or args.cadence_hours <= 0
    ):
        parser.error(
            "--measurements, --batch, --registry-copies, --segment-batches, --cadence-hours: "
            "above 0"
        )
    if args.history_cache < 0:
        parser.error("--history-cache: 0 or more")
    if args.gc_threshold < 1:
        parser.error("--gc-threshold: above 0")
    params = Params(
        measurements=args.measurements,
        batch=args.batch,
        database_url=url,
        cadence_hours=args.cadence_hours,
        registry_copies=args.registry_copies,
        check=args.check,
        profile=args.profile,
        history_cache=args.history_cache,
        segment_batches=args.segment_batches,
        gc_threshold=args.gc_threshold,
    )
    return params, bool(args.json)


class _Checked(Protocol):
    @property
    def check(self) -> bool: ...


P = TypeVar("P", bound=_Checked)


def checked_main(
    argv: list[str] | None,
    parse: Callable[[list[str] | None], tuple[P, bool]],
    run: Callable[[P], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
) -> None:
    """Parse, run, print; with `--check`, exit 1 when the overhead is above the limit."""
    params, results = run_and_print(argv, parse, run, render)
    if params.check and not results["overhead"]["within_limit"]:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    checked_main(argv, parse_args, run, render)


if __name__ == "__main__":
    main()
