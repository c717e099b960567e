"""The entries of a registry Bundle: read, checked for shape and copied as plain JSON."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from dho import jsonutil

NAMESPACE = uuid.UUID("7dceed22-3098-4a1a-843a-76a470b2386e")
RESOURCE_TYPES = ("Organization", "Patient", "Device", "CareTeam", "DeviceUseStatement")
BUNDLE_TYPES = ("batch", "transaction")


class RegistryImportError(ValueError):
    """The bundle cannot be imported; the message names the entry and the reason."""


@dataclass
class Entry:
    """One resource of the bundle, and the row its planner makes of it."""

    index: int
    type: str
    full_url: str | None
    resource: dict[str, Any]
    id: str = ""
    columns: dict[str, Any] = field(default_factory=dict)
    members: dict[str, str | None] = field(default_factory=dict)
    label: str = ""

    def fail(self, message: str) -> RegistryImportError:
        where = f"entry {self.index} ({self.type}"
        where += f" {self.full_url})" if self.full_url else ")"
        return RegistryImportError(f"{where}: {message}")


def make_id(key: str) -> str:
    """The row id of a business key: uuid5 over `NAMESPACE`."""
    return str(uuid.uuid5(NAMESPACE, key))


def read_entries(bundle: Any) -> list[Entry]:
    """The entries of a batch/transaction Bundle, each resource a private copy."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise RegistryImportError("not a FHIR Bundle: resourceType must be 'Bundle'")
    if bundle.get("type") not in BUNDLE_TYPES:
        raise RegistryImportError(
            f"Bundle.type must be 'batch' or 'transaction', not {bundle.get('type')!r}"
        )
    items = bundle.get("entry", [])
    if not isinstance(items, list):
        raise RegistryImportError("Bundle.entry must be a list")
    return [_read_entry(index, item) for index, item in enumerate(items)]


def _read_entry(index: int, item: Any) -> Entry:
    resource = item.get("resource") if isinstance(item, dict) else None
    if not isinstance(resource, dict):
        raise RegistryImportError(f"entry {index} has no resource")
    request = item.get("request")
    method = request.get("method") if isinstance(request, dict) else None
    if method not in (None, "POST", "PUT"):
        raise RegistryImportError(
            f"entry {index}: request method {method!r} is not supported (only POST or PUT)"
        )
    rtype = resource.get("resourceType")
    if rtype not in RESOURCE_TYPES:
        raise RegistryImportError(
            f"entry {index}: resourceType {rtype!r} is not supported; "
            f"expected one of {', '.join(RESOURCE_TYPES)}"
        )
    full_url = item.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise RegistryImportError(f"entry {index}: fullUrl must be a string")
    try:
        copied = jsonutil.loads(jsonutil.dumps(resource))
    except (TypeError, ValueError) as exc:
        raise RegistryImportError(f"entry {index}: resource is not plain JSON: {exc}") from exc
    return Entry(index, rtype, full_url, copied)
