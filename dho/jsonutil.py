"""JSON helpers: Decimals in and out, so FHIR decimals keep the precision the device sent.

Writing uses orjson, several times as fast as simplejson on the resources the record stage
stores; a Decimal goes in as its own text. What orjson refuses (integers beyond 64 bits,
keys that are not strings) is written by simplejson instead, with the same result.
Reading uses simplejson, which gives every non-integer number as a Decimal.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NoReturn

import orjson
import simplejson

_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(obj: Any) -> str:
    """Compact UTF-8 JSON text; Decimals are written exactly as they are (36.50 stays 36.50).

    A Decimal that is not a number (NaN, Infinity) is refused with ValueError; a datetime
    or a dataclass with TypeError. Python floats are not used for readings: orjson would
    write a non-finite one as null.
    """
    try:
        return orjson.dumps(obj, default=_fragment, option=_STRICT).decode()
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, ValueError):
            raise exc.__cause__ from None
        return simplejson.dumps(
            obj, use_decimal=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )


def _fragment(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a valid JSON number")
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps_pretty(obj: Any) -> str:
    """Indented JSON for people; Decimals exact."""
    return simplejson.dumps(obj, use_decimal=True, indent=2, ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as a Decimal; ValueError on NaN/Infinity."""
    return simplejson.loads(text, use_decimal=True, parse_constant=_reject_constant)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a valid JSON number")
