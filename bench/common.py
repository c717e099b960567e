"""Shared benchmark plumbing: a throw-away database, a private Mosquitto, the service as a
subprocess, MQTT publishers, a raw subscriber baseline and small statistics helpers.

Reuses the test helpers for what they already define (the Mosquitto config derivation, the
demo registry seed) so the benchmark runs against exactly what the tests run against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from dho.ingest.measurement import EUI64_SYSTEM as EUI64

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dho.settings import Settings
    from tests.support import Seeded

# The database, service and broker helpers import their heavy modules (SQLAlchemy, the app,
# the test helpers) when called: the publisher and subscriber child processes import this
# module too and need only paho, so they start in a tenth of the time.

PG_ADMIN_URL = os.environ.get("DHO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
RECEIVE_MAXIMUM = 1000  # the service's default DHO_MQTT_RECEIVE_MAXIMUM; the baseline uses it too
PUBLISH_WINDOW = 10_000  # unacknowledged publishes at a time (paho's message ids are 16-bit)


class BenchError(RuntimeError):
    """The benchmark could not run (a part did not start, messages went missing)."""


# ---------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations given in seconds, in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "p50": round(percentile(ms, 50), 2),
        "p95": round(percentile(ms, 95), 2),
        "p99": round(percentile(ms, 99), 2),
        "max": round(max(ms), 2) if ms else float("nan"),
    }


# ---------------------------------------------------------------- payloads

PATIENTS = 5  # the demo registry: patient k has BP monitor ...-0k-00-01 and oximeter ...-0k-00-02


@dataclass
class Payloads:
    """dho-json envelopes, one measurement each, every one a distinct measurement identity."""

    run: str
    alert_every: int
    start: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=2))
    next_index: int = 0

    def envelope(self, prefix: str) -> dict[str, Any]:
        """The next message; `sent_at` is set again by a publisher that measures latency."""
        i = self.next_index
        self.next_index += 1
        patient = i // 2 % PATIENTS + 1
        when = self.start + timedelta(seconds=i)
        return {
            "message_id": f"{prefix}-{self.run}-{i}",
            "sent_at": time.time(),
            "measurements": [self._measurement(i, patient, when)],
        }

    def make(self, prefix: str) -> bytes:
        return json.dumps(self.envelope(prefix), separators=(",", ":")).encode()

    def _measurement(self, i: int, patient: int, when: datetime) -> dict[str, Any]:
        abnormal = self.alert_every > 0 and i % self.alert_every == 0
        base = {"time": when.isoformat(timespec="milliseconds")}
        if i % 2 == 0:
            systolic = 172 if abnormal else 118 + i % 25
            return {
                "device": {"system": EUI64, "value": f"00-1C-05-FF-FE-0{patient}-00-01"},
                "type": "blood-pressure",
                **base,
                "components": {
                    "systolic": {"value": systolic, "unit": "mm[Hg]"},
                    "diastolic": {"value": 70 + i % 15, "unit": "mm[Hg]"},
                },
            }
        return {
            "device": {"system": EUI64, "value": f"00-1C-05-FF-FE-0{patient}-00-02"},
            "type": "heart-rate",
            **base,
            "value": 135 if abnormal else 58 + i % 40,
            "unit": "/min",
        }

    def batch(self, prefix: str, n: int) -> list[bytes]:
        return [self.make(prefix) for _ in range(n)]


# ---------------------------------------------------------------- database


def _sqlite_url(workdir: Path) -> str:
    return f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"


async def _pg_admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def temp_database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh empty database (`postgres`: dho_bench_<random>, dropped after; `sqlite`: a file)."""
    if kind == "sqlite":
        yield _sqlite_url(workdir)
        return
    name = f"dho_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def database_name(url: str) -> str | None:
    """The PostgreSQL database's name; None for SQLite."""
    return None if url.startswith("sqlite") else url.rsplit("/", 1)[1]


def db_settings(url: str) -> Settings:
    from dho.settings import Settings

    return Settings(_env_file=None, database_url=url)


def migrate_and_seed(url: str) -> Seeded:
    """Migrate to head, then load the demo registry and a gateway serving all of it."""
    from dho.db import migrate
    from dho.db.engine import create_engine, session_factory
    from tests.support import seed

    migrate.upgrade(db_settings(url))

    async def run() -> Seeded:
        engine = create_engine(db_settings(url))
        try:
            return await seed(session_factory(engine), gateway="bench-hub")
        finally:
            await engine.dispose()

    return asyncio.run(run())


class Probe:
    """The benchmark's own reader of the service's database."""

    def __init__(self, url: str) -> None:
        from dho.db.engine import create_engine

        self.engine: AsyncEngine = create_engine(db_settings(url))

    async def scalar(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    async def count(self, table: str) -> int:
        return int(await self.scalar(f"SELECT count(*) FROM {table}") or 0)

    async def last_raw_id(self) -> int:
        """The newest raw message's id: an index lookup, cheap enough to poll every 20 ms."""
        return int(await self.scalar("SELECT coalesce(max(id), 0) FROM raw_message"))

    async def wait_for_observations(
        self, raw_id: int, at_least: int, timeout_s: float, interval_s: float = 0.02
    ) -> float:
        """Poll until `at_least` Observations are stored; the wall-clock time the poll saw it.

        Every message stores one raw row, so the last expected message's raw id is at least
        `raw_id`. The poll watches the newest raw id and counts Observations only once that
        is reached: counting a table of tens of thousands of rows every 20 ms would itself
        load the database the service is writing to.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            started = time.time()
            if await self.last_raw_id() >= raw_id and await self.count("observation") >= at_least:
                return started
            if time.monotonic() > deadline:
                found = await self.count("observation")
                raise BenchError(f"{found} of {at_least} observations after {timeout_s:.0f} s")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        await self.engine.dispose()


# ---------------------------------------------------------------- broker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise BenchError("mosquitto is not installed (looked on PATH and in /usr/sbin)")
    return found


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{what} did not listen on {port}") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def private_broker(workdir: Path) -> Iterator[int]:
    """Mosquitto from config/mosquitto/mosquitto.conf on a free local port; yields the port."""
    from tests.mosquitto import BASE_CONF, derive_test_config

    port = free_port()
    data = workdir / "mosquitto-data"
    data.mkdir()
    conf = workdir / "mosquitto.conf"
    base = BASE_CONF.read_text(encoding="utf-8")
    conf.write_text(derive_test_config(base, port=port, data_dir=data), encoding="utf-8")
    log = workdir / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(port, proc, log, "mosquitto")
        yield port
    finally:
        _stop(proc)


def mosquitto_version() -> str:
    out = subprocess.run(
        [mosquitto_binary(), "-h"], capture_output=True, text=True, check=False
    ).stdout
    return out.splitlines()[0].removeprefix("mosquitto version ").strip() if out else "?"


# ---------------------------------------------------------------- the service


@dataclass(frozen=True)
class ServiceConfig:
    database_url: str
    broker_port: int
    batch_max_size: int
    flush_ms: int
    mqtt_enabled: bool = True
    # What `python` runs: the service by default; settings that override the benchmark's.
    command: tuple[str, ...] = ("-m", "dho", "serve")
    env: dict[str, str] = field(default_factory=dict)


class ServiceProcess:
    """`python -m dho serve` in a clean environment (no inherited DHO_* variables, no .env)."""

    def __init__(self, config: ServiceConfig, workdir: Path) -> None:
        self.http_port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "service.log"
        self.env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DHO_")}
        self.env.update(
            {
                "DHO_DATABASE_URL": config.database_url,
                "DHO_DATABASE_AUTO_MIGRATE": "false",
                "DHO_MQTT_ENABLED": str(config.mqtt_enabled).lower(),
                "DHO_MQTT_URL": f"mqtt://127.0.0.1:{config.broker_port}",
                "DHO_MQTT_EMBEDDED": "false",
                "DHO_MQTT_CLIENT_ID": f"dho-bench-{uuid.uuid4().hex[:6]}",
                "DHO_HTTP_PORT": str(self.http_port),
                "DHO_BATCH_MAX_SIZE": str(config.batch_max_size),
                "DHO_BATCH_FLUSH_MS": str(config.flush_ms),
                "DHO_LOG_LEVEL": "WARNING",
                # The readings are dated up to two days back; judged as fresh, so out-of-range
                # ones raise alerts and the alert path is part of what is measured.
                "DHO_LATE_AFTER_S": str(3 * 86_400),
                "DHO_GATEWAY_RATE_PER_S": "0",
            }
        )
        self.env.update(config.env)
        self.command = config.command
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.command],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the service exited:\n{self.log_tail()}")
            if self.ready() is not None:
                return
            time.sleep(0.1)
        raise BenchError(f"the service was not ready in {timeout_s:.0f} s:\n{self.log_tail()}")

    def ready(self) -> dict[str, Any] | None:
        """The /readyz body when the service is ready, else None."""
        import httpx

        try:
            response = httpx.get(f"{self.url}/readyz", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def ingest_stats(self) -> dict[str, int]:
        body = self.ready()
        return dict(body["ingest"]) if body else {}

    def proc_status_kib(self, field: str) -> int:
        """A `kB` field of /proc/<pid>/status, e.g. VmHWM (peak RSS) or VmRSS."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise BenchError(f"{field} not in /proc/{self.pid}/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time the service process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- MQTT clients


def mqtt_client(name: str, *, manual_ack: bool = False) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:6]}",
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(RECEIVE_MAXIMUM)
    return client


def connect(client: paho.Client, port: int) -> None:
    """Connect (MQTT 5, clean start) and start the network thread; wait for the CONNACK."""
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    client.connect("127.0.0.1", port, clean_start=True, properties=props)
    client.loop_start()
    if not connected.wait(10):
        raise BenchError(f"no CONNACK from the broker on port {port}")


def publish_all(port: int, topic: str, payloads: list[bytes]) -> float:
    """Publish at QoS 1 as fast as the broker takes them; the wall-clock time of the first one.

    Returns once the broker acknowledged every message.
    """
    client = mqtt_client("bench-pub")
    connect(client, port)
    try:
        infos: list[paho.MQTTMessageInfo] = []
        first = time.time()
        for index, payload in enumerate(payloads):
            if index >= PUBLISH_WINDOW:
                infos[index - PUBLISH_WINDOW].wait_for_publish(timeout=120)
            infos.append(client.publish(topic, payload, qos=1))
        _await_pubacks(infos)
        return first
    finally:
        client.disconnect()
        client.loop_stop()


def _paced_publisher(port: int, topic: str, envelopes: list[dict[str, Any]], rate: float) -> None:
    """Child process: publish each envelope at `rate` per second, stamped with `sent_at`."""
    client = mqtt_client("bench-pace")
    connect(client, port)
    try:
        infos = []
        start = time.monotonic()
        for index, envelope in enumerate(envelopes):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            envelope["sent_at"] = time.time()
            payload = json.dumps(envelope, separators=(",", ":")).encode()
            infos.append(client.publish(topic, payload, qos=1))
        _await_pubacks(infos)
    finally:
        client.disconnect()
        client.loop_stop()


def start_paced_publisher(
    port: int, topic: str, envelopes: list[dict[str, Any]], rate: float
) -> multiprocessing.process.BaseProcess:
    """Publish at a steady rate from a process of its own, so the benchmark's own work
    (polling the database) cannot delay a publish and inflate the measured latency."""
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_paced_publisher, args=(port, topic, envelopes, rate))
    child.start()
    return child


def _await_pubacks(infos: list[paho.MQTTMessageInfo]) -> None:
    for info in infos:
        info.wait_for_publish(timeout=120)
        if not info.is_published():
            raise BenchError(f"the broker did not acknowledge message {info.mid}")


def _raw_subscriber(
    port: int, topic: str, n: int, with_latency: bool, ready: Any, results: Any
) -> None:
    """Child process: receive `n` QoS 1 messages and PUBACK each at once; no database.

    Reports when the last one arrived and, `with_latency`, each message's receive time minus
    the `sent_at` its publisher wrote into it.
    """
    done = threading.Event()
    state: dict[str, Any] = {"count": 0, "last": 0.0, "latencies": []}
    client = mqtt_client("bench-raw-sub", manual_ack=True)

    def on_message(cli: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        cli.ack(msg.mid, msg.qos)
        if with_latency:
            state["latencies"].append(time.time() - json.loads(msg.payload)["sent_at"])
        state["count"] += 1
        if state["count"] == n:
            state["last"] = time.time()
            done.set()

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    connect(client, port)
    client.subscribe(topic, qos=1)
    subscribed.wait(10)
    ready.set()
    done.wait(600)
    results.put(dict(state))
    client.disconnect()
    client.loop_stop()


@contextmanager
def raw_subscriber(port: int, topic: str, n: int, *, with_latency: bool) -> Iterator[Any]:
    """Run `_raw_subscriber` in a process of its own; yields the queue its outcome arrives on."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    results = ctx.Queue()
    child = ctx.Process(target=_raw_subscriber, args=(port, topic, n, with_latency, ready, results))
    child.start()
    try:
        if not ready.wait(30):
            raise BenchError("the baseline subscriber did not subscribe")
        yield results
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()


def raw_broker_throughput(port: int, topic: str, payloads: list[bytes]) -> dict[str, float]:
    """Baseline: N messages from a paho publisher to a paho subscriber that acks on receipt."""
    with raw_subscriber(port, topic, len(payloads), with_latency=False) as results:
        first = publish_all(port, topic, payloads)
        acked = time.time()
        outcome = results.get(timeout=600)
    if outcome["count"] != len(payloads):
        raise BenchError(f"baseline: {outcome['count']} of {len(payloads)} received")
    elapsed = outcome["last"] - first
    return {
        "messages": len(payloads),
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(len(payloads) / elapsed, 1),
        "publish_acked_s": round(acked - first, 3),
    }


def raw_broker_latency(
    port: int, topic: str, envelopes: list[dict[str, Any]], rate: float
) -> dict[str, float]:
    """Baseline: publish-to-receive at a steady rate from the paced publisher, no service."""
    with raw_subscriber(port, topic, len(envelopes), with_latency=True) as results:
        publisher = start_paced_publisher(port, topic, envelopes, rate)
        publisher.join(timeout=60 + len(envelopes) / rate)
        outcome = results.get(timeout=60)
    if outcome["count"] != len(envelopes):
        raise BenchError(f"latency baseline: {outcome['count']} of {len(envelopes)} received")
    return summary_ms(outcome["latencies"])


# ---------------------------------------------------------------- the machine


def machine_info(database_url: str, *, broker: bool = True) -> dict[str, Any]:
    """The machine, the database and the code; the MQTT broker's version when `broker`."""
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "busy_before": cpu_busy(),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "database": _database_version(database_url),
        "code": _code_revision(),
    } | ({"mosquitto": mosquitto_version()} if broker else {})


def _code_revision() -> str:
    """The commit the service ran from, with `+dirty` when the work tree has changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit}+dirty" if git("status", "--porcelain", "--", "dho") else commit


def _cpu_times() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def cpu_busy(seconds: float = 1.0) -> float:
    """The fraction of all CPUs busy over `seconds`: load from elsewhere skews every figure."""
    busy_a, total_a = _cpu_times()
    time.sleep(seconds)
    busy_b, total_b = _cpu_times()
    return round((busy_b - busy_a) / max(1, total_b - total_a), 3)


def _processes() -> dict[int, tuple[int, float, str]]:
    """Every process: pid -> (parent pid, CPU seconds used so far, command line)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        found[int(entry.name)] = (int(stat[1]), (int(stat[11]) + int(stat[12])) / tick, cmd)
    return found


def _steal_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[7], sum(values)


class OtherLoad:
    """CPU that processes outside the benchmark used during it: other work on the machine.

    Ours: this process and its descendants (service, broker, helpers), and PostgreSQL
    backends of the benchmark's database. PostgreSQL's shared background processes count
    for nobody. Processes that started and ended between the two samples are missed, so
    the figure is a lower bound. `steal` is the hypervisor's share (virtual machines).
    """

    def __init__(self, database: str | None) -> None:
        self._database = database
        self._start = _processes()
        self._steal = _steal_ticks()
        self._began = time.monotonic()

    def _ours_or_shared(self, procs: dict[int, tuple[int, float, str]], pid: int) -> bool:
        ancestor, me = pid, os.getpid()
        while ancestor > 1:
            if ancestor == me:
                return True
            ancestor = procs.get(ancestor, (0, 0.0, ""))[0]
        cmd = procs[pid][2]
        if not cmd.startswith("postgres: "):
            return False
        is_backend = "(" in cmd or "autovacuum worker" in cmd
        return not is_backend or (self._database is not None and self._database in cmd)

    def measure(self) -> dict[str, Any]:
        end, (steal_b, total_b) = _processes(), _steal_ticks()
        elapsed = time.monotonic() - self._began
        used: dict[str, float] = {}
        for pid, (_ppid, cpu, cmd) in end.items():
            if self._ours_or_shared(end, pid):
                continue
            before = self._start.get(pid)
            delta = cpu - (before[1] if before and before[2] == cmd else 0.0)
            if delta > 0:
                name = cmd[:60] or "[kernel threads]"
                used[name] = used.get(name, 0.0) + delta
        total = sum(used.values())
        top = sorted(used.items(), key=lambda item: -item[1])[:3]
        steal_a, total_a = self._steal
        return {
            "cpu_share": round(total / (elapsed * (os.cpu_count() or 1)), 3),
            "steal_share": round((steal_b - steal_a) / max(1, total_b - total_a), 3),
            "top": {cmd: round(cpu, 1) for cmd, cpu in top},
        }


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the service is stopped and the database dropped."""
    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(143))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _database_version(url: str) -> str:
    if url.startswith("sqlite"):
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"

    async def version() -> str:
        probe = Probe(url)
        try:
            return str(await probe.scalar("SHOW server_version")).split()[0]
        finally:
            await probe.close()

    return f"PostgreSQL {asyncio.run(version())}"


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield Path(path)


def busy_warning(machine: dict[str, Any]) -> list[str]:
    """Warnings when other work on the machine skewed the run."""
    warnings = []
    busy, other = machine["busy_before"], machine.get("other_load", {})
    if busy >= 0.1:
        warnings.append(f"WARNING: the machine was {busy:.0%} busy before the run")
    if other.get("cpu_share", 0) >= 0.05 or other.get("steal_share", 0) >= 0.05:
        warnings.append(
            f"WARNING: other processes used {other['cpu_share']:.0%} of the CPUs during the run "
            f"(steal {other['steal_share']:.0%}): {', '.join(other['top'])}"
        )
    return warnings


def dump_json(results: dict[str, Any]) -> str:
    return json.dumps(results, indent=2, sort_keys=False)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ingest benchmarks: the service's, and how many readings are alerts."""
    add_serve_arguments(parser)
    parser.add_argument(
        "--alert-every", type=int, default=20, help="every n-th reading is out of range (0: none)"
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every benchmark that starts `dho serve`: database, batching, output."""
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--batch-max-size", type=int, default=200)
    parser.add_argument("--flush-ms", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


P = TypeVar("P")


def run_and_print(
    argv: list[str] | None,
    parse_args: Callable[[list[str] | None], tuple[P, bool]],
    run: Callable[[P], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
) -> tuple[P, dict[str, Any]]:
    """A benchmark's `main`: parse, run, print a table or (with --json) the raw results;
    the parameters and results for a caller that checks them."""
    exit_on_sigterm()
    params, as_json = parse_args(argv)
    results = run(params)
    print(dump_json(results) if as_json else render(results))
    return params, results
