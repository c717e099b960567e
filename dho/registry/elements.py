"""Reading FHIR elements of an entry's resource: objects, text, identifiers, date-times."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from dho.registry.bundle import Entry

_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON array; nothing for anything else."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A string without surrounding blanks; None when empty or not a string."""
    return value.strip() or None if isinstance(value, str) else None


def identifiers(res: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(system, value) of each identifier that has both."""
    for ident in dicts(res.get("identifier")):
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and isinstance(value, str):
            yield system, value.strip()


def identifier_value(res: dict[str, Any], system: str) -> str | None:
    """The value of the first identifier in `system`."""
    return next((v for s, v in identifiers(res) if s == system), None)


def required_text(entry: Entry, value: Any, what: str) -> str:
    found = text(value)
    if found is None:
        raise entry.fail(f"needs a {what}")
    return found


def bounded(entry: Entry, value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise entry.fail(f"{what} is longer than {limit} characters")
    return value


def optional(entry: Entry, value: str | None, limit: int, what: str) -> str | None:
    return None if value is None else bounded(entry, value, limit, what)


def instant(entry: Entry, value: Any, path: str) -> datetime:
    """A FHIR dateTime with seconds and a time zone."""
    if not (isinstance(value, str) and _DATE_TIME.fullmatch(value)):
        raise entry.fail(f"{path} must be a date-time with seconds and a time zone, not {value!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise entry.fail(f"{path} {value!r} is not a valid date-time") from exc
