"""The one canonical measurement between adapters and FHIR, and the raw message it came in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

Transport = Literal["http", "mqtt"]
TimeFlag = Literal["local-time-assumed", "ambiguous-local-time", "nonexistent-local-time"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EUI64_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """Bytes exactly as a transport received them, with where they came from."""

    payload: bytes
    transport: Transport
    topic: str
    gateway: str
    adapter: str
    received_at: datetime
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Quantity:
    """A value with its UCUM unit; the Decimal keeps the precision the device sent."""

    value: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading of one measurement type from one device at one device time.

    `type` is a key of the measurement-type catalogue under `fhir/` (e.g. `blood-pressure`).
    `value` is set for single-valued types; `components` (keyed by component name, e.g.
    `systolic`) for panels. `effective` always carries the device's UTC offset; when the
    device sent a local time without one, `time_flag` says how it was read.
    `source_identifier` is an identifier the sender gave the reading (e.g. the PHD
    Observation identifier); `patient` is an identifier the sender claims for the patient
    (system, value), checked against the device's assignment.
    """

    device_system: str
    device_id: str
    type: str
    effective: datetime
    value: Quantity | None = None
    components: dict[str, Quantity] = field(default_factory=dict)
    time_flag: TimeFlag | None = None
    source_identifier: tuple[str, str] | None = None
    patient: tuple[str, str] | None = None

    @property
    def source_key(self) -> str | None:
        """The sender's identifier for the reading as `system|value`, when it gave one."""
        if self.source_identifier is None:
            return None
        system, value = self.source_identifier
        return f"{system}|{value}"[:400]

    @property
    def identity(self) -> str:
        """Device + type + device time to the millisecond: the measurement's unique key."""
        millis = (self.effective - _EPOCH) // timedelta(milliseconds=1)
        return f"{self.device_system}|{self.device_id}|{self.type}|{millis}"
