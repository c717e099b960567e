"""The adapter catalogue as a whole, the dho-json format, and a broken adapter's isolation."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from dho.catalogue import load_catalogue
from dho.ingest.adapter_catalogue import find, load_adapters
from dho.ingest.decode import DecodeError, decode
from dho.ingest.measurement import RawMessage
from dho.ingest.normalise import load_plausibility, normalise

ROOT = Path(__file__).resolve().parent.parent.parent
ADAPTERS = ROOT / "adapters"
CATALOGUE = load_catalogue(ROOT / "fhir")
LIMITS = load_plausibility(ROOT / "config")
EXAMPLES = sorted((ADAPTERS / "examples").glob("*/*.json"))


def _raw(payload: bytes, adapter: str = "dho-json") -> RawMessage:
    return RawMessage(payload, "http", "/ingest/x", "gw", adapter, datetime.now(UTC))


def test_every_adapter_file_is_valid_and_named_uniquely() -> None:
    catalogue = load_adapters(ADAPTERS)
    assert catalogue.broken == {}
    files = sorted(p.stem for p in ADAPTERS.glob("*.yaml"))
    assert sorted(catalogue.adapters) == files
    for name in catalogue.adapters:
        assert (ADAPTERS / "examples" / name).is_dir(), f"{name} has no example payloads"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_decodes_to_known_types_that_normalise(example: Path) -> None:
    catalogue = load_adapters(ADAPTERS)
    _, measurements = decode(_raw(example.read_bytes(), example.parent.name), catalogue)
    assert measurements
    for m in measurements:
        assert m.type in CATALOGUE.types
        assert m.effective.utcoffset() is not None
        normalise(m, CATALOGUE, LIMITS)


def test_single_list_and_envelope_forms() -> None:
    catalogue = load_adapters(ADAPTERS)
    one = b'{"device": "D1", "type": "heart-rate", "time": "2026-11-24T08:00:00+01:00", "value": 61, "unit": "/min"}'
    mid, single = decode(_raw(one), catalogue)
    assert mid is None and len(single) == 1
    assert single[0].value is not None and single[0].value.value == Decimal(61)
    _, listed = decode(_raw(b"[" + one + b"," + one.replace(b"08:00", b"08:01") + b"]"), catalogue)
    assert [m.effective.minute for m in listed] == [0, 1]
    mid, enveloped = decode(
        _raw(b'{"message_id": "m-9", "measurements": [' + one + b"]}"), catalogue
    )
    assert mid == "m-9" and len(enveloped) == 1
    assert enveloped[0].device_system == "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"


def test_decimal_precision_survives_decoding() -> None:
    catalogue = load_adapters(ADAPTERS)
    body = b'{"device": "D1", "type": "body-temperature", "time": "2026-11-24T08:00:00Z", "value": 36.50, "unit": "Cel"}'
    _, [m] = decode(_raw(body), catalogue)
    assert m.value is not None and str(m.value.value) == "36.50"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\xff\xfe garbage", "not valid JSON"),
        (b"[]", "no measurements"),
        (
            b'{"type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": 1, "unit": "/min"}',
            "device",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "yesterday", "value": 1, "unit": "/min"}',
            "ISO 8601",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00", "value": 1, "unit": "/min"}',
            "no UTC offset",
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
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z", "value": NaN, "unit": "/min"}',
            "not valid JSON",
        ),
        (
            b'{"device": "D", "type": "heart-rate", "time": "2026-11-24T08:00:00Z"}',
            "neither a value",
        ),
    ],
)
def test_bad_payloads_say_what_is_wrong(payload: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        decode(_raw(payload), load_adapters(ADAPTERS))


def test_a_broken_adapter_disables_only_itself(tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    shutil.copytree(ADAPTERS, folder)
    (folder / "broken-vendor.yaml").write_text(
        "name: broken-vendor\nformat: xml\n", encoding="utf-8"
    )
    catalogue = load_adapters(folder)
    assert "dho-json" in catalogue.adapters
    assert "broken-vendor" in catalogue.broken
    with pytest.raises(DecodeError, match="disabled") as caught:
        decode(_raw(b"{}", "broken-vendor"), catalogue)
    assert caught.value.code == "adapter"
    with pytest.raises(DecodeError, match="no adapter named"):
        decode(_raw(b"{}", "missing"), catalogue)


def test_paths() -> None:
    doc = {"a": [{"b": 1}, {"b": 2}, {"c": 3}], "d": {"e": "x"}}
    assert find(doc, "a[*].b") == [1, 2]
    assert find(doc, "d.e") == ["x"]
    assert find(doc, "d.missing") == []
    assert find(doc, "$") == [doc]
    assert find([1, 2], "[*]") == [1, 2]
