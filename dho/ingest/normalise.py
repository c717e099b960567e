"""The normalise stage: canonical UCUM units (maps from the UCUM library), then plausibility."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from pathlib import Path
from typing import Any

from dho.catalogue import (
    Catalogue,
    CatalogueError,
    MeasurementType,
    UnitConversion,
    UnitSpec,
    json_path,
    load_yaml,
    number,
)
from dho.ingest.errors import DataError, PlausibilityError, UnitError
from dho.ingest.measurement import Measurement, Quantity

PLAUSIBILITY_FILE = "plausibility.yaml"
PLAUSIBILITY_SCHEMA = "plausibility.schema.json"

# Fixed arithmetic, independent of the thread's decimal context: 28 digits, half-up rounding.
_ARITHMETIC = Context(
    prec=28, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow]
)


@dataclass(frozen=True, slots=True)
class Range:
    """An inclusive plausible range in the canonical unit."""

    low: Decimal
    high: Decimal
    unit: str

    def __contains__(self, value: object) -> bool:
        return isinstance(value, Decimal) and self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.low}..{self.high} {self.unit}"


@dataclass(frozen=True, slots=True)
class TypeLimits:
    """The plausible range of one type's value, or of each component and their order."""

    value: Range | None = None
    components: Mapping[str, Range] | None = None
    below: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PlausibilityLimits:
    """Plausibility limits per measurement type (`config/plausibility.yaml`)."""

    types: dict[str, TypeLimits]

    def get(self, key: str) -> TypeLimits:
        """The limits of type `key`; KeyError (a configuration error) when none are set."""
        try:
            return self.types[key]
        except KeyError:
            raise KeyError(f"no plausibility limits for measurement type {key!r}") from None


def normalise(m: Measurement, catalogue: Catalogue, limits: PlausibilityLimits) -> Measurement:
    """The measurement in canonical units; UnitError, PlausibilityError or DataError if bad."""
    try:
        mtype = catalogue.get(m.type)
    except KeyError:
        raise UnitError(f"unknown measurement type {m.type!r}", code="unknown-type") from None
    bounds = limits.get(m.type)
    if mtype.is_panel:
        return _normalise_panel(m, mtype, bounds)
    return _normalise_single(m, mtype, bounds)


def load_plausibility(config_dir: Path) -> PlausibilityLimits:
    """Load `plausibility.yaml` from `config_dir`, schema-checked; CatalogueError if broken."""
    path = config_dir / PLAUSIBILITY_FILE
    data = load_yaml(path, config_dir / PLAUSIBILITY_SCHEMA)
    return PlausibilityLimits(
        {key: _type_limits(raw, path, key) for key, raw in data["types"].items()}
    )


def _normalise_single(m: Measurement, mtype: MeasurementType, bounds: TypeLimits) -> Measurement:
    if m.value is None or m.components or mtype.unit is None:
        raise DataError(f"{m.type}: expects one value and no components")
    value = _to_canonical(m.value, mtype.unit, m.type)
    _check_range(value, bounds.value, m.type)
    return replace(m, value=value)


def _normalise_panel(m: Measurement, mtype: MeasurementType, bounds: TypeLimits) -> Measurement:
    _check_component_names(m, mtype)
    values = {
        c.key: _to_canonical(m.components[c.key], c.unit, f"{m.type}.{c.key}")
        for c in mtype.components
        if c.key in m.components
    }
    ranges = bounds.components or {}
    for key, quantity in values.items():
        _check_range(quantity, ranges.get(key), f"{m.type}.{key}")
    _check_order(values, bounds.below, m.type)
    return replace(m, components=values)


def _check_component_names(m: Measurement, mtype: MeasurementType) -> None:
    if m.value is not None:
        raise DataError(f"{m.type}: a panel has components, not a value")
    unknown = sorted(set(m.components) - {c.key for c in mtype.components})
    if unknown:
        raise DataError(f"{m.type}: unknown component(s) {', '.join(unknown)}")
    missing = [c.key for c in mtype.components if c.required and c.key not in m.components]
    if missing:
        raise DataError(f"{m.type}: missing component(s) {', '.join(missing)}")


def _to_canonical(quantity: Quantity, spec: UnitSpec, label: str) -> Quantity:
    conversion = spec.conversion(quantity.unit)
    if conversion is None:
        accepted = ", ".join(spec.accepted)
        raise UnitError(f"{label}: unit {quantity.unit!r} is not accepted (use {accepted})")
    if not quantity.value.is_finite():
        raise PlausibilityError(f"{label}: {quantity.value!r} is not a finite decimal")
    if conversion.is_identity:
        return Quantity(quantity.value, spec.code)
    return Quantity(_convert(quantity.value, conversion, spec.decimals, label), spec.code)


def _convert(value: Decimal, conversion: UnitConversion, decimals: int, label: str) -> Decimal:
    ctx = _ARITHMETIC
    try:
        exact = ctx.add(ctx.multiply(value, conversion.map.factor), conversion.map.offset)
        return exact.quantize(Decimal(1).scaleb(-decimals), context=ctx)
    except (InvalidOperation, Overflow) as exc:
        raise PlausibilityError(f"{label}: {value} {conversion.unit} is out of range") from exc


def _check_range(quantity: Quantity, bounds: Range | None, label: str) -> None:
    if bounds is None:
        raise KeyError(f"no plausibility limits for {label}")
    if quantity.value not in bounds:
        raise PlausibilityError(
            f"{label}: {quantity.value} {quantity.unit} is outside the plausible range {bounds}"
        )


def _check_order(
    values: Mapping[str, Quantity], below: tuple[tuple[str, str], ...], label: str
) -> None:
    for lower, higher in below:
        if lower not in values or higher not in values:
            continue
        low, high = values[lower].value, values[higher].value
        if low >= high:
            raise PlausibilityError(f"{label}: {lower} {low} is not below {higher} {high}")


def _type_limits(raw: Mapping[str, Any], path: Path, key: str) -> TypeLimits:
    if "components" not in raw:
        return TypeLimits(value=_range(raw, path, ("types", key)))
    components = {
        name: _range(spec, path, ("types", key, "components", name))
        for name, spec in raw["components"].items()
    }
    below = tuple((lower, higher) for lower, higher in raw.get("below", ()))
    for index, pair in enumerate(below):
        if not set(pair) <= set(components):
            where = json_path(("types", key, "below", index))
            raise CatalogueError(f"{path}: {where}: names a component without limits")
    return TypeLimits(components=components, below=below)


def _range(raw: Mapping[str, Any], path: Path, where: tuple[str, ...]) -> Range:
    bounds = Range(number(raw["min"]), number(raw["max"]), raw["unit"])
    if bounds.low > bounds.high:
        raise CatalogueError(f"{path}: {json_path(where)}: min is above max")
    return bounds
