"""Standard self-management plans per patient group (`config/plans/*.yaml`), checked whole.

A standard plan is a starting set: copied to a patient and then adjusted with the GP.
Each measurement type has four cut-points in its canonical unit (a value on a cut-point
belongs to the more severe band, as in `CutPoints.band`), an optional measuring
schedule, and per colour a short text for staff and one for the patient (Norwegian).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import jsonschema

from dho.catalogue import Catalogue, CatalogueError, load_yaml, number
from dho.ingest.normalise import PlausibilityLimits, Range
from dho.rules.hysteresis import hold_points, margin_for
from dho.rules.thresholds import Band, CutPoints, TypeThresholds

PLANS_DIR = "plans"
SCHEMA_FILE = "plan.schema.json"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PlanError(CatalogueError):
    """A plan file is invalid; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class Texts:
    staff: str
    patient: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """Measured on these weekdays (all when none are listed) before this local time."""

    before: time
    days: tuple[str, ...] = WEEKDAYS


@dataclass(frozen=True, slots=True)
class ChangeRule:
    """A rise or fall of more than `by` within `days`, or from the mean of `baseline_days`."""

    type: str
    direction: Literal["rise", "fall"]
    by: Decimal
    colour: Band
    at_least: bool = False  # `by` itself is enough (else the change must exceed it)
    days: int | None = None
    baseline_days: int | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class BaselineRule:
    """Beyond mean +/- k SD of the patient's readings over `baseline_days` (`min_readings`)."""

    type: str
    k: Decimal
    baseline_days: int
    min_readings: int
    colour: Band


@dataclass(frozen=True, slots=True)
class PlanMeasurement:
    thresholds: TypeThresholds
    schedule: Schedule | None = None
    texts: dict[Band, Texts] = field(default_factory=dict)
    hysteresis: Decimal | None = None  # None: the type's default


@dataclass(frozen=True, slots=True)
class News2Settings:
    """Score NEWS2 from the latest vitals within `window`; alert at a colour per band."""

    window: timedelta
    colours: dict[str, Band]
    supplemental_oxygen: bool = False


@dataclass(frozen=True, slots=True)
class StandardPlan:
    id: str
    title: str
    description: str
    measurements: dict[str, PlanMeasurement]
    texts: dict[Band, Texts]
    changes: tuple[ChangeRule, ...] = ()
    baselines: tuple[BaselineRule, ...] = ()
    spo2_target_88_92: bool = False
    repeat_within: timedelta | None = None  # ask for a repeat before a yellow alert
    news2: News2Settings | None = None
    pregnant: bool = False
    questionnaires: tuple[str, ...] = ()
    # Derived once: how far back the change and baseline rules look, per type they trend;
    # and per type, the cut-points where hysteresis holds a falling colour.
    lookbacks: dict[str, timedelta] = field(init=False, compare=False, repr=False)
    held: dict[str, TypeThresholds] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        days: dict[str, int] = {}
        for change in self.changes:
            looked = change.days or change.baseline_days or 0
            days[change.type] = max(days.get(change.type, 0), looked)
        for baseline in self.baselines:
            days[baseline.type] = max(days.get(baseline.type, 0), baseline.baseline_days)
        lookbacks = {type_key: timedelta(days=n) for type_key, n in days.items()}
        object.__setattr__(self, "lookbacks", lookbacks)
        held = {key: _held(key, own) for key, own in self.measurements.items()}
        object.__setattr__(self, "held", held)

    def texts_for(self, type_key: str, band: Band) -> Texts:
        """The texts of a colour for one measurement type (its own, else the plan's)."""
        own = self.measurements.get(type_key)
        return (own.texts.get(band) if own else None) or self.texts[band]


def _held(type_key: str, own: PlanMeasurement) -> TypeThresholds:
    margin = margin_for(type_key, own.hysteresis)
    cuts = own.thresholds
    return TypeThresholds(
        value=hold_points(cuts.value, margin) if cuts.value is not None else None,
        components={k: hold_points(c, margin) for k, c in (cuts.components or {}).items()} or None,
    )


def load_standard_plans(
    config_dir: Path, types: Catalogue, limits: PlausibilityLimits
) -> dict[str, StandardPlan]:
    """Every plan under `config/plans/`, schema-checked and checked against the catalogues."""
    folder = config_dir / PLANS_DIR
    plans: dict[str, StandardPlan] = {}
    for path in sorted(folder.glob("*.yaml")):
        data = load_yaml(path, folder / SCHEMA_FILE)
        if data["id"] != path.stem:
            raise PlanError(f"{path}: id {data['id']!r} must equal the file name {path.stem!r}")
        plans[data["id"]] = _plan(data, str(path), types, limits)
    return plans


def plan_from_document(
    data: Any, where: str, config_dir: Path, types: Catalogue, limits: PlausibilityLimits
) -> StandardPlan:
    """A patient's plan (a standard plan's shape, adjusted), checked like a standard one."""
    schema = json.loads((config_dir / PLANS_DIR / SCHEMA_FILE).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        described = "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:10]
        )
        raise PlanError(f"{where}: {described}")
    return _plan(data, where, types, limits)


def _plan(
    data: dict[str, Any], path: str, types: Catalogue, limits: PlausibilityLimits
) -> StandardPlan:
    measurements = {
        key: _measurement(key, raw, path, types, limits)
        for key, raw in data["measurements"].items()
    }
    changes = tuple(_change(raw, path, types) for raw in data.get("changes", ()))
    baselines = tuple(_baseline_rule(raw, path, types) for raw in data.get("baselines", ()))
    return StandardPlan(
        id=data["id"],
        title=data["title"],
        description=data["description"],
        measurements=measurements,
        texts=_texts(data["colours"]),
        changes=changes,
        baselines=baselines,
        spo2_target_88_92=bool(data.get("spo2_target_88_92", False)),
        repeat_within=_minutes(data.get("repeat_before_yellow")),
        news2=_news2(data["news2"]) if "news2" in data else None,
        pregnant=bool(data.get("pregnant", False)),
        questionnaires=tuple(data.get("questionnaires", ())),
    )


def _minutes(raw: dict[str, Any] | None) -> timedelta | None:
    return None if raw is None else timedelta(minutes=raw["within_minutes"])


def _news2(raw: dict[str, Any]) -> News2Settings:
    return News2Settings(
        window=timedelta(minutes=raw["window_minutes"]),
        colours={band: Band[colour.upper()] for band, colour in raw["colours"].items()},
        supplemental_oxygen=bool(raw.get("supplemental_oxygen", False)),
    )


def _measurement(
    key: str, raw: dict[str, Any], path: str, types: Catalogue, limits: PlausibilityLimits
) -> PlanMeasurement:
    where = f"{path}: measurements.{key}"
    if key not in types.types:
        raise PlanError(f"{where}: {key!r} is not a measurement type under fhir/")
    mtype = types.get(key)
    bounds = limits.get(key)
    if mtype.is_panel:
        if "cut_points" in raw:
            raise PlanError(f"{where}: a panel is judged per component: use components")
        parts = {}
        for name, points in raw.get("components", {}).items():
            if name not in {c.key for c in mtype.components}:
                raise PlanError(f"{where}: {key} has no component {name!r}")
            ranges = bounds.components or {}
            parts[name] = _cut_points(points, f"{where}.{name}", ranges.get(name))
        thresholds = TypeThresholds(components=parts or None)
    else:
        if "components" in raw:
            raise PlanError(f"{where}: {key} has no components: use cut_points")
        points = raw.get("cut_points")
        cut = _cut_points(points, where, bounds.value) if points is not None else None
        thresholds = TypeThresholds(value=cut)
    schedule = parse_schedule(raw["schedule"]) if "schedule" in raw else None
    hysteresis = number(raw["hysteresis"]) if "hysteresis" in raw else None
    return PlanMeasurement(thresholds, schedule, _texts(raw.get("colours", {})), hysteresis)


def _cut_points(raw: dict[str, Any], where: str, plausible: Range | None) -> CutPoints:
    points = CutPoints(**{k: number(v) for k, v in raw.items()})
    if not points.ordered():
        raise PlanError(
            f"{where}: cut-points must increase red_low < yellow_low < yellow_high < red_high"
        )
    for name, value in raw.items():
        if plausible is not None and number(value) not in plausible:
            raise PlanError(f"{where}: {name} {value} is outside the plausible range {plausible}")
    return points


def _change(raw: dict[str, Any], path: str, types: Catalogue) -> ChangeRule:
    key = raw["type"]
    _single_valued(key, path, types, "changes")
    return ChangeRule(
        type=key,
        direction=raw["direction"],
        by=number(raw["by"]),
        colour=Band[raw["colour"].upper()],
        at_least=raw.get("comparison") == "at-least",
        days=raw.get("days"),
        baseline_days=raw.get("baseline_days"),
        source=raw.get("source"),
    )


def _baseline_rule(raw: dict[str, Any], path: str, types: Catalogue) -> BaselineRule:
    _single_valued(raw["type"], path, types, "baselines")
    return BaselineRule(
        type=raw["type"],
        k=number(raw["k"]),
        baseline_days=raw["baseline_days"],
        min_readings=raw["min_readings"],
        colour=Band[raw["colour"].upper()],
    )


def _single_valued(key: str, path: str, types: Catalogue, where: str) -> None:
    if key not in types.types or types.get(key).is_panel:
        raise PlanError(f"{path}: {where}: {key!r} is not a single-valued measurement type")


def parse_schedule(raw: dict[str, Any]) -> Schedule:
    hours, minutes = (int(part) for part in raw["before"].split(":"))
    days = tuple(d for d in WEEKDAYS if d in raw.get("days", WEEKDAYS))
    return Schedule(before=time(hours, minutes), days=days)


def _texts(raw: dict[str, Any]) -> dict[Band, Texts]:
    return {
        Band[colour.upper()]: Texts(texts["staff"], texts["patient"])
        for colour, texts in raw.items()
    }
