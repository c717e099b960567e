"""The adapter catalogue: declarative YAML files under `adapters/`, each schema-checked.

A broken file disables only its own adapter; its messages are quarantined with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = "adapter.schema.json"
_STEP = re.compile(r"^(?P<key>[^\[\]]+)?(?P<all>\[\*\])?$")


@dataclass(frozen=True, slots=True)
class Adapter:
    """One adapter: where identity, type, time and values sit in a payload."""

    name: str
    description: str
    items: tuple[str, ...]
    fields: dict[str, tuple[str, ...]]
    message_id: tuple[str, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AdapterCatalogue:
    adapters: dict[str, Adapter]
    broken: dict[str, str]

    def names(self) -> list[str]:
        return sorted({*self.adapters, *self.broken})


def load_adapters(adapters_dir: Path) -> AdapterCatalogue:
    """Every `*.yaml` adapter in the folder; broken ones are listed with their error."""
    schema = json.loads((adapters_dir / SCHEMA_FILE).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    adapters: dict[str, Adapter] = {}
    broken: dict[str, str] = {}
    for path in sorted(adapters_dir.glob("*.yaml")):
        try:
            adapter = _parse(path, validator)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            broken[path.stem] = f"{path.name}: {exc}"
            continue
        adapters[adapter.name] = adapter
    return AdapterCatalogue(adapters=adapters, broken=broken)


@lru_cache(maxsize=4)
def cached_adapters(adapters_dir: Path) -> AdapterCatalogue:
    return load_adapters(adapters_dir)


def _parse(path: Path, validator: jsonschema.Draft202012Validator) -> Adapter:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top)"
        raise ValueError(f"schema error at {where}: {first.message}")
    if data["name"] != path.stem:
        raise ValueError(f"name {data['name']!r} must equal the file name {path.stem!r}")
    return Adapter(
        name=data["name"],
        description=data["description"],
        items=tuple(data["items"]),
        fields={k: tuple(v) for k, v in data["fields"].items()},
        message_id=tuple(data.get("message_id", ())),
        defaults=dict(data.get("defaults", {})),
        types=dict(data.get("types", {})),
    )


def find(document: Any, path: str) -> list[Any]:
    """Every value at `path` (dotted keys, `[*]` enters each list element, `$` is the root)."""
    if path == "$":
        return [document]
    found = [document]
    for step in path.split("."):
        match = _STEP.match(step)
        if match is None:
            return []
        found = list(_step(found, match.group("key"), bool(match.group("all"))))
    return found


def _step(values: list[Any], key: str | None, enter_list: bool) -> Iterator[Any]:
    for value in values:
        if key is not None:
            if not isinstance(value, dict) or key not in value:
                continue
            value = value[key]
        if enter_list:
            if isinstance(value, list):
                yield from value
        else:
            yield value


def first(document: Any, paths: tuple[str, ...]) -> Any:
    """The value at the first of `paths` that finds one, or None."""
    for path in paths:
        values = find(document, path)
        if values and values[0] is not None:
            return values[0]
    return None
