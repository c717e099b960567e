"""Strict readers for HL7 v2 (ER7) fields: text, TS times, NM numbers, EUI-64, patient ids.

python-hl7 parses the segments; these helpers read single values out of them without its
leniencies (its time parser accepts `2026abc` and drops a two-digit offset).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import hl7

from dho.ingest.errors import Unparseable
from dho.ingest.identifiers import canonical_device
from dho.ingest.measurement import EUI64_SYSTEM, TimeFlag
from dho.ingest.times import EARLIEST, LATEST, local

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
_NATIONAL_OIDS = {FNR_SYSTEM[8:]: FNR_SYSTEM, DNR_SYSTEM[8:]: DNR_SYSTEM}
_NATIONAL_TYPES = {"FNR": FNR_SYSTEM, "DNR": DNR_SYSTEM}

_TS = re.compile(
    r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?(?:([+-])(\d{2})(\d{2}))?"
)
_NM = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_EUI64 = re.compile(r"[0-9A-Fa-f]{16}")
_MAX_NUMBER = 32
_FRAMING = "\x0b\x1c\r\n\t "

# Exceptions python-hl7 raises on malformed input (an assert guards its separator handling).
HL7_ERRORS = (
    hl7.HL7Exception,
    IndexError,
    KeyError,
    ValueError,
    AttributeError,
    TypeError,
    AssertionError,
)


def er7_text(payload: bytes) -> str:
    """The payload as text with `\\r` between segments: MLLP framing, blank lines and `\\n` gone."""
    try:
        decoded = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unparseable(f"the message is not UTF-8 text: {exc.reason}") from exc
    lines = decoded.strip(_FRAMING).replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\r".join(line for line in lines if line.strip())


def text(segment: Any, field: int, component: int = 1, sub: int = 1, repetition: int = 1) -> str:
    """One unescaped value of a segment, stripped; '' when it was not sent."""
    if field >= len(segment):
        return ""
    node: Any = segment[field]
    path = (repetition, component, sub)
    for depth, index in enumerate(path):
        if isinstance(node, str):
            if any(i != 1 for i in path[depth:]):
                return ""
            break
        if index > len(node):
            return ""
        node = node[index - 1]
    while not isinstance(node, str):
        node = node[0] if len(node) else ""
    return _unescape(node, segment.separators, segment.esc).strip()


def _unescape(value: str, separators: str, esc: str) -> str:
    """The separator escapes (F, R, S, T and E) replaced; other escape sequences kept as sent."""
    if not esc or esc not in value:
        return value
    meaning = dict(zip("FRST", separators[1:], strict=False))
    meaning["E"] = esc
    out, rest = [], value
    while esc in rest:
        before, _, after = rest.partition(esc)
        sequence, closed, tail = after.partition(esc)
        out.append(before)
        if closed and sequence in meaning:
            out.append(meaning[sequence])
            rest = tail
        elif closed:
            out.append(esc + sequence + esc)
            rest = tail
        else:
            out.append(esc + after)
            rest = ""
    return "".join(out) + rest


def raw_field(segment: Any, field: int) -> str:
    """A whole field as sent (all repetitions and components, still escaped); '' if absent."""
    return str(segment[field]).strip() if field < len(segment) else ""


def components(segment: Any, field: int) -> list[str]:
    """The unescaped components of a field's first repetition (trailing empty ones dropped)."""
    if field >= len(segment) or not segment[field]:
        return []
    first = segment[field][0]
    count = len(first) if isinstance(first, hl7.Repetition) else 1
    values = [text(segment, field, n) for n in range(1, count + 1)]
    while values and not values[-1]:
        values.pop()
    return values


def repetitions(segment: Any, field: int) -> int:
    """How many repetitions a field has (0 when it was not sent)."""
    return len(segment[field]) if field < len(segment) else 0


def hl7_time(value: str, zone: ZoneInfo, what: str) -> tuple[datetime, TimeFlag | None]:
    """An HL7 TS `YYYYMMDDHHMM[SS[.S{1,4}]][+/-ZZZZ]`; without an offset, local in `zone`."""
    match = _TS.fullmatch(value)
    if match is None:
        raise Unparseable(
            f"{what} {value[:40]!r} is not an HL7 time YYYYMMDDHHMM[SS[.SSSS]][+/-ZZZZ]",
            code="time",
        )
    year, month, day, hour, minute, second, fraction, sign, off_hours, off_minutes = match.groups()
    micros = int((fraction or "0").ljust(6, "0"))
    try:
        naive = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros
        )
    except ValueError as exc:
        raise Unparseable(f"{what} {value!r} is not a valid date and time", code="time") from exc
    if sign is None:
        return local(naive, zone, what)
    if int(off_hours) >= 18 or int(off_minutes) >= 60:
        raise Unparseable(f"{what} {value!r} has an offset beyond ±17:59", code="time")
    offset = timedelta(hours=int(off_hours), minutes=int(off_minutes))
    moment = naive.replace(tzinfo=timezone(-offset if sign == "-" else offset))
    if not EARLIEST <= moment < LATEST:
        raise Unparseable(f"{what} is not between {EARLIEST.year} and {LATEST.year}", code="time")
    return moment, None


def number(value: str, what: str) -> Decimal:
    """An HL7 NM value as the exact Decimal the device sent (`128`, `36.60`, `-0.5`)."""
    if len(value) > _MAX_NUMBER or not _NM.fullmatch(value):
        raise Unparseable(f"{what} {value[:40]!r} is not a number", code="not-a-number")
    return Decimal(value)


def eui64(segment: Any, field: int, what: str) -> tuple[str, str] | None:
    """The EUI-64 an EI field names (`id^^id^EUI-64` or `id^EUI-64`); None if it names none."""
    if text(segment, field, 4).upper() == "EUI-64":
        value = text(segment, field, 3) or text(segment, field, 1)
    elif text(segment, field, 2).upper() == "EUI-64":
        value = text(segment, field, 1)
    else:
        return None
    if not _EUI64.fullmatch(value):
        raise Unparseable(
            f"{what} {value[:40]!r} is not an EUI-64 of 16 hex digits", code="device-id"
        )
    return canonical_device(EUI64_SYSTEM, value)


def national_id(pid: Any) -> tuple[str, str] | None:
    """The Norwegian fødselsnummer or D-nummer in PID-3, as (system, value), if it has one."""
    for repetition in range(1, repetitions(pid, 3) + 1):
        value = text(pid, 3, 1, repetition=repetition).replace(" ", "")
        authority_id = text(pid, 3, 4, 2, repetition).removeprefix("urn:oid:")
        namespace = text(pid, 3, 4, 1, repetition).removeprefix("urn:oid:")
        id_type = text(pid, 3, 5, repetition=repetition).upper()
        system = (
            _NATIONAL_OIDS.get(authority_id)
            or _NATIONAL_OIDS.get(namespace)
            or _NATIONAL_TYPES.get(id_type)
        )
        if system is None and id_type == "NNNOR" and value:
            system = DNR_SYSTEM if value[0] in "4567" else FNR_SYSTEM
        if system is not None and value:
            return system, value
    return None
