"""The measurement-type catalogue (`fhir/measurement-types.yaml`): codes, units, conversions."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match

from dho import units
from dho.settings import get_settings
from dho.units import LinearMap

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
VITAL_SIGNS = "vital-signs"
VITALSIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
CATALOGUE_FILE = "measurement-types.yaml"
SCHEMA_FILE = "measurement-types.schema.json"

IDENTITY = LinearMap(Decimal(1))
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CatalogueError(ValueError):
    """A data catalogue is unreadable or breaks its schema; the message names file and path."""


@dataclass(frozen=True, slots=True)
class Coding:
    """One FHIR Coding of a catalogue entry."""

    system: str
    code: str
    display: str

    def as_fhir(self) -> dict[str, str]:
        """The Coding as FHIR JSON."""
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True, slots=True)
class UnitConversion:
    """An accepted input unit and its exact map to the canonical unit (from the UCUM library)."""

    unit: str
    map: LinearMap = IDENTITY
    loinc: str | None = None

    @property
    def is_identity(self) -> bool:
        """True when the unit is only another spelling of the canonical unit."""
        return self.map.is_identity


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """The canonical UCUM unit of a value, its display text and the units accepted for it."""

    code: str
    display: str
    decimals: int
    conversions: tuple[UnitConversion, ...] = ()

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every input unit accepted, canonical first."""
        return (self.code, *(c.unit for c in self.conversions))

    def conversion(self, unit: str) -> UnitConversion | None:
        """How to get from `unit` to the canonical unit; None when the unit is not accepted."""
        if unit == self.code:
            return UnitConversion(unit)
        return next((c for c in self.conversions if c.unit == unit), None)


@dataclass(frozen=True, slots=True)
class Component:
    """One component of a panel type (e.g. `systolic` of `blood-pressure`)."""

    key: str
    title: str
    required: bool
    codes: tuple[Coding, ...]
    unit: UnitSpec


@dataclass(frozen=True, slots=True)
class MeasurementType:
    """How one measurement type becomes an Observation: codes, category, profile, unit(s)."""

    key: str
    title: str
    category: Coding
    profile: str | None
    codes: tuple[Coding, ...]
    aliases: tuple[Coding, ...] = ()
    unit: UnitSpec | None = None
    components: tuple[Component, ...] = ()

    @property
    def is_panel(self) -> bool:
        """True for types whose values are components (blood pressure)."""
        return bool(self.components)

    @property
    def is_vital_sign(self) -> bool:
        """True for types in the vital-signs category."""
        return self.category.code == VITAL_SIGNS

    @property
    def loinc(self) -> tuple[str, ...]:
        """The LOINC codes emitted in Observation.code."""
        return tuple(c.code for c in self.codes if c.system == LOINC)

    @property
    def profiles(self) -> tuple[str, ...]:
        """The meta.profile URLs: the generic vital-signs profile and the specific one."""
        return (VITALSIGNS_PROFILE, self.profile) if self.profile else ()

    @property
    def values(self) -> tuple[tuple[str | None, UnitSpec], ...]:
        """(component key, unit) per value; a single-valued type gives (None, its unit)."""
        if self.unit is not None:
            return ((None, self.unit),)
        return tuple((c.key, c.unit) for c in self.components)

    def component(self, key: str) -> Component:
        """The component named `key`; KeyError when the type has none of that name."""
        for component in self.components:
            if component.key == key:
                return component
        known = ", ".join(c.key for c in self.components) or "none"
        raise KeyError(f"{self.key} has no component {key!r} (components: {known})")


@dataclass(frozen=True)
class Catalogue:
    """Every measurement type, keyed by `Measurement.type`."""

    types: dict[str, MeasurementType]

    def get(self, key: str) -> MeasurementType:
        """The measurement type `key`; KeyError naming the known keys when unknown."""
        try:
            return self.types[key]
        except KeyError:
            known = ", ".join(sorted(self.types))
            raise KeyError(f"unknown measurement type {key!r} (known: {known})") from None

    def by_code(self, system: str, code: str) -> MeasurementType:
        """The type a coding (emitted or alias, e.g. an MDC code) names; KeyError if none."""
        for mtype in self.types.values():
            if any(c.system == system and c.code == code for c in (*mtype.codes, *mtype.aliases)):
                return mtype
        raise KeyError(f"no measurement type has the code {system}|{code}")

    def by_mdc(self, code: str, unit: str) -> tuple[MeasurementType, str | None]:
        """The type (and component key) an MDC code means in `unit`, the pair deciding.

        The same MDC code can name readings in different units with different LOINC codes
        (glucose in mg/dL or mmol/L); the unit must be one the type accepts. KeyError if none.
        """
        known = False
        for mtype in self.types.values():
            for key, spec, codings in _coded_values(mtype):
                if any(c.system == MDC and c.code == code for c in codings):
                    known = True
                    if spec.conversion(unit) is not None:
                        return mtype, key
        if known:
            raise KeyError(f"MDC code {code} is not known in the unit {unit!r}")
        raise KeyError(f"no measurement type has the MDC code {code}")

    def knows_mdc(self, code: str) -> bool:
        """Whether some type, alias, panel or component has the MDC code, in whatever unit."""
        return any(
            c.system == MDC and c.code == code
            for mtype in self.types.values()
            for c in (
                *mtype.codes,
                *mtype.aliases,
                *(coding for part in mtype.components for coding in part.codes),
            )
        )

    def __iter__(self) -> Iterator[MeasurementType]:
        return iter(self.types.values())


def _coded_values(
    mtype: MeasurementType,
) -> Iterator[tuple[str | None, UnitSpec, tuple[Coding, ...]]]:
    if mtype.unit is not None:
        yield None, mtype.unit, (*mtype.codes, *mtype.aliases)
    for component in mtype.components:
        yield component.key, component.unit, component.codes


def json_path(parts: Iterable[str | int]) -> str:
    """A JSONPath like `$.types['heart-rate'].unit` for error messages."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}"
        else:
            out += f"[{part!r}]"
    return out


def load_yaml(path: Path, schema_path: Path) -> Any:
    """Read a YAML data file and check it against its JSON schema; CatalogueError if broken."""
    data = _read_yaml(path)
    schema = _read_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise CatalogueError(f"{path}: " + "; ".join(_describe(e) for e in errors[:10]))
    return data


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{path}: cannot read the schema: {exc}") from exc
    return schema


def _describe(error: ValidationError) -> str:
    deepest = best_match(error.context) if error.context else error
    message = "is not allowed here" if deepest.validator == "not" else deepest.message
    message = message if len(message) <= 200 else message[:197] + "..."
    return f"{json_path(deepest.absolute_path)}: {message}"


def number(value: int | float) -> Decimal:
    """A YAML number as the Decimal it was written as (floats via their shortest repr)."""
    return Decimal(str(value))


def load_catalogue(fhir_dir: Path) -> Catalogue:
    """Load `measurement-types.yaml` from `fhir_dir`, schema-checked and cross-checked."""
    path = fhir_dir / CATALOGUE_FILE
    data = load_yaml(path, fhir_dir / SCHEMA_FILE)
    categories: dict[str, str] = data["categories"]
    types = {key: _type(key, raw, categories, path) for key, raw in data["types"].items()}
    _check_unique_codes(types.values(), path)
    return Catalogue(types)


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """The catalogue in the configured `fhir_dir`, loaded once per process."""
    return load_catalogue(get_settings().fhir_dir)


def _type(
    key: str, raw: Mapping[str, Any], categories: Mapping[str, str], path: Path
) -> MeasurementType:
    where = ("types", key)
    category = raw["category"]
    if category not in categories:
        _fail(path, (*where, "category"), f"{category!r} is not one of the categories")
    profile = raw.get("profile")
    if (category == VITAL_SIGNS) != (profile is not None):
        _fail(path, (*where, "profile"), "vital-signs types, and only they, need a profile")
    codes = _codings(raw["code"])
    if not any(c.system == LOINC for c in codes):
        _fail(path, (*where, "code"), "needs a LOINC coding")
    return MeasurementType(
        key=key,
        title=raw["title"],
        category=Coding(CATEGORY_SYSTEM, category, categories[category]),
        profile=profile,
        codes=codes,
        aliases=_codings(raw.get("aliases", ())),
        unit=_unit(raw, path, where, _molar_mass(raw)) if "unit" in raw else None,
        components=tuple(
            _component(name, spec, path, (*where, "components", name))
            for name, spec in raw.get("components", {}).items()
        ),
    )


def _component(key: str, raw: Mapping[str, Any], path: Path, where: tuple[str, ...]) -> Component:
    codes = _codings(raw["code"])
    return Component(key, raw["title"], raw["required"], codes, _unit(raw, path, where, None))


def _codings(raw: Sequence[Mapping[str, str]]) -> tuple[Coding, ...]:
    return tuple(Coding(c["system"], c["code"], c["display"]) for c in raw)


def _molar_mass(raw: Mapping[str, Any]) -> Decimal | None:
    value = raw.get("molar_mass_g_per_mol")
    return None if value is None else number(value)


def _unit(
    raw: Mapping[str, Any], path: Path, where: tuple[str, ...], molar_mass: Decimal | None
) -> UnitSpec:
    unit = raw["unit"]
    canonical = unit["code"]
    _check_ucum(canonical, path, (*where, "unit", "code"))
    conversions = []
    for index, entry in enumerate(raw.get("convert", ())):
        at: tuple[str | int, ...] = (*where, "convert", index)
        _check_ucum(entry["unit"], path, (*at, "unit"))
        try:
            linear = units.linear_map(entry["unit"], canonical, molar_mass)
        except units.UcumError as exc:
            _fail(path, at, str(exc))
        conversions.append(UnitConversion(entry["unit"], linear, entry.get("loinc")))
    spec = UnitSpec(canonical, unit["display"], unit["decimals"], tuple(conversions))
    if len(set(spec.accepted)) != len(spec.accepted):
        _fail(path, (*where, "convert"), "lists a unit twice or the canonical unit")
    return spec


def _check_ucum(code: str, path: Path, where: tuple[str | int, ...]) -> None:
    if not units.is_valid(code):
        _fail(path, where, f"{code!r} is not a valid UCUM unit")


def _check_unique_codes(types: Iterable[MeasurementType], path: Path) -> None:
    seen: dict[tuple[str, str], str] = {}
    for mtype in types:
        for coding in (*mtype.codes, *mtype.aliases):
            other = seen.setdefault((coding.system, coding.code), mtype.key)
            if other != mtype.key:
                _fail(path, ("types", mtype.key, "code"), f"{coding.code} is also used by {other}")


def _fail(path: Path, where: Iterable[str | int], message: str) -> NoReturn:
    raise CatalogueError(f"{path}: {json_path(where)}: {message}")
