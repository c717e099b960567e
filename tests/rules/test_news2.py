"""NEWS2, table-driven: every parameter at and on both sides of every band boundary."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from dho.rules.news2 import PARAMETERS, NotScored, Patient, Score, Vitals, chart_value, news2

ADULT = Patient(age_years=70)
SCALE_2 = Patient(age_years=70, spo2_target_88_92=True)
# All seven parameters at 0 points: the baseline each table changes one parameter of.
CALM = Vitals(
    respiratory_rate=Decimal(16),
    oxygen_saturation=Decimal(97),
    on_oxygen=False,
    systolic=Decimal(130),
    heart_rate=Decimal(70),
    consciousness="alert",
    temperature=Decimal("37.0"),
)


def _points(vitals: Vitals, patient: Patient = ADULT) -> dict[str, int]:
    score = news2(vitals, patient)
    assert isinstance(score, Score) and not score.partial
    return score.points


@pytest.mark.parametrize(
    ("value", "points"),
    [(7, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (40, 3)],
)
def test_respiration_rate(value: int, points: int) -> None:
    vitals = replace(CALM, respiratory_rate=Decimal(value))
    assert _points(vitals)["respiratory-rate"] == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(85, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)],
)
@pytest.mark.parametrize("on_oxygen", [False, True])
def test_spo2_scale_1_ignores_oxygen(value: int, points: int, on_oxygen: bool) -> None:
    vitals = replace(CALM, oxygen_saturation=Decimal(value), on_oxygen=on_oxygen)
    assert _points(vitals)["oxygen-saturation"] == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(80, 3), (83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (93, 0), (97, 0)],
)
def test_spo2_scale_2_on_air(value: int, points: int) -> None:
    vitals = replace(CALM, oxygen_saturation=Decimal(value), on_oxygen=False)
    assert _points(vitals, SCALE_2)["oxygen-saturation"] == points


@pytest.mark.parametrize(
    ("value", "points"),
    [
        (83, 3),
        (84, 2),
        (86, 1),
        (87, 1),
        (88, 0),
        (92, 0),
        (93, 1),
        (94, 1),
        (95, 2),
        (96, 2),
        (97, 3),
        (100, 3),
    ],
)
def test_spo2_scale_2_on_oxygen(value: int, points: int) -> None:
    vitals = replace(CALM, oxygen_saturation=Decimal(value), on_oxygen=True)
    assert _points(vitals, SCALE_2)["oxygen-saturation"] == points


@pytest.mark.parametrize(("on_oxygen", "points"), [(False, 0), (True, 2)])
def test_air_or_oxygen(on_oxygen: bool, points: int) -> None:
    assert _points(replace(CALM, on_oxygen=on_oxygen))["supplemental-oxygen"] == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(70, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
)
def test_systolic_blood_pressure(value: int, points: int) -> None:
    assert _points(replace(CALM, systolic=Decimal(value)))["systolic"] == points


@pytest.mark.parametrize(
    ("value", "points"),
    [
        (35, 3),
        (40, 3),
        (41, 1),
        (50, 1),
        (51, 0),
        (90, 0),
        (91, 1),
        (110, 1),
        (111, 2),
        (130, 2),
        (131, 3),
    ],
)
def test_pulse(value: int, points: int) -> None:
    assert _points(replace(CALM, heart_rate=Decimal(value)))["heart-rate"] == points


@pytest.mark.parametrize(
    ("level", "points"),
    [("alert", 0), ("new-confusion", 3), ("voice", 3), ("pain", 3), ("unresponsive", 3)],
)
def test_consciousness(level: str, points: int) -> None:
    vitals = replace(CALM, consciousness=level)  # type: ignore[arg-type]
    assert _points(vitals)["consciousness"] == points


@pytest.mark.parametrize(
    ("value", "points"),
    [
        ("34.9", 3),
        ("35.0", 3),
        ("35.1", 1),
        ("36.0", 1),
        ("36.1", 0),
        ("38.0", 0),
        ("38.1", 1),
        ("39.0", 1),
        ("39.1", 2),
        ("41.0", 2),
    ],
)
def test_temperature(value: str, points: int) -> None:
    assert _points(replace(CALM, temperature=Decimal(value)))["body-temperature"] == points


@pytest.mark.parametrize(
    ("field", "value", "parameter", "points"),
    [
        ("temperature", "35.05", "body-temperature", 1),  # charted 35.1
        ("temperature", "36.04", "body-temperature", 1),  # charted 36.0
        ("temperature", "38.05", "body-temperature", 1),  # charted 38.1
        ("respiratory_rate", "20.4", "respiratory-rate", 0),  # charted 20
        ("respiratory_rate", "20.5", "respiratory-rate", 2),  # charted 21
        ("heart_rate", "90.5", "heart-rate", 1),  # charted 91
        ("oxygen_saturation", "95.5", "oxygen-saturation", 0),  # charted 96
    ],
)
def test_inputs_are_read_at_the_charts_resolution(
    field: str, value: str, parameter: str, points: int
) -> None:
    assert _points(replace(CALM, **{field: Decimal(value)}))[parameter] == points


def test_chart_value_rounds_half_up() -> None:
    assert chart_value(Decimal("36.05"), whole=False) == Decimal("36.1")
    assert chart_value(Decimal("91.5"), whole=True) == Decimal(92)


@pytest.mark.parametrize(
    ("changes", "total", "response", "single_three"),
    [
        ({}, 0, "none", False),
        ({"heart_rate": Decimal(95)}, 1, "low", False),
        (
            {"heart_rate": Decimal(95), "systolic": Decimal(95), "temperature": Decimal("38.5")},
            4,
            "low",
            False,
        ),
        ({"consciousness": "voice"}, 3, "low-medium", True),
        ({"respiratory_rate": Decimal(26), "heart_rate": Decimal(95)}, 4, "low-medium", True),
        (
            {"respiratory_rate": Decimal(22), "on_oxygen": True, "heart_rate": Decimal(95)},
            5,
            "medium",
            False,
        ),
        ({"respiratory_rate": Decimal(26), "on_oxygen": True}, 5, "medium", True),
        (
            {"respiratory_rate": Decimal(22), "on_oxygen": True, "heart_rate": Decimal(115)},
            6,
            "medium",
            False,
        ),
        (
            {"respiratory_rate": Decimal(26), "on_oxygen": True, "systolic": Decimal(95)},
            7,
            "high",
            True,
        ),
        (
            {
                "respiratory_rate": Decimal(26),
                "oxygen_saturation": Decimal(90),
                "systolic": Decimal(85),
            },
            9,
            "high",
            True,
        ),
    ],
)
def test_totals_and_response_bands(
    changes: dict[str, object], total: int, response: str, single_three: bool
) -> None:
    score = news2(replace(CALM, **changes), ADULT)  # type: ignore[arg-type]
    assert isinstance(score, Score)
    assert (score.total, score.response, score.single_three) == (total, response, single_three)


@pytest.mark.parametrize("missing", PARAMETERS)
def test_a_score_from_incomplete_inputs_is_partial(missing: str) -> None:
    field = {
        "respiratory-rate": "respiratory_rate",
        "oxygen-saturation": "oxygen_saturation",
        "supplemental-oxygen": "on_oxygen",
        "systolic": "systolic",
        "heart-rate": "heart_rate",
        "consciousness": "consciousness",
        "body-temperature": "temperature",
    }[missing]
    score = news2(replace(CALM, **{field: None}), ADULT)
    assert isinstance(score, Score)
    assert score.partial and score.missing == (missing,)
    assert missing not in score.points and score.total == 0


def test_scale_2_with_unknown_oxygen_reads_air_and_is_partial() -> None:
    score = news2(replace(CALM, oxygen_saturation=Decimal(97), on_oxygen=None), SCALE_2)
    assert isinstance(score, Score)
    assert score.points["oxygen-saturation"] == 0 and score.missing == ("supplemental-oxygen",)
    assert score.scale == 2


@pytest.mark.parametrize(
    ("patient", "reason"),
    [(Patient(age_years=15), "under-16"), (Patient(age_years=30, pregnant=True), "pregnant")],
)
def test_excluded_patients_are_not_scored(patient: Patient, reason: str) -> None:
    result = news2(CALM, patient)
    assert isinstance(result, NotScored) and result.reason == reason


def test_a_sixteen_year_old_is_scored() -> None:
    assert isinstance(news2(CALM, Patient(age_years=16)), Score)
