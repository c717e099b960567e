"""NEWS2 inputs from the latest vitals window, and the score as its own valid R4 Observation."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation as R4BObservation
from fhirclient.models.fhirabstractbase import FHIRValidationError  # type: ignore[import-untyped]
from fhirclient.models.observation import Observation as R4Observation  # type: ignore[import-untyped]

from dho import jsonutil
from dho.catalogue import CATEGORY_SYSTEM, LOINC, UCUM, load_catalogue
from dho.ingest.to_fhir import FLAG_SYSTEM
from dho.rules import news2_fhir
from dho.rules.news2 import Patient, Score, Vitals, news2
from dho.rules.news2_fhir import (
    NEWS2_CODE,
    PARAMETER_SYSTEM,
    RESPONSE_SYSTEM,
    SNOMED,
    news2_identity,
    news2_observation,
    news2_observation_id,
    score_latest,
)
from dho.rules.news2_inputs import Reading, VitalsSet, latest_vitals
from tests.fhir_checks import DATETIME_WITH_OFFSET

ROOT = Path(__file__).resolve().parents[2]
TYPES = load_catalogue(ROOT / "fhir")
OSLO = timezone(timedelta(hours=1))
AT = datetime(2026, 11, 24, 9, 0, tzinfo=OSLO)
WINDOW = timedelta(hours=4)
ISSUED = datetime(2026, 11, 24, 8, 0, 1, 250000, tzinfo=UTC)
ADULT = Patient(age_years=70)
PATIENT_ID = "pat-1"


def _reading(oid: str, type_: str, minutes_before: int, value: str) -> Reading:
    return Reading(oid, type_, AT - timedelta(minutes=minutes_before), Decimal(value))


# A calm home set: every measured parameter at 0 points.
CALM = [
    _reading("rr-1", "respiratory-rate", 30, "16"),
    _reading("spo2-1", "oxygen-saturation", 20, "97"),
    _reading("bp-1", "blood-pressure", 10, "130"),
    _reading("hr-1", "heart-rate", 10, "70"),
    _reading("temp-1", "body-temperature", 5, "37.0"),
]


def assert_valid_r4(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Strict R4 (4.0.1) structure with fhirclient, again with fhir.resources; no floats."""
    _assert_no_floats(resource)
    text = jsonutil.dumps(resource)
    plain: dict[str, Any] = json.loads(text)
    try:
        R4Observation(plain, strict=True)
    except FHIRValidationError as exc:
        raise AssertionError(f"not an R4 Observation (fhirclient): {exc}") from exc
    R4BObservation.model_validate(jsonutil.loads(text))
    for name in ("effectiveDateTime", "issued"):
        assert DATETIME_WITH_OFFSET.fullmatch(plain[name]), f"{name}: {plain[name]!r}"
    # obs-7: no component code equal to the Observation code
    top = _codings(plain["code"])
    for component in plain.get("component", []):
        assert not top & _codings(component["code"]), "obs-7: component repeats the code"
    return plain


def _assert_no_floats(value: object) -> None:
    assert not isinstance(value, float), f"float in the resource: {value!r}"
    if isinstance(value, Mapping):
        for item in value.values():
            _assert_no_floats(item)
    elif isinstance(value, list):
        for item in value:
            _assert_no_floats(item)


def _codings(concept: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


def _components(resource: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for component in resource["component"]:
        local = [c["code"] for c in component["code"]["coding"] if c["system"] == PARAMETER_SYSTEM]
        assert len(local) == 1
        out[local[0]] = component
    return out


def _observation(
    readings: list[Reading], patient: Patient = ADULT, on_oxygen: bool | None = False
) -> dict[str, Any]:
    resource = score_latest(
        readings,
        patient,
        patient_id=PATIENT_ID,
        at=AT,
        window=WINDOW,
        on_oxygen=on_oxygen,
        issued=ISSUED,
        catalogue=TYPES,
    )
    assert resource is not None
    assert_valid_r4(resource)
    return resource


# --- inputs: the latest vitals window -------------------------------------------------


def test_each_parameter_comes_from_its_type_and_blood_pressure_is_the_systolic() -> None:
    inputs = latest_vitals(CALM, AT, WINDOW, on_oxygen=True)
    assert inputs.vitals == Vitals(
        respiratory_rate=Decimal(16),
        oxygen_saturation=Decimal(97),
        on_oxygen=True,
        systolic=Decimal(130),
        heart_rate=Decimal(70),
        consciousness=None,
        temperature=Decimal("37.0"),
    )
    assert inputs.observation_ids == ("rr-1", "spo2-1", "bp-1", "hr-1", "temp-1")
    assert inputs.effective == AT - timedelta(minutes=5)


@pytest.mark.parametrize(
    ("age", "included"),
    [
        (WINDOW + timedelta(minutes=1), False),
        (WINDOW, False),  # exactly at - window: out
        (WINDOW - timedelta(milliseconds=1), True),
        (timedelta(0), True),  # exactly at: in
        (-timedelta(milliseconds=1), False),  # after at: out
    ],
)
def test_window_edges(age: timedelta, included: bool) -> None:
    reading = Reading("hr-edge", "heart-rate", AT - age, Decimal(70))
    inputs = latest_vitals([reading], AT, WINDOW, on_oxygen=None)
    assert (inputs.vitals.heart_rate is not None) is included
    assert inputs.observation_ids == (("hr-edge",) if included else ())
    assert inputs.effective == (AT - age if included else None)


def test_window_edges_compare_instants_across_offsets() -> None:
    # 05:00 at +01:00 is 04:00Z: exactly at - window, so out; one ms later is in.
    edge = (AT - WINDOW).astimezone(UTC)
    out = Reading("hr-out", "heart-rate", edge, Decimal(70))
    inside = Reading("hr-in", "heart-rate", edge + timedelta(milliseconds=1), Decimal(71))
    assert latest_vitals([out], AT, WINDOW, None).readings == ()
    assert latest_vitals([out, inside], AT, WINDOW, None).observation_ids == ("hr-in",)


def test_the_latest_reading_wins_whatever_the_order() -> None:
    older = _reading("hr-old", "heart-rate", 60, "120")
    newer = _reading("hr-new", "heart-rate", 15, "72")
    for order in ([older, newer], [newer, older]):
        inputs = latest_vitals(order, AT, WINDOW, on_oxygen=False)
        assert inputs.vitals.heart_rate == Decimal(72)
        assert inputs.observation_ids == ("hr-new",)


def test_two_readings_at_the_same_instant_pick_the_same_one_in_any_order() -> None:
    a = _reading("hr-a", "heart-rate", 15, "72")
    b = _reading("hr-b", "heart-rate", 15, "99")
    assert latest_vitals([a, b], AT, WINDOW, None).observation_ids == ("hr-b",)
    assert latest_vitals([b, a], AT, WINDOW, None).observation_ids == ("hr-b",)


def test_other_types_are_ignored_and_consciousness_is_never_measured() -> None:
    weight = _reading("w-1", "body-weight", 5, "80.0")
    inputs = latest_vitals([weight, CALM[3]], AT, WINDOW, on_oxygen=None)
    assert inputs.observation_ids == ("hr-1",)
    assert inputs.vitals.consciousness is None and inputs.vitals.on_oxygen is None


def test_the_newest_input_keeps_its_own_offset() -> None:
    utc_reading = Reading(
        "t-utc", "body-temperature", datetime(2026, 11, 24, 7, 30, tzinfo=UTC), Decimal("37.1")
    )
    local_reading = Reading(
        "hr-local", "heart-rate", datetime(2026, 11, 24, 8, 0, tzinfo=OSLO), Decimal(70)
    )
    inputs = latest_vitals([utc_reading, local_reading], AT, WINDOW, None)
    # 07:30Z is newer than 08:00+01:00 (07:00Z) and keeps its Z offset
    assert inputs.effective == utc_reading.effective
    assert inputs.effective is not None and inputs.effective.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("at", "window"),
    [(datetime(2026, 11, 24, 9, 0), WINDOW), (AT, timedelta(0)), (AT, -WINDOW)],
)
def test_a_naive_moment_or_an_empty_window_is_refused(at: datetime, window: timedelta) -> None:
    with pytest.raises(ValueError):
        latest_vitals(CALM, at, window, None)


# --- the Observation -------------------------------------------------------------------


def test_a_home_score_is_a_valid_survey_observation_with_the_news2_code() -> None:
    resource = _observation(CALM)
    effective = AT - timedelta(minutes=5)
    oid = news2_observation_id(PATIENT_ID, effective)
    assert resource["id"] == oid
    assert resource["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{oid}"}]
    assert resource["status"] == "final"
    assert resource["category"] == [
        {"coding": [{"system": CATEGORY_SYSTEM, "code": "survey", "display": "Survey"}]}
    ]
    assert resource["code"]["coding"] == [
        {
            "system": SNOMED,
            "code": NEWS2_CODE,
            "display": "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
        }
    ]
    assert resource["subject"] == {"reference": "Patient/pat-1"}
    assert resource["effectiveDateTime"] == "2026-11-24T08:55:00+01:00"
    assert resource["issued"] == "2026-11-24T08:00:01.250+00:00"
    assert resource["valueQuantity"] == {
        "value": Decimal(0),
        "unit": "{score}",
        "system": UCUM,
        "code": "{score}",
    }
    assert "profile" not in resource.get("meta", {})  # not a vital sign


def test_derived_from_every_input() -> None:
    resource = _observation(CALM)
    assert [d["reference"] for d in resource["derivedFrom"]] == [
        "Observation/rr-1",
        "Observation/spo2-1",
        "Observation/bp-1",
        "Observation/hr-1",
        "Observation/temp-1",
    ]


def test_components_carry_points_and_the_parameters_loinc_codes() -> None:
    readings = [*CALM[:2], _reading("bp-2", "blood-pressure", 3, "95"), *CALM[3:]]
    resource = _observation(readings, on_oxygen=True)
    components = _components(resource)
    assert list(components) == [
        "respiratory-rate",
        "oxygen-saturation",
        "supplemental-oxygen",
        "systolic",
        "heart-rate",
        "body-temperature",
    ]
    points = {name: c["valueInteger"] for name, c in components.items()}
    assert points == {
        "respiratory-rate": 0,
        "oxygen-saturation": 0,
        "supplemental-oxygen": 2,
        "systolic": 2,  # 95 mmHg systolic
        "heart-rate": 0,
        "body-temperature": 0,
    }
    assert resource["valueQuantity"]["value"] == Decimal(4)
    loinc = {
        name: {c["code"] for c in comp["code"]["coding"] if c["system"] == LOINC}
        for name, comp in components.items()
    }
    assert loinc == {
        "respiratory-rate": {"9279-1"},
        "oxygen-saturation": {"2708-6", "59408-5"},
        "supplemental-oxygen": set(),
        "systolic": {"8480-6"},
        "heart-rate": {"8867-4"},
        "body-temperature": {"8310-5"},
    }
    assert all("NEWS2 points" in c["code"]["text"] for c in components.values())


def test_the_spo2_component_names_the_scale() -> None:
    resource = _observation(CALM, Patient(age_years=70, spo2_target_88_92=True))
    assert "scale 2" in _components(resource)["oxygen-saturation"]["code"]["text"]


@pytest.mark.parametrize(
    ("readings", "on_oxygen", "code"),
    [
        (CALM, False, "none"),
        ([*CALM[:3], _reading("hr-2", "heart-rate", 1, "95"), CALM[4]], False, "low"),
        ([_reading("rr-2", "respiratory-rate", 1, "26"), *CALM[1:]], False, "low-medium"),
        ([_reading("rr-2", "respiratory-rate", 1, "22"), *CALM[1:]], True, "low"),
        (
            [
                _reading("rr-2", "respiratory-rate", 1, "22"),
                *CALM[1:3],
                _reading("hr-2", "heart-rate", 1, "95"),
                CALM[4],
            ],
            True,
            "medium",
        ),
        (
            [
                _reading("rr-2", "respiratory-rate", 1, "26"),
                CALM[1],
                _reading("bp-2", "blood-pressure", 1, "95"),
                *CALM[3:],
            ],
            True,
            "high",
        ),
    ],
)
def test_interpretation_carries_the_response_band(
    readings: list[Reading], on_oxygen: bool, code: str
) -> None:
    resource = _observation(readings, on_oxygen=on_oxygen)
    assert resource["interpretation"] == [
        {
            "coding": [
                {
                    "system": RESPONSE_SYSTEM,
                    "code": code,
                    "display": news2_fhir._RESPONSE_DISPLAY[code],  # type: ignore[index]
                }
            ]
        }
    ]
    assert RESPONSE_SYSTEM.startswith("https://dho.example.no/fhir/CodeSystem/news2-response")


def test_a_home_score_is_partial_consciousness_is_never_measured() -> None:
    resource = _observation(CALM)
    assert resource["meta"]["tag"] == [
        {
            "system": FLAG_SYSTEM,
            "code": "partial",
            "display": "Partial NEWS2: scored from fewer than all seven parameters",
        }
    ]
    assert FLAG_SYSTEM == "https://dho.example.no/fhir/CodeSystem/observation-flag"
    note = resource["note"][0]["text"]
    assert "bevissthet" in note and "consciousness" in note
    assert "puls" not in note


def test_the_note_lists_every_missing_parameter() -> None:
    resource = _observation([CALM[3]], on_oxygen=None)  # pulse only
    note = resource["note"][0]["text"]
    for norwegian, english in [
        ("respirasjonsfrekvens", "respiration rate"),
        ("oksygenmetning", "oxygen saturation"),
        ("oksygentilførsel", "air or oxygen"),
        ("systolisk blodtrykk", "systolic blood pressure"),
        ("bevissthet", "consciousness"),
        ("temperatur", "temperature"),
    ]:
        assert norwegian in note and english in note
    assert "puls," not in note and "pulse" not in note
    assert [d["reference"] for d in resource["derivedFrom"]] == ["Observation/hr-1"]
    assert list(_components(resource)) == ["heart-rate"]


def test_a_complete_score_has_no_partial_tag_nor_note() -> None:
    vitals = Vitals(
        respiratory_rate=Decimal(16),
        oxygen_saturation=Decimal(97),
        on_oxygen=False,
        systolic=Decimal(130),
        heart_rate=Decimal(70),
        consciousness="alert",
        temperature=Decimal("37.0"),
    )
    score = news2(vitals, ADULT)
    assert isinstance(score, Score) and not score.partial
    inputs = VitalsSet(vitals, tuple(CALM))
    resource = news2_observation(score, inputs, PATIENT_ID, "news2-1", ISSUED, catalogue=TYPES)
    assert_valid_r4(resource)
    assert "meta" not in resource and "note" not in resource
    assert "identifier" not in resource  # the id is not a uuid
    assert _components(resource)["consciousness"]["valueInteger"] == 0
    assert {c["system"] for c in _components(resource)["consciousness"]["code"]["coding"]} == {
        PARAMETER_SYSTEM
    }


def test_no_observation_without_a_measured_input() -> None:
    stale = [Reading("hr-old", "heart-rate", AT - WINDOW, Decimal(70))]
    assert (
        score_latest(
            stale,
            ADULT,
            patient_id=PATIENT_ID,
            at=AT,
            window=WINDOW,
            on_oxygen=True,
            issued=ISSUED,
            catalogue=TYPES,
        )
        is None
    )
    inputs = latest_vitals(stale, AT, WINDOW, on_oxygen=True)
    score = news2(inputs.vitals, ADULT)
    assert isinstance(score, Score)
    with pytest.raises(ValueError, match="at least one measured input"):
        news2_observation(score, inputs, PATIENT_ID, "x", ISSUED, catalogue=TYPES)


@pytest.fixture
def builder_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    calls: list[object] = []
    real = news2_fhir.news2_observation

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(news2_fhir, "news2_observation", spy)
    yield calls


@pytest.mark.parametrize("patient", [Patient(age_years=15), Patient(age_years=30, pregnant=True)])
def test_excluded_patients_produce_no_observation(
    patient: Patient, builder_calls: list[object]
) -> None:
    result = score_latest(
        CALM,
        patient,
        patient_id=PATIENT_ID,
        at=AT,
        window=WINDOW,
        on_oxygen=False,
        issued=ISSUED,
        catalogue=TYPES,
    )
    assert result is None
    assert builder_calls == []


def test_a_sixteen_year_old_gets_an_observation(builder_calls: list[object]) -> None:
    assert _observation(CALM, Patient(age_years=16))["resourceType"] == "Observation"
    assert len(builder_calls) == 1


# --- identity ----------------------------------------------------------------------------


def test_identity_is_patient_and_epoch_milliseconds_whatever_the_offset() -> None:
    moment = datetime(2026, 11, 24, 8, 55, 0, 123456, tzinfo=OSLO)
    millis = 1795506900123  # 2026-11-24T07:55:00.123Z
    assert news2_identity("pat-1", moment) == f"news2|pat-1|{millis}"
    assert news2_identity("pat-1", moment.astimezone(UTC)) == f"news2|pat-1|{millis}"
    assert news2_observation_id("pat-1", moment) == news2_observation_id(
        "pat-1", moment.astimezone(UTC)
    )
    assert news2_observation_id("pat-1", moment) != news2_observation_id("pat-2", moment)
    assert news2_identity("pat-1", moment + timedelta(milliseconds=1)) != news2_identity(
        "pat-1", moment
    )


def test_a_resent_set_gives_the_same_observation() -> None:
    assert _observation(CALM) == _observation(list(reversed(CALM)))


def test_an_invalid_patient_id_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid FHIR id"):
        score_latest(
            CALM,
            ADULT,
            patient_id="pat 1/x",
            at=AT,
            window=WINDOW,
            on_oxygen=False,
            issued=ISSUED,
            catalogue=TYPES,
        )
