"""Judge one reading by the patient's plan: every rule of the plan that applies to it.

Pure: the reading, the plan version that applies, and the patient's earlier readings of
the type go in; what each rule found comes out, green findings included, so that the
alerting step can settle colours with hysteresis. No database, no clock.
"""

from __future__ import annotations

from dataclasses import field
from datetime import datetime
from decimal import Decimal

from dho.ingest.measurement import Measurement
from dho.rules.history import History, Reading, utc_reading
from dho.rules.plans import BaselineRule, ChangeRule, StandardPlan, Texts
from dho.rules.ranges import RangeJudgement, judge_range
from dho.rules.thresholds import Band
from dho.rules.trends import change, outside_baseline
from dho.values import value

OUT_OF_RANGE = "measurement-out-of-range"


@value
class PlanRef:
    """Which plan version judged: a patient's own (`id` its row), or a standard plan."""

    id: str
    version: int
    name: str  # the standard plan it was copied from

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


@value
class AppliedPlan:
    ref: PlanRef
    plan: StandardPlan
    valid_from: datetime | None = None


@value
class Finding:
    """What one rule says about one reading. `held` is where hysteresis holds a falling
    colour; `repeatable` marks a range finding a repeat measurement may confirm."""

    rule: str
    kind: str
    band: Band
    held: Band
    summary: str
    details: dict[str, str] = field(default_factory=dict)
    repeatable: bool = False


@value
class Judgement:
    plan: PlanRef
    colour: Band
    texts: Texts
    range: RangeJudgement | None = None
    findings: tuple[Finding, ...] = ()
    type: str = ""
    standard: StandardPlan | None = None

    def plan_texts(self, band: Band) -> Texts:
        """The plan's staff and patient texts for a colour of this reading's type."""
        return self.standard.texts_for(self.type, band) if self.standard else self.texts


def judge(m: Measurement, applied: AppliedPlan, history: History) -> Judgement:
    """Every rule of the plan for this reading; `history`: earlier readings of its type, by time."""
    plan = applied.plan
    findings: list[Finding] = []
    judged = _range(m, plan)
    if judged is not None:
        findings.append(judged[1])
    if m.value is not None:
        new = utc_reading(m.effective, m.value.value)
        findings.extend(_changes(m, plan, new, history))
        findings.extend(_baselines(m, plan, new, history))
    colour = max((f.band for f in findings), default=Band.GREEN)
    return Judgement(
        plan=applied.ref,
        colour=colour,
        texts=plan.texts_for(m.type, colour),
        range=judged[0] if judged else None,
        findings=tuple(findings),
        type=m.type,
        standard=plan,
    )


def _range(m: Measurement, plan: StandardPlan) -> tuple[RangeJudgement, Finding] | None:
    own = plan.measurements.get(m.type)
    if own is None:
        return None
    judged = judge_range(m, own.thresholds)
    if judged is None:
        return None
    held = judged.band
    if judged.value is not None:
        named = {m.type: judged.value}
        if held != Band.RED:  # red holds itself
            hold = plan.held[m.type].value
            assert hold is not None
            held = hold.band(judged.value.quantity.value)
    else:
        named = judged.components or {}
        if held != Band.RED:
            holds = plan.held[m.type].components or {}
            held = max(holds[key].band(part.quantity.value) for key, part in named.items())
    flagged = [
        f"{name} {part.quantity.value} {part.quantity.unit}"
        for name, part in named.items()
        if part.band == judged.band
    ]
    finding = Finding(
        f"range:{m.type}",
        OUT_OF_RANGE,
        judged.band,
        held,
        _summary(m.type, flagged, judged.band),
        {name: part.band.label for name, part in named.items()},
        repeatable=True,
    )
    return judged, finding


def _changes(m: Measurement, plan: StandardPlan, new: Reading, history: History) -> list[Finding]:
    return [_change(m, rule, new, history) for rule in plan.changes if rule.type == m.type]


def _change(m: Measurement, rule: ChangeRule, new: Reading, history: History) -> Finding:
    found = change(rule, new, history)
    window = f"{rule.days}d" if rule.days is not None else f"{rule.baseline_days}d-baseline"
    band = rule.colour if found else Band.GREEN
    unit = m.value.unit if m.value else ""
    details = {"rule": "change", "direction": rule.direction, "by": str(rule.by)}
    if found:
        how = "within" if rule.days else "from the mean of"
        days = rule.days or rule.baseline_days
        summary = (
            f"{m.type}: {_signed(found.by, rule.direction)} {unit} ({how} {days} days, "
            f"from {found.reference.normalize()} {unit}) ({band.label})"
        )
        details |= {"change": str(found.by), "reference": str(found.reference)}
    else:
        summary = f"{m.type}: no {rule.direction} beyond {rule.by} {unit}"
    rule_key = f"change:{m.type}:{rule.direction}:{window}"
    return Finding(rule_key, OUT_OF_RANGE, band, band, summary, details)


def _baselines(m: Measurement, plan: StandardPlan, new: Reading, history: History) -> list[Finding]:
    return [_baseline(m, rule, new, history) for rule in plan.baselines if rule.type == m.type]


def _baseline(m: Measurement, rule: BaselineRule, new: Reading, history: History) -> Finding:
    found = outside_baseline(rule, new, history)
    band = rule.colour if found else Band.GREEN
    details = {"rule": "baseline", "k": str(rule.k)}
    if found:
        summary = (
            f"{m.type} {new.value} outside the patient's own normal "
            f"({found.mean:.1f} +/- {rule.k} SD of {rule.baseline_days} days) ({band.label})"
        )
        details |= {"mean": f"{found.mean:.2f}", "sd": f"{found.sd:.2f}"}
    else:
        summary = f"{m.type} within the patient's own normal"
    rule_key = f"baseline:{m.type}:{rule.baseline_days}d"
    return Finding(rule_key, OUT_OF_RANGE, band, band, summary, details)


def _signed(by: Decimal, direction: str) -> str:
    return f"{'+' if direction == 'rise' else '-'}{by.normalize()}"


def _summary(type_key: str, flagged: list[str], band: Band) -> str:
    """E.g. `oxygen-saturation 86 % (red)` or `blood-pressure: systolic 186 mm[Hg] (red)`."""
    values = ", ".join(flagged)
    prefix = "" if values.startswith(type_key) else f"{type_key}: "
    return f"{prefix}{values} ({band.label})"
