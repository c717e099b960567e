"""Accept stage: envelope checks before a payload is even parsed."""

from __future__ import annotations

from collections.abc import Mapping

from dho.ingest.errors import DataError
from dho.ingest.measurement import RawMessage


class Rejected(DataError):
    code = "rejected"


def accept(raw: RawMessage, gateways: Mapping[str, set[str]], max_bytes: int) -> set[str]:
    """The organisations the sending gateway serves; Rejected when the envelope is wrong."""
    if len(raw.payload) > max_bytes:
        raise Rejected(f"message of {len(raw.payload)} bytes exceeds {max_bytes}", code="too-large")
    if not raw.payload.strip():
        raise Rejected("empty message", code="empty")
    organizations = gateways.get(raw.gateway)
    if organizations is None:
        raise Rejected(f"unknown or inactive gateway {raw.gateway!r}", code="unknown-gateway")
    return organizations
