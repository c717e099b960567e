"""Default cut-points per measurement type, from `config/thresholds.yaml` (schema-checked)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class Band(IntEnum):
    """Traffic-light colour; the number is the VKP severity (1 green, 2 yellow, 3 red)."""

    GREEN = 1
    YELLOW = 2
    RED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class CutPoints:
    """red_low < yellow_low < yellow_high < red_high; a value on a cut-point is the worse band."""

    red_low: Decimal | None = None
    yellow_low: Decimal | None = None
    yellow_high: Decimal | None = None
    red_high: Decimal | None = None

    def band(self, value: Decimal) -> Band:
        if self.red_low is not None and value <= self.red_low:
            return Band.RED
        if self.red_high is not None and value >= self.red_high:
            return Band.RED
        if self.yellow_low is not None and value <= self.yellow_low:
            return Band.YELLOW
        if self.yellow_high is not None and value >= self.yellow_high:
            return Band.YELLOW
        return Band.GREEN

    def ordered(self) -> bool:
        points = [self.red_low, self.yellow_low, self.yellow_high, self.red_high]
        present = [p for p in points if p is not None]
        return all(a < b for a, b in itertools.pairwise(present))


@dataclass(frozen=True, slots=True)
class TypeThresholds:
    """Cut-points for a single-valued type (`value`) or per component of a panel."""

    value: CutPoints | None = None
    components: dict[str, CutPoints] | None = None


Thresholds = dict[str, TypeThresholds]


class ThresholdsError(ValueError):
    """The thresholds file is invalid."""


def load_thresholds(config_dir: Path) -> Thresholds:
    """Read and check `thresholds.yaml`; cut-points must be in increasing order."""
    path = config_dir / "thresholds.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    schema = json.loads((config_dir / "thresholds.schema.json").read_text(encoding="utf-8"))
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ThresholdsError(f"{path}: {where}: {exc.message}") from exc
    result: Thresholds = {}
    for type_key, entry in data.items():
        if "components" in entry:
            parts = {
                name: _cutpoints(cp, f"{type_key}.{name}")
                for name, cp in entry["components"].items()
            }
            result[type_key] = TypeThresholds(components=parts)
        else:
            result[type_key] = TypeThresholds(value=_cutpoints(entry, type_key))
    return result


def _cutpoints(entry: dict[str, Any], where: str) -> CutPoints:
    points = CutPoints(**{k: Decimal(str(v)) for k, v in entry.items()})
    if not points.ordered():
        raise ThresholdsError(
            f"{where}: cut-points must increase red_low < yellow_low < yellow_high < red_high"
        )
    return points
