"""Classified failures of the ingest pipeline: data errors are quarantined, never retried.

Every data error has a **reason**, one of `REASONS`, which operators filter and re-drive by,
and a finer **code** that says exactly what was wrong (e.g. reason `unknown-device`, code
`unassigned-device`).
"""

from __future__ import annotations

from typing import Final, Literal

Reason = Literal[
    "unparseable",
    "unknown-adapter",
    "unknown-device",
    "not-authorised",
    "implausible",
    "future",
    "mapping-error",
    "oversized",
    "processing-error",
]
REASONS: Final[tuple[Reason, ...]] = (
    "unparseable",
    "unknown-adapter",
    "unknown-device",
    "not-authorised",
    "implausible",
    "future",
    "mapping-error",
    "oversized",
    "processing-error",
)


class DataError(Exception):
    """Bad data: quarantined with this reason, never retried."""

    code: str = "invalid-data"
    reason: Reason = "mapping-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class Unparseable(DataError):
    """The payload (or one measurement of it) cannot be read as the adapter's format."""

    code = "decode"
    reason: Reason = "unparseable"


class UnknownAdapter(DataError):
    """No adapter of that name, or its file is broken and the adapter disabled."""

    code = "unknown-adapter"
    reason: Reason = "unknown-adapter"


class Oversized(DataError):
    """Larger than a configured limit (bytes or measurements)."""

    code = "too-large"
    reason: Reason = "oversized"


class NotAuthorised(DataError):
    """The sender may not submit this (unknown gateway, or a device it is not registered for)."""

    code = "not-authorised"
    reason: Reason = "not-authorised"


class UnknownDevice(DataError):
    """The device (or patient) is not registered, or was assigned to nobody at that time."""

    code = "unknown-device"
    reason: Reason = "unknown-device"


class FromTheFuture(DataError):
    """A measurement time beyond the allowed clock skew after receipt."""

    code = "future"
    reason: Reason = "future"


class UnitError(DataError):
    """A unit (or measurement type) the catalogue does not know for this reading."""

    code = "unit"


class PlausibilityError(DataError):
    """A value outside the physiological plausibility range."""

    code = "implausible"
    reason: Reason = "implausible"
