"""The adapter catalogue as a whole: every adapter, code, unit and golden example.

Each example payload under `adapters/examples/<adapter>/` must become exactly what its
`.expected.yaml` says, and every measurement it yields must make a valid R4 Observation.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fhirclient.models.questionnaireresponse import (  # type: ignore[import-untyped]
    QuestionnaireResponse as R4QuestionnaireResponse,
)

from dho import jsonutil, units
from dho.ingest.adapter_catalogue import find, load_adapters
from dho.ingest.adapter_check import check_catalogue, check_example, example_files
from dho.ingest.decode import decode
from dho.ingest.errors import REASONS, DataError
from dho.ingest.measurement import RawMessage
from dho.ingest.normalise import normalise
from dho.ingest.pipeline import ReferenceData
from dho.ingest.to_fhir import to_fhir
from dho.settings import Settings
from tests.fhir_checks import assert_valid_observation

ROOT = Path(__file__).resolve().parent.parent.parent
ADAPTERS = ROOT / "adapters"
REFERENCE = ReferenceData.load(Settings(_env_file=None))  # type: ignore[call-arg]
CATALOGUE = REFERENCE.adapters
EXAMPLES = [
    (name, example)
    for name in sorted(CATALOGUE.adapters)
    for example in example_files(ADAPTERS, name)
]


def _raw(payload: bytes, adapter: str = "dho-json") -> RawMessage:
    return RawMessage(payload, "http", "/ingest/x", "gw", adapter, datetime.now(UTC))


def _items(payload: bytes, adapter: str = "dho-json") -> list[object]:
    decoded = decode(_raw(payload, adapter), CATALOGUE, REFERENCE.context)
    return [item.measurement or item.error or item.claim for item in decoded.items]


def test_every_adapter_file_is_valid_unique_and_has_examples() -> None:
    assert CATALOGUE.broken == {}
    files = sorted(p.stem for p in ADAPTERS.glob("*.yaml"))
    assert sorted(CATALOGUE.adapters) == files
    assert len({name.lower() for name in files}) == len(files)
    report = check_catalogue(ADAPTERS, REFERENCE)
    assert report.problems == []
    assert report.adapters == len(files) and report.examples == len(EXAMPLES)
    for name in CATALOGUE.adapters:
        assert example_files(ADAPTERS, name), f"{name} has no example payloads"


def test_every_unit_an_adapter_names_is_valid_ucum() -> None:
    for adapter in CATALOGUE.adapters.values():
        for code in [*adapter.units.values(), *(t.unit for t in adapter.codes.values() if t.unit)]:
            assert units.is_valid(code), f"{adapter.name}: {code}"


def test_every_mapped_type_has_a_mapping_under_fhir() -> None:
    for adapter in CATALOGUE.adapters.values():
        for key in [*adapter.types.values(), *(t.type for t in adapter.codes.values())]:
            assert key in REFERENCE.types.types, f"{adapter.name}: {key}"


@pytest.mark.parametrize(("adapter", "example"), EXAMPLES, ids=lambda v: getattr(v, "name", v))
def test_every_example_becomes_what_it_says_and_valid_observations(
    adapter: str, example: Path
) -> None:
    assert check_example(CATALOGUE.adapters[adapter], example, REFERENCE) == []
    decoded = decode(_raw(example.read_bytes(), adapter), CATALOGUE, REFERENCE.context)
    measured = 0
    for item in decoded.items:
        if item.reply is not None:
            assert_valid_questionnaire_response(item.reply.resource)
            measured += 1
            continue
        if item.measurement is None:
            assert item.error is None or item.error.reason in REASONS
            continue
        try:
            m = normalise(item.measurement, REFERENCE.types, REFERENCE.limits)
        except DataError as error:
            assert error.reason in REASONS
            continue
        resource = to_fhir(m, patient_id="p-1", device_id="d-1", catalogue=REFERENCE.types)
        assert_valid_observation(resource, REFERENCE.types)
        measured += 1
    assert measured, "an example should yield at least one stored measurement or reply"


def test_a_changed_expectation_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "dho-json"
    folder.mkdir()
    source = ADAPTERS / "examples" / "dho-json" / "blood-pressure.json"
    shutil.copy(source, folder / source.name)
    expected = yaml.safe_load(source.with_name("blood-pressure.expected.yaml").read_text())
    expected["items"][0]["components"]["systolic"] = "141 mm[Hg]"
    (folder / "blood-pressure.expected.yaml").write_text(yaml.safe_dump(expected))
    [problem] = check_example(CATALOGUE.adapters["dho-json"], folder / source.name, REFERENCE)
    assert "142 mm[Hg]" in problem and "141 mm[Hg]" in problem
    (folder / "blood-pressure.expected.yaml").unlink()
    assert check_example(CATALOGUE.adapters["dho-json"], folder / source.name, REFERENCE) == [
        "no blood-pressure.expected.yaml beside it"
    ]


def test_single_list_and_envelope_forms() -> None:
    one = b'{"device": "D1", "type": "heart-rate", "time": "2026-11-24T08:00:00+01:00", "value": 61, "unit": "/min"}'
    decoded = decode(_raw(one), CATALOGUE, REFERENCE.context)
    [single] = decoded.items
    assert decoded.message_id is None and single.measurement is not None
    assert single.measurement.value is not None and single.measurement.value.value == Decimal(61)
    listed = _items(b"[" + one + b"," + one.replace(b"08:00", b"08:01") + b"]")
    assert [m.effective.minute for m in listed] == [0, 1]  # type: ignore[attr-defined]
    enveloped = decode(
        _raw(b'{"message_id": "m-9", "measurements": [' + one + b"]}"), CATALOGUE, REFERENCE.context
    )
    assert enveloped.message_id == "m-9" and len(enveloped.items) == 1
    m = enveloped.items[0].measurement
    assert m is not None and m.device_system == "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"


def test_decimal_precision_survives_decoding() -> None:
    body = b'{"device": "D1", "type": "body-temperature", "time": "2026-11-24T08:00:00Z", "value": 36.50, "unit": "Cel"}'
    [m] = _items(body)
    assert str(m.value.value) == "36.50"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"\xff\xfe garbage", "decode", "not valid JSON"),
        (b"[]", "decode", "no measurements"),
        (b"[" * 100 + b"]" * 100, "decode", "nested deeper"),
        (
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": NaN, "unit": "/min"}',
            "decode",
            "not valid JSON",
        ),
        (b'{"message_id": {"x": 1}, "measurements": []}', "decode", "message_id"),
    ],
)
def test_an_unreadable_message_is_refused_whole(payload: bytes, code: str, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment) as caught:
        decode(_raw(payload), CATALOGUE, REFERENCE.context)
    assert caught.value.code == code and caught.value.reason == "unparseable"


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        (
            b'{"type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": 1, "unit": "/min"}',
            "device",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "yesterday", "value": 1, "unit": "/min"}',
            "ISO 8601",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": "61", "unit": "/min"}',
            "must be a number",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": true, "unit": "/min"}',
            "must be a number",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z"}',
            "neither a value",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00+01:00:30", "value": 1, "unit": "/min"}',
            "whole minutes",
        ),
        (b'"just a string"', "expected an object"),
    ],
)
def test_an_unreadable_item_is_refused_alone(item: bytes, fragment: str) -> None:
    good = b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": 61, "unit": "/min"}'
    first, second = _items(b"[" + item + b"," + good + b"]")
    assert isinstance(first, DataError) and fragment in str(first)
    assert first.reason == "unparseable"
    assert not isinstance(second, DataError)


def test_too_many_measurements_is_oversized() -> None:
    one = b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": 61, "unit": "/min"}'
    payload = b"[" + b",".join([one] * (REFERENCE.context.max_items + 1)) + b"]"
    with pytest.raises(DataError) as caught:
        decode(_raw(payload), CATALOGUE, REFERENCE.context)
    assert caught.value.reason == "oversized" and caught.value.code == "too-many-measurements"


@pytest.mark.parametrize(
    ("local", "expected", "flag"),
    [
        ("2026-11-24T08:00:00", "2026-11-24T08:00:00+01:00", "local-time-assumed"),
        ("2026-07-01T08:00:00", "2026-07-01T08:00:00+02:00", "local-time-assumed"),
        ("2026-10-25T02:30:00", "2026-10-25T02:30:00+02:00", "ambiguous-local-time"),
        ("2026-03-29T02:30:00", "2026-03-29T03:30:00+02:00", "nonexistent-local-time"),
    ],
)
def test_a_time_without_offset_is_oslo_time_and_flagged(
    local: str, expected: str, flag: str
) -> None:
    body = (
        f'{{"device": "D", "type": "heart-rate", "time": "{local}", "value": 61, "unit": "/min"}}'
    )
    [m] = _items(body.encode())
    assert m.effective.isoformat() == expected  # type: ignore[attr-defined]
    assert m.time_flag == flag  # type: ignore[attr-defined]


def test_a_broken_adapter_disables_only_itself(tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    shutil.copytree(ADAPTERS, folder)
    (folder / "broken-vendor.yaml").write_text(
        "name: broken-vendor\nformat: xml\n", encoding="utf-8"
    )
    (folder / "no-decoder.yaml").write_text(
        "name: no-decoder\ndescription: x\nformat: hl7v2\ndecoder: nothing_here\n", encoding="utf-8"
    )
    catalogue = load_adapters(folder)
    assert "dho-json" in catalogue.adapters
    assert set(catalogue.broken) == {"broken-vendor", "no-decoder"}
    assert "no decoder" in catalogue.broken["no-decoder"]
    with pytest.raises(DataError, match="disabled") as caught:
        decode(_raw(b"{}", "broken-vendor"), catalogue, REFERENCE.context)
    assert caught.value.reason == "unknown-adapter"
    with pytest.raises(DataError, match="no adapter named") as caught:
        decode(_raw(b"{}", "missing"), catalogue, REFERENCE.context)
    assert caught.value.reason == "unknown-adapter"


def test_paths() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}, {"c": 3}], "d": {"e": "x"}}
    assert find(doc, "a[*].b") == [1, 2]
    assert find(doc, "d.e") == ["x"]
    assert find(doc, "d.missing") == []
    assert find(doc, "$") == [doc]
    assert find([1, 2], "[*]") == [1, 2]
    assert find({"b": 1}, "/d.e", root=doc) == ["x"]


def assert_valid_questionnaire_response(resource: dict[str, Any]) -> None:
    """Valid R4 by fhirclient's 4.0.1 models, strictly."""
    R4QuestionnaireResponse(json.loads(jsonutil.dumps(resource)), strict=True)
