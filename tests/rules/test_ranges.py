"""The range rule at and on both sides of every cut-point, with valid R4 interpretation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from dho.catalogue import load_catalogue
from dho.ingest.measurement import EUI64_SYSTEM, Measurement, Quantity
from dho.ingest.normalise import load_plausibility
from dho.ingest.to_fhir import to_fhir
from dho.rules.plans import load_standard_plans
from dho.rules.ranges import judge_range
from dho.rules.thresholds import Band
from tests.fhir_checks import assert_valid_observation

ROOT = Path(__file__).resolve().parents[2]
TYPES = load_catalogue(ROOT / "fhir")
PLANS = load_standard_plans(ROOT / "config", TYPES, load_plausibility(ROOT / "config"))
GENERAL = PLANS["general"].measurements
WHEN = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _single(type_: str, value: str, unit: str) -> Measurement:
    return Measurement(
        EUI64_SYSTEM, "00-1C-05-FF-FE-01-00-02", type_, WHEN, Quantity(Decimal(value), unit)
    )


def _bp(systolic: int, diastolic: int) -> Measurement:
    parts = {
        "systolic": Quantity(Decimal(systolic), "mm[Hg]"),
        "diastolic": Quantity(Decimal(diastolic), "mm[Hg]"),
    }
    return Measurement(
        EUI64_SYSTEM, "00-1C-05-FF-FE-01-00-01", "blood-pressure", WHEN, components=parts
    )


@pytest.mark.parametrize(
    ("value", "band", "code"),
    # general heart rate: red_low 40, yellow_low 50, yellow_high 110, red_high 130
    [
        ("39", Band.RED, "LL"),
        ("40", Band.RED, "LL"),
        ("41", Band.YELLOW, "L"),
        ("50", Band.YELLOW, "L"),
        ("51", Band.GREEN, "N"),
        ("109", Band.GREEN, "N"),
        ("110", Band.YELLOW, "H"),
        ("129", Band.YELLOW, "H"),
        ("130", Band.RED, "HH"),
        ("131", Band.RED, "HH"),
    ],
)
def test_heart_rate_at_every_cut_point(value: str, band: Band, code: str) -> None:
    judged = judge_range(_single("heart-rate", value, "/min"), GENERAL["heart-rate"].thresholds)
    assert judged is not None and judged.value is not None
    assert (judged.band, judged.value.code) == (band, code)


@pytest.mark.parametrize(
    ("value", "band", "code"),
    # one-sided: red_low 88, yellow_low 92
    [
        ("87", Band.RED, "LL"),
        ("88", Band.RED, "LL"),
        ("89", Band.YELLOW, "L"),
        ("92", Band.YELLOW, "L"),
        ("93", Band.GREEN, "N"),
        ("100", Band.GREEN, "N"),
    ],
)
def test_oxygen_saturation_has_only_a_low_side(value: str, band: Band, code: str) -> None:
    judged = judge_range(
        _single("oxygen-saturation", value, "%"), GENERAL["oxygen-saturation"].thresholds
    )
    assert judged is not None and judged.value is not None
    assert (judged.band, judged.value.code) == (band, code)
    reference = judged.value.reference_range()
    assert (
        reference is not None
        and "high" not in reference
        and reference["low"]["value"] == Decimal(92)
    )


@pytest.mark.parametrize(
    ("systolic", "diastolic", "band", "codes"),
    [
        (130, 80, Band.GREEN, ("N", "N")),
        (165, 80, Band.YELLOW, ("H", "N")),
        (165, 112, Band.RED, ("H", "HH")),
        (78, 45, Band.RED, ("LL", "L")),
    ],
)
def test_blood_pressure_is_judged_per_component_at_the_worst_colour(
    systolic: int, diastolic: int, band: Band, codes: tuple[str, str]
) -> None:
    judged = judge_range(_bp(systolic, diastolic), GENERAL["blood-pressure"].thresholds)
    assert judged is not None and judged.components is not None
    assert judged.band == band
    assert (judged.components["systolic"].code, judged.components["diastolic"].code) == codes


def test_no_cut_points_no_judgement() -> None:
    diabetes = PLANS["diabetes"].measurements
    assert (
        judge_range(_single("body-weight", "80", "kg"), diabetes["body-weight"].thresholds) is None
    )


def test_interpretation_and_reference_range_make_valid_r4() -> None:
    m = _bp(165, 112)
    judged = judge_range(m, GENERAL["blood-pressure"].thresholds)
    assert judged is not None and judged.components is not None
    resource = to_fhir(m, patient_id="p-1", device_id="d-1", catalogue=TYPES)
    for component, key in zip(resource["component"], ("systolic", "diastolic"), strict=True):
        component["interpretation"] = [judged.components[key].interpretation()]
        component["referenceRange"] = [judged.components[key].reference_range()]
    assert_valid_observation(resource, TYPES)
    single = _single("heart-rate", "135", "/min")
    pulse = judge_range(single, GENERAL["heart-rate"].thresholds)
    assert pulse is not None and pulse.value is not None
    observation = to_fhir(single, patient_id="p-1", device_id="d-1", catalogue=TYPES)
    observation["interpretation"] = [pulse.value.interpretation()]
    observation["referenceRange"] = [pulse.value.reference_range()]
    assert_valid_observation(observation, TYPES)
