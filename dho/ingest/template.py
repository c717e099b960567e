"""Declarative JSON adapters: the adapter file says where each part of a reading sits.

Each item the `items` paths find becomes one measurement, or, with `coded`, one per
coded value (the components of a panel, such as systolic and diastolic, are joined into
one measurement). An item that cannot be read is reported alone; the others go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from decimal import DecimalException
from typing import Any

from dho.ingest.adapter_catalogue import Adapter, find, first
from dho.ingest.decoded import DecodeContext, Decoded, DecodedItem
from dho.ingest.errors import DataError, Oversized, UnitError, Unparseable
from dho.ingest.identifiers import canonical_device
from dho.ingest.measurement import Measurement, Quantity, TimeFlag
from dho.ingest.payload import MAX_ID_LENGTH, number, parse_json
from dho.ingest.times import from_epoch, parse_iso, zone_named

MAX_TYPE_LENGTH = 64


def decode_json(payload: bytes, adapter: Adapter, ctx: DecodeContext) -> Decoded:
    """The message id and the items of a JSON payload, as `adapter` describes them."""
    document = parse_json(payload)
    message_id = message_id_at(document, adapter)
    items = _items(document, adapter, ctx.max_items)
    decoded: list[DecodedItem] = []
    for index, item in enumerate(items):
        label = f"[{index}]"
        try:
            decoded.extend(_read_item(item, document, label, adapter, ctx))
        except DataError as error:
            decoded.append(DecodedItem(label, error=error))
    return Decoded(message_id, tuple(decoded))


def message_id_at(document: Any, adapter: Adapter) -> str | None:
    """The message id at the adapter's `message_id` paths (string or integer), if any."""
    if not adapter.message_id:
        return None
    value = first(document, adapter.message_id) if isinstance(document, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Unparseable(f"message_id must be a string or an integer of 1 to {MAX_ID_LENGTH}")
    text = str(value)
    if not 0 < len(text) <= MAX_ID_LENGTH:
        raise Unparseable(f"message_id must be 1 to {MAX_ID_LENGTH} characters")
    return text


def _items(document: Any, adapter: Adapter, max_items: int) -> list[Any]:
    for path in adapter.items:
        if path == "$" and not isinstance(document, dict):
            continue
        found = find(document, path)
        if found:
            if len(found) > max_items:
                raise Oversized(
                    f"{len(found)} measurements in one message; the limit is {max_items}",
                    code="too-many-measurements",
                )
            return found
    raise Unparseable("the message holds no measurements")


def _read_item(
    item: Any, root: Any, label: str, adapter: Adapter, ctx: DecodeContext
) -> list[DecodedItem]:
    if not isinstance(item, dict):
        raise Unparseable(f"{label}: expected an object")
    for refusal in adapter.refuse:
        value = first(item, (refusal.path,), root)
        if value is not None and str(value) in refusal.values:
            raise DataError(f"{label}: {refusal.message}", code=refusal.code)
    fields = adapter.fields
    device_id = text_at(item, root, fields["device_id"], f"{label}: device")
    system = first(item, fields.get("device_system", ()), root) or adapter.defaults.get(
        "device_system"
    )
    device_system, device_id = canonical_device(text(system, f"{label}: device system"), device_id)
    effective, flag = _time(item, root, label, adapter, ctx)
    base = Measurement(device_system, device_id, "", effective, time_flag=flag)
    if adapter.coded is not None:
        return list(_coded(item, root, label, base, adapter))
    return [DecodedItem(label, measurement=_plain(item, root, label, base, adapter))]


def _plain(item: Any, root: Any, label: str, base: Measurement, adapter: Adapter) -> Measurement:
    fields = adapter.fields
    source_type = text_at(item, root, fields["type"], f"{label}: type", MAX_TYPE_LENGTH)
    mtype = adapter.types.get(source_type, source_type)
    components = _components(item, root, label, adapter)
    value = first(item, fields.get("value", ()), root)
    if components is None and value is None:
        raise Unparseable(f"{label}: neither a value nor components")
    quantity = None
    if value is not None:
        unit = first(item, fields.get("unit", ()), root)
        quantity = quantity_of(value, unit, label, adapter)
    return _with(base, type=mtype, value=quantity, components=components or {})


def _components(item: Any, root: Any, label: str, adapter: Adapter) -> dict[str, Quantity] | None:
    if adapter.component_fields:
        found = {name: first(item, paths, root) for name, paths in adapter.component_fields.items()}
        present = {name: part for name, part in found.items() if part is not None}
        return _quantities(present, label, adapter) if present else None
    raw = first(item, adapter.fields.get("components", ()), root)
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise Unparseable(f"{label}: components must be an object of name → {{value, unit}}")
    return _quantities(raw, label, adapter)


def _quantities(parts: dict[str, Any], label: str, adapter: Adapter) -> dict[str, Quantity]:
    result: dict[str, Quantity] = {}
    for name, part in parts.items():
        if not isinstance(part, dict):
            raise Unparseable(f"{label}: component {name!r} must be an object")
        where = f"{label}.{name}"
        result[str(name)] = quantity_of(part.get("value"), part.get("unit"), where, adapter)
    return result


def _coded(
    item: Any, root: Any, label: str, base: Measurement, adapter: Adapter
) -> Iterator[DecodedItem]:
    """One item per coded value, the components of a panel joined where the first one sits."""
    assert adapter.coded is not None
    coded = adapter.coded
    out: list[DecodedItem | tuple[str, str]] = []
    panels: dict[str, dict[str, Quantity]] = {}
    for position, entry in enumerate(find(item, coded.each, root)):
        where = f"{label}.{position}"
        try:
            code = _code(entry, coded.code, where)
            if code in adapter.ignore_codes:
                note = f"code {code}: not a measurement this service keeps"
                out.append(DecodedItem(where, note=note))
                continue
            target = adapter.codes.get(code)
            if target is None:
                raise UnitError(f"{where}: code {code!r} is not mapped", code="unknown-code")
            quantity = _coded_quantity(entry, target.unit, where, adapter)
        except DataError as error:
            out.append(DecodedItem(where, error=error))
            continue
        if target.component is None:
            out.append(
                DecodedItem(where, measurement=_with(base, type=target.type, value=quantity))
            )
            continue
        if target.type not in panels:
            panels[target.type] = {}
            out.append((where, target.type))
        panels[target.type][target.component] = quantity
    for entry in out:
        if isinstance(entry, DecodedItem):
            yield entry
        else:
            where, type_key = entry
            panel = _with(base, type=type_key, components=panels[type_key])
            yield DecodedItem(where, measurement=panel)


def _code(entry: Any, paths: tuple[str, ...], where: str) -> str:
    if not isinstance(entry, dict):
        raise Unparseable(f"{where}: expected an object")
    code = first(entry, paths)
    if isinstance(code, bool) or not isinstance(code, str | int) or len(str(code)) > 64:
        raise Unparseable(f"{where}: the code is missing or not a string or integer")
    return str(code)


def _coded_quantity(entry: Any, unit: str | None, where: str, adapter: Adapter) -> Quantity:
    assert adapter.coded is not None
    value = number(first(entry, adapter.coded.value), f"{where}: value")
    exponent = first(entry, adapter.coded.exponent) if adapter.coded.exponent else 0
    if isinstance(exponent, bool) or not isinstance(exponent, int) or abs(exponent) > 12:
        raise Unparseable(f"{where}: the power-of-ten exponent must be a small integer")
    source_unit = first(entry, adapter.coded.unit) if adapter.coded.unit else unit
    try:
        scaled = value.scaleb(exponent)
    except DecimalException as exc:
        raise Unparseable(f"{where}: value x 10^{exponent} is out of range") from exc
    return Quantity(scaled, _unit(source_unit, where, adapter))


def quantity_of(value: Any, unit: Any, where: str, adapter: Adapter) -> Quantity:
    """A JSON number with its unit, the unit spelled as UCUM through the adapter's `units`."""
    return Quantity(number(value, f"{where}: value"), _unit(unit, where, adapter))


def _unit(unit: Any, where: str, adapter: Adapter) -> str:
    spelled = text(unit, f"{where}: unit", MAX_TYPE_LENGTH)
    return adapter.units.get(spelled, spelled)


def _time(
    item: Any, root: Any, label: str, adapter: Adapter, ctx: DecodeContext
) -> tuple[datetime, TimeFlag | None]:
    zone = zone_named(first(item, adapter.time_zone, root), ctx.local_zone)
    raw = first(item, adapter.fields["time"], root)
    what = f"{label}: time"
    if adapter.time_format == "iso8601":
        return parse_iso(text(raw, what), zone, what)
    unit_seconds = 1 if adapter.time_format == "epoch-seconds" else 1000
    return from_epoch(raw, zone, unit_seconds, what), None


def text_at(
    item: Any, root: Any, paths: tuple[str, ...], what: str, max_length: int = MAX_ID_LENGTH
) -> str:
    """The non-empty string at the first of `paths`; Unparseable when there is none."""
    return text(first(item, paths, root), what, max_length)


def text(value: Any, what: str, max_length: int = MAX_ID_LENGTH) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Unparseable(f"{what} is missing or not a string")
    if len(value.strip()) > max_length:
        raise Unparseable(f"{what} is longer than {max_length} characters")
    return value.strip()


def _with(base: Measurement, **changes: Any) -> Measurement:
    return replace(base, **changes)
