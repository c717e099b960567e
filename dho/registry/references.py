"""References between bundle entries and registry rows: resolving them and rewriting them."""

from __future__ import annotations

import re
from typing import Any

from dho.registry.bundle import RESOURCE_TYPES, Entry

_RELATIVE = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_REST_URL = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")


class References:
    """Names of bundle entries (fullUrl, Type/id) and the registry rows referenced directly."""

    def __init__(self) -> None:
        self.aliases: dict[str, tuple[str, str]] = {}
        self.entries: dict[tuple[str, str], Entry] = {}
        self.external: dict[tuple[str, str], Entry] = {}

    def add(self, entry: Entry) -> None:
        target = (entry.type, entry.id)
        other = self.entries.setdefault(target, entry)
        if other is not entry:
            raise entry.fail(
                f"is the same {entry.type} as entry {other.index} (same business identifier)"
            )
        names = {f"{entry.type}/{entry.id}"}
        if entry.full_url:
            names.add(entry.full_url)
            match = _REST_URL.search(entry.full_url)
            if match and match["type"] == entry.type and not entry.full_url.startswith("urn:"):
                names.add(f"{entry.type}/{match['id']}")
        if isinstance(entry.resource.get("id"), str):
            names.add(f"{entry.type}/{entry.resource['id']}")
        for name in names:
            if self.aliases.setdefault(name, target) != target:
                raise entry.fail(f"{name!r} already names another entry of the bundle")

    def resolve(self, entry: Entry, ref: str) -> tuple[str, str] | None:
        """The (type, row id) a reference names; None for references to outside resources."""
        target = self.aliases.get(ref)
        if target is not None:
            return target
        if ref.startswith("urn:"):
            raise entry.fail(f"reference {ref!r} matches no fullUrl in the bundle")
        match = _RELATIVE.fullmatch(ref)
        if match is None or match["type"] not in RESOURCE_TYPES:
            return None
        target = (match["type"], match["id"])
        self.external.setdefault(target, entry)
        return target


def link(entry: Entry, refs: References, element: Any, expected: str, path: str) -> str:
    """The row id a required Reference element names; it must be to an `expected`."""
    ref = element.get("reference") if isinstance(element, dict) else None
    if not isinstance(ref, str):
        raise entry.fail(f"{path} needs a literal reference to a {expected}")
    target = refs.resolve(entry, ref)
    if target is None or target[0] != expected:
        raise entry.fail(f"{path} must reference a {expected}, not {ref!r}")
    return target[1]


def prepare_resource(entry: Entry, refs: References) -> None:
    """Set our id, rewrite references to `Type/<row id>`, drop server-owned meta."""
    _rewrite(entry, refs, entry.resource)
    rest = {k: v for k, v in entry.resource.items() if k not in ("resourceType", "id", "meta")}
    meta = entry.resource.get("meta")
    meta = (
        {k: v for k, v in meta.items() if k not in ("lastUpdated", "versionId")}
        if isinstance(meta, dict)
        else {}
    )
    entry.resource = {"resourceType": entry.type, "id": entry.id}
    if meta:
        entry.resource["meta"] = meta
    entry.resource.update(rest)


def _rewrite(entry: Entry, refs: References, node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            target = refs.resolve(entry, ref)
            if target is not None:
                node["reference"] = f"{target[0]}/{target[1]}"
        for value in node.values():
            _rewrite(entry, refs, value)
    elif isinstance(node, list):
        for item in node:
            _rewrite(entry, refs, item)
