"""Fuzzed input to every adapter never crashes the pipeline or answers 5xx.

Random bytes, deep and wide JSON of wrong types and huge numbers, and golden examples with
one part replaced at random go to each adapter: decode, normalise and to_fhir may refuse
them only with a DataError (a quarantine reason); over HTTP the answer is always < 500.
The CI profile (tests/conftest.py) bounds and fixes the examples; HYPOTHESIS_PROFILE=deep
runs many more.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dho import jsonutil
from dho.app import create_app
from dho.db import migrate
from dho.db.engine import create_engine, session_factory
from dho.ingest.adapter_check import example_files
from dho.ingest.decode import decode
from dho.ingest.errors import REASONS, DataError
from dho.ingest.measurement import RawMessage
from dho.ingest.normalise import normalise
from dho.ingest.pipeline import ReferenceData
from dho.ingest.to_fhir import to_fhir
from dho.settings import Settings
from tests.conftest import base_settings, free_port
from tests.support import seed

ROOT = Path(__file__).resolve().parent.parent.parent
REFERENCE = ReferenceData.load(Settings(_env_file=None))  # type: ignore[call-arg]
ADAPTERS = sorted(REFERENCE.adapters.adapters)
KEYS = [
    "device",
    "type",
    "time",
    "value",
    "unit",
    "components",
    "systolic",
    "diastolic",
    "measurements",
    "message_id",
    "header",
    "body",
    "schema_id",
    "name",
    "effective_time_frame",
    "date_time",
    "external_datasheets",
    "datasheet_type",
    "datasheet_reference",
    "measuregrps",
    "measures",
    "date",
    "category",
    "attrib",
    "hash_deviceid",
    "timezone",
    "resourceType",
    "entry",
    "resource",
    "fullUrl",
    "request",
    "code",
    "coding",
    "system",
    "valueQuantity",
    "component",
    "effectiveDateTime",
    "subject",
    "identifier",
    "status",
    "reference",
]
NASTY = [
    "2026-11-24T08:15:00+01:00",
    "2026-11-24T08:15:00",
    "2026-03-29T02:30:00",
    "9999-12-31T23:59:59Z",
    "mm[Hg]",
    "%",
    "/min",
    "kg",
    "Cel",
    "[degF]",
    "mg/dL",
    "00-1C-05-FF-FE-01-00-01",
    "urn:dev:mac:001c05fffe010001",
    "blood-pressure",
    "heart-rate",
    "Observation",
    "Bundle",
    "transaction",
    "batch",
    "urn:iso:std:iso:11073:10101",
    "150021",
    "http://unitsofmeasure.org",
    "",
    " ",
    "\x00",
    "é" * 3,
    "Europe/Oslo",
    "Mars/Olympus",
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(NASTY),
    st.sampled_from([Decimal("1e999999999"), Decimal("-1e-999999999"), Decimal("9" * 60)]),
)
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=8)
    ),
    max_leaves=40,
)
RAW_TOKENS = [b"1e999999", b"-1e-999999", b"9" * 5000, b"1" * 400 + b".5", b"NaN", b"[" * 70]


def _examples(adapter: str) -> list[bytes]:
    return [p.read_bytes() for p in example_files(ROOT / "adapters", adapter)]


@st.composite
def mutated(draw: st.DrawFn, adapter: str) -> bytes:
    """A golden example with one part replaced: a JSON leaf, or an HL7 field."""
    source = draw(st.sampled_from(_examples(adapter)))
    try:
        document = jsonutil.loads(source)
    except ValueError:
        return _mutated_text(draw, source)
    paths = list(_paths(document))
    path = draw(st.sampled_from(paths))
    replacement = draw(JSON)
    return jsonutil.dumps(_replace(document, path, replacement)).encode()


def _mutated_text(draw: st.DrawFn, source: bytes) -> bytes:
    segments = source.split(b"\r")
    index = draw(st.integers(0, len(segments) - 1))
    fields = segments[index].split(b"|")
    field = draw(st.integers(0, len(fields) - 1))
    fields[field] = draw(
        st.sampled_from([b"", b"^^^", b"~&\\", *RAW_TOKENS, b"20261324250000+9999"])
        | st.binary(max_size=20)
    )
    segments[index] = b"|".join(fields)
    return b"\r".join(segments)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*prefix, index))


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {k: (_replace(v, rest, value) if k == head else v) for k, v in node.items()}
    return [(_replace(v, rest, value) if i == head else v) for i, v in enumerate(node)]


def payloads(adapter: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda doc: jsonutil.dumps(doc).encode()),
        mutated(adapter),
        st.sampled_from(RAW_TOKENS).map(lambda token: b'{"value": ' + token + b"}"),
    )


def _through_the_stages(adapter: str, payload: bytes) -> None:
    raw = RawMessage(payload, "http", f"/ingest/{adapter}", "gw", adapter, datetime.now(UTC))
    try:
        decoded = decode(raw, REFERENCE.adapters, REFERENCE.context)
    except DataError as error:
        assert error.reason in REASONS
        return
    for item in decoded.items:
        if item.error is not None:
            assert item.error.reason in REASONS
        if item.measurement is None:
            continue
        try:
            m = normalise(item.measurement, REFERENCE.types, REFERENCE.limits)
            to_fhir(m, patient_id="p", device_id="d", catalogue=REFERENCE.types)
        except DataError as error:
            assert error.reason in REASONS


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_fuzzed_payloads_are_refused_only_with_a_reason(adapter: str) -> None:
    @given(payloads(adapter))
    @example(b"[" * 100_000 + b"]" * 100_000)
    @example(b'{"measurements": [' + b'{"device": "x"},' * 5000 + b"{}]}")
    @example(b"\xef\xbb\xbf" + b"MSH|^~\\&|\r" * 3)
    def run(payload: bytes) -> None:
        _through_the_stages(adapter, payload)

    run()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The whole service in a thread of its own, on SQLite, with the demo registry."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config = base_settings(tmp, http_port=free_port(), gateway_rate_per_s=0)
    migrate.upgrade(config)

    async def seeded() -> str:
        engine = create_engine(config)
        try:
            return (await seed(session_factory(engine))).key
        finally:
            await engine.dispose()

    key = asyncio.run(seeded())
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host="127.0.0.1", port=config.http_port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.http_port}"
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started
    yield base, key
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_fuzzed_http_ingest_never_answers_5xx(adapter: str, service: tuple[str, str]) -> None:
    base, key = service
    auth = {"Authorization": f"Bearer {key}"}

    with httpx.Client(base_url=base, timeout=30) as client:

        @settings(max_examples=25)
        @given(payloads(adapter))
        @example(b"[" * 100_000 + b"]" * 100_000)
        def run(payload: bytes) -> None:
            answer = client.post(f"/ingest/{adapter}", content=payload, headers=auth)
            assert answer.status_code < 500, answer.text

        run()
        assert client.get("/readyz").status_code == 200
