"""The adapter catalogue: one YAML file per device format under `adapters/`, schema-checked.

A broken file disables only its own adapter; its messages are quarantined with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml

SCHEMA_FILE = "adapter.schema.json"
_STEP = re.compile(
    r"^(?P<key>[^\[\]=]+)?(?:(?P<all>\[\*\])|\[(?P<field>[^\[\]=]+)=(?P<equals>[^\[\]=]+)\])?$"
)

Format = Literal["json", "fhir", "hl7v2"]
TimeFormat = Literal["iso8601", "epoch-seconds", "epoch-milliseconds"]
Paths = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CodeTarget:
    """What one source code means: a type (and component of a panel) in a UCUM unit."""

    type: str
    component: str | None = None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class RefusalRule:
    """Items whose value at `path` is one of `values` are quarantined with this code."""

    path: str
    values: frozenset[str]
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Coded:
    """Readings kept as a list of coded values inside each item."""

    each: str
    code: Paths
    value: Paths
    unit: Paths = ()
    exponent: Paths = ()


@dataclass(frozen=True, slots=True)
class Adapter:
    """One adapter: where identity, type, time and values sit in a payload."""

    name: str
    description: str
    format: Format = "json"
    decoder: str | None = None
    items: Paths = ()
    fields: dict[str, Paths] = field(default_factory=dict)
    message_id: Paths = ()
    time_format: TimeFormat = "iso8601"
    time_zone: Paths = ()
    component_fields: dict[str, Paths] = field(default_factory=dict)
    coded: Coded | None = None
    codes: dict[str, CodeTarget] = field(default_factory=dict)
    ignore_codes: frozenset[str] = frozenset()
    refuse: tuple[RefusalRule, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    source: Path | None = None


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


def decoder_exists(name: str) -> bool:
    """Whether `dho/decoders/<name>.py` exists (without importing it)."""
    return importlib.util.find_spec(f"dho.decoders.{name}") is not None


def _parse(path: Path, validator: jsonschema.Draft202012Validator) -> Adapter:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top)"
        raise ValueError(f"schema error at {where}: {first.message}")
    if data["name"] != path.stem:
        raise ValueError(f"name {data['name']!r} must equal the file name {path.stem!r}")
    if data["format"] == "json" and "type" not in data["fields"] and "coded" not in data:
        raise ValueError("a json adapter needs fields.type or coded")
    decoder = data.get("decoder")
    if decoder is not None and not decoder_exists(decoder):
        raise ValueError(f"there is no decoder dho/decoders/{decoder}.py")
    return Adapter(
        name=data["name"],
        description=data["description"],
        format=data["format"],
        decoder=decoder,
        items=tuple(data.get("items", ())),
        fields={k: tuple(v) for k, v in data.get("fields", {}).items()},
        message_id=tuple(data.get("message_id", ())),
        time_format=data.get("time_format", "iso8601"),
        time_zone=tuple(data.get("time_zone", ())),
        component_fields={k: tuple(v) for k, v in data.get("component_fields", {}).items()},
        coded=_coded(data.get("coded")),
        codes={str(k): CodeTarget(**v) for k, v in data.get("codes", {}).items()},
        ignore_codes=frozenset(str(c) for c in data.get("ignore_codes", ())),
        refuse=tuple(
            RefusalRule(r["path"], frozenset(str(v) for v in r["values"]), r["code"], r["message"])
            for r in data.get("refuse", ())
        ),
        defaults=dict(data.get("defaults", {})),
        types=dict(data.get("types", {})),
        units=dict(data.get("units", {})),
        source=path,
    )


def _coded(raw: Mapping[str, Any] | None) -> Coded | None:
    if raw is None:
        return None
    return Coded(
        each=raw["each"],
        code=tuple(raw["code"]),
        value=tuple(raw["value"]),
        unit=tuple(raw.get("unit", ())),
        exponent=tuple(raw.get("exponent", ())),
    )


def find(document: Any, path: str, root: Any = None) -> list[Any]:
    """Every value at `path`: dotted keys, `[*]` enters each list element, `$` is `document`.

    `list[field=value]` enters only the elements (objects) whose `field` equals `value`.

    A path starting with `/` is read from `root` (the whole payload) instead.
    """
    if path == "$":
        return [document]
    if path.startswith("/"):
        document, path = (document if root is None else root), path[1:]
    found = [document]
    for step in path.split("."):
        match = _STEP.match(step)
        if match is None:
            return []
        where = (match.group("field"), match.group("equals")) if match.group("field") else None
        found = list(_step(found, match.group("key"), bool(match.group("all")), where))
    return found


def _step(
    values: list[Any], key: str | None, enter_list: bool, where: tuple[str, str] | None
) -> Iterator[Any]:
    for value in values:
        if key is not None:
            if not isinstance(value, dict) or key not in value:
                continue
            value = value[key]
        if where is not None:
            if isinstance(value, list):
                field_name, wanted = where
                yield from (
                    v for v in value if isinstance(v, dict) and str(v.get(field_name)) == wanted
                )
        elif enter_list:
            if isinstance(value, list):
                yield from value
        else:
            yield value


def first(document: Any, paths: Paths, root: Any = None) -> Any:
    """The value at the first of `paths` that finds one, or None."""
    for path in paths:
        values = find(document, path, root)
        if values and values[0] is not None:
            return values[0]
    return None
