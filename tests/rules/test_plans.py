"""Every standard plan under config/plans/ passes its schema and the checks over the set."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from dho.catalogue import CatalogueError, load_catalogue
from dho.ingest.normalise import load_plausibility
from dho.rules.plans import PLANS_DIR, StandardPlan, load_standard_plans
from dho.rules.thresholds import Band

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
TYPES = load_catalogue(ROOT / "fhir")
LIMITS = load_plausibility(CONFIG)
PLANS = load_standard_plans(CONFIG, TYPES, LIMITS)
FILES = sorted((CONFIG / PLANS_DIR).glob("*.yaml"))


def test_the_patient_groups_have_standard_plans() -> None:
    assert {"copd", "heart-failure", "hypertension", "diabetes", "general"} <= set(PLANS)
    assert sorted(PLANS) == [p.stem for p in FILES]


@pytest.mark.parametrize("plan", sorted(PLANS.values(), key=lambda p: p.id), ids=lambda p: p.id)
def test_every_plan_is_complete(plan: StandardPlan) -> None:
    assert set(plan.texts) == {Band.GREEN, Band.YELLOW, Band.RED}
    for texts in plan.texts.values():
        assert texts.staff.strip() and texts.patient.strip()
    assert "116 117" in plan.texts[Band.RED].patient  # out of hours: legevakt
    for key, measurement in plan.measurements.items():
        mtype = TYPES.get(key)
        judged = measurement.thresholds
        if mtype.is_panel:
            assert judged.value is None
        else:
            assert judged.components is None
        for band in (Band.YELLOW, Band.RED):
            assert plan.texts_for(key, band).patient
    for change in plan.changes:
        assert change.type in TYPES.types and (change.days or change.baseline_days)


def test_the_published_rules_are_there() -> None:
    [weight] = PLANS["heart-failure"].changes
    assert (weight.type, weight.direction, weight.by, weight.days) == (
        "body-weight",
        "rise",
        Decimal(2),
        3,
    )
    [spo2] = PLANS["copd"].changes
    assert (spo2.type, spo2.direction, spo2.by, spo2.baseline_days) == (
        "oxygen-saturation",
        "fall",
        Decimal(3),
        7,
    )
    assert PLANS["copd"].spo2_target_88_92 and not PLANS["general"].spo2_target_88_92


def test_a_plan_knows_how_far_back_its_rules_look_per_type() -> None:
    assert PLANS["heart-failure"].lookbacks == {
        "body-weight": timedelta(days=3),
        "heart-rate": timedelta(days=28),
    }
    assert PLANS["copd"].lookbacks == {"oxygen-saturation": timedelta(days=7)}
    assert PLANS["general"].lookbacks == {}
    longer = replace(PLANS["copd"], changes=(replace(PLANS["copd"].changes[0], baseline_days=14),))
    assert longer.lookbacks == {"oxygen-saturation": timedelta(days=14)}


@pytest.mark.parametrize(
    ("value", "band"),
    [
        ("87", Band.RED),
        ("88", Band.RED),
        ("89", Band.YELLOW),
        ("92", Band.YELLOW),
        ("93", Band.GREEN),
    ],
)
def test_a_value_on_a_cut_point_is_the_more_severe_band(value: str, band: Band) -> None:
    points = PLANS["general"].measurements["oxygen-saturation"].thresholds.value
    assert points is not None and points.band(Decimal(value)) == band


def test_a_measurement_text_replaces_the_plans() -> None:
    copd = PLANS["copd"]
    assert copd.texts_for("body-temperature", Band.YELLOW).patient.startswith("Du har feber")
    assert copd.texts_for("oxygen-saturation", Band.YELLOW) == copd.texts[Band.YELLOW]


def _broken(tmp_path: Path, change: object) -> Path:
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    path = config / PLANS_DIR / "general.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["measurements"]["heart-rate"]["cut_points"].update(yellow_high=140),
            "must increase",
        ),
        (lambda d: d["measurements"].update({"steps": {}}), "not a measurement type"),
        (
            lambda d: d["measurements"]["heart-rate"].update(components={"x": {"red_low": 1}}),
            "is not allowed|use cut_points",
        ),
        (
            lambda d: d["measurements"]["blood-pressure"].update(cut_points={"red_low": 80}),
            "is not allowed|use components",
        ),
        (
            lambda d: d["measurements"]["blood-pressure"]["components"].update(
                pulse={"red_low": 40}
            ),
            "no component 'pulse'",
        ),
        (
            lambda d: d["measurements"]["oxygen-saturation"]["cut_points"].update(red_low=40),
            "outside the plausible range",
        ),
        (lambda d: d["colours"].pop("red"), "red"),
        (lambda d: d.update(id="other"), "must equal the file name"),
        (
            lambda d: d.update(
                changes=[
                    {
                        "type": "blood-pressure",
                        "direction": "rise",
                        "by": 5,
                        "days": 2,
                        "colour": "yellow",
                    }
                ]
            ),
            "single-valued",
        ),
        (lambda d: d["measurements"]["heart-rate"].update(schedule={"before": "25:00"}), "before"),
    ],
)
def test_a_broken_plan_is_refused_with_its_file_and_reason(
    tmp_path: Path, change: object, message: str
) -> None:
    config = _broken(tmp_path, change)
    with pytest.raises(CatalogueError, match=message) as caught:
        load_standard_plans(config, TYPES, LIMITS)
    assert "general.yaml" in str(caught.value)
