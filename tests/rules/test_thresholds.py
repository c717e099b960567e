"""Default cut-points: the whole file checked, the boundary rule, one alert per observation."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from dho.catalogue import load_catalogue
from dho.ingest.measurement import Measurement, Quantity
from dho.rules.evaluate import OUT_OF_RANGE, evaluate
from dho.rules.thresholds import Band, CutPoints, ThresholdsError, load_thresholds

ROOT = Path(__file__).resolve().parent.parent.parent
THRESHOLDS = load_thresholds(ROOT / "config")
CATALOGUE = load_catalogue(ROOT / "fhir")
NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("type_key", sorted(THRESHOLDS))
def test_every_entry_names_a_catalogue_type_and_its_components(type_key: str) -> None:
    assert type_key in CATALOGUE.types
    rule = THRESHOLDS[type_key]
    mtype = CATALOGUE.types[type_key]
    if rule.components is not None:
        names = {c.key for c in mtype.components}
        assert set(rule.components) <= names
    else:
        assert not mtype.is_panel


def test_every_vital_sign_with_a_single_value_has_cut_points_or_is_deliberately_empty() -> None:
    for key, mtype in CATALOGUE.types.items():
        if mtype.is_vital_sign and key not in {"body-height", "body-weight"}:
            assert key in THRESHOLDS, f"{key} has no default cut-points"


def test_a_value_on_a_cut_point_takes_the_more_severe_band() -> None:
    points = CutPoints(Decimal(80), Decimal(95), Decimal(160), Decimal(180))
    cases = {
        80: Band.RED,
        81: Band.YELLOW,
        95: Band.YELLOW,
        96: Band.GREEN,
        159: Band.GREEN,
        160: Band.YELLOW,
        179: Band.YELLOW,
        180: Band.RED,
    }
    for value, band in cases.items():
        assert points.band(Decimal(value)) == band, value


def test_one_sided_cut_points() -> None:
    spo2 = THRESHOLDS["oxygen-saturation"].value
    assert spo2 is not None
    assert spo2.band(Decimal(100)) == Band.GREEN
    assert spo2.band(Decimal(92)) == Band.YELLOW
    assert spo2.band(Decimal(88)) == Band.RED


def _bp(systolic: int, diastolic: int) -> Measurement:
    return Measurement(
        "sys",
        "dev",
        "blood-pressure",
        NOW,
        components={
            "systolic": Quantity(Decimal(systolic), "mm[Hg]"),
            "diastolic": Quantity(Decimal(diastolic), "mm[Hg]"),
        },
    )


def test_blood_pressure_raises_one_alert_at_the_worst_component() -> None:
    [decision] = evaluate(_bp(190, 110), THRESHOLDS)
    assert decision.kind == OUT_OF_RANGE and decision.band == Band.RED
    assert decision.details == {"systolic": "red", "diastolic": "red"}
    [mixed] = evaluate(_bp(165, 112), THRESHOLDS)
    assert mixed.band == Band.RED and mixed.details == {"systolic": "yellow", "diastolic": "red"}
    assert "diastolic 112" in mixed.summary and "systolic" not in mixed.summary.split(":")[1]
    assert evaluate(_bp(128, 82), THRESHOLDS) == []


def test_single_valued_type() -> None:
    m = Measurement("sys", "dev", "heart-rate", NOW, value=Quantity(Decimal(135), "/min"))
    [decision] = evaluate(m, THRESHOLDS)
    assert decision.band == Band.RED
    weight = Measurement("sys", "dev", "body-weight", NOW, value=Quantity(Decimal(200), "kg"))
    assert evaluate(weight, THRESHOLDS) == []


def test_cut_points_out_of_order_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    shutil.copytree(ROOT / "config", folder)
    (folder / "thresholds.yaml").write_text(
        "heart-rate: {red_low: 50, yellow_low: 40}\n", encoding="utf-8"
    )
    with pytest.raises(ThresholdsError, match="must increase"):
        load_thresholds(folder)
    (folder / "thresholds.yaml").write_text("heart-rate: {red_lo: 50}\n", encoding="utf-8")
    with pytest.raises(ThresholdsError):
        load_thresholds(folder)
