"""The to_fhir stage: every catalogue type yields a valid R4 Observation; ids, offsets, decimals."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import simplejson
from hypothesis import given, settings
from hypothesis import strategies as st

from dho import jsonutil
from dho.catalogue import LOINC, MDC, VITALSIGNS_PROFILE, load_catalogue
from dho.ingest.errors import DataError
from dho.ingest.measurement import EUI64_SYSTEM, Measurement, Quantity
from dho.ingest.normalise import load_plausibility, normalise
from dho.ingest.to_fhir import observation_id, to_fhir
from tests.fhir_checks import (
    assert_valid_fhir_json,
    assert_valid_observation,
    sample_measurement,
)

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = load_catalogue(ROOT / "fhir")
LIMITS = load_plausibility(ROOT / "config")
WHEN = datetime(2026, 11, 24, 8, 15, 0, 123000, tzinfo=timezone(timedelta(hours=1)))


def _fhir(m: Measurement) -> dict[str, Any]:
    return to_fhir(m, patient_id="pat-1", device_id="dev-1", catalogue=CATALOGUE)


def _single(type_: str, value: str, unit: str, when: datetime = WHEN) -> Measurement:
    return Measurement(
        EUI64_SYSTEM, "FE-ED-AB-EE-DE-AD-77-C3", type_, when, Quantity(Decimal(value), unit)
    )


def _bp(when: datetime = WHEN, **values: str) -> Measurement:
    components = {k: Quantity(Decimal(v), "mm[Hg]") for k, v in values.items()}
    return Measurement(EUI64_SYSTEM, "FE-ED", "blood-pressure", when, components=components)


@pytest.mark.parametrize("key", sorted(CATALOGUE.types))
def test_every_catalogue_type_gives_a_valid_observation(key: str) -> None:
    mtype = CATALOGUE.get(key)
    m = normalise(sample_measurement(mtype, LIMITS, WHEN), CATALOGUE, LIMITS)
    resource = _fhir(m)
    assert_valid_observation(resource, CATALOGUE)
    assert_valid_observation(resource)  # the default (settings) catalogue agrees
    codes = [(c["system"], c["code"]) for c in resource["code"]["coding"]]
    assert codes == [(c.system, c.code) for c in mtype.codes]
    assert resource["category"][0]["coding"][0]["code"] == mtype.category.code
    assert resource.get("meta", {}).get("profile", []) == list(mtype.profiles)


def test_the_observation_content() -> None:
    resource = _fhir(_single("heart-rate", "72", "/min"))
    oid = resource["id"]
    assert resource == {
        "resourceType": "Observation",
        "id": oid,
        "meta": {
            "profile": [VITALSIGNS_PROFILE, "http://hl7.org/fhir/StructureDefinition/heartrate"]
        },
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{oid}"}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": LOINC, "code": "8867-4", "display": "Heart rate"},
                {"system": MDC, "code": "149546", "display": "MDC_PULS_RATE_NON_INV"},
            ],
            "text": "Heart rate",
        },
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": "2026-11-24T08:15:00.123+01:00",
        "valueQuantity": {
            "value": Decimal("72"),
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
        "device": {"reference": "Device/dev-1"},
    }


def test_blood_pressure_is_a_panel_with_components() -> None:
    resource = _fhir(_bp(systolic="120", diastolic="80", mean="93"))
    assert_valid_observation(resource, CATALOGUE)
    assert "valueQuantity" not in resource
    assert [c["code"]["coding"][0]["code"] for c in resource["component"]] == [
        "8480-6",
        "8462-4",
        "150023",
    ]
    mean = resource["component"][2]
    assert mean["code"]["coding"] == [
        {"system": MDC, "code": "150023", "display": "MDC_PRESS_BLD_NONINV_MEAN"}
    ]
    assert mean["valueQuantity"]["value"] == Decimal("93")


def test_blood_pressure_without_mean() -> None:
    resource = _fhir(_bp(systolic="120", diastolic="80"))
    assert_valid_observation(resource, CATALOGUE)
    assert len(resource["component"]) == 2


def test_oxygen_saturation_carries_both_loinc_codes() -> None:
    resource = _fhir(_single("oxygen-saturation", "97", "%"))
    loinc = [c["code"] for c in resource["code"]["coding"] if c["system"] == LOINC]
    assert loinc == ["2708-6", "59408-5"]


def test_glucose_is_laboratory_without_profile() -> None:
    resource = _fhir(_single("blood-glucose", "5.6", "mmol/L"))
    assert_valid_observation(resource, CATALOGUE)
    assert "meta" not in resource
    assert resource["category"][0]["coding"][0]["code"] == "laboratory"
    assert resource["code"]["coding"][0]["code"] == "14743-9"


def test_no_record_stage_fields_and_no_narrative() -> None:
    resource = _fhir(_single("body-weight", "70.0", "kg"))
    assert set(resource["meta"]) == {"profile"}
    assert "text" not in resource and "issued" not in resource


@pytest.mark.parametrize("value", ["36.50", "36.5", "37.000"])
def test_precision_survives_serialisation(value: str) -> None:
    m = normalise(_single("body-temperature", value, "Cel"), CATALOGUE, LIMITS)
    text = jsonutil.dumps(_fhir(m))
    assert f'"value":{value},' in text
    assert_valid_fhir_json(text, CATALOGUE)
    assert str(jsonutil.loads(text)["valueQuantity"]["value"]) == value


def test_converted_values_serialise_with_customary_decimals() -> None:
    m = normalise(_single("body-weight", "154.3", "[lb_av]"), CATALOGUE, LIMITS)
    assert '"value":70.0,' in jsonutil.dumps(_fhir(m))


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(hours=1), "2026-11-24T08:15:00.123+01:00"),
        (timedelta(hours=2), "2026-11-24T08:15:00.123+02:00"),
        (timedelta(hours=-5), "2026-11-24T08:15:00.123-05:00"),
        (timedelta(hours=5, minutes=30), "2026-11-24T08:15:00.123+05:30"),
        (timedelta(hours=-9, minutes=-30), "2026-11-24T08:15:00.123-09:30"),
        (timedelta(0), "2026-11-24T08:15:00.123+00:00"),
    ],
)
def test_the_device_offset_is_kept(offset: timedelta, expected: str) -> None:
    when = datetime(2026, 11, 24, 8, 15, 0, 123000, tzinfo=timezone(offset))
    resource = _fhir(_single("heart-rate", "72", "/min", when))
    assert resource["effectiveDateTime"] == expected
    assert_valid_observation(resource, CATALOGUE)


@pytest.mark.parametrize(
    ("microsecond", "fraction"),
    [(0, ""), (100000, ".100"), (5000, ".005"), (123456, ".123456")],
)
def test_fractions_only_when_non_zero(microsecond: int, fraction: str) -> None:
    when = datetime(2026, 11, 24, 8, 15, 0, microsecond, tzinfo=UTC)
    resource = _fhir(_single("heart-rate", "72", "/min", when))
    assert resource["effectiveDateTime"] == f"2026-11-24T08:15:00{fraction}+00:00"


def test_a_naive_time_is_a_data_error() -> None:
    with pytest.raises(DataError, match="offset"):
        _fhir(_single("heart-rate", "72", "/min", datetime(2026, 11, 24, 8, 15)))


def test_the_id_is_deterministic() -> None:
    m = _single("heart-rate", "72", "/min")
    oid = observation_id(m)
    assert uuid.UUID(oid).version == 5
    assert oid == observation_id(_single("heart-rate", "72", "/min"))
    assert _fhir(m)["id"] == oid
    assert _fhir(m)["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{oid}"}]


def test_a_correction_keeps_the_id() -> None:
    assert observation_id(_single("heart-rate", "72", "/min")) == observation_id(
        _single("heart-rate", "75", "/min")
    )


def test_the_same_instant_in_another_offset_is_the_same_reading() -> None:
    other = WHEN.astimezone(timezone(timedelta(hours=-5)))
    assert observation_id(_single("heart-rate", "72", "/min", other)) == observation_id(
        _single("heart-rate", "72", "/min")
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda m: replace(m, effective=m.effective + timedelta(milliseconds=1)),
        lambda m: replace(m, device_id="FE-ED-AB-EE-DE-AD-77-C4"),
        lambda m: replace(m, type="respiratory-rate"),
    ],
    ids=["one-ms-later", "other-device", "other-type"],
)
def test_a_different_identity_gives_a_different_id(
    change: Callable[[Measurement], Measurement],
) -> None:
    m = _single("heart-rate", "72", "/min")
    assert observation_id(change(m)) != observation_id(m)


def test_sub_millisecond_differences_are_the_same_reading() -> None:
    m = _single("heart-rate", "72", "/min")
    later = replace(m, effective=m.effective + timedelta(microseconds=400))
    assert observation_id(later) == observation_id(m)


@pytest.mark.parametrize(
    "m",
    [
        _single("body-weight", "154.3", "[lb_av]"),
        replace(_bp(systolic="120", diastolic="80"), components={}),
        replace(_bp(systolic="120", diastolic="80"), value=Quantity(Decimal(1), "mm[Hg]")),
    ],
    ids=["unconverted-unit", "empty-panel", "panel-with-value"],
)
def test_unnormalised_measurements_are_refused(m: Measurement) -> None:
    with pytest.raises(ValueError, match="normalised"):
        _fhir(m)


@pytest.mark.parametrize("patient_id", ["", "a/b", "x" * 65, "pat 1"])
def test_invalid_reference_ids_are_refused(patient_id: str) -> None:
    with pytest.raises(ValueError, match="FHIR Patient id"):
        to_fhir(
            _single("heart-rate", "72", "/min"),
            patient_id=patient_id,
            device_id="dev-1",
            catalogue=CATALOGUE,
        )


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(resource: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = resource
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


@pytest.mark.parametrize(
    ("base", "change"),
    [
        ("heart-rate", _set("effectiveDateTime", "2026-11-24T08:15:00")),
        ("heart-rate", _set("valueQuantity.code", "{beats}/min")),
        ("heart-rate", _set("valueQuantity.system", "http://example.org")),
        ("heart-rate", _set("valueQuantity.unit", None)),
        ("heart-rate", _set("valueQuantity", None)),
        ("heart-rate", _set("subject.reference", "Group/1")),
        ("heart-rate", _set("category", None)),
        ("heart-rate", _set("category.0.coding.0.code", "laboratory")),
        ("heart-rate", _set("meta.profile", [VITALSIGNS_PROFILE])),
        ("heart-rate", _set("code.coding.0.code", "8867-5")),
        ("heart-rate", _set("status", "done")),
        ("heart-rate", _set("issued", "2026-11-24T08:15:00")),
        ("heart-rate", _set("effectiveDateTime", None)),
        ("heart-rate", _set("valueQuantity.value", "72")),
        ("heart-rate", _set("colour", "red")),
        ("blood-glucose", _set("meta", {"profile": [VITALSIGNS_PROFILE]})),
        ("blood-pressure", _set("valueQuantity", {"value": 1, "unit": "mmHg"})),
        ("blood-pressure", _set("component.1", None)),
        ("blood-pressure", _set("component.0.valueQuantity", None)),
        ("blood-pressure", _set("component.0.valueQuantity.code", "kPa")),
        ("blood-pressure", _set("component.0.code.coding", [{"system": LOINC, "code": "1-1"}])),
    ],
)
def test_the_checks_catch_broken_observations(
    base: str, change: Callable[[dict[str, Any]], None]
) -> None:
    resource = _fhir(sample_measurement(CATALOGUE.get(base), LIMITS, WHEN))
    assert_valid_observation(resource, CATALOGUE)
    broken = copy.deepcopy(resource)
    change(broken)
    with pytest.raises(AssertionError):
        assert_valid_observation(broken, CATALOGUE)


def test_jsonutil_round_trips_decimals_and_refuses_nan() -> None:
    text = jsonutil.dumps({"a": Decimal("36.50"), "b": "°C", "c": [1, 2]})
    assert text == '{"a":36.50,"b":"°C","c":[1,2]}'
    assert jsonutil.loads(text.encode()) == {"a": Decimal("36.50"), "b": "°C", "c": [1, 2]}
    assert json.loads(text)["a"] == 36.5
    for bad in ("[NaN]", '{"a": Infinity}', "[-Infinity]"):
        with pytest.raises(ValueError):
            jsonutil.loads(bad)
    with pytest.raises(ValueError):
        jsonutil.dumps(Decimal("NaN"))
    with pytest.raises(ValueError):
        jsonutil.dumps([Decimal("-Infinity")])
    with pytest.raises(TypeError):
        jsonutil.dumps({"at": datetime(2026, 1, 1, tzinfo=UTC)})


def test_jsonutil_writes_what_orjson_refuses_as_simplejson_does() -> None:
    assert (
        jsonutil.dumps({"big": 2**70, 3: Decimal("1.0")})
        == '{"big":1180591620717411303424,"3":1.0}'
    )


_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text()
)
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, derandomize=True)
@given(_JSON)
def test_jsonutil_writes_the_same_text_as_simplejson(value: Any) -> None:
    try:
        expected = simplejson.dumps(
            value, use_decimal=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError:
        return  # e.g. a Decimal simplejson cannot write: not what this test compares
    assert jsonutil.dumps(value) == expected
