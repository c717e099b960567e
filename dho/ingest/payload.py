"""Reading untrusted payload parts every format shares: JSON with exact decimals, numbers."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from dho import jsonutil
from dho.ingest.errors import Unparseable

MAX_ID_LENGTH = 200
MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def parse_json(payload: bytes) -> Any:
    """The payload as JSON with exact decimals; Unparseable when it is not JSON."""
    depth = _nesting_depth(payload)
    if depth > MAX_DEPTH:
        raise Unparseable(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return jsonutil.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Unparseable(f"payload is not valid JSON: {exc}") from exc


def _nesting_depth(payload: bytes) -> int:
    """The deepest bracket nesting outside strings, found without parsing (at C speed but
    for the brackets themselves)."""
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return 0
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def number(value: Any, what: str) -> Decimal:
    """A JSON number as an exact Decimal; booleans, strings and null are refused."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise Unparseable(f"{what} must be a number")
    try:
        return Decimal(value)
    except ValueError as exc:  # an integer too long to convert
        raise Unparseable(f"{what} is too long a number") from exc
