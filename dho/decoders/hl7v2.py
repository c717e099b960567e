"""IHE PCD-01 (Continua / PCHA H.812) HL7 v2 ORU^R01 messages → measurements.

Each OBX metric row is one measurement, except the parts of a panel: the systolic,
diastolic and mean pressures under one 150020 compound row (OBX-4 `1.0.1` with children
`1.0.1.1`…) are one blood-pressure measurement. The type is the MDC code in OBX-3 read
with the unit in OBX-6 (MDC unit codes → UCUM from `fhir/mdc-units.yaml`); the device is
the EUI-64 in OBX-18 of its MDS row (OBX-4 `1`), else of the row itself; the time is
OBX-14, else OBR-7. Rows without a value (MDS, VMD, compound headers) are structure, not
items; non-numeric rows are ignored items. Items are labelled `OBX[n]`, n counting the
message's OBX segments from 1 (HL7's segment sequence, used again in the ACK's ERR-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import hl7

from dho.catalogue import MDC, Catalogue, MeasurementType, load_yaml
from dho.decoders.hl7v2_fields import (
    HL7_ERRORS,
    er7_text,
    eui64,
    hl7_time,
    national_id,
    number,
    raw_field,
    text,
)
from dho.ingest.adapter_catalogue import Adapter
from dho.ingest.decoded import DecodeContext, Decoded, DecodedItem
from dho.ingest.errors import DataError, Oversized, UnitError, Unparseable
from dho.ingest.measurement import Measurement, Quantity, TimeFlag
from dho.ingest.payload import MAX_ID_LENGTH

UNITS_FILE = "mdc-units.yaml"
UNITS_SCHEMA = "mdc-units.schema.json"
_INFRA_PARTITION = 8  # MDC_PART_INFRA: device specialisations (MDC_DEV_SPEC_PROFILE_*)
_WITHDRAWN = {"D": "deleted", "W": "posted in error", "X": "not obtained"}

Device = tuple[str, str] | DataError


@dataclass(frozen=True, slots=True)
class _Row:
    """One OBX segment with what surrounds it (its OBR and the patient of its PID)."""

    label: str
    segment: Any
    obr: int
    obr_time: str
    patient: tuple[str, str] | None
    path: tuple[str, ...]

    @property
    def parent(self) -> tuple[int, tuple[str, ...]]:
        return self.obr, self.path[:-1]


@dataclass(frozen=True, slots=True)
class _Reading:
    """A readable metric row: what it measures, in which unit, when and by which device."""

    mtype: MeasurementType
    component: str | None
    quantity: Quantity
    base: Measurement


@dataclass(slots=True)
class _Panel:
    """The rows of one panel reading (blood pressure), joined into one measurement."""

    label: str
    header: _Row | None = None
    readings: list[tuple[_Row, _Reading]] = field(default_factory=list)
    error: DecodedItem | None = None


@dataclass(slots=True)
class _Message:
    metrics: list[_Row] = field(default_factory=list)
    devices: dict[tuple[int, str], Device] = field(default_factory=dict)
    headers: dict[tuple[int, tuple[str, ...]], tuple[_Row, MeasurementType]] = field(
        default_factory=dict
    )


def decode(payload: bytes, adapter: Adapter, ctx: DecodeContext) -> Decoded:
    """The MSH-10 message id and one item per OBX metric (a panel's rows joined)."""
    message = _parse(payload)
    message_id = _message_id(message.segment("MSH"))
    parsed = _structure(message, ctx.types)
    metrics = parsed.metrics
    if len(metrics) > ctx.max_items:
        raise Oversized(
            f"{len(metrics)} OBX measurements in one message; the limit is {ctx.max_items}",
            code="too-many-measurements",
        )
    if not metrics:
        raise Unparseable("the message holds no OBX measurement", code="no-observations")
    units = _mdc_units(ctx.fhir_dir)
    slots: list[DecodedItem | _Panel] = []
    panels: dict[tuple[int, tuple[str, ...], str], _Panel] = {}
    for row in metrics:
        _place(row, parsed, units, ctx, slots, panels, adapter.ignore_codes)
    items = tuple(_panel_item(s, ctx) if isinstance(s, _Panel) else s for s in slots)
    return Decoded(message_id, items)


def _parse(payload: bytes) -> Any:
    er7 = er7_text(payload)
    if not er7.startswith("MSH"):
        raise Unparseable("an HL7 v2 message starts with an MSH segment")
    try:
        message = hl7.parse(er7)
        count = len(message.segments("MSH"))
    except HL7_ERRORS as exc:
        raise Unparseable(f"not a readable HL7 v2 message: {exc!s:.200}") from exc
    if count != 1:
        raise Unparseable(f"{count} MSH segments: send one message per request", code="batch")
    return message


def _message_id(msh: Any) -> str:
    kind = f"{text(msh, 9, 1)}^{text(msh, 9, 2)}"
    if kind != "ORU^R01":
        raise Unparseable(
            f"MSH-9 is {raw_field(msh, 9)[:40]!r}; this adapter takes ORU^R01 only",
            code="message-type",
        )
    control_id = text(msh, 10)
    if not 0 < len(control_id) <= MAX_ID_LENGTH:
        raise Unparseable(
            f"MSH-10 (message control id) must be 1 to {MAX_ID_LENGTH} characters",
            code="message-id",
        )
    return control_id


def _structure(message: Any, types: Catalogue) -> _Message:
    """The OBX metric rows in order, the devices their MDS rows name, the panel header rows."""
    parsed = _Message()
    obr, obr_time, patient, position = 0, "", None, 0
    for segment in message:
        name = str(segment[0]).strip()
        if name == "PID":
            patient = national_id(segment)
        elif name == "OBR":
            obr, obr_time = obr + 1, text(segment, 7)
        elif name == "OBX":
            position += 1
            path = tuple(p for p in text(segment, 4).split(".") if p)
            _classify(
                _Row(f"OBX[{position}]", segment, obr, obr_time, patient, path), parsed, types
            )
    return parsed


def _classify(row: _Row, parsed: _Message, types: Catalogue) -> None:
    """Note a device (MDS) row's device, a panel's header row, or keep a metric row."""
    code = _mdc_code(row.segment) or ""
    if len(row.path) == 1 or (code.isdigit() and int(code) >> 16 == _INFRA_PARTITION):
        device: Device | None
        try:
            device = eui64(row.segment, 18, f"{row.label}: OBX-18")
        except DataError as error:
            device = error
        if device is not None:
            mds = row.path[0] if row.path else ""
            parsed.devices.setdefault((row.obr, mds), device)
            parsed.devices.setdefault((0, mds), device)
        return
    has_value = bool(raw_field(row.segment, 5))
    if not has_value and len(row.path) > 1:
        mtype = _type_named(types, code)
        if mtype is not None and mtype.is_panel:
            parsed.headers[(row.obr, row.path)] = (row, mtype)
            return
    if has_value or text(row.segment, 2).upper() == "NM":
        parsed.metrics.append(row)


def _type_named(types: Catalogue, code: str) -> MeasurementType | None:
    try:
        return types.by_code(MDC, code)
    except KeyError:
        return None


def _place(
    row: _Row,
    parsed: _Message,
    units: dict[str, str],
    ctx: DecodeContext,
    slots: list[DecodedItem | _Panel],
    panels: dict[tuple[int, tuple[str, ...], str], _Panel],
    ignored: frozenset[str],
) -> None:
    """Put one metric row's item, or its part of a panel, in its place among the items."""
    status = text(row.segment, 11).upper()
    value_type = text(row.segment, 2).upper()
    if status in _WITHDRAWN:
        slots.append(DecodedItem(row.label, note=f"OBX-11 {status}: result {_WITHDRAWN[status]}"))
        return
    if value_type not in ("NM", ""):
        slots.append(DecodedItem(row.label, note=f"OBX-2 {value_type}: not a numeric reading"))
        return
    code = _mdc_code(row.segment)
    if code in ignored:
        slots.append(DecodedItem(row.label, note=f"device information (MDC {code}): not stored"))
        return
    header = parsed.headers.get(row.parent)
    try:
        reading = _reading(row, parsed, units, ctx)
    except DataError as error:
        if header is None:
            slots.append(DecodedItem(row.label, error=error))
            return
        panel = _panel(row, header[1], header[0], slots, panels)
        panel.error = panel.error or DecodedItem(row.label, error=error)
        return
    if reading.component is None:
        slots.append(DecodedItem(row.label, measurement=reading.base))
        return
    in_header = header is not None and header[1].key == reading.mtype.key
    panel = _panel(row, reading.mtype, header[0] if header and in_header else None, slots, panels)
    panel.readings.append((row, reading))


def _panel(
    row: _Row,
    mtype: MeasurementType,
    header: _Row | None,
    slots: list[DecodedItem | _Panel],
    panels: dict[tuple[int, tuple[str, ...], str], _Panel],
) -> _Panel:
    key = (row.obr, row.path[:-1], mtype.key)
    panel = panels.get(key)
    if panel is None:
        panel = _Panel(header.label if header else row.label, header)
        panels[key] = panel
        slots.append(panel)
    return panel


def _panel_item(panel: _Panel, ctx: DecodeContext) -> DecodedItem:
    """One measurement of a panel's components, at its header's OBX-14 when it has one."""
    if panel.error is not None:
        return panel.error
    first = panel.readings[0][1]
    components: dict[str, Quantity] = {}
    for row, reading in panel.readings:
        assert reading.component is not None
        if reading.component in components:
            error = Unparseable(
                f"{row.label}: a second {reading.component} value in one {first.mtype.key}"
            )
            return DecodedItem(row.label, error=error)
        components[reading.component] = reading.quantity
    effective, flag = first.base.effective, first.base.time_flag
    if panel.header is not None and text(panel.header.segment, 14):
        try:
            effective, flag = _time(panel.header, ctx)
        except DataError as error:
            return DecodedItem(panel.header.label, error=error)
    measurement = replace(first.base, components=components, effective=effective, time_flag=flag)
    return DecodedItem(panel.label, measurement=measurement)


def _reading(row: _Row, parsed: _Message, units: dict[str, str], ctx: DecodeContext) -> _Reading:
    code = _mdc_code(row.segment)
    if code is None or not ctx.types.knows_mdc(code):
        shown = code or raw_field(row.segment, 3)[:60]
        raise UnitError(
            f"{row.label}: MDC code {shown!r} is not a known measurement", code="unknown-code"
        )
    unit = _unit(row, units)
    try:
        mtype, component = ctx.types.by_mdc(code, unit)
    except KeyError:
        raise UnitError(
            f"{row.label}: MDC code {code} is not read in the unit {unit!r}", code="unit"
        ) from None
    value = number(raw_field(row.segment, 5), f"{row.label}: OBX-5")
    device_system, device_id = _device(row, parsed)
    effective, flag = _time(row, ctx)
    base = Measurement(
        device_system=device_system,
        device_id=device_id,
        type=mtype.key,
        effective=effective,
        value=Quantity(value, unit) if component is None else None,
        time_flag=flag,
        patient=row.patient,
    )
    return _Reading(mtype, component, Quantity(value, unit), base)


def _mdc_code(segment: Any) -> str | None:
    """The MDC code of OBX-3 (its first triplet, or the alternate one after a LOINC code)."""
    for first in (1, 4):
        if text(segment, 3, first + 2).upper() == "MDC":
            code = text(segment, 3, first)
            return code if code.isdigit() and len(code) <= 10 else None
    return None


def _unit(row: _Row, units: dict[str, str]) -> str:
    code, refid, system = (text(row.segment, 6, n) for n in (1, 2, 3))
    if not code:
        raise UnitError(f"{row.label}: OBX-6 has no unit", code="unit")
    system = system.upper()
    if system == "MDC" or (code.isdigit() and not system):
        ucum = units.get(code)
        if ucum is None:
            shown = f"{code} ({refid})" if refid else code
            raise UnitError(f"{row.label}: MDC unit {shown} is not in {UNITS_FILE}", code="unit")
        return ucum
    if system in ("UCUM", ""):
        return code
    raise UnitError(f"{row.label}: OBX-6 unit system {system!r} is not MDC or UCUM", code="unit")


def _device(row: _Row, parsed: _Message) -> tuple[str, str]:
    mds = row.path[0] if row.path else ""
    device = parsed.devices.get((row.obr, mds)) or parsed.devices.get((0, mds))
    if device is None:
        device = eui64(row.segment, 18, f"{row.label}: OBX-18")
    if device is None and not row.path and len(set(parsed.devices.values())) == 1:
        device = next(iter(parsed.devices.values()))
    if isinstance(device, DataError):
        raise device
    if device is None:
        raise Unparseable(
            f"{row.label}: no EUI-64 device id in OBX-18 of its MDS row (OBX-4 {mds or '?'}) "
            "or of the row itself",
            code="missing-device-id",
        )
    return device


def _time(row: _Row, ctx: DecodeContext) -> tuple[datetime, TimeFlag | None]:
    observed = text(row.segment, 14)
    if observed:
        return hl7_time(observed, ctx.local_zone, f"{row.label}: OBX-14")
    if row.obr_time:
        return hl7_time(row.obr_time, ctx.local_zone, f"{row.label}: OBR-7")
    raise Unparseable(f"{row.label}: neither OBX-14 nor OBR-7 gives a time", code="missing-time")


@lru_cache(maxsize=4)
def _mdc_units(fhir_dir: Path) -> dict[str, str]:
    """MDC unit code → UCUM, from `fhir/mdc-units.yaml` (schema-checked), read once."""
    data = load_yaml(fhir_dir / UNITS_FILE, fhir_dir / UNITS_SCHEMA)
    return {str(code): str(entry["ucum"]) for code, entry in data["units"].items()}
