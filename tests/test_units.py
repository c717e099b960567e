"""UCUM through the library: valid codes, exact conversions, and refusals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dho import units


@pytest.mark.parametrize(
    "code",
    [
        "mm[Hg]",
        "kPa",
        "/min",
        "{beats}/min",
        "%",
        "Cel",
        "[degF]",
        "K",
        "kg",
        "[lb_av]",
        "g",
        "cm",
        "[in_i]",
        "m",
        "mm",
        "mmol/L",
        "mg/dL",
        "{score}",
        "kg/m2",
        "L/min",
        "/d",
    ],
)
def test_valid_ucum(code: str) -> None:
    assert units.is_valid(code)
    units.check(code)


@pytest.mark.parametrize("code", ["mmHg", "bpm", "lbs", "°C", "", "kg kg", "mg/dl/"])
def test_not_ucum(code: str) -> None:
    assert not units.is_valid(code)
    with pytest.raises(units.UcumError):
        units.check(code)


@pytest.mark.parametrize(
    ("source", "target", "value", "expected", "molar_mass"),
    [
        ("[lb_av]", "kg", "180", "81.64662660", None),
        ("[degF]", "Cel", "98.6", "37.0", None),
        ("K", "Cel", "310.15", "37.00", None),
        ("kPa", "mm[Hg]", "25.3", "189.77", None),
        ("[in_i]", "cm", "70", "177.80", None),
        ("mg/dL", "mmol/L", "104", "5.77", "180.156"),
        ("{beats}/min", "/min", "61", "61", None),
    ],
)
def test_conversions_are_exact_linear_maps(
    source: str, target: str, value: str, expected: str, molar_mass: str | None
) -> None:
    linear = units.linear_map(source, target, Decimal(molar_mass) if molar_mass else None)
    converted = Decimal(value) * linear.factor + linear.offset
    places = Decimal(expected)
    assert converted.quantize(places) == places


def test_incommensurable_units_are_refused() -> None:
    with pytest.raises(units.UcumError, match="cannot be converted"):
        units.linear_map("kg", "Cel")
    with pytest.raises(units.UcumError, match="cannot be converted"):
        units.linear_map("mg/dL", "mmol/L")  # a molar mass is needed


def test_the_identity_map_is_recognised() -> None:
    assert units.linear_map("{beats}/min", "/min").is_identity
    assert not units.linear_map("g", "kg").is_identity
