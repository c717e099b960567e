"""Classified failures of the ingest pipeline: data errors are quarantined, never retried."""

from __future__ import annotations


class DataError(Exception):
    """Bad data: quarantined with this reason, never retried."""

    code: str = "invalid-data"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class UnitError(DataError):
    """A unit (or measurement type) the catalogue does not know for this reading."""

    code = "unit"


class PlausibilityError(DataError):
    """A value outside the physiological plausibility range."""

    code = "implausible"
