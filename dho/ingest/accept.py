"""Accept stage: envelope checks before a payload is even parsed."""

from __future__ import annotations

from collections.abc import Mapping

from dho.ingest.errors import NotAuthorised, Oversized, Unparseable
from dho.ingest.measurement import RawMessage
from dho.ingest.resolve import Gateway

# Of a message over the size limit, this much is kept for the operator to look at.
OVERSIZED_KEPT_BYTES = 64 * 1024


def accept(raw: RawMessage, gateways: Mapping[str, Gateway], max_bytes: int) -> Gateway:
    """The sending gateway; a DataError when the envelope is wrong."""
    gateway = gateways.get(raw.gateway)
    if gateway is None:
        raise NotAuthorised(f"unknown or inactive gateway {raw.gateway!r}", code="unknown-gateway")
    if len(raw.payload) > max_bytes:
        raise Oversized(
            f"message of {len(raw.payload)} bytes exceeds the limit of {max_bytes}; "
            f"only its first {OVERSIZED_KEPT_BYTES} bytes are kept"
        )
    if not raw.payload.strip():
        raise Unparseable("empty message", code="empty")
    return gateway
