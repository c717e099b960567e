"""The measurement-type catalogue: every entry checked, schema errors name file and path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dho.catalogue import (
    LOINC,
    MDC,
    VITALSIGNS_PROFILE,
    CatalogueError,
    MeasurementType,
    default_catalogue,
    load_catalogue,
)
from dho.ingest.normalise import load_plausibility

ROOT = Path(__file__).resolve().parents[1]
FHIR_DIR = ROOT / "fhir"
CATALOGUE = load_catalogue(FHIR_DIR)
LIMITS = load_plausibility(ROOT / "config")
TYPES = sorted(CATALOGUE.types)


def _copy(tmp_path: Path) -> Path:
    for name in ("measurement-types.yaml", "measurement-types.schema.json"):
        (tmp_path / name).write_bytes((FHIR_DIR / name).read_bytes())
    return tmp_path / "measurement-types.yaml"


def _write_broken(tmp_path: Path, data: object) -> Path:
    path = _copy(tmp_path)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _source() -> dict[str, Any]:
    text = (FHIR_DIR / "measurement-types.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_the_catalogue_has_the_expected_types() -> None:
    expected = {
        "blood-pressure",
        "heart-rate",
        "oxygen-saturation",
        "respiratory-rate",
        "body-temperature",
        "body-weight",
        "blood-glucose",
    }
    assert expected <= set(CATALOGUE.types)


@pytest.mark.parametrize("key", TYPES)
def test_every_type_is_complete(key: str) -> None:
    mtype = CATALOGUE.get(key)
    assert mtype.key == key and mtype.title
    assert mtype.loinc, "every type needs a LOINC code"
    assert any(c.system == MDC for c in mtype.codes), "every type needs an MDC code"
    assert mtype.is_panel == (mtype.unit is None)
    if mtype.is_vital_sign:
        assert mtype.profiles == (VITALSIGNS_PROFILE, mtype.profile)
        assert mtype.profile and mtype.profile.startswith(
            "http://hl7.org/fhir/StructureDefinition/"
        )
    else:
        assert mtype.profiles == ()


@pytest.mark.parametrize("key", TYPES)
def test_every_type_has_plausibility_limits_in_its_canonical_unit(key: str) -> None:
    mtype = CATALOGUE.get(key)
    bounds = LIMITS.get(key)
    if mtype.is_panel:
        assert bounds.components is not None
        assert set(bounds.components) == {c.key for c in mtype.components}
        for component in mtype.components:
            assert bounds.components[component.key].unit == component.unit.code
    else:
        assert mtype.unit is not None and bounds.value is not None
        assert bounds.value.unit == mtype.unit.code


def test_plausibility_names_only_catalogue_types() -> None:
    assert set(LIMITS.types) <= set(CATALOGUE.types)


def test_blood_pressure_components() -> None:
    bp = CATALOGUE.get("blood-pressure")
    assert bp.loinc == ("85354-9",)
    assert [(c.key, c.required) for c in bp.components] == [
        ("systolic", True),
        ("diastolic", True),
        ("mean", False),
    ]
    assert [c.code for c in bp.component("systolic").codes] == ["8480-6", "150021"]
    assert [c.code for c in bp.component("diastolic").codes] == ["8462-4", "150022"]
    assert [(c.system, c.code) for c in bp.component("mean").codes] == [(MDC, "150023")]
    with pytest.raises(KeyError, match="pulse"):
        bp.component("pulse")


def test_oxygen_saturation_has_both_loinc_codes() -> None:
    assert CATALOGUE.get("oxygen-saturation").loinc == ("2708-6", "59408-5")


def test_glucose_is_laboratory_in_mmol_per_litre() -> None:
    glucose = CATALOGUE.get("blood-glucose")
    assert glucose.category.code == "laboratory" and glucose.profile is None
    assert glucose.loinc == ("14743-9",)
    assert glucose.unit is not None and glucose.unit.code == "mmol/L"
    mg = glucose.unit.conversion("mg/dL")
    assert mg is not None and mg.loinc == "41653-7"


def test_get_unknown_type_names_it() -> None:
    with pytest.raises(KeyError, match="unknown measurement type 'pulse'"):
        CATALOGUE.get("pulse")


@pytest.mark.parametrize(
    ("system", "code", "key"),
    [
        (MDC, "149530", "heart-rate"),
        (MDC, "147842", "heart-rate"),
        (MDC, "160184", "blood-glucose"),
        (LOINC, "41653-7", "blood-glucose"),
        (LOINC, "85354-9", "blood-pressure"),
    ],
)
def test_by_code(system: str, code: str, key: str) -> None:
    assert CATALOGUE.by_code(system, code).key == key


def test_by_code_unknown() -> None:
    with pytest.raises(KeyError):
        CATALOGUE.by_code(LOINC, "0000-0")


@pytest.mark.parametrize(
    ("code", "known"),
    [
        ("150456", True),  # a type's own code
        ("149530", True),  # an alias (pulse from a pulse oximeter)
        ("150020", True),  # a panel
        ("150021", True),  # a component of the panel
        ("160184", True),  # known in two units
        ("67996", False),  # battery level: device information, no type
        ("8867-4", False),  # a LOINC code is not an MDC code
        ("", False),
    ],
)
def test_knows_mdc_in_any_unit(code: str, known: bool) -> None:
    assert CATALOGUE.knows_mdc(code) is known


def test_default_catalogue_is_loaded_once() -> None:
    first = default_catalogue()
    assert first is default_catalogue()
    assert isinstance(first.get("heart-rate"), MeasurementType)


def test_schema_rejects_a_missing_field(tmp_path: Path) -> None:
    data = _source()
    del data["types"]["heart-rate"]["unit"]["decimals"]
    path = _write_broken(tmp_path, data)
    with pytest.raises(CatalogueError) as caught:
        load_catalogue(tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert "$.types['heart-rate'].unit" in message and "decimals" in message


def test_schema_rejects_a_value_on_a_panel(tmp_path: Path) -> None:
    data = _source()
    data["types"]["blood-pressure"]["unit"] = {"code": "mm[Hg]", "display": "mmHg", "decimals": 0}
    _write_broken(tmp_path, data)
    expected = r"\$\.types\['blood-pressure'\]\.unit: is not allowed"
    with pytest.raises(CatalogueError, match=expected):
        load_catalogue(tmp_path)


def test_schema_rejects_a_numeric_code(tmp_path: Path) -> None:
    data = _source()
    data["types"]["body-weight"]["code"][1]["code"] = 188736
    _write_broken(tmp_path, data)
    with pytest.raises(CatalogueError, match=r"\$\.types\['body-weight'\]\.code\[1\]\.code"):
        load_catalogue(tmp_path)


def test_a_vital_sign_needs_a_profile(tmp_path: Path) -> None:
    data = _source()
    del data["types"]["heart-rate"]["profile"]
    _write_broken(tmp_path, data)
    with pytest.raises(CatalogueError, match=r"\$\.types\['heart-rate'\]\.profile"):
        load_catalogue(tmp_path)


def test_a_code_used_twice_is_rejected(tmp_path: Path) -> None:
    data = _source()
    data["types"]["respiratory-rate"]["code"][0]["code"] = "8867-4"
    _write_broken(tmp_path, data)
    with pytest.raises(CatalogueError, match="8867-4 is also used by"):
        load_catalogue(tmp_path)


def test_an_unknown_category_is_rejected(tmp_path: Path) -> None:
    data = _source()
    data["types"]["blood-glucose"]["category"] = "survey"
    _write_broken(tmp_path, data)
    with pytest.raises(CatalogueError, match=r"\.category: 'survey'"):
        load_catalogue(tmp_path)


def test_broken_yaml_is_rejected(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    path.write_text("types: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(tmp_path)


def test_a_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path)
