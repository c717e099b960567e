"""Decode stage: payload bytes → measurements, as the message's adapter describes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from dho import jsonutil
from dho.ingest.adapter_catalogue import Adapter, AdapterCatalogue, find, first
from dho.ingest.errors import DataError
from dho.ingest.measurement import Measurement, Quantity, RawMessage

MAX_ITEMS_PER_MESSAGE = 1000
MAX_ID_LENGTH = 200
MAX_TYPE_LENGTH = 64


class DecodeError(DataError):
    code = "decode"


def decode(raw: RawMessage, catalogue: AdapterCatalogue) -> tuple[str | None, list[Measurement]]:
    """The message id the payload carries (if any) and its measurements, or DecodeError."""
    adapter = _adapter(raw.adapter, catalogue)
    document = _parse_json(raw.payload)
    items = _items(document, adapter)
    message_id = first(document, adapter.message_id) if adapter.message_id else None
    if message_id is not None and (
        not isinstance(message_id, str | int) or not 0 < len(str(message_id)) <= MAX_ID_LENGTH
    ):
        raise DecodeError(f"message_id must be a string of 1 to {MAX_ID_LENGTH} characters")
    measurements = [_measurement(item, index, adapter) for index, item in enumerate(items)]
    return (str(message_id) if message_id is not None else None), measurements


def _adapter(name: str, catalogue: AdapterCatalogue) -> Adapter:
    if name in catalogue.broken:
        raise DecodeError(f"adapter {name!r} is disabled: {catalogue.broken[name]}", code="adapter")
    adapter = catalogue.adapters.get(name)
    if adapter is None:
        raise DecodeError(f"no adapter named {name!r}", code="adapter")
    return adapter


def _parse_json(payload: bytes) -> Any:
    try:
        return jsonutil.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"payload is not valid JSON: {exc}") from exc


def _items(document: Any, adapter: Adapter) -> list[Any]:
    for path in adapter.items:
        if path == "$" and not isinstance(document, dict):
            continue
        found = find(document, path)
        if found:
            if len(found) > MAX_ITEMS_PER_MESSAGE:
                raise DecodeError(f"more than {MAX_ITEMS_PER_MESSAGE} measurements in one message")
            return found
    raise DecodeError("the message holds no measurements")


def _measurement(item: Any, index: int, adapter: Adapter) -> Measurement:
    where = f"measurement {index}"
    if not isinstance(item, dict):
        raise DecodeError(f"{where}: expected an object")
    fields = adapter.fields
    device_id = _text(first(item, fields["device_id"]), f"{where}: device", MAX_ID_LENGTH)
    system = first(item, fields.get("device_system", ())) or adapter.defaults.get("device_system")
    source_type = _text(first(item, fields["type"]), f"{where}: type", MAX_TYPE_LENGTH)
    components = first(item, fields.get("components", ()))
    value = first(item, fields.get("value", ()))
    unit = first(item, fields.get("unit", ()))
    if components is None and value is None:
        raise DecodeError(f"{where}: neither a value nor components")
    return Measurement(
        device_system=_text(system, f"{where}: device system", MAX_ID_LENGTH),
        device_id=device_id,
        type=adapter.types.get(source_type, source_type),
        effective=_time(first(item, fields["time"]), where),
        value=None if value is None else _quantity(value, unit, where),
        components=_components(components, where) if components is not None else {},
    )


def _text(value: Any, what: str, max_length: int = MAX_ID_LENGTH) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DecodeError(f"{what} is missing or not a string")
    if len(value.strip()) > max_length:
        raise DecodeError(f"{what} is longer than {max_length} characters")
    return value.strip()


def _time(value: Any, where: str) -> datetime:
    text = _text(value, f"{where}: time")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DecodeError(f"{where}: time {text!r} is not an ISO 8601 date-time") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise DecodeError(f"{where}: time {text!r} has no UTC offset", code="time-zone")
    return parsed


def _quantity(value: Any, unit: Any, where: str) -> Quantity:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise DecodeError(f"{where}: value must be a number")
    return Quantity(value=Decimal(value), unit=_text(unit, f"{where}: unit"))


def _components(components: Any, where: str) -> dict[str, Quantity]:
    if not isinstance(components, dict) or not components:
        raise DecodeError(f"{where}: components must be an object of name → {{value, unit}}")
    result: dict[str, Quantity] = {}
    for name, component in components.items():
        if not isinstance(component, dict):
            raise DecodeError(f"{where}: component {name!r} must be an object")
        result[name] = _quantity(component.get("value"), component.get("unit"), f"{where}.{name}")
    return result
