"""JSON helpers: Decimals in and out, so FHIR decimals keep the precision the device sent."""

from __future__ import annotations

from typing import Any, NoReturn

import simplejson


def dumps(obj: Any) -> str:
    """Compact UTF-8 JSON text; Decimals are written exactly as they are (36.50 stays 36.50)."""
    return simplejson.dumps(
        obj, use_decimal=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def dumps_pretty(obj: Any) -> str:
    """Indented JSON for people; Decimals exact."""
    return simplejson.dumps(obj, use_decimal=True, indent=2, ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as a Decimal; ValueError on NaN/Infinity."""
    return simplejson.loads(text, use_decimal=True, parse_constant=_reject_constant)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a valid JSON number")
