"""The normalise stage: Decimal unit conversions, kept precision, the plausibility gate."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from dho.catalogue import CatalogueError, UnitConversion, UnitSpec, load_catalogue
from dho.ingest.errors import DataError, PlausibilityError, UnitError
from dho.ingest.measurement import EUI64_SYSTEM, Measurement, Quantity
from dho.ingest.normalise import load_plausibility, normalise
from dho.ingest.to_fhir import to_fhir
from tests.fhir_checks import assert_valid_observation, sample_measurement

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "config"
CATALOGUE = load_catalogue(ROOT / "fhir")
LIMITS = load_plausibility(CONFIG_DIR)
WHEN = datetime(2026, 11, 24, 7, 15, tzinfo=UTC)


def _single(type_: str, value: str, unit: str) -> Measurement:
    return Measurement(EUI64_SYSTEM, "FE-ED", type_, WHEN, Quantity(Decimal(value), unit))


def _bp(**components: tuple[str, str]) -> Measurement:
    values = {name: Quantity(Decimal(v), unit) for name, (v, unit) in components.items()}
    return Measurement(EUI64_SYSTEM, "FE-ED", "blood-pressure", WHEN, components=values)


def _run(m: Measurement) -> Measurement:
    return normalise(m, CATALOGUE, LIMITS)


def _accepted_units() -> list[tuple[str, str | None, UnitSpec, UnitConversion]]:
    cases: list[tuple[str, str | None, UnitSpec, UnitConversion]] = []
    for mtype in CATALOGUE:
        for component, spec in mtype.values:
            for unit in spec.accepted:
                conversion = spec.conversion(unit)
                assert conversion is not None
                cases.append((mtype.key, component, spec, conversion))
    return cases


def _inverse(canonical: Decimal, conversion: UnitConversion) -> Decimal:
    """The input value that converts to `canonical`, to 4 decimals."""
    value = (canonical - conversion.map.offset) / conversion.map.factor
    return value.quantize(Decimal("0.0001"))


@pytest.mark.parametrize(
    ("key", "component", "spec", "conversion"),
    _accepted_units(),
    ids=lambda v: getattr(v, "unit", None) if isinstance(v, UnitConversion) else None,
)
def test_every_accepted_unit_converts(
    key: str, component: str | None, spec: UnitSpec, conversion: UnitConversion
) -> None:
    canonical = sample_measurement(CATALOGUE.get(key), LIMITS)
    target = canonical.components[component] if component else canonical.value
    assert target is not None
    given = Quantity(_inverse(target.value, conversion), conversion.unit)
    if component:
        m = replace(canonical, components={**canonical.components, component: given})
    else:
        m = replace(canonical, value=given)
    result = _run(m)
    converted = result.components[component] if component else result.value
    assert converted is not None and converted.unit == spec.code
    assert abs(converted.value - target.value) <= Decimal(1).scaleb(-spec.decimals)
    if not conversion.is_identity:
        assert converted.value.as_tuple().exponent == -spec.decimals
    resource = to_fhir(result, patient_id="p", device_id="d", catalogue=CATALOGUE)
    assert_valid_observation(resource, CATALOGUE)


@pytest.mark.parametrize("key", sorted(CATALOGUE.types))
def test_every_type_normalises_its_canonical_sample_unchanged(key: str) -> None:
    m = sample_measurement(CATALOGUE.get(key), LIMITS)
    assert _run(m) == m


@pytest.mark.parametrize("value", ["36.50", "36.5", "37", "36.123"])
def test_precision_is_kept_without_conversion(value: str) -> None:
    result = _run(_single("body-temperature", value, "Cel")).value
    assert result is not None and str(result.value) == value


@pytest.mark.parametrize(
    ("type_", "value", "unit", "expected", "canonical"),
    [
        ("body-weight", "154.3", "[lb_av]", "70.0", "kg"),
        ("body-weight", "200", "[lb_av]", "90.7", "kg"),
        ("body-weight", "3500", "g", "3.5", "kg"),
        ("body-temperature", "98.6", "[degF]", "37.0", "Cel"),
        ("body-temperature", "101.3", "[degF]", "38.5", "Cel"),
        ("body-temperature", "95", "[degF]", "35.0", "Cel"),
        ("blood-glucose", "100", "mg/dL", "5.6", "mmol/L"),
        ("blood-glucose", "180", "mg/dL", "10.0", "mmol/L"),
        ("blood-glucose", "72", "mg/dL", "4.0", "mmol/L"),
        ("body-height", "70", "[in_i]", "177.8", "cm"),
        ("heart-rate", "72", "{beats}/min", "72", "/min"),
    ],
)
def test_conversions_round_to_the_customary_decimals(
    type_: str, value: str, unit: str, expected: str, canonical: str
) -> None:
    result = _run(_single(type_, value, unit)).value
    assert result == Quantity(Decimal(expected), canonical)
    assert str(result.value) == expected


def test_kpa_converts_to_mmhg() -> None:
    result = _run(_bp(systolic=("16.0", "kPa"), diastolic=("10.7", "kPa"), mean=("12.5", "kPa")))
    assert {k: str(q.value) for k, q in result.components.items()} == {
        "systolic": "120",
        "diastolic": "80",
        "mean": "94",
    }
    assert {q.unit for q in result.components.values()} == {"mm[Hg]"}


def test_rounding_is_half_up_and_ignores_the_thread_context() -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN
        result = _run(_single("body-weight", "154.3", "[lb_av]")).value
    assert result is not None and str(result.value) == "70.0"
    assert _run(_single("body-weight", "2450", "g")).value == Quantity(Decimal("2.5"), "kg")


def test_components_come_out_in_catalogue_order() -> None:
    m = _bp(mean=("93", "mm[Hg]"), diastolic=("80", "mm[Hg]"), systolic=("120", "mm[Hg]"))
    result = _run(m)
    assert list(result.components) == ["systolic", "diastolic", "mean"]


def test_mean_is_optional() -> None:
    result = _run(_bp(systolic=("120", "mm[Hg]"), diastolic=("80", "mm[Hg]")))
    assert set(result.components) == {"systolic", "diastolic"}


def test_other_fields_are_untouched() -> None:
    m = _single("body-weight", "154.3", "[lb_av]")
    result = _run(m)
    assert (result.device_system, result.device_id, result.type, result.effective) == (
        m.device_system,
        m.device_id,
        m.type,
        m.effective,
    )
    assert result.identity == m.identity


@pytest.mark.parametrize(
    ("type_", "value", "unit"),
    [
        ("oxygen-saturation", "101", "%"),
        ("oxygen-saturation", "49", "%"),
        ("heart-rate", "0", "/min"),
        ("heart-rate", "301", "/min"),
        ("body-weight", "4000", "kg"),
        ("body-weight", "0.4", "kg"),
        ("body-weight", "1E+40", "[lb_av]"),
        ("body-temperature", "45.1", "Cel"),
        ("body-temperature", "120", "[degF]"),
        ("respiratory-rate", "2", "/min"),
        ("blood-glucose", "1000", "mg/dL"),
        ("body-weight", "NaN", "kg"),
        ("body-weight", "Infinity", "kg"),
    ],
)
def test_implausible_values_are_rejected(type_: str, value: str, unit: str) -> None:
    with pytest.raises(PlausibilityError) as caught:
        _run(_single(type_, value, unit))
    assert caught.value.code == "implausible"
    assert type_ in str(caught.value)


@pytest.mark.parametrize(
    ("type_", "value", "unit"),
    [
        ("oxygen-saturation", "100", "%"),
        ("oxygen-saturation", "50", "%"),
        ("heart-rate", "20", "/min"),
        ("heart-rate", "300", "/min"),
        ("body-weight", "0.5", "kg"),
        ("body-weight", "400", "kg"),
    ],
)
def test_limits_are_inclusive(type_: str, value: str, unit: str) -> None:
    assert _run(_single(type_, value, unit)).value == Quantity(Decimal(value), unit)


@pytest.mark.parametrize(
    "components",
    [
        {"systolic": ("80", "mm[Hg]"), "diastolic": ("80", "mm[Hg]")},
        {"systolic": ("80", "mm[Hg]"), "diastolic": ("90", "mm[Hg]")},
        {"systolic": ("12.0", "kPa"), "diastolic": ("90", "mm[Hg]")},
        {"systolic": ("310", "mm[Hg]"), "diastolic": ("80", "mm[Hg]")},
        {"systolic": ("50", "kPa"), "diastolic": ("80", "mm[Hg]")},
        {"systolic": ("120", "mm[Hg]"), "diastolic": ("19", "mm[Hg]")},
    ],
)
def test_implausible_blood_pressure_is_rejected(components: dict[str, tuple[str, str]]) -> None:
    with pytest.raises(PlausibilityError, match="blood-pressure"):
        _run(_bp(**components))


@pytest.mark.parametrize(
    ("type_", "unit"),
    [("heart-rate", "Hz"), ("body-temperature", "degC"), ("body-weight", "lb"), ("heart-rate", "")],
)
def test_unknown_units_are_rejected(type_: str, unit: str) -> None:
    with pytest.raises(UnitError) as caught:
        _run(_single(type_, "70", unit))
    assert caught.value.code == "unit"
    assert repr(unit) in str(caught.value)


def test_a_non_ucum_component_unit_is_rejected() -> None:
    with pytest.raises(UnitError, match=r"blood-pressure\.systolic"):
        _run(_bp(systolic=("120", "mmHg"), diastolic=("80", "mm[Hg]")))


def test_an_unknown_type_is_rejected() -> None:
    with pytest.raises(UnitError, match="unknown measurement type 'pulse'"):
        _run(_single("pulse", "70", "/min"))


@pytest.mark.parametrize(
    "m",
    [
        Measurement(EUI64_SYSTEM, "FE-ED", "heart-rate", WHEN),
        _bp(systolic=("120", "mm[Hg]")),
        _bp(systolic=("120", "mm[Hg]"), diastolic=("80", "mm[Hg]"), pulse=("70", "/min")),
        replace(
            _bp(systolic=("120", "mm[Hg]"), diastolic=("80", "mm[Hg]")),
            value=Quantity(Decimal(1), "mm[Hg]"),
        ),
        replace(_single("heart-rate", "70", "/min"), components={"x": Quantity(Decimal(1), "1")}),
    ],
    ids=["no-value", "missing-diastolic", "unknown-component", "panel-value", "components"],
)
def test_badly_shaped_measurements_are_data_errors(m: Measurement) -> None:
    with pytest.raises(DataError) as caught:
        _run(m)
    assert caught.value.code == "invalid-data"


def test_data_error_carries_message_and_code() -> None:
    error = DataError("bad thing", code="other")
    assert (str(error), error.code, error.message) == ("bad thing", "other", "bad thing")
    assert UnitError("u").code == "unit" and PlausibilityError("p").code == "implausible"
    assert DataError("d").code == "invalid-data"


def test_missing_limits_are_a_configuration_error() -> None:
    limits = replace(LIMITS, types={k: v for k, v in LIMITS.types.items() if k != "heart-rate"})
    with pytest.raises(KeyError, match="heart-rate"):
        normalise(_single("heart-rate", "70", "/min"), CATALOGUE, limits)


def _broken_limits(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> Path:
    (tmp_path / "plausibility.schema.json").write_bytes(
        (CONFIG_DIR / "plausibility.schema.json").read_bytes()
    )
    data = yaml.safe_load((CONFIG_DIR / "plausibility.yaml").read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "plausibility.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_plausibility_schema_rejects_a_missing_max(tmp_path: Path) -> None:
    path = _broken_limits(tmp_path, lambda d: d["types"]["heart-rate"].pop("max"))
    with pytest.raises(CatalogueError) as caught:
        load_plausibility(tmp_path)
    assert str(path) in str(caught.value) and "$.types['heart-rate']" in str(caught.value)


def test_plausibility_rejects_min_above_max(tmp_path: Path) -> None:
    _broken_limits(tmp_path, lambda d: d["types"]["heart-rate"].update(min=400))
    with pytest.raises(CatalogueError, match=r"\$\.types\['heart-rate'\]: min is above max"):
        load_plausibility(tmp_path)


def test_plausibility_rejects_an_order_rule_without_limits(tmp_path: Path) -> None:
    _broken_limits(tmp_path, lambda d: d["types"]["blood-pressure"]["below"].append(["a", "b"]))
    with pytest.raises(CatalogueError, match=r"below\[1\]"):
        load_plausibility(tmp_path)
