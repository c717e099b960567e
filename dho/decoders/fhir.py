"""FHIR R4 from PHD-style gateways: one Observation, or a batch or transaction Bundle.

One item per Bundle entry, in entry order: an Observation becomes a measurement, or a
note when it is device information the adapter's `ignore_codes` list (Coincident Time
Stamp, battery level); a Patient, and a Device some stored Observation names as its
`device`, become registry claims (matched, never created); the gateway's own Device is
read and not stored. What each choice means is documented in `adapters/phd-fhir.yaml`.
"""

from __future__ import annotations

from typing import Any

from dho.decoders.fhir_entries import (
    INVALID,
    Links,
    claim,
    links_of,
    resource_type,
    validate,
)
from dho.decoders.fhir_observation import observation_item
from dho.ingest.adapter_catalogue import Adapter
from dho.ingest.decoded import DecodeContext, Decoded, DecodedItem
from dho.ingest.errors import DataError, Oversized, Unparseable
from dho.ingest.payload import MAX_ID_LENGTH, parse_json

BUNDLE_TYPES = ("batch", "transaction")
METHODS = ("POST", "PUT")
GATEWAY_NOTE = "the gateway's own device: read, not stored"


def decode(payload: bytes, adapter: Adapter, ctx: DecodeContext) -> Decoded:
    """The items of an Observation or of a batch / transaction Bundle, in entry order."""
    document = parse_json(payload)
    if not isinstance(document, dict):
        raise Unparseable("a FHIR resource must be a JSON object")
    kind = document.get("resourceType")
    if kind == "Observation":
        item = observation_item(document, "Observation", Links(), ctx, adapter.ignore_codes)
        return Decoded(None, (item,), kind="Observation")
    if kind != "Bundle":
        raise Unparseable(
            "only an Observation or a batch or transaction Bundle can be sent",
            code="unsupported-resource",
        )
    entries = _entries(document, ctx.max_items)
    links = links_of(entries, adapter.ignore_codes)
    items = tuple(
        _entry(index, entry, links, ctx, adapter.ignore_codes)
        for index, entry in enumerate(entries)
    )
    bundle_type = str(document["type"])
    return Decoded(
        _message_id(document.get("identifier")),
        items,
        atomic=bundle_type == "transaction",
        kind=bundle_type,
    )


def _entries(bundle: dict[str, Any], max_items: int) -> list[Any]:
    validate({k: v for k, v in bundle.items() if k != "entry"}, "Bundle", "Bundle")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise Unparseable(
            f"Bundle.type must be batch or transaction, not {str(bundle.get('type'))[:32]!r}",
            code="unsupported-bundle-type",
        )
    entries = bundle.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise Unparseable("Bundle.entry must be a list", code=INVALID)
    if len(entries) > max_items:
        raise Oversized(
            f"{len(entries)} entries in one Bundle; the limit is {max_items}",
            code="too-many-measurements",
        )
    return entries


def _entry(
    index: int, entry: Any, links: Links, ctx: DecodeContext, ignore_codes: frozenset[str]
) -> DecodedItem:
    label = f"Bundle.entry[{index}]"
    try:
        resource = _request_resource(entry, label)
        kind = resource_type(resource, label)
        if kind == "Observation":
            return observation_item(resource, label, links, ctx, ignore_codes)
        if kind not in ("Patient", "Device"):
            raise DataError(
                f"{label}: {kind} entries are not accepted (only Observation, Patient, Device)",
                code="unsupported-resource",
            )
        validate(resource, kind, label)
        if kind == "Patient":
            return DecodedItem(label, claim=claim("Patient", links.nodes[index]))
        if index in links.devices:
            return DecodedItem(label, claim=claim("Device", links.nodes[index]))
        return DecodedItem(label, note=GATEWAY_NOTE)
    except DataError as error:
        return DecodedItem(label, error=error)


def _request_resource(entry: Any, label: str) -> dict[str, Any]:
    """The entry's resource, once the entry itself and its request are valid and a write."""
    if not isinstance(entry, dict):
        raise Unparseable(f"{label}: an entry must be a JSON object", code=INVALID)
    validate({k: v for k, v in entry.items() if k != "resource"}, "BundleEntry", label)
    request = entry.get("request")
    if not isinstance(request, dict):
        raise Unparseable(f"{label}: request is required in a batch or transaction", code=INVALID)
    method = request.get("method")
    if method not in METHODS:
        raise DataError(
            f"{label}: request.method {str(method)[:16]} is not accepted (only POST or PUT)",
            code="unsupported-method",
        )
    resource = entry.get("resource")
    if not isinstance(resource, dict):
        raise Unparseable(f"{label}: a {method} entry needs a resource", code=INVALID)
    url_type = str(request.get("url", "")).split("?", 1)[0].split("/", 1)[0]
    if url_type != resource.get("resourceType"):
        raise Unparseable(
            f"{label}: request.url names {url_type[:64]!r}, the resource is another type",
            code=INVALID,
        )
    return resource


def _message_id(identifier: Any) -> str | None:
    """Bundle.identifier (system|value): a re-sent Bundle is recognised as a whole."""
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        return None
    system = identifier.get("system")
    text = f"{system}|{identifier['value']}" if isinstance(system, str) else identifier["value"]
    return text if 0 < len(text) <= MAX_ID_LENGTH else None
