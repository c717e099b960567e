"""UCUM units through a UCUM-aware library (ucumvert on pint), with exact Decimal arithmetic.

The library is asked once per (unit, canonical unit) pair, when a catalogue loads, for the
linear map `canonical = value * factor + offset`; the hot path only multiplies Decimals.
A mass concentration becomes a substance concentration (mg/dL → mmol/L) through the
substance's molar mass, which the catalogue gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pint.errors import DimensionalityError, PintError
from ucumvert import PintUcumRegistry

ZERO = Decimal(0)
ONE = Decimal(1)


class UcumError(ValueError):
    """A unit that is not valid UCUM, or that cannot be converted to the unit asked for."""


@dataclass(frozen=True, slots=True)
class LinearMap:
    """`canonical = value * factor + offset`, exact in Decimal."""

    factor: Decimal
    offset: Decimal = ZERO

    @property
    def is_identity(self) -> bool:
        return self.factor == ONE and self.offset == ZERO


@lru_cache(maxsize=1)
def _registry() -> Any:
    return PintUcumRegistry(non_int_type=Decimal)


def check(code: str) -> None:
    """Raise UcumError unless `code` is a valid UCUM unit expression."""
    _units(code)


def is_valid(code: str) -> bool:
    try:
        _units(code)
    except UcumError:
        return False
    return True


@lru_cache(maxsize=256)
def _units(code: str) -> Any:
    try:
        parsed = _registry().from_ucum(code)
    except Exception as exc:  # the parser raises its own and lark's exception types
        raise UcumError(f"{code!r} is not a valid UCUM unit") from exc
    # A unit that is only an annotation, such as {score}, is the unity.
    return getattr(parsed, "units", None) or _registry().dimensionless


def linear_map(source: str, target: str, molar_mass_g_per_mol: Decimal | None = None) -> LinearMap:
    """How to convert a value in `source` to `target`; UcumError when they are not commensurable."""
    return LinearMap(
        factor=_convert(ONE, source, target, molar_mass_g_per_mol)
        - _convert(ZERO, source, target, molar_mass_g_per_mol),
        offset=_convert(ZERO, source, target, molar_mass_g_per_mol),
    )


def _convert(value: Decimal, source: str, target: str, molar_mass: Decimal | None) -> Decimal:
    registry = _registry()
    quantity = registry.Quantity(value, _units(source))
    try:
        result = quantity.to(_units(target))
    except DimensionalityError:
        if molar_mass is None:
            raise UcumError(f"{source!r} cannot be converted to {target!r}") from None
        per_mole = registry.Quantity(molar_mass, _units("g/mol"))
        try:
            result = (quantity / per_mole).to(_units(target))
        except PintError as exc:
            raise UcumError(f"{source!r} cannot be converted to {target!r}") from exc
    except PintError as exc:
        raise UcumError(f"{source!r} cannot be converted to {target!r}") from exc
    magnitude = result.magnitude
    return magnitude if isinstance(magnitude, Decimal) else Decimal(str(magnitude))
